// Package testutil mints access tokens for tests: well-formed ones signed
// with keys the test generates, and the malformed and malicious ones the
// verifier must refuse.
package testutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/mcpid/mcpid/lib/jose"
)

// Issuer is the issuer tests use.
const Issuer = "http://127.0.0.1:8080"

// Keys are a signing key and the key set verifying it.
type Keys struct {
	Key *jose.SigningKey
	Set *jose.KeySet
}

// NewKeys generates an ES256 key.
func NewKeys(t testing.TB) *Keys {
	t.Helper()
	k, err := jose.GenerateKey(jose.ES256, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &Keys{Key: k, Set: jose.NewKeySet(k)}
}

// Claims returns the claims of a valid user token for resource, issued now,
// valid for ten minutes.
func Claims(resource, scope string) map[string]any {
	now := time.Now()
	return map[string]any{
		"iss":       Issuer,
		"sub":       "user-1",
		"aud":       resource,
		"client_id": "https://agent.example/client.json",
		"scope":     scope,
		"jti":       "jti-" + randomID(),
		"grant_id":  "grant-1",
		"iat":       now.Unix(),
		"nbf":       now.Unix(),
		"exp":       now.Add(10 * time.Minute).Unix(),
	}
}

// Sign signs claims as an at+jwt.
func (k *Keys) Sign(t testing.TB, claims map[string]any) string {
	t.Helper()
	tok, err := jose.Sign(k.Key, claims, "at+jwt")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// Token signs a valid token for resource with scope.
func (k *Keys) Token(t testing.TB, resource, scope string) string {
	t.Helper()
	return k.Sign(t, Claims(resource, scope))
}

func randomID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func b64(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// Tampered returns tok with its payload replaced by claims, keeping the
// original signature.
func Tampered(tok string, claims map[string]any) string {
	parts := strings.Split(tok, ".")
	return parts[0] + "." + b64(claims) + "." + parts[2]
}

// AlgNone returns an unsigned token naming the key's kid.
func (k *Keys) AlgNone(claims map[string]any) string {
	return b64(map[string]any{"alg": "none", "typ": "at+jwt", "kid": k.Key.KeyID()}) + "." + b64(claims) + "."
}

// HMACWithPublicKey returns the algorithm-confusion attack: an HS256 token
// whose HMAC secret is the verification key's public JWK, which anyone can
// read from the JWKS.
func (k *Keys) HMACWithPublicKey(t testing.TB, claims map[string]any) string {
	t.Helper()
	secret, err := json.Marshal(k.Set)
	if err != nil {
		t.Fatal(err)
	}
	signing := b64(map[string]any{"alg": "HS256", "typ": "at+jwt", "kid": k.Key.KeyID()}) + "." + b64(claims)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(signing))
	return signing + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// WithHeader signs claims with an ES256 key of its own under an arbitrary
// protected header (a forged kid, a wrong typ, an injected jwk ...).
func WithHeader(t testing.TB, header, claims map[string]any) string {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signing := b64(header) + "." + b64(claims)
	sum := sha256.Sum256([]byte(signing))
	r, s, err := ecdsa.Sign(rand.Reader, priv, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig)
}
