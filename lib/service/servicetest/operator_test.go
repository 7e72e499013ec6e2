package servicetest_test

import (
	"context"
	"testing"

	"github.com/mcpid/mcpid/lib/admintoken"
	"github.com/mcpid/mcpid/lib/jose"
	"github.com/mcpid/mcpid/lib/service/servicetest"
)

// TestOperatorIssuer: lib/admintoken, fetching the issuer's JWKS over
// loopback HTTP, accepts what Sign signs and refuses the forged tokens.
func TestOperatorIssuer(t *testing.T) {
	for _, alg := range []string{jose.ES256, jose.EdDSA} {
		iss := servicetest.NewOperatorIssuer(t, alg)
		v, err := admintoken.New(admintoken.Config{Issuer: iss.URL, CacheSize: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(v.Close)
		ctx := context.Background()
		c, err := v.Verify(ctx, iss.Sign(t, iss.Claims("auditor")))
		if err != nil {
			t.Fatalf("%s: %v", alg, err)
		}
		if c.Subject != "usr_1" || c.ClientID != "mcpid" || len(c.Roles) != 1 || c.Roles[0] != "auditor" {
			t.Fatalf("%s: claims %+v", alg, c)
		}
		for name, bad := range map[string]string{
			"alg none":       iss.AlgNone(iss.Claims("admin")),
			"HMAC confusion": iss.HMACConfusion(t, iss.Claims("admin")),
		} {
			if _, err := v.Verify(ctx, bad); err == nil {
				t.Errorf("%s: %s accepted", alg, name)
			}
		}
	}
}
