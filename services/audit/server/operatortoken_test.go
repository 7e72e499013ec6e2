package server_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/lib/jose"
	"github.com/mcpid/mcpid/lib/service/servicetest"
	"github.com/mcpid/mcpid/services/audit/server"
)

// TestOperatorTokens: audit accepts an operator token (`mcpid login`,
// aud=urn:mcpid:admin, signed by a key of the issuer's JWKS, fetched over
// loopback HTTP) in place of a bootstrap certificate: an auditor reads but
// may not erase; another audience, an expired token, alg none and HMAC with
// the public key are refused.
func TestOperatorTokens(t *testing.T) {
	iss := servicetest.NewOperatorIssuer(t, jose.EdDSA)
	e := newEnv(t)
	r := e.start(t, func(c *server.Config) { c.Issuer = iss.URL })
	c := e.client(t, r.srv, nil)

	call := func(tok string) context.Context { return servicetest.Bearer(testCtx(t), tok) }
	admin, auditor := iss.Sign(t, iss.Claims("admin")), iss.Sign(t, iss.Claims("auditor"))
	for name, tok := range map[string]string{"admin": admin, "auditor": auditor} {
		if _, err := c.GetCheckpointKeys(call(tok), &auditv1.GetCheckpointKeysRequest{}); err != nil {
			t.Fatalf("%s token read: %v", name, err)
		}
	}
	_, err := c.ErasePersonalData(call(auditor), &auditv1.ErasePersonalDataRequest{})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("auditor token write: %v, want PermissionDenied", err)
	}
	_, err = c.ErasePersonalData(call(admin), &auditv1.ErasePersonalDataRequest{})
	if status.Code(err) == codes.PermissionDenied || status.Code(err) == codes.Unauthenticated {
		t.Fatalf("admin token write: %v, want past the allowlist", err)
	}

	wrongAud := iss.Claims("admin")
	wrongAud["aud"] = "https://mcp.example.com"
	expired := iss.Claims("admin")
	expired["exp"] = time.Now().Add(-time.Hour).Unix()
	for name, bad := range map[string]string{
		"wrong audience": iss.Sign(t, wrongAud),
		"expired":        iss.Sign(t, expired),
		"alg none":       iss.AlgNone(iss.Claims("admin")),
		"HMAC confusion": iss.HMACConfusion(t, iss.Claims("admin")),
	} {
		if _, err := c.GetCheckpointKeys(call(bad), &auditv1.GetCheckpointKeysRequest{}); status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: %v, want Unauthenticated", name, err)
		}
	}
}
