package server_test

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
	"github.com/mcpid/mcpid/lib/jose"
	"github.com/mcpid/mcpid/services/registration/server"
)

const publisher = "https://publisher.example"

func TestSoftwareStatements(t *testing.T) {
	key := newKey(t, jose.ES256)
	file := filepath.Join(t.TempDir(), "publisher.jwks")
	if err := os.WriteFile(file, []byte(jwksJSON(t, key)), 0o600); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *server.Config) { c.SoftwareStatementIssuers = []string{publisher + "=" + file} })
	ctx := tctx(t)
	sign := func(k *jose.SigningKey, claims map[string]any) string {
		t.Helper()
		s, err := jose.Sign(k, claims, "JWT")
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	status := func(id string) *registrationv1.ClientVerification {
		c, err := e.admin.GetClient(ctx, &registrationv1.GetClientRequest{ClientId: id})
		if err != nil {
			t.Fatal(err)
		}
		return c.GetClient().GetVerification()
	}

	t.Run("a statement that pins the redirect URIs verifies the client; its claims win", func(t *testing.T) {
		st := sign(key, map[string]any{"iss": publisher, "redirect_uris": []string{"https://app.example.com/cb"}, "client_name": "Stated Name", "software_id": "app-1"})
		m := e.register(t, `{"redirect_uris":["https://evil.example/cb"],"client_name":"Plain Name","software_statement":"`+st+`"}`)
		if str(m, "client_name") != "Stated Name" || strs(m, "redirect_uris")[0] != "https://app.example.com/cb" || str(m, "software_statement") != st {
			t.Fatalf("response: %v", m)
		}
		v := status(str(m, "client_id"))
		if v.GetStatus() != verified || v.GetMethod() != registrationv1.VerificationMethod_VERIFICATION_METHOD_SOFTWARE_STATEMENT {
			t.Fatalf("verification: %v", v)
		}
	})

	t.Run("a statement without redirect URIs does not verify", func(t *testing.T) {
		st := sign(key, map[string]any{"iss": publisher, "client_name": "Loose"})
		m := e.register(t, `{"redirect_uris":["https://app.example.com/cb"],"software_statement":"`+st+`"}`)
		if v := status(str(m, "client_id")); v.GetStatus() != unverified {
			t.Fatalf("verification: %v", v)
		}
	})

	t.Run("a verified statement allows client_credentials", func(t *testing.T) {
		st := sign(key, map[string]any{"iss": publisher, "redirect_uris": []string{}, "grant_types": []string{"client_credentials"}, "token_endpoint_auth_method": "client_secret_post"})
		m := e.register(t, `{"software_statement":"`+st+`"}`)
		if strs(m, "grant_types")[0] != "client_credentials" || str(m, "client_secret") == "" {
			t.Fatalf("response: %v", m)
		}
	})

	t.Run("refused statements", func(t *testing.T) {
		stranger := newKey(t, jose.ES256)
		now := time.Now()
		good := sign(key, map[string]any{"iss": publisher, "redirect_uris": []string{"https://app.example.com/cb"}})
		cases := map[string]struct{ statement, want string }{
			"untrusted issuer": {sign(stranger, map[string]any{"iss": "https://stranger.example"}), "unapproved_software_statement"},
			"untrusted key":    {sign(stranger, map[string]any{"iss": publisher}), "unapproved_software_statement"},
			"expired":          {sign(key, map[string]any{"iss": publisher, "exp": now.Add(-time.Hour).Unix()}), "invalid_software_statement"},
			"tampered":         {good[:len(good)-4] + "AAAA", "invalid_software_statement"},
			"not a JWT":        {"hello", "invalid_software_statement"},
			"unsigned":         {unsigned(map[string]any{"iss": publisher}), "invalid_software_statement"},
		}
		for name, c := range cases {
			r := e.do(t, http.MethodPost, "/oauth2/register", "", `{"redirect_uris":["https://app.example.com/cb"],"software_statement":"`+c.statement+`"}`)
			if r.code != http.StatusBadRequest {
				t.Errorf("%s: %d %s", name, r.code, r.body)
				continue
			}
			wantOAuthError(t, r, http.StatusBadRequest, c.want)
		}
	})
}
