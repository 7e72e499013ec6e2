package metadata_test

import (
	"testing"
	"unicode/utf8"

	"github.com/mcpid/mcpid/services/registration/internal/metadata"
)

// seeds are RFC 7591 bodies, good and hostile; `go test` runs them as the
// fuzz target's corpus, `go test -fuzz FuzzParseRegistration` explores
// from them.
var seeds = []string{
	`{"redirect_uris":["https://app.example.com/cb"],"client_name":"App"}`,
	`{"redirect_uris":["http://127.0.0.1:3000/cb"],"token_endpoint_auth_method":"none","grant_types":["authorization_code","refresh_token"],"response_types":["code"]}`,
	`{"redirect_uris":["com.example.app:/cb"],"application_type":"native","scope":"read write"}`,
	`{"grant_types":["client_credentials"],"token_endpoint_auth_method":"client_secret_post"}`,
	`{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"private_key_jwt","jwks":{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}}`,
	`{"redirect_uris":["https://a.example/cb#x","javascript:alert(1)"]}`,
	`{"redirect_uris":["https://*.example.com/cb"],"scope":"mcpid:admin"}`,
	`{"redirect_uris":["http://127.0.0.1/cb"],"application_type":"web"}`,
	`{"client_name":"\u0000\u202e","contacts":["a@b"],"logo_uri":"http://x"}`,
	`{"redirect_uris":null,"grant_types":[],"jwks":{"keys":[{"kty":"oct","k":"AAAA"}]}}`,
	`{"unknown":{"deep":[1,2,3]},"redirect_uris":["https://a.example/cb"]}`,
	`[]`, `null`, `{}`, `{"redirect_uris":"x"}`,
}

func FuzzParseRegistration(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	p := metadata.Policy{DefaultAuthMethod: metadata.AuthClientSecretBasic}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := metadata.ParseRegistrationJSON(body)
		if err != nil {
			return
		}
		in, err := metadata.FromRegistration(r)
		if err != nil {
			return
		}
		m, err := metadata.Validate(in, p)
		if err != nil {
			return
		}
		checkInvariants(t, m)
		// Validation is idempotent: stored metadata validates to itself.
		again, err := metadata.Validate(m.Input(), p)
		if err != nil {
			t.Fatalf("normalized metadata no longer validates: %v\n%+v", err, m)
		}
		if !again.Equal(m) {
			t.Fatalf("normalization not stable:\n%+v\n%+v", m, again)
		}
	})
}

func FuzzParseCIMD(f *testing.F) {
	const id = "https://agent.example.com/client.json"
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Add([]byte(`{"client_id":"` + id + `","client_name":"A","redirect_uris":["http://127.0.0.1/cb"]}`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		m, err := metadata.ParseCIMD(id, doc, metadata.Policy{})
		if err != nil {
			return
		}
		checkInvariants(t, m)
		if m.ClientName == "" || len(m.RedirectURIs) == 0 || m.UsesSecret() {
			t.Fatalf("CIMD rules broken: %+v", m)
		}
	})
}

func checkInvariants(t *testing.T, m *metadata.Metadata) {
	t.Helper()
	if len(m.RedirectURIs) > metadata.MaxRedirectURIs || utf8.RuneCountInString(m.ClientName) > metadata.MaxNameLen ||
		len(m.Contacts) > metadata.MaxContacts || len(m.Scope) > metadata.MaxScopeLen || len(m.JWKS) > metadata.MaxJWKSBytes {
		t.Fatalf("limits broken: %+v", m)
	}
	if m.ApplicationType != metadata.AppWeb && m.ApplicationType != metadata.AppNative {
		t.Fatalf("application_type %q", m.ApplicationType)
	}
	if m.HasGrant(metadata.GrantAuthorizationCode) && len(m.RedirectURIs) == 0 {
		t.Fatal("authorization_code without redirect URIs")
	}
	if m.HasGrant(metadata.GrantClientCredentials) && !m.Confidential() {
		t.Fatal("client_credentials on a public client")
	}
}
