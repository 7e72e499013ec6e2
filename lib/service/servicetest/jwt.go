package servicetest

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
)

// JWTClaims returns a JWT's payload claims without verifying it: tests
// read what a token carries after the code under test has verified it.
func JWTClaims(t testing.TB, jwt string) map[string]any {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", jwt)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}
