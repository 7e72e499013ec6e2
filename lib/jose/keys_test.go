package jose

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	gojose "github.com/go-jose/go-jose/v4"
)

func TestGenerateKeyKidIsThumbprint(t *testing.T) {
	for _, alg := range []string{ES256, EdDSA} {
		t.Run(alg, func(t *testing.T) {
			k := mustKey(t, alg)
			if k.Algorithm() != alg || !k.Created().Equal(t0) {
				t.Fatalf("alg %q created %v, want %q %v", k.Algorithm(), k.Created(), alg, t0)
			}
			// Recompute the RFC 7638 thumbprint from the published JWK alone.
			pub, err := json.Marshal(NewKeySet(k))
			if err != nil {
				t.Fatal(err)
			}
			var doc gojose.JSONWebKeySet
			if err := json.Unmarshal(pub, &doc); err != nil || len(doc.Keys) != 1 {
				t.Fatalf("JWKS %s: %v", pub, err)
			}
			sum, err := doc.Keys[0].Thumbprint(crypto.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			if got := b64(sum); got != k.KeyID() {
				t.Fatalf("kid %q, thumbprint %q", k.KeyID(), got)
			}
			if other := mustKey(t, alg); other.KeyID() == k.KeyID() {
				t.Fatalf("two keys share kid %q", k.KeyID())
			}
		})
	}
}

func TestGenerateKeyRefusesOtherAlgorithms(t *testing.T) {
	for _, alg := range []string{"RS256", "HS256", "none", "ES384", ""} {
		if _, err := GenerateKey(alg, t0); !errors.Is(err, ErrAlgNotAllowed) {
			t.Errorf("GenerateKey(%q) = %v, want ErrAlgNotAllowed", alg, err)
		}
	}
}

func TestPrivateKeyMarshalRoundTrip(t *testing.T) {
	for _, alg := range []string{ES256, EdDSA} {
		t.Run(alg, func(t *testing.T) {
			k := mustKey(t, alg)
			data, err := k.MarshalPrivate()
			if err != nil {
				t.Fatal(err)
			}
			var members map[string]any
			if err := json.Unmarshal(data, &members); err != nil {
				t.Fatal(err)
			}
			for _, m := range []string{"kty", "d", "kid", "alg", "use", "iat"} {
				if _, ok := members[m]; !ok {
					t.Errorf("private JWK lacks %q: %s", m, data)
				}
			}

			back, err := UnmarshalPrivateKey(data)
			if err != nil {
				t.Fatalf("UnmarshalPrivateKey: %v", err)
			}
			if back.KeyID() != k.KeyID() || back.Algorithm() != alg || !back.Created().Equal(k.Created()) {
				t.Fatalf("round trip: kid %q alg %q created %v; want %q %q %v",
					back.KeyID(), back.Algorithm(), back.Created(), k.KeyID(), alg, k.Created())
			}
			// The restored key signs tokens the original's public key verifies.
			tok, err := Sign(back, validClaims(t0), "at+jwt")
			if err != nil {
				t.Fatal(err)
			}
			v := newTestVerifier(t, NewKeySet(k), func() time.Time { return t0 }, nil)
			if _, err := v.Verify(t.Context(), tok, nil); err != nil {
				t.Fatalf("token from restored key: %v", err)
			}
		})
	}
}

func TestUnmarshalPrivateKeyRefuses(t *testing.T) {
	es := mustKey(t, ES256)
	other := mustKey(t, ES256)
	esJSON, _ := es.MarshalPrivate()
	otherJSON, _ := other.MarshalPrivate()

	var mixed, noKid map[string]any
	_ = json.Unmarshal(esJSON, &mixed)
	_ = json.Unmarshal(esJSON, &noKid)
	var o map[string]any
	_ = json.Unmarshal(otherJSON, &o)
	mixed["x"], mixed["y"] = o["x"], o["y"] // public part of another key
	delete(noKid, "kid")

	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)

	cases := map[string]struct {
		data any
		want error
	}{
		"public only":      {NewKeySet(es), ErrMalformed}, // a JWKS is not a key
		"public JWK":       {gojose.JSONWebKey{Key: es.priv.Public(), KeyID: "k", Algorithm: ES256}, ErrMalformed},
		"mismatched x,y":   {mixed, ErrMalformed},
		"no kid":           {noKid, ErrMalformed},
		"P-384":            {gojose.JSONWebKey{Key: p384, KeyID: "k", Algorithm: ES256}, ErrAlgNotAllowed},
		"RSA":              {gojose.JSONWebKey{Key: rsaKey, KeyID: "k", Algorithm: RS256}, ErrMalformed},
		"Ed25519 as ES256": {gojose.JSONWebKey{Key: edPriv, KeyID: "k", Algorithm: ES256}, ErrAlgNotAllowed},
		"encryption key":   {gojose.JSONWebKey{Key: edPriv, KeyID: "k", Algorithm: EdDSA, Use: "enc"}, ErrMalformed},
		"symmetric":        {gojose.JSONWebKey{Key: []byte(strings.Repeat("s", 32)), KeyID: "k", Algorithm: "HS256"}, ErrMalformed},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			data, err := json.Marshal(tc.data)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := UnmarshalPrivateKey(data); !errors.Is(err, tc.want) {
				t.Fatalf("UnmarshalPrivateKey = %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := UnmarshalPrivateKey([]byte("{")); !errors.Is(err, ErrMalformed) {
		t.Fatalf("truncated JSON: %v", err)
	}
}

func TestPublicJWKS(t *testing.T) {
	es, ed := mustKey(t, ES256), mustKey(t, EdDSA)
	data, err := json.Marshal(NewKeySet(es, ed, es))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Keys) != 2 {
		t.Fatalf("JWKS has %d keys, want 2 (duplicate dropped): %s", len(doc.Keys), data)
	}
	want := map[string]string{es.KeyID(): ES256, ed.KeyID(): EdDSA}
	for _, k := range doc.Keys {
		if k["use"] != "sig" || k["alg"] != want[k["kid"].(string)] {
			t.Errorf("key %v: want use sig, alg %q", k, want[k["kid"].(string)])
		}
		for _, private := range []string{"d", "p", "q", "k"} {
			if _, ok := k[private]; ok {
				t.Errorf("public JWKS leaks %q: %s", private, data)
			}
		}
	}

	set, err := ParseJWKS(data)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []*SigningKey{es, ed} {
		pk, ok := set.Lookup(k.KeyID())
		if !ok || pk.Algorithm != k.Algorithm() {
			t.Fatalf("parsed set lookup %s: %v %v", k.KeyID(), pk, ok)
		}
		if !pk.Key.(interface{ Equal(crypto.PublicKey) bool }).Equal(k.priv.Public()) {
			t.Fatalf("parsed key %s differs from original", k.KeyID())
		}
	}
}

func TestParseJWKSSkipsUnusableKeys(t *testing.T) {
	good := mustKey(t, ES256)
	leaked := mustKey(t, EdDSA)
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	rsa2048, _ := rsa.GenerateKey(rand.Reader, 2048)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)

	members := []any{
		gojose.JSONWebKey{Key: good.priv.Public(), KeyID: good.KeyID(), Algorithm: ES256, Use: "sig"},
		gojose.JSONWebKey{Key: []byte(strings.Repeat("k", 32)), KeyID: "oct", Algorithm: "HS256"},
		gojose.JSONWebKey{Key: p256.Public(), KeyID: "enc", Use: "enc"},
		gojose.JSONWebKey{Key: rsa1024.Public(), KeyID: "short-rsa", Algorithm: RS256},
		gojose.JSONWebKey{Key: p256.Public(), KeyID: "wrong-alg", Algorithm: EdDSA},
		gojose.JSONWebKey{Key: p256.Public(), KeyID: "made-up-alg", Algorithm: "ES999"},
		map[string]any{"kty": "XYZ", "kid": "unknown-kty"},
		map[string]any{"kid": "no-kty"},
		gojose.JSONWebKey{Key: rsa2048.Public(), KeyID: "rsa"},
		gojose.JSONWebKey{Key: leaked.priv, KeyID: leaked.KeyID(), Algorithm: EdDSA}, // private parts published by mistake
	}
	data, err := json.Marshal(map[string]any{"keys": members})
	if err != nil {
		t.Fatal(err)
	}
	set, err := ParseJWKS(data)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, k := range set.Keys() {
		ids = append(ids, k.KeyID)
	}
	if got, want := strings.Join(ids, ","), good.KeyID()+",rsa,"+leaked.KeyID(); got != want {
		t.Fatalf("kept keys %s, want %s", got, want)
	}
	pk, _ := set.Lookup(leaked.KeyID())
	if _, ok := pk.Key.(ed25519.PublicKey); !ok {
		t.Fatalf("leaked private key kept as %T, want the public half", pk.Key)
	}
}

func TestParseJWKSMalformed(t *testing.T) {
	k := mustKey(t, ES256)
	one, _ := json.Marshal(gojose.JSONWebKey{Key: k.priv.Public(), KeyID: "dup", Algorithm: ES256})
	many := make([]json.RawMessage, maxJWKSKeys+1)
	for i := range many {
		many[i] = one
	}
	tooMany, _ := json.Marshal(map[string]any{"keys": many})
	cases := map[string]struct {
		data string
		want error
	}{
		"not JSON":      {"{", ErrMalformed},
		"no keys":       {`{"keyz":[]}`, ErrMalformed},
		"keys not list": {`{"keys":{}}`, ErrMalformed},
		"array":         {`[]`, ErrMalformed},
		"duplicate kid": {`{"keys":[` + string(one) + `,` + string(one) + `]}`, ErrMalformed},
		"too many":      {string(tooMany), ErrMalformed},
		"too large":     {`{"keys":[],"x":"` + strings.Repeat("a", maxJWKSBytes) + `"}`, ErrTooLarge},
	}
	for name, tc := range cases {
		if _, err := ParseJWKS([]byte(tc.data)); !errors.Is(err, tc.want) {
			t.Errorf("%s: ParseJWKS = %v, want %v", name, err, tc.want)
		}
	}
	empty, err := ParseJWKS([]byte(`{"keys":[]}`))
	if err != nil || empty.Len() != 0 {
		t.Fatalf("empty set: %v, %d keys", err, empty.Len())
	}
}
