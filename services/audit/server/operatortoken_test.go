package server_test

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

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/lib/admintoken"
	"github.com/mcpid/mcpid/lib/jose"
	"github.com/mcpid/mcpid/lib/principal"
	"github.com/mcpid/mcpid/services/audit/server"
)

// TestOperatorTokens: audit accepts an operator token (`mcpid login`,
// aud=urn:mcpid:admin, signed by a key of the issuer's JWKS, fetched over
// loopback HTTP) in place of a bootstrap certificate: an auditor reads but
// may not erase; another audience, an expired token, alg none and HMAC with
// the public key are refused.
func TestOperatorTokens(t *testing.T) {
	key, err := jose.GenerateKey(jose.EdDSA, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != admintoken.JWKSPath {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(jose.NewKeySet(key))
	}))
	t.Cleanup(jwks.Close)
	e := newEnv(t)
	r := e.start(t, func(c *server.Config) { c.Issuer = jwks.URL })
	c := e.client(t, r.srv, nil)

	now := time.Now()
	claims := func(role string) map[string]any {
		return map[string]any{
			"iss": jwks.URL, "sub": "usr_1", "aud": principal.AdminAudience, "client_id": "mcpid", "jti": "j-" + role,
			"grant_id": "grt_" + role, "roles": []string{role}, "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
		}
	}
	sign := func(c map[string]any) string {
		tok, err := jose.Sign(key, c, "at+jwt")
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	call := func(tok string) context.Context {
		return metadata.AppendToOutgoingContext(testCtx(t), "authorization", "Bearer "+tok)
	}
	admin, auditor := sign(claims("admin")), sign(claims("auditor"))
	for name, tok := range map[string]string{"admin": admin, "auditor": auditor} {
		if _, err := c.GetCheckpointKeys(call(tok), &auditv1.GetCheckpointKeysRequest{}); err != nil {
			t.Fatalf("%s token read: %v", name, err)
		}
	}
	_, err = c.ErasePersonalData(call(auditor), &auditv1.ErasePersonalDataRequest{})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("auditor token write: %v, want PermissionDenied", err)
	}
	_, err = c.ErasePersonalData(call(admin), &auditv1.ErasePersonalDataRequest{})
	if status.Code(err) == codes.PermissionDenied || status.Code(err) == codes.Unauthenticated {
		t.Fatalf("admin token write: %v, want past the allowlist", err)
	}

	b64 := func(v any) string { b, _ := json.Marshal(v); return base64.RawURLEncoding.EncodeToString(b) }
	wrongAud := claims("admin")
	wrongAud["aud"] = "https://mcp.example.com"
	expired := claims("admin")
	expired["exp"] = now.Add(-time.Hour).Unix()
	pub, _ := json.Marshal(jose.NewKeySet(key))
	in := b64(map[string]any{"alg": "HS256", "typ": "at+jwt"}) + "." + b64(claims("admin"))
	m := hmac.New(sha256.New, pub)
	m.Write([]byte(in))
	for name, bad := range map[string]string{
		"wrong audience": sign(wrongAud),
		"expired":        sign(expired),
		"alg none":       b64(map[string]any{"alg": "none", "typ": "at+jwt"}) + "." + b64(claims("admin")) + ".",
		"HMAC confusion": in + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil)),
	} {
		if _, err := c.GetCheckpointKeys(call(bad), &auditv1.GetCheckpointKeysRequest{}); status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: %v, want Unauthenticated", name, err)
		}
	}
}
