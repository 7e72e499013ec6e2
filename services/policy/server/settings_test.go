package server_test

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	"github.com/mcpid/mcpid/lib/jose"
	"github.com/mcpid/mcpid/services/policy/internal/testutil"
	"github.com/mcpid/mcpid/services/policy/server"
)

// TestKeysFromJWKSURL: without a key source in code, keys come from the
// jwks-url setting over the SSRF-safe fetcher; while they cannot be fetched
// every check is DENY / NOT_READY.
func TestKeysFromJWKSURL(t *testing.T) {
	e := newEnv(t)
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != server.JWKSPath {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(jose.NewKeySet(e.keys.Key))
	}))
	t.Cleanup(jwks.Close)
	srv := e.start(func(c *server.Config) {
		c.KeySource = nil
		c.Issuer = jwks.URL // the JWKS URL defaults to <issuer>/oauth2/jwks
	})
	e.installCRM(srv)
	claims := testutil.Claims(crm, "crm:contacts.read")
	claims["iss"] = jwks.URL
	tok := e.keys.Sign(t, claims)
	c := e.mcp(srv, crm)
	eventually(t, "an allow with fetched keys", func() bool {
		resp, err := c.Check(ctx(t), &policyv1.CheckRequest{AccessToken: tok, Resource: crm, Tool: "list_contacts"})
		if err != nil {
			t.Fatal(err)
		}
		r := resp.GetResult()
		if r.GetDecision() != allow && r.GetReason() != policyv1.DecisionReason_DECISION_REASON_NOT_READY {
			t.Fatalf("before the keys arrive: %v", r)
		}
		return r.GetDecision() == allow
	})

	// A JWKS nobody serves: never an allow.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + lis.Addr().String()
	_ = lis.Close()
	srv2 := e.start(func(c *server.Config) {
		c.KeySource = nil
		c.Issuer = dead
	})
	claims["iss"] = dead
	resp, err := e.mcp(srv2, crm).Check(ctx(t), &policyv1.CheckRequest{AccessToken: e.keys.Sign(t, claims), Resource: crm, Tool: "list_contacts"})
	if err != nil {
		t.Fatal(err)
	}
	if r := resp.GetResult(); r.GetDecision() != deny || r.GetReason() != policyv1.DecisionReason_DECISION_REASON_NOT_READY {
		t.Fatalf("without keys: %v", r)
	}
}

// TestStrictAudit: with audit-strict, an allow whose decision event audit
// cannot acknowledge is a denial.
func TestStrictAudit(t *testing.T) {
	e := newEnv(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nowhere := lis.Addr().String()
	_ = lis.Close()
	e.start(func(c *server.Config) {
		c.AuditAddr = nowhere
		c.AuditStrict = true
	})
	e.installCRM(nil)
	resp, err := e.mcp(nil, crm).Check(ctx(t), &policyv1.CheckRequest{AccessToken: e.keys.Token(t, crm, "crm:contacts.read"), Resource: crm, Tool: "list_contacts"})
	if err != nil {
		t.Fatal(err)
	}
	if r := resp.GetResult(); r.GetDecision() != deny || r.GetReason() != policyv1.DecisionReason_DECISION_REASON_NOT_READY {
		t.Fatalf("unacknowledged allow: %v", r)
	}
}
