package jose

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	gojose "github.com/go-jose/go-jose/v4"
)

func fixedNow() time.Time { return t0 }

func TestSignVerifyRoundTrip(t *testing.T) {
	for _, alg := range []string{ES256, EdDSA} {
		t.Run(alg, func(t *testing.T) {
			k := mustKey(t, alg)
			tok, err := Sign(k, validClaims(t0), "at+jwt")
			if err != nil {
				t.Fatal(err)
			}
			v := newTestVerifier(t, NewKeySet(mustKey(t, ES256), k), fixedNow, nil)
			var got tokenClaims
			hdr, err := v.Verify(t.Context(), tok, &got)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if *hdr != (Header{Algorithm: alg, KeyID: k.KeyID(), Type: "at+jwt"}) {
				t.Fatalf("header %+v", *hdr)
			}
			want := validClaims(t0)
			if got.Scope != want.Scope || got.ClientID != want.ClientID || got.Subject != want.Subject ||
				got.ID != want.ID || *got.Expiry != *want.Expiry || !got.Audience.Contains(want.Audience[0]) {
				t.Fatalf("claims %+v, want %+v", got, want)
			}

			// A map works as the destination too.
			var m map[string]any
			if _, err := v.Verify(t.Context(), tok, &m); err != nil || m["client_id"] != "client-1" || m["aud"] != "https://mcp.example/api" {
				t.Fatalf("map claims %v: %v", m, err)
			}
			// So does nil, when only validity matters.
			if _, err := v.Verify(t.Context(), tok, nil); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestSignRefusesNonObjectClaims(t *testing.T) {
	k := mustKey(t, EdDSA)
	for _, claims := range []any{[]string{"a"}, "s", nil, 3} {
		if _, err := Sign(k, claims, "at+jwt"); !errors.Is(err, ErrMalformed) {
			t.Errorf("Sign(%v) = %v, want ErrMalformed", claims, err)
		}
	}
}

// unsigned returns a hand-made token with alg "none"-style header and the
// given signature part.
func unsigned(t *testing.T, alg, kid, sig string) string {
	return b64JSON(t, map[string]any{"alg": alg, "typ": "at+jwt", "kid": kid}) + "." + b64JSON(t, validClaims(t0)) + "." + sig
}

func TestRefusesAlgNone(t *testing.T) {
	k := mustKey(t, ES256)
	// Even a verifier that allows everything it can must refuse "none".
	v := newTestVerifier(t, NewKeySet(k), fixedNow, func(o *VerifierOptions) {
		o.Algorithms = []string{ES256, EdDSA, RS256, PS256}
	})
	for _, alg := range []string{"none", "None", "NONE", "nOnE"} {
		for _, sig := range []string{"", b64([]byte("junk"))} {
			tok := unsigned(t, alg, k.KeyID(), sig)
			if _, err := v.Verify(t.Context(), tok, nil); !errors.Is(err, ErrAlgNotAllowed) {
				t.Errorf("alg %q sig %q: Verify = %v, want ErrAlgNotAllowed", alg, sig, err)
			}
		}
	}
	if _, err := NewVerifier(NewKeySet(k), VerifierOptions{Algorithms: []string{"none"}}); !errors.Is(err, ErrAlgNotAllowed) {
		t.Fatalf("NewVerifier with none: %v", err)
	}
}

// TestRefusesHMACWithPublicKey is the classic algorithm confusion: the
// attacker signs with HS256 using the verifier's own public key (which is
// published) as the HMAC secret, hoping the verifier feeds that key to HMAC.
func TestRefusesHMACWithPublicKey(t *testing.T) {
	k := mustKey(t, ES256)
	der, err := x509.MarshalPKIXPublicKey(k.priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	jwkJSON, _ := json.Marshal(gojose.JSONWebKey{Key: k.priv.Public(), KeyID: k.KeyID(), Algorithm: ES256, Use: "sig"})
	set := NewKeySet(k)
	jwksJSON, _ := json.Marshal(set)
	secrets := map[string][]byte{"PEM": pemBytes, "DER": der, "JWK": jwkJSON, "JWKS": jwksJSON}

	v := newTestVerifier(t, set, fixedNow, func(o *VerifierOptions) {
		o.Algorithms = []string{ES256, EdDSA, RS256}
	})
	for name, secret := range secrets {
		for _, alg := range []string{"HS256", "HS384", "HS512", "hs256"} {
			input := b64JSON(t, map[string]any{"alg": alg, "typ": "at+jwt", "kid": k.KeyID()}) + "." + b64JSON(t, validClaims(t0))
			mac := hmac.New(sha256.New, secret)
			mac.Write([]byte(input))
			tok := input + "." + b64(mac.Sum(nil))
			if _, err := v.Verify(t.Context(), tok, nil); !errors.Is(err, ErrAlgNotAllowed) {
				t.Errorf("%s secret, alg %s: Verify = %v, want ErrAlgNotAllowed", name, alg, err)
			}
		}
	}
	for _, alg := range []string{"HS256", "HS384", "HS512"} {
		if _, err := NewVerifier(set, VerifierOptions{Algorithms: []string{ES256, alg}}); !errors.Is(err, ErrAlgNotAllowed) {
			t.Errorf("NewVerifier allowing %s: %v, want ErrAlgNotAllowed", alg, err)
		}
	}
}

func TestAlgorithmAllowlist(t *testing.T) {
	es, ed := mustKey(t, ES256), mustKey(t, EdDSA)
	set := NewKeySet(es, ed)
	edTok, _ := Sign(ed, validClaims(t0), "at+jwt")
	esTok, _ := Sign(es, validClaims(t0), "at+jwt")

	onlyES := newTestVerifier(t, set, fixedNow, func(o *VerifierOptions) { o.Algorithms = []string{ES256} })
	if _, err := onlyES.Verify(t.Context(), edTok, nil); !errors.Is(err, ErrAlgNotAllowed) {
		t.Errorf("EdDSA token, ES256-only verifier: %v", err)
	}
	if _, err := onlyES.Verify(t.Context(), esTok, nil); err != nil {
		t.Errorf("ES256 token, ES256-only verifier: %v", err)
	}

	// A header that claims ES256 but names the Ed25519 key must not be
	// checked with that key.
	mismatch := handSign(t, ed, map[string]any{"alg": ES256, "typ": "at+jwt", "kid": ed.KeyID()}, validClaims(t0))
	if _, err := newTestVerifier(t, set, fixedNow, nil).Verify(t.Context(), mismatch, nil); !errors.Is(err, ErrAlgNotAllowed) {
		t.Errorf("alg/key mismatch: %v", err)
	}

	if _, err := NewVerifier(set, VerifierOptions{Algorithms: []string{"ES999"}}); !errors.Is(err, ErrAlgNotAllowed) {
		t.Errorf("unknown alg in allowlist: %v", err)
	}
}

func TestRS256OnlyWhenAllowed(t *testing.T) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	jwks, _ := json.Marshal(map[string]any{"keys": []any{gojose.JSONWebKey{Key: priv.Public(), KeyID: "rsa-1", Algorithm: RS256, Use: "sig"}}})
	set, err := ParseJWKS(jwks)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := gojose.NewSigner(gojose.SigningKey{Algorithm: gojose.RS256, Key: gojose.JSONWebKey{Key: priv, KeyID: "rsa-1"}},
		(&gojose.SignerOptions{}).WithType("at+jwt"))
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(validClaims(t0))
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := jws.CompactSerialize()

	if _, err := newTestVerifier(t, set, fixedNow, nil).Verify(t.Context(), tok, nil); !errors.Is(err, ErrAlgNotAllowed) {
		t.Fatalf("RS256 with default allowlist: %v, want ErrAlgNotAllowed", err)
	}
	withRSA := newTestVerifier(t, set, fixedNow, func(o *VerifierOptions) { o.Algorithms = []string{ES256, RS256} })
	if _, err := withRSA.Verify(t.Context(), tok, nil); err != nil {
		t.Fatalf("RS256 when allowed: %v", err)
	}
}

func TestTypeCheck(t *testing.T) {
	k := mustKey(t, EdDSA)
	v := newTestVerifier(t, NewKeySet(k), fixedNow, nil) // wants at+jwt
	for _, typ := range []string{"at+jwt", "AT+JWT", "application/at+jwt", "Application/At+JWT"} {
		tok, _ := Sign(k, validClaims(t0), typ)
		if _, err := v.Verify(t.Context(), tok, nil); err != nil {
			t.Errorf("typ %q: %v", typ, err)
		}
	}
	for _, typ := range []string{"JWT", "", "jwt", "application/jwt", "at+jwt2", "text/at+jwt", "application/"} {
		tok, _ := Sign(k, validClaims(t0), typ)
		if _, err := v.Verify(t.Context(), tok, nil); !errors.Is(err, ErrWrongType) {
			t.Errorf("typ %q: Verify = %v, want ErrWrongType", typ, err)
		}
	}
	// typ must be a string, not something that prints like one.
	tok := handSign(t, k, map[string]any{"alg": EdDSA, "kid": k.KeyID(), "typ": []string{"at+jwt"}}, validClaims(t0))
	if _, err := v.Verify(t.Context(), tok, nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("typ array: %v", err)
	}
	// A verifier that sets no Type accepts any typ (e.g. client assertions).
	anyType := newTestVerifier(t, NewKeySet(k), fixedNow, func(o *VerifierOptions) { o.Type = "" })
	jwt, _ := Sign(k, validClaims(t0), "JWT")
	if _, err := anyType.Verify(t.Context(), jwt, nil); err != nil {
		t.Errorf("no typ requirement: %v", err)
	}
}

func TestTimeClaims(t *testing.T) {
	k := mustKey(t, ES256)
	date := func(d time.Duration) *NumericDate { return NewNumericDate(t0.Add(d)) }
	cases := []struct {
		name   string
		mutate func(*tokenClaims)
		opts   func(*VerifierOptions)
		want   error
	}{
		{"valid", nil, nil, nil},
		{"expired within skew", func(c *tokenClaims) { c.Expiry = date(-59 * time.Second) }, nil, nil},
		{"expired at skew edge", func(c *tokenClaims) { c.Expiry = date(-60 * time.Second) }, nil, ErrExpired},
		{"expired beyond skew", func(c *tokenClaims) { c.Expiry = date(-10 * time.Minute) }, nil, ErrExpired},
		{"expired, no skew", func(c *tokenClaims) { c.Expiry = date(-time.Second) }, func(o *VerifierOptions) { o.ClockSkew = -1 }, ErrExpired},
		{"expired, larger skew", func(c *tokenClaims) { c.Expiry = date(-4 * time.Minute) }, func(o *VerifierOptions) { o.ClockSkew = 5 * time.Minute }, nil},
		{"no exp", func(c *tokenClaims) { c.Expiry = nil }, nil, ErrExpired},
		{"no exp allowed", func(c *tokenClaims) { c.Expiry = nil }, func(o *VerifierOptions) { o.AllowNoExpiry = true }, nil},
		{"expired though no exp allowed", func(c *tokenClaims) { c.Expiry = date(-time.Hour) }, func(o *VerifierOptions) { o.AllowNoExpiry = true }, ErrExpired},
		{"nbf within skew", func(c *tokenClaims) { c.NotBefore = date(60 * time.Second) }, nil, nil},
		{"nbf beyond skew", func(c *tokenClaims) { c.NotBefore = date(61 * time.Second) }, nil, ErrNotYetValid},
		{"nbf, no skew", func(c *tokenClaims) { c.NotBefore = date(time.Second) }, func(o *VerifierOptions) { o.ClockSkew = -1 }, ErrNotYetValid},
		{"iat in future", func(c *tokenClaims) { c.IssuedAt = date(2 * time.Minute) }, nil, ErrNotYetValid},
		{"iat within skew", func(c *tokenClaims) { c.IssuedAt = date(30 * time.Second) }, nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := validClaims(t0)
			if tc.mutate != nil {
				tc.mutate(&c)
			}
			tok, err := Sign(k, c, "at+jwt")
			if err != nil {
				t.Fatal(err)
			}
			v := newTestVerifier(t, NewKeySet(k), fixedNow, tc.opts)
			if _, err := v.Verify(t.Context(), tok, nil); !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
		})
	}

	// Fractional NumericDates (RFC 7519 allows them) are accepted.
	frac := handSign(t, k, map[string]any{"alg": ES256, "kid": k.KeyID(), "typ": "at+jwt"}, map[string]any{
		"iss": "https://issuer.example", "aud": "https://mcp.example/api", "exp": float64(t0.Unix()) + 300.5,
	})
	if _, err := newTestVerifier(t, NewKeySet(k), fixedNow, nil).Verify(t.Context(), frac, nil); err != nil {
		t.Fatalf("fractional exp: %v", err)
	}
}

func TestIssuerAndAudience(t *testing.T) {
	k := mustKey(t, EdDSA)
	const aud = "https://mcp.example/api"
	cases := []struct {
		name     string
		audClaim any
		iss      string
		want     error
	}{
		{"aud string", aud, "https://issuer.example", nil},
		{"aud array containing", []string{"https://other.example", aud}, "https://issuer.example", nil},
		{"aud array not containing", []string{"https://other.example", "https://mcp.example/api/"}, "https://issuer.example", ErrAudienceMismatch},
		{"aud other string", "https://mcp.example", "https://issuer.example", ErrAudienceMismatch},
		{"aud case differs", "https://MCP.example/api", "https://issuer.example", ErrAudienceMismatch},
		{"aud empty array", []string{}, "https://issuer.example", ErrAudienceMismatch},
		{"aud missing", nil, "https://issuer.example", ErrAudienceMismatch},
		{"aud number", 7, "https://issuer.example", ErrMalformed},
		{"iss differs", aud, "https://evil.example", ErrIssuerMismatch},
		{"iss trailing slash", aud, "https://issuer.example/", ErrIssuerMismatch},
		{"iss missing", aud, "", ErrIssuerMismatch},
	}
	v := newTestVerifier(t, NewKeySet(k), fixedNow, nil)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			claims := map[string]any{"exp": t0.Add(time.Minute).Unix()}
			if tc.audClaim != nil {
				claims["aud"] = tc.audClaim
			}
			if tc.iss != "" {
				claims["iss"] = tc.iss
			}
			tok, err := Sign(k, claims, "at+jwt")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := v.Verify(t.Context(), tok, nil); !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
		})
	}

	// WithAudience checks a different resource without changing v.
	tok, _ := Sign(k, validClaims(t0), "at+jwt")
	if _, err := v.WithAudience("https://other.example").Verify(t.Context(), tok, nil); !errors.Is(err, ErrAudienceMismatch) {
		t.Fatalf("WithAudience(other): %v", err)
	}
	if _, err := v.Verify(t.Context(), tok, nil); err != nil {
		t.Fatalf("original verifier changed by WithAudience: %v", err)
	}
}

func TestRefusesKeyAndCriticalHeaders(t *testing.T) {
	k := mustKey(t, ES256)
	jwk := gojose.JSONWebKey{Key: k.priv.Public(), KeyID: k.KeyID(), Algorithm: ES256}
	v := newTestVerifier(t, NewKeySet(k), fixedNow, nil)
	extra := map[string]any{
		"crit": []string{"exp"},
		"b64":  false,
		"jku":  "https://evil.example/jwks.json",
		"x5u":  "https://evil.example/cert.pem",
		"jwk":  jwk,
		"x5c":  []string{"MIIB"},
	}
	for name, val := range extra {
		h := map[string]any{"alg": ES256, "typ": "at+jwt", "kid": k.KeyID(), name: val}
		tok := handSign(t, k, h, validClaims(t0)) // correctly signed: only the header is wrong
		if _, err := v.Verify(t.Context(), tok, nil); !errors.Is(err, ErrUnsupportedHeader) {
			t.Errorf("header %q: Verify = %v, want ErrUnsupportedHeader", name, err)
		}
	}
	// Sanity: the same hand-signed token without the extra header verifies.
	ok := handSign(t, k, map[string]any{"alg": ES256, "typ": "at+jwt", "kid": k.KeyID()}, validClaims(t0))
	if _, err := v.Verify(t.Context(), ok, nil); err != nil {
		t.Fatalf("hand-signed token: %v", err)
	}
}

func TestKeySelection(t *testing.T) {
	k1, k2, stranger := mustKey(t, ES256), mustKey(t, EdDSA), mustKey(t, ES256)
	two := newTestVerifier(t, NewKeySet(k1, k2), fixedNow, nil)
	one := newTestVerifier(t, NewKeySet(k1), fixedNow, nil)

	tok, _ := Sign(stranger, validClaims(t0), "at+jwt")
	if _, err := two.Verify(t.Context(), tok, nil); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("unknown kid: %v", err)
	}
	// A key signing under another key's kid fails the signature check.
	forged := handSign(t, stranger, map[string]any{"alg": ES256, "typ": "at+jwt", "kid": k1.KeyID()}, validClaims(t0))
	if _, err := two.Verify(t.Context(), forged, nil); !errors.Is(err, ErrInvalidSignature) {
		t.Errorf("forged kid: %v", err)
	}
	// No kid: fine with a one-key set, ambiguous with two.
	noKid := handSign(t, k1, map[string]any{"alg": ES256, "typ": "at+jwt"}, validClaims(t0))
	if _, err := one.Verify(t.Context(), noKid, nil); err != nil {
		t.Errorf("no kid, one key: %v", err)
	}
	if _, err := two.Verify(t.Context(), noKid, nil); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("no kid, two keys: %v", err)
	}
}

func TestTokenSizeLimit(t *testing.T) {
	k := mustKey(t, EdDSA)
	v := newTestVerifier(t, NewKeySet(k), fixedNow, nil)
	c := validClaims(t0)
	c.Scope = strings.Repeat("s", DefaultMaxTokenSize)
	big, _ := Sign(k, c, "at+jwt")
	if _, err := v.Verify(t.Context(), big, nil); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("large token: %v", err)
	}
	// Size is checked before anything else: garbage that is too large is
	// ErrTooLarge, not ErrMalformed.
	if _, err := v.Verify(t.Context(), strings.Repeat("x", DefaultMaxTokenSize+1), nil); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("large garbage: %v", err)
	}
	small, _ := Sign(k, validClaims(t0), "at+jwt")
	tight := newTestVerifier(t, NewKeySet(k), fixedNow, func(o *VerifierOptions) { o.MaxTokenSize = len(small) - 1 })
	if _, err := tight.Verify(t.Context(), small, nil); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("custom limit: %v", err)
	}
}

func TestMalformedAndTampered(t *testing.T) {
	k := mustKey(t, ES256)
	v := newTestVerifier(t, NewKeySet(k), fixedNow, nil)
	good, _ := Sign(k, validClaims(t0), "at+jwt")
	parts := strings.Split(good, ".")
	hdr := func(h string) string { return b64([]byte(h)) + "." + parts[1] + "." + parts[2] }
	otherClaims := validClaims(t0)
	otherClaims.Scope = "crm:write"

	cases := map[string]struct {
		tok  string
		want error
	}{
		"empty":              {"", ErrMalformed},
		"two parts":          {parts[0] + "." + parts[1], ErrMalformed},
		"four parts":         {good + ".x", ErrMalformed},
		"JSON serialization": {`{"payload":"","signatures":[]}`, ErrMalformed},
		"header not base64":  {"!!!." + parts[1] + "." + parts[2], ErrMalformed},
		"header padded":      {parts[0] + "==." + parts[1] + "." + parts[2], ErrMalformed},
		"header not object":  {hdr(`["ES256"]`), ErrMalformed},
		"header trailing":    {hdr(`{"alg":"ES256"}{}`), ErrMalformed},
		"alg not string":     {hdr(`{"alg":256}`), ErrMalformed},
		"alg missing":        {hdr(`{"kid":"x"}`), ErrMalformed},
		"kid not string":     {hdr(`{"alg":"ES256","typ":"at+jwt","kid":1}`), ErrMalformed},
		// Duplicate names: a parser taking the first and one taking the last
		// would disagree on the algorithm.
		"duplicate alg":      {hdr(`{"alg":"none","alg":"ES256","typ":"at+jwt","kid":"` + k.KeyID() + `"}`), ErrMalformed},
		"tampered payload":   {parts[0] + "." + b64JSON(t, otherClaims) + "." + parts[2], ErrInvalidSignature},
		"tampered signature": {parts[0] + "." + parts[1] + "." + b64(make([]byte, 64)), ErrInvalidSignature},
		"short signature":    {parts[0] + "." + parts[1] + "." + parts[2][:20], ErrInvalidSignature},
		"no signature":       {parts[0] + "." + parts[1] + ".", ErrInvalidSignature},
	}
	for name, tc := range cases {
		if _, err := v.Verify(t.Context(), tc.tok, nil); !errors.Is(err, tc.want) {
			t.Errorf("%s: Verify = %v, want %v", name, err, tc.want)
		}
	}

	h := map[string]any{"alg": ES256, "typ": "at+jwt", "kid": k.KeyID()}
	signedBad := map[string]any{
		"payload array":  []string{"a"},
		"payload null":   nil,
		"exp string":     map[string]any{"exp": "tomorrow", "iss": "https://issuer.example", "aud": "https://mcp.example/api"},
		"exp negative":   map[string]any{"exp": -1},
		"exp huge":       map[string]any{"exp": 1e300},
		"iss not string": map[string]any{"exp": t0.Unix() + 60, "iss": 1},
	}
	for name, payload := range signedBad {
		if _, err := v.Verify(t.Context(), handSign(t, k, h, payload), nil); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Verify = %v, want ErrMalformed", name, err)
		}
	}
	// Claims that do not fit the caller's struct are malformed too.
	var dst struct {
		Scope int `json:"scope"`
	}
	if _, err := v.Verify(t.Context(), good, &dst); !errors.Is(err, ErrMalformed) {
		t.Errorf("claims type mismatch: %v", err)
	}
}
