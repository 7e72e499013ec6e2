package jose

import (
	"bytes"
	"encoding/json"
	"fmt"

	gojose "github.com/go-jose/go-jose/v4"
)

// Sign serializes claims as JSON and signs them with key, returning a compact
// JWS whose protected header holds "alg", "kid" and, unless typ is empty,
// "typ" (for example "at+jwt" for RFC 9068 access tokens). claims must
// marshal to a JSON object.
func Sign(key *SigningKey, claims any, typ string) (string, error) {
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("jose: marshalling claims: %w", err)
	}
	if !isJSONObject(payload) {
		return "", fmt.Errorf("%w: claims must be a JSON object", ErrMalformed)
	}
	signer, err := key.signer(typ)
	if err != nil {
		return "", err
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("jose: signing with %s: %w", key.kid, err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		return "", fmt.Errorf("jose: serializing JWS: %w", err)
	}
	return out, nil
}

// signer returns the cached go-jose signer for typ, building it on first use.
func (k *SigningKey) signer(typ string) (gojose.Signer, error) {
	if s, ok := k.signers.Load(typ); ok {
		return s.(gojose.Signer), nil
	}
	opts := &gojose.SignerOptions{}
	if typ != "" {
		opts.WithType(gojose.ContentType(typ))
	}
	s, err := gojose.NewSigner(gojose.SigningKey{
		Algorithm: gojose.SignatureAlgorithm(k.alg),
		// A JSONWebKey with a KeyID makes go-jose put "kid" in the header.
		Key: gojose.JSONWebKey{Key: k.priv, KeyID: k.kid, Algorithm: k.alg},
	}, opts)
	if err != nil {
		return nil, fmt.Errorf("jose: signer for %s: %w", k.kid, err)
	}
	actual, _ := k.signers.LoadOrStore(typ, s)
	return actual.(gojose.Signer), nil
}

func isJSONObject(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && b[0] == '{'
}
