package admintoken_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpid/mcpid/lib/admintoken"
	"github.com/mcpid/mcpid/lib/jose"
	"github.com/mcpid/mcpid/lib/principal"
	"github.com/mcpid/mcpid/lib/revocationfeed"
)

// issuer serves a real JWKS over loopback HTTP, as the token service does.
type issuer struct {
	url  string
	key  *jose.SigningKey
	hits atomic.Int64
}

func newIssuer(t *testing.T) *issuer {
	t.Helper()
	key, err := jose.GenerateKey(jose.ES256, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	is := &issuer{key: key}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != admintoken.JWKSPath {
			http.NotFound(w, r)
			return
		}
		is.hits.Add(1)
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_ = json.NewEncoder(w).Encode(jose.NewKeySet(key))
	}))
	t.Cleanup(srv.Close)
	is.url = srv.URL
	return is
}

func (is *issuer) claims(now time.Time) map[string]any {
	return map[string]any{
		"iss": is.url, "sub": "usr_1", "aud": principal.AdminAudience, "client_id": "mcpid",
		"jti": "jti-1", "grant_id": "grt_1", "roles": []string{"admin"}, "scope": "",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
	}
}

func sign(t *testing.T, k *jose.SigningKey, claims map[string]any, typ string) string {
	t.Helper()
	tok, err := jose.Sign(k, claims, typ)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func newVerifier(t *testing.T, is *issuer, now func() time.Time) *admintoken.Verifier {
	t.Helper()
	v, err := admintoken.New(admintoken.Config{Issuer: is.url, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

func b64(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

func TestVerifyAcceptsOperatorToken(t *testing.T) {
	is := newIssuer(t)
	v := newVerifier(t, is, nil)
	c := is.claims(time.Now())
	c["roles"] = []string{"auditor", "unknown-role"}
	got, err := v.Verify(t.Context(), sign(t, is.key, c, "at+jwt"))
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if got.Subject != "usr_1" || got.ClientID != "mcpid" || len(got.Audience) != 1 || got.Audience[0] != principal.AdminAudience {
		t.Errorf("claims = %+v", got)
	}
	if len(got.Roles) != 2 || got.Roles[0] != "auditor" {
		t.Errorf("roles = %v, want the token's (the interceptor keeps only known ones)", got.Roles)
	}
	if is.hits.Load() != 1 {
		t.Errorf("JWKS fetched %d times, want 1", is.hits.Load())
	}
	// A second call is answered from the cache: no fetch, same claims.
	if _, err := v.Verify(t.Context(), sign(t, is.key, is.claims(time.Now()), "application/at+jwt")); err != nil {
		t.Fatalf("Verify with typ application/at+jwt: %v", err)
	}
	if is.hits.Load() != 1 {
		t.Errorf("JWKS fetched %d times, want 1 (cached set)", is.hits.Load())
	}
}

func TestVerifyRefuses(t *testing.T) {
	is := newIssuer(t)
	other, err := jose.GenerateKey(jose.EdDSA, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	with := func(k string, val any) map[string]any {
		c := is.claims(now)
		if val == nil {
			delete(c, k)
		} else {
			c[k] = val
		}
		return c
	}
	pub, err := json.Marshal(jose.NewKeySet(is.key))
	if err != nil {
		t.Fatal(err)
	}
	hmacToken := func() string {
		// Algorithm confusion: HS256 keyed with the public JWKS bytes.
		h := b64(map[string]any{"alg": "HS256", "typ": "at+jwt", "kid": is.key.KeyID()})
		p := b64(is.claims(now))
		m := hmac.New(sha256.New, pub)
		m.Write([]byte(h + "." + p))
		return h + "." + p + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
	}
	cases := []struct {
		name  string
		token string
		want  error
	}{
		{"wrong audience", sign(t, is.key, with("aud", "https://mcp.example.com"), "at+jwt"), admintoken.ErrNotAdmin},
		{"policy audience", sign(t, is.key, with("aud", principal.PolicyAudience), "at+jwt"), admintoken.ErrNotAdmin},
		{"two audiences", sign(t, is.key, with("aud", []string{principal.AdminAudience, "https://mcp.example.com"}), "at+jwt"), admintoken.ErrNotAdmin},
		{"audience in other case", sign(t, is.key, with("aud", "URN:mcpid:admin"), "at+jwt"), admintoken.ErrNotAdmin},
		{"expired", sign(t, is.key, with("exp", now.Add(-time.Hour).Unix()), "at+jwt"), jose.ErrExpired},
		{"not yet valid", sign(t, is.key, with("nbf", now.Add(time.Hour).Unix()), "at+jwt"), jose.ErrNotYetValid},
		{"wrong issuer", sign(t, is.key, with("iss", "https://evil.example.com"), "at+jwt"), jose.ErrIssuerMismatch},
		{"wrong typ", sign(t, is.key, is.claims(now), "JWT"), jose.ErrWrongType},
		{"no sub", sign(t, is.key, with("sub", nil), "at+jwt"), admintoken.ErrClaims},
		{"no jti", sign(t, is.key, with("jti", nil), "at+jwt"), admintoken.ErrClaims},
		{"key not in the JWKS", sign(t, other, is.claims(now), "at+jwt"), jose.ErrUnknownKey},
		{"alg none", b64(map[string]any{"alg": "none", "typ": "at+jwt"}) + "." + b64(is.claims(now)) + ".", jose.ErrAlgNotAllowed},
		{"HMAC confusion", hmacToken(), jose.ErrAlgNotAllowed},
		{"not a JWT", "not-a-jwt", jose.ErrMalformed},
	}
	v := newVerifier(t, is, nil)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify(t.Context(), tc.token)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
		})
	}
}

// TestExpiryOfCachedToken: a cached token is still refused once it expires.
func TestExpiryOfCachedToken(t *testing.T) {
	is := newIssuer(t)
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	v := newVerifier(t, is, clock)
	c := is.claims(clock())
	c["exp"] = clock().Add(40 * time.Second).Unix()
	tok := sign(t, is.key, c, "at+jwt")
	if _, err := v.Verify(t.Context(), tok); err != nil {
		t.Fatal(err)
	}
	now.Add(int64(80 * time.Second)) // beyond exp + 30s skew
	if _, err := v.Verify(t.Context(), tok); !errors.Is(err, jose.ErrExpired) {
		t.Fatalf("expired cached token: %v, want ErrExpired", err)
	}
}

// fakeRevocations stands in for the token service's feed, which lib cannot
// run (the services' tests follow the real one).
type fakeRevocations struct {
	ready   atomic.Bool
	revoked atomic.Value // string: a revoked grant id
}

func (f *fakeRevocations) Ready() bool { return f.ready.Load() }
func (f *fakeRevocations) Revoked(t revocationfeed.Token) bool {
	g, _ := f.revoked.Load().(string)
	return g != "" && g == t.GrantID
}

func TestRevocation(t *testing.T) {
	is := newIssuer(t)
	v := newVerifier(t, is, nil)
	tok := sign(t, is.key, is.claims(time.Now()), "at+jwt")
	if _, err := v.Verify(t.Context(), tok); err != nil {
		t.Fatal(err) // cached now
	}
	revs := &fakeRevocations{}
	v.SetRevocations(revs)
	if _, err := v.Verify(t.Context(), tok); !errors.Is(err, admintoken.ErrRevoked) {
		t.Fatalf("revocation set not ready: %v, want ErrRevoked (fail closed)", err)
	}
	revs.ready.Store(true)
	if _, err := v.Verify(t.Context(), tok); err != nil {
		t.Fatalf("ready, not revoked: %v", err)
	}
	revs.revoked.Store("grt_1")
	if _, err := v.Verify(t.Context(), tok); !errors.Is(err, admintoken.ErrRevoked) {
		t.Fatalf("revoked cached token: %v, want ErrRevoked", err)
	}
	fresh := newVerifier(t, is, nil)
	fresh.SetRevocations(revs)
	if _, err := fresh.Verify(t.Context(), tok); !errors.Is(err, admintoken.ErrRevoked) {
		t.Fatalf("revoked token: %v, want ErrRevoked", err)
	}
}

func TestJWKSUnavailable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(srv.Close)
	v, err := admintoken.New(admintoken.Config{Issuer: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	key, err := jose.GenerateKey(jose.ES256, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c := map[string]any{"iss": srv.URL, "sub": "u", "aud": principal.AdminAudience, "jti": "j",
		"iat": time.Now().Unix(), "exp": time.Now().Add(time.Minute).Unix()}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if _, err := v.Verify(ctx, sign(t, key, c, "at+jwt")); err == nil {
		t.Fatal("a token was accepted without a JWKS")
	}
}

func TestNewSettings(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  admintoken.Config
	}{
		{"no issuer", admintoken.Config{}},
		{"bad jwks url", admintoken.Config{Issuer: "http://127.0.0.1:1", JWKSURL: "ftp://x"}},
		{"skew", admintoken.Config{Issuer: "http://127.0.0.1:1", ClockSkew: time.Hour}},
	} {
		if _, err := admintoken.New(tc.cfg); err == nil {
			t.Errorf("%s: New accepted %+v", tc.name, tc.cfg)
		}
	}
}
