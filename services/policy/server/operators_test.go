package server_test

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	"github.com/mcpid/mcpid/lib/principal"
	"github.com/mcpid/mcpid/services/policy/internal/testutil"
)

// TestOperatorTokens: an operator token (`mcpid login`, aud=urn:mcpid:admin)
// alone reaches the admin methods through lib/admintoken: an admin reads and
// writes, an auditor only reads; another audience, an expired token, alg
// none, HMAC with the public key and a revoked login are refused.
func TestOperatorTokens(t *testing.T) {
	e := newEnv(t)
	e.start()
	anon := e.client(nil, nil)
	operator := func(role, grant string) map[string]any {
		c := testutil.Claims(principal.AdminAudience, "")
		c["client_id"] = "mcpid"
		c["roles"] = []string{role}
		c["grant_id"] = grant
		return c
	}
	admin := e.keys.Sign(t, operator("admin", "grt_admin"))
	auditor := e.keys.Sign(t, operator("auditor", "grt_auditor"))

	if _, err := anon.PutPolicy(bearer(ctx(t), admin), &policyv1.PutPolicyRequest{Policy: crmPolicy()}); err != nil {
		t.Fatalf("admin token writes: %v", err)
	}
	for name, tok := range map[string]string{"admin": admin, "auditor": auditor} {
		list, err := anon.ListPolicies(bearer(ctx(t), tok), &policyv1.ListPoliciesRequest{})
		if err != nil || len(list.GetPolicies()) != 1 {
			t.Fatalf("%s token reads: %v, %v", name, list, err)
		}
	}
	_, err := anon.DeletePolicy(bearer(ctx(t), auditor), &policyv1.DeletePolicyRequest{Resource: crm})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("auditor token writes: %v, want PermissionDenied", err)
	}

	expired := operator("admin", "grt_x")
	expired["iat"] = time.Now().Add(-2 * time.Hour).Unix()
	expired["nbf"] = expired["iat"]
	expired["exp"] = time.Now().Add(-time.Hour).Unix()
	twoAud := operator("admin", "grt_x")
	twoAud["aud"] = []string{principal.AdminAudience, crm}
	for name, bad := range map[string]string{
		"resource token":       e.keys.Token(t, crm, "crm:admin"),
		"two audiences":        e.keys.Sign(t, twoAud),
		"expired":              e.keys.Sign(t, expired),
		"alg none":             e.keys.AlgNone(operator("admin", "grt_x")),
		"HMAC with public key": e.keys.HMACWithPublicKey(t, operator("admin", "grt_x")),
	} {
		_, err := anon.ListPolicies(bearer(ctx(t), bad), &policyv1.ListPoliciesRequest{})
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: %v, want Unauthenticated", name, err)
		}
	}

	// Revoking the login (its grant) ends it, cached or not.
	e.revocations.revokeGrant("grt_admin")
	if _, err := anon.ListPolicies(bearer(ctx(t), admin), &policyv1.ListPoliciesRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("revoked admin token: %v, want Unauthenticated", err)
	}
	// A revocation set that is not current vouches for nobody.
	e.revocations.notReady.Store(true)
	if _, err := anon.ListPolicies(bearer(ctx(t), auditor), &policyv1.ListPoliciesRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("auditor token with a stale revocation set: %v, want Unauthenticated", err)
	}
}
