package server_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
)

func b64url(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

// hmacSigned is the algorithm-confusion token: HS256 keyed with the
// issuer's public JWKS.
func hmacSigned(claims map[string]any, key []byte) string {
	in := b64url(map[string]any{"alg": "HS256", "typ": "at+jwt"}) + "." + b64url(claims)
	m := hmac.New(sha256.New, key)
	m.Write([]byte(in))
	return in + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}
