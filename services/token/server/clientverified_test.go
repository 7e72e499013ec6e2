package server_test

import (
	"context"
	"net/url"
	"testing"
	"time"

	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
	"github.com/mcpid/mcpid/lib/service/servicetest"
	registrationserver "github.com/mcpid/mcpid/services/registration/server"
)

// verifiedTool is a CRM tool only verified clients may call, by a CEL
// condition and by require_verified_client.
const verifiedTool = "export_customers"

// requireVerifiedTools adds to CRM a tool with a `client.verified`
// condition and one with require_verified_client.
func (e *env) requireVerifiedTools(t testing.TB) {
	t.Helper()
	p, err := e.polAdmin.GetPolicy(context.Background(), &policyv1.GetPolicyRequest{Resource: resCRM})
	if err != nil {
		t.Fatal(err)
	}
	pol := p.GetPolicy()
	pol.Tools = append(pol.Tools,
		&policyv1.Tool{Name: verifiedTool, RequiredScopes: []string{"crm:read"}, Conditions: []*policyv1.Condition{{Expression: "client.verified"}}},
		&policyv1.Tool{Name: "bulk_delete", RequiredScopes: []string{"crm:read"}, RequireVerifiedClient: true},
		&policyv1.Tool{Name: "web_only", RequiredScopes: []string{"crm:read"}, Conditions: []*policyv1.Condition{{Expression: `client.application_type == "web"`}}},
	)
	if _, err := e.polAdmin.PutPolicy(context.Background(), &policyv1.PutPolicyRequest{Policy: pol}); err != nil {
		t.Fatal(err)
	}
}

// nativeToken runs the authorization code flow for the native public
// client (loopback redirect, no secret).
func (e *env) nativeToken(t testing.TB) string {
	t.Helper()
	a := authz{clientID: clientNative, redirect: "http://127.0.0.1:49152/callback", scope: "crm:read", resource: resCRM, state: "s-native", verifier: newVerifier()}
	code, _ := e.fullFlow(a, "crm:read")
	return decodeToken(t, e.post("/oauth2/token", url.Values{
		"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {a.redirect}, "code_verifier": {a.verifier}, "client_id": {clientNative},
	}, "", "")).AccessToken
}

func (p *policyReplica) decideTool(t testing.TB, tok, tool string) *policyv1.CheckResult {
	t.Helper()
	resp, err := p.check.Check(context.Background(), &policyv1.CheckRequest{AccessToken: tok, Resource: resCRM, Tool: tool})
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return resp.GetResult()
}

// waitToolAllowed polls until the replica has the policy with tool and
// allows tok (the policy reaches the replica by watch).
func (p *policyReplica) waitToolAllowed(t testing.TB, tok, tool string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := p.decideTool(t, tok, tool)
		if r.GetDecision() == policyv1.Decision_DECISION_ALLOW {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never allowed: %v", tool, r)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestClientVerificationReachesPolicy: the token service states the
// client's verification status and application type in the access token
// (client_verified, client_application_type); a real policy replica decides
// `client.verified`, require_verified_client and
// `client.application_type` from them; un-verifying the client at a real
// registration service (with token-addr) makes its earlier token TOKEN_REVOKED
// within a second, and its new tokens say client_verified=false and are
// denied.
func TestClientVerificationReachesPolicy(t *testing.T) {
	e := startEnv(t)
	ctx := context.Background()
	pol := e.startPolicy(t, e.srv.GRPCAddr().String(), 0)
	f := e.pki.ServeTLS(t, registrationserver.Name, servicetest.Flags(e.etcd.Endpoints()))
	f.ShutdownTimeout = 15 * time.Second
	reg, err := registrationserver.Config{Flags: f, GatewayTLS: e.pki.GatewayTLS(registrationserver.Name), Issuer: e.issuer,
		TokenAddr: e.srv.GRPCAddr().String()}.Complete(ctx)
	if err != nil {
		t.Fatal(err)
	}
	servicetest.Run(t, reg)
	servicetest.WaitReady(t, reg, registrationserver.Name)
	e.requireVerifiedTools(t)

	// A verified (operator-created) machine client.
	tok := e.ccToken(t, clientMachine, secretMachine, resCRM)
	if _, c := claims(t, tok); c["client_verified"] != true {
		t.Fatalf("client_verified of a verified client: %v", c["client_verified"])
	} else if _, has := c["client_application_type"]; !has {
		t.Fatalf("no client_application_type: %v", c)
	}
	pol.waitToolAllowed(t, tok, verifiedTool)
	if r := pol.decideTool(t, tok, "bulk_delete"); r.GetDecision() != policyv1.Decision_DECISION_ALLOW {
		t.Fatalf("require_verified_client, verified client: %v", r)
	}

	// A user token through a verified web client carries both claims.
	ut := e.userToken(t, "crm:read").AccessToken
	if _, c := claims(t, ut); c["client_verified"] != true || c["client_application_type"] != "web" {
		t.Fatalf("user token claims: verified %v, type %v", c["client_verified"], c["client_application_type"])
	}
	if r := pol.decideTool(t, ut, "web_only"); r.GetDecision() != policyv1.Decision_DECISION_ALLOW {
		t.Fatalf("web client at a web_only tool: %v", r)
	}
	// A native public client is verified too (operator-created) but not web.
	nt := e.nativeToken(t)
	if _, c := claims(t, nt); c["client_application_type"] != "native" {
		t.Fatalf("native client's token: %v", c["client_application_type"])
	}
	if r := pol.decideTool(t, nt, "web_only"); r.GetDecision() != policyv1.Decision_DECISION_DENY || r.GetReason() != policyv1.DecisionReason_DECISION_REASON_CONDITION_FALSE {
		t.Fatalf("native client at a web_only tool: %v", r)
	}

	// Un-verifying the client revokes its grants: the earlier token is
	// rejected within a second of the call (a correctness bound, polled).
	start := time.Now()
	if _, err := e.regAdmin.SetClientVerification(ctx, &registrationv1.SetClientVerificationRequest{ClientId: clientMachine,
		Status: registrationv1.VerificationStatus_VERIFICATION_STATUS_UNVERIFIED, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	for _, tool := range []string{verifiedTool, "bulk_delete"} {
		for {
			r := pol.decideTool(t, tok, tool)
			if r.GetDecision() == policyv1.Decision_DECISION_DENY && r.GetReason() == policyv1.DecisionReason_DECISION_REASON_TOKEN_REVOKED {
				break
			}
			if time.Since(start) > time.Second {
				t.Fatalf("%s: earlier token of the un-verified client still %v/%v after %v", tool, r.GetDecision(), r.GetReason(), time.Since(start))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	// The user's token through another client is untouched.
	if r := pol.decideTool(t, ut, verifiedTool); r.GetDecision() != policyv1.Decision_DECISION_ALLOW {
		t.Fatalf("another client's token after un-verifying machine: %v", r)
	}

	// New tokens of the unverified client say so and are denied by the
	// condition and by require_verified_client (once past the watermark,
	// which also rejects tokens issued in its second).
	deadline := time.Now().Add(30 * time.Second)
	for {
		fresh := e.ccToken(t, clientMachine, secretMachine, resCRM)
		if _, c := claims(t, fresh); c["client_verified"] != false {
			t.Fatalf("client_verified of an unverified client: %v", c["client_verified"])
		}
		r := pol.decideTool(t, fresh, verifiedTool)
		if r.GetDecision() == policyv1.Decision_DECISION_ALLOW {
			t.Fatalf("unverified client allowed: %v", r)
		}
		if r.GetReason() == policyv1.DecisionReason_DECISION_REASON_CONDITION_FALSE {
			if r := pol.decideTool(t, fresh, "bulk_delete"); r.GetReason() != policyv1.DecisionReason_DECISION_REASON_CLIENT_NOT_VERIFIED {
				t.Fatalf("require_verified_client, unverified client: %v", r)
			}
			if r := pol.decideTool(t, fresh, "search_customers"); r.GetDecision() != policyv1.Decision_DECISION_ALLOW {
				t.Fatalf("unverified client at a tool without requirement: %v", r)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fresh token of the unverified client: %v", r)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Verifying it again revokes nothing: a token issued while verified
	// keeps working.
	if _, err := e.regAdmin.SetClientVerification(ctx, &registrationv1.SetClientVerificationRequest{ClientId: clientMachine,
		Status: registrationv1.VerificationStatus_VERIFICATION_STATUS_VERIFIED, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	again := e.ccToken(t, clientMachine, secretMachine, resCRM)
	pol.waitToolAllowed(t, again, verifiedTool)
}
