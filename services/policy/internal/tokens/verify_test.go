package tokens_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	"github.com/mcpid/mcpid/lib/jose"
	"github.com/mcpid/mcpid/lib/principal"
	"github.com/mcpid/mcpid/services/policy/internal/testutil"
	"github.com/mcpid/mcpid/services/policy/internal/tokens"
)

const res = "https://crm.example.com/mcp"

type clock struct{ t atomic.Pointer[time.Time] }

func newClock() *clock {
	c := &clock{}
	now := time.Now()
	c.t.Store(&now)
	return c
}

func (c *clock) Now() time.Time { return *c.t.Load() }
func (c *clock) Add(d time.Duration) {
	n := c.Now().Add(d)
	c.t.Store(&n)
}

func newVerifier(t *testing.T, keys jose.KeySource, now func() time.Time) *tokens.Verifier {
	t.Helper()
	v, err := tokens.NewVerifier(tokens.Config{Keys: keys, Issuer: testutil.Issuer, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestVerifyAccepts(t *testing.T) {
	k := testutil.NewKeys(t)
	v := newVerifier(t, k.Set, nil)
	c := testutil.Claims(res, "crm:read crm:write crm:read")
	c["groups"] = []string{"sales", "emea"}
	tok, f := v.Verify(context.Background(), k.Sign(t, c), res)
	if f != nil {
		t.Fatalf("Verify: %+v", f)
	}
	if strings.Join(tok.Scopes, " ") != "crm:read crm:write" {
		t.Errorf("scopes %v, want sorted without repeats", tok.Scopes)
	}
	if strings.Join(tok.Groups, ",") != "sales,emea" || tok.ClientID != c["client_id"] || tok.Subject != "user-1" || tok.GrantID != "grant-1" {
		t.Errorf("claims %+v", tok)
	}
	if got := tok.Claims.GetFields()["sub"].GetStringValue(); got != "user-1" {
		t.Errorf("claims struct sub = %q", got)
	}
}

// TestVerifyRefuses: every kind of bad token is a denial with the right
// reason and step.
func TestVerifyRefuses(t *testing.T) {
	k := testutil.NewKeys(t)
	other := testutil.NewKeys(t)
	v := newVerifier(t, k.Set, nil)
	good := testutil.Claims(res, "crm:read")
	with := func(mut func(map[string]any)) map[string]any {
		c := testutil.Claims(res, "crm:read")
		mut(c)
		return c
	}
	valid := k.Sign(t, good)
	invalid := policyv1.DecisionReason_DECISION_REASON_TOKEN_INVALID
	cases := []struct {
		name  string
		token string
		want  policyv1.DecisionReason
	}{
		{"empty", "", invalid},
		{"garbage", "not-a-jwt", invalid},
		{"tampered payload", testutil.Tampered(valid, with(func(c map[string]any) { c["scope"] = "crm:admin" })), invalid},
		{"tampered signature", valid[:len(valid)-4] + "AAAA", invalid},
		{"alg none", k.AlgNone(good), invalid},
		{"HMAC with the public key", k.HMACWithPublicKey(t, good), invalid},
		{"unknown key", other.Sign(t, good), invalid},
		{"forged kid", testutil.WithHeader(t, map[string]any{"alg": "ES256", "typ": "at+jwt", "kid": k.Key.KeyID()}, good), invalid},
		{"embedded jwk", testutil.WithHeader(t, map[string]any{"alg": "ES256", "typ": "at+jwt", "kid": k.Key.KeyID(), "jwk": map[string]any{"kty": "EC"}}, good), invalid},
		{"wrong typ", func() string {
			tok, err := jose.Sign(k.Key, good, "JWT")
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}(), invalid},
		{"wrong issuer", k.Sign(t, with(func(c map[string]any) { c["iss"] = "https://evil.example" })), invalid},
		{"no sub", k.Sign(t, with(func(c map[string]any) { delete(c, "sub") })), invalid},
		{"no client_id", k.Sign(t, with(func(c map[string]any) { delete(c, "client_id") })), invalid},
		{"no jti", k.Sign(t, with(func(c map[string]any) { delete(c, "jti") })), invalid},
		{"no iat", k.Sign(t, with(func(c map[string]any) { delete(c, "iat") })), invalid},
		{"no exp", k.Sign(t, with(func(c map[string]any) { delete(c, "exp") })), invalid},
		{"scope not a string", k.Sign(t, with(func(c map[string]any) { c["scope"] = []string{"crm:read"} })), invalid},
		{"groups not strings", k.Sign(t, with(func(c map[string]any) { c["groups"] = []any{1, 2} })), invalid},
		{"expired", k.Sign(t, with(func(c map[string]any) {
			c["exp"] = time.Now().Add(-time.Hour).Unix()
			c["iat"] = time.Now().Add(-2 * time.Hour).Unix()
			c["nbf"] = c["iat"]
		})), policyv1.DecisionReason_DECISION_REASON_TOKEN_EXPIRED},
		{"not yet valid", k.Sign(t, with(func(c map[string]any) { c["nbf"] = time.Now().Add(time.Hour).Unix() })), policyv1.DecisionReason_DECISION_REASON_TOKEN_NOT_YET_VALID},
		{"issued in the future", k.Sign(t, with(func(c map[string]any) { c["iat"] = time.Now().Add(time.Hour).Unix() })), policyv1.DecisionReason_DECISION_REASON_TOKEN_NOT_YET_VALID},
		{"wrong audience", k.Sign(t, with(func(c map[string]any) { c["aud"] = "https://other.example.com/mcp" })), policyv1.DecisionReason_DECISION_REASON_AUDIENCE_MISMATCH},
		{"two audiences", k.Sign(t, with(func(c map[string]any) { c["aud"] = []string{res, "https://other.example.com/mcp"} })), policyv1.DecisionReason_DECISION_REASON_AUDIENCE_MISMATCH},
		{"non-canonical audience", k.Sign(t, with(func(c map[string]any) { c["aud"] = "https://CRM.example.com/mcp/" })), policyv1.DecisionReason_DECISION_REASON_AUDIENCE_MISMATCH},
		{"oversized", strings.Repeat("a", 20<<10), invalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tok, f := v.Verify(context.Background(), tc.token, res)
			if f == nil {
				t.Fatalf("accepted: %+v", tok)
			}
			if f.Reason != tc.want {
				t.Errorf("reason %v (%s), want %v", f.Reason, f.Detail, tc.want)
			}
			if strings.Contains(f.Detail, tc.token) && tc.token != "" {
				t.Errorf("detail contains the token")
			}
		})
	}
}

// TestCacheRechecksTimeAndAudience: a cached verification is reused only for
// the same audience and only until the token expires.
func TestCacheRechecksTimeAndAudience(t *testing.T) {
	k := testutil.NewKeys(t)
	clk := newClock()
	v := newVerifier(t, k.Set, clk.Now)
	c := testutil.Claims(res, "crm:read")
	c["exp"] = clk.Now().Add(2 * time.Minute).Unix()
	tok := k.Sign(t, c)
	if _, f := v.Verify(context.Background(), tok, res); f != nil {
		t.Fatal(f.Detail)
	}
	if v.CacheLen() != 1 {
		t.Fatalf("cache holds %d, want 1", v.CacheLen())
	}
	if _, f := v.Verify(context.Background(), tok, res); f != nil {
		t.Fatal(f.Detail)
	}
	if _, f := v.Verify(context.Background(), tok, "https://other.example.com/mcp"); f == nil || f.Reason != policyv1.DecisionReason_DECISION_REASON_AUDIENCE_MISMATCH {
		t.Fatalf("other audience: %+v", f)
	}
	clk.Add(3 * time.Minute) // past exp + skew
	if _, f := v.Verify(context.Background(), tok, res); f == nil || f.Reason != policyv1.DecisionReason_DECISION_REASON_TOKEN_EXPIRED {
		t.Fatalf("after expiry: %+v", f)
	}
}

func TestCacheIsBounded(t *testing.T) {
	k := testutil.NewKeys(t)
	v, err := tokens.NewVerifier(tokens.Config{Keys: k.Set, Issuer: testutil.Issuer, CacheSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	for range 500 {
		if _, f := v.Verify(context.Background(), k.Token(t, res, "crm:read"), res); f != nil {
			t.Fatal(f.Detail)
		}
	}
	if n := v.CacheLen(); n > 64 {
		t.Fatalf("cache holds %d tokens, bound 64", n)
	}
}

func TestUnavailableKeysAreNotReady(t *testing.T) {
	v := newVerifier(t, unavailableKeys{}, nil)
	k := testutil.NewKeys(t)
	_, f := v.Verify(context.Background(), k.Token(t, res, ""), res)
	if f == nil || f.Reason != policyv1.DecisionReason_DECISION_REASON_NOT_READY {
		t.Fatalf("got %+v, want NOT_READY", f)
	}
}

type unavailableKeys struct{}

func (unavailableKeys) LookupKey(context.Context, string) (jose.PublicKey, error) {
	return jose.PublicKey{}, jose.ErrKeySetUnavailable
}

type revokeAll struct{ ready bool }

func (r revokeAll) Ready() bool              { return r.ready }
func (revokeAll) Revoked(*tokens.Token) bool { return true }

func TestCallerVerifier(t *testing.T) {
	k := testutil.NewKeys(t)
	cv, err := tokens.NewCallerVerifier(tokens.Config{Keys: k.Set, Issuer: testutil.Issuer}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := testutil.Claims(principal.PolicyAudience, "")
	c["resource"] = res
	c["sub"] = c["client_id"]
	got, err := cv.Verify(context.Background(), k.Sign(t, c))
	if err != nil {
		t.Fatal(err)
	}
	if got.Resource != res || len(got.Audience) != 1 || got.Audience[0] != principal.PolicyAudience {
		t.Fatalf("claims %+v", got)
	}
	admin := testutil.Claims(principal.AdminAudience, "")
	admin["roles"] = []string{"admin", "bogus"}
	got, err = cv.Verify(context.Background(), k.Sign(t, admin))
	if err != nil || len(got.Roles) != 2 {
		t.Fatalf("admin: %+v, %v", got, err)
	}
	if _, err := cv.Verify(context.Background(), k.AlgNone(c)); err == nil {
		t.Fatal("alg none caller token accepted")
	}
	revoked, err := tokens.NewCallerVerifier(tokens.Config{Keys: k.Set, Issuer: testutil.Issuer}, revokeAll{ready: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := revoked.Verify(context.Background(), k.Sign(t, c)); err == nil {
		t.Fatal("revoked caller token accepted")
	}
}
