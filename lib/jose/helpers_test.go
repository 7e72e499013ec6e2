package jose

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"sync"
	"testing"
	"time"
)

// t0 is the fixed "now" of the tests.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// clock is a settable time source.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: t0} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func mustKey(t testing.TB, alg string) *SigningKey {
	t.Helper()
	k, err := GenerateKey(alg, t0)
	if err != nil {
		t.Fatalf("GenerateKey(%s): %v", alg, err)
	}
	return k
}

// tokenClaims is what the tests sign: registered claims plus two private ones.
type tokenClaims struct {
	RegisteredClaims
	Scope    string `json:"scope,omitempty"`
	ClientID string `json:"client_id,omitempty"`
}

// validClaims returns claims that pass a verifier built by newTestVerifier.
func validClaims(now time.Time) tokenClaims {
	return tokenClaims{
		RegisteredClaims: RegisteredClaims{
			Issuer:    "https://issuer.example",
			Subject:   "user-1",
			Audience:  Audience{"https://mcp.example/api"},
			Expiry:    NewNumericDate(now.Add(5 * time.Minute)),
			NotBefore: NewNumericDate(now),
			IssuedAt:  NewNumericDate(now),
			ID:        "jti-1",
		},
		Scope:    "crm:read",
		ClientID: "client-1",
	}
}

func newTestVerifier(t testing.TB, keys KeySource, now func() time.Time, mutate func(*VerifierOptions)) *Verifier {
	t.Helper()
	opts := VerifierOptions{
		Type:     "at+jwt",
		Issuer:   "https://issuer.example",
		Audience: "https://mcp.example/api",
		Now:      now,
	}
	if mutate != nil {
		mutate(&opts)
	}
	v, err := NewVerifier(keys, opts)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	return v
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func b64JSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b64(b)
}

// handSign builds a compact JWS from an arbitrary header and payload, signed
// correctly with k's private key, bypassing go-jose entirely. Tests use it to
// prove a refusal is due to the header, not to a bad signature.
func handSign(t testing.TB, k *SigningKey, header map[string]any, payload any) string {
	t.Helper()
	input := b64JSON(t, header) + "." + b64JSON(t, payload)
	var sig []byte
	switch priv := k.priv.(type) {
	case *ecdsa.PrivateKey:
		h := sha256.Sum256([]byte(input))
		r, s, err := ecdsa.Sign(rand.Reader, priv, h[:])
		if err != nil {
			t.Fatal(err)
		}
		sig = make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
	case ed25519.PrivateKey:
		sig = ed25519.Sign(priv, []byte(input))
	default:
		t.Fatalf("handSign: unsupported key %T", k.priv)
	}
	return input + "." + b64(sig)
}
