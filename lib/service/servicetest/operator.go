package servicetest

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/mcpid/mcpid/lib/admintoken"
	"github.com/mcpid/mcpid/lib/jose"
	"github.com/mcpid/mcpid/lib/principal"
)

// OperatorIssuer stands in for the token service as the issuer of operator
// tokens (`mcpid login`, aud urn:mcpid:admin): it holds a signing key and
// serves its JWKS over loopback HTTP at URL + /oauth2/jwks, so a service
// configured with Issuer = URL verifies the tokens it signs.
type OperatorIssuer struct {
	// URL is the issuer (iss) and the base of its JWKS URL.
	URL string
	key *jose.SigningKey
}

// NewOperatorIssuer starts an OperatorIssuer with a fresh key of alg
// (jose.ES256 or jose.EdDSA), stopped at t's cleanup.
func NewOperatorIssuer(t testing.TB, alg string) *OperatorIssuer {
	t.Helper()
	key, err := jose.GenerateKey(alg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != admintoken.JWKSPath {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(jose.NewKeySet(key))
	}))
	t.Cleanup(srv.Close)
	return &OperatorIssuer{URL: srv.URL, key: key}
}

// Claims returns the claims of a valid operator token of user usr_1
// through the mcpid CLI with one role, valid for five minutes from now;
// jti and grant_id are derived from the role. Edit them for a token that
// must be refused.
func (o *OperatorIssuer) Claims(role string) map[string]any {
	now := time.Now()
	return map[string]any{
		"iss": o.URL, "sub": "usr_1", "aud": principal.AdminAudience, "client_id": "mcpid", "jti": "j-" + role,
		"grant_id": "grt_" + role, "roles": []string{role}, "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
	}
}

// Sign signs claims as an RFC 9068 access token (typ at+jwt) with the
// issuer's key.
func (o *OperatorIssuer) Sign(t testing.TB, claims map[string]any) string {
	t.Helper()
	tok, err := jose.Sign(o.key, claims, jose.AccessTokenType)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// AlgNone is claims as an unsigned token (alg none), which must be refused.
func (o *OperatorIssuer) AlgNone(claims map[string]any) string {
	return b64JSON(map[string]any{"alg": "none", "typ": jose.AccessTokenType}) + "." + b64JSON(claims) + "."
}

// HMACConfusion is claims signed with HS256 keyed with the issuer's public
// JWKS (the algorithm-confusion attack), which must be refused.
func (o *OperatorIssuer) HMACConfusion(t testing.TB, claims map[string]any) string {
	t.Helper()
	pub, err := json.Marshal(jose.NewKeySet(o.key))
	if err != nil {
		t.Fatal(err)
	}
	in := b64JSON(map[string]any{"alg": "HS256", "typ": jose.AccessTokenType}) + "." + b64JSON(claims)
	m := hmac.New(sha256.New, pub)
	m.Write([]byte(in))
	return in + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// Bearer returns ctx carrying tok as the gRPC call's bearer token.
func Bearer(ctx context.Context, tok string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
}

func b64JSON(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}
