package metadata_test

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/mcpid/mcpid/services/registration/internal/metadata"
)

var dcr = metadata.Policy{DefaultAuthMethod: metadata.AuthClientSecretBasic}

func mustValidate(t *testing.T, in metadata.Input, p metadata.Policy) *metadata.Metadata {
	t.Helper()
	m, err := metadata.Validate(in, p)
	if err != nil {
		t.Fatalf("Validate(%+v): %v", in, err)
	}
	return m
}

func wantKind(t *testing.T, in metadata.Input, p metadata.Policy, kind metadata.Kind, field string) {
	t.Helper()
	_, err := metadata.Validate(in, p)
	var e *metadata.Error
	if !errors.As(err, &e) || e.Kind != kind || e.Field != field {
		t.Fatalf("Validate(%+v) = %v, want kind %d on %s", in, err, kind, field)
	}
}

func TestDefaults(t *testing.T) {
	m := mustValidate(t, metadata.Input{RedirectURIs: []string{"https://app.example.com/cb"}}, dcr)
	if m.TokenEndpointAuthMethod != "client_secret_basic" || !slices.Equal(m.GrantTypes, []string{"authorization_code"}) ||
		m.ApplicationType != "web" || !slices.Equal(m.ResponseTypes(), []string{"code"}) {
		t.Fatalf("defaults: %+v", m)
	}
	// Grant types are normalized to one order.
	m = mustValidate(t, metadata.Input{RedirectURIs: []string{"https://a.example/cb"}, GrantTypes: []string{"refresh_token", "authorization_code"}}, dcr)
	if !slices.Equal(m.GrantTypes, []string{"authorization_code", "refresh_token"}) {
		t.Fatalf("grant order: %v", m.GrantTypes)
	}
	// Operator API: the method is required.
	wantKind(t, metadata.Input{RedirectURIs: []string{"https://a.example/cb"}}, metadata.Policy{}, metadata.KindClientMetadata, "token_endpoint_auth_method")
}

func TestRedirectURIRules(t *testing.T) {
	ok := map[string]string{ // URI → inferred application_type
		"https://app.example.com/callback":           "web",
		"https://app.example.com:8443/cb?x=1":        "web",
		"http://127.0.0.1/callback":                  "native",
		"http://127.0.0.1:51004/callback":            "native",
		"http://[::1]:8080/cb":                       "native",
		"http://localhost:3000/cb":                   "native",
		"com.example.app:/oauth2redirect":            "native",
		"io.github.agent-x://cb":                     "native",
		"https://127.0.0.1/cb":                       "native",
		"https://xn--bcher-kva.example/callback/...": "web",
	}
	for uri, app := range ok {
		m := mustValidate(t, metadata.Input{RedirectURIs: []string{uri}, TokenEndpointAuthMethod: "none"}, dcr)
		if m.ApplicationType != app {
			t.Errorf("%s: application_type %s, want %s", uri, m.ApplicationType, app)
		}
	}
	bad := []string{
		"", "/relative/cb", "https://app.example.com/cb#frag", "https://app.example.com/cb#",
		"https://user:pw@app.example.com/cb", "https://user@app.example.com/cb",
		"https://*.example.com/cb", "https://app.example.com/*",
		"http://app.example.com/cb", "http://10.0.0.1/cb", "http://127.0.0.2/cb", "http://localhost.evil.com/cb",
		"myapp:/cb", "javascript:alert(1)", "data:text/html,x", "file:///etc/passwd",
		"com.Example.app:/cb", "com..example:/cb", "-com.example:/cb",
		"https:///nohost", "https://app.example.com/c b", "https://app.example.com/\x00",
		"https://" + strings.Repeat("a", 2048) + ".example/",
	}
	for _, uri := range bad {
		wantKind(t, metadata.Input{RedirectURIs: []string{uri}, TokenEndpointAuthMethod: "none"}, dcr, metadata.KindRedirectURI, "redirect_uris")
	}
	// Duplicates, too many.
	wantKind(t, metadata.Input{RedirectURIs: []string{"https://a.example/cb", "https://a.example/cb"}}, dcr, metadata.KindRedirectURI, "redirect_uris")
	many := make([]string, 21)
	for i := range many {
		many[i] = "https://a.example/cb" + strings.Repeat("x", i)
	}
	wantKind(t, metadata.Input{RedirectURIs: many}, dcr, metadata.KindRedirectURI, "redirect_uris")
	// authorization_code without redirect URIs.
	wantKind(t, metadata.Input{}, dcr, metadata.KindRedirectURI, "redirect_uris")
}

func TestApplicationType(t *testing.T) {
	// A web client cannot use loopback http or private-use schemes.
	for _, uri := range []string{"http://127.0.0.1/cb", "com.example.app:/cb"} {
		wantKind(t, metadata.Input{RedirectURIs: []string{uri}, ApplicationType: "web"}, dcr, metadata.KindRedirectURI, "redirect_uris")
	}
	// Mixed https and loopback infers web, and is then refused.
	wantKind(t, metadata.Input{RedirectURIs: []string{"https://a.example/cb", "http://127.0.0.1/cb"}}, dcr, metadata.KindRedirectURI, "redirect_uris")
	// Declared native, it is fine.
	m := mustValidate(t, metadata.Input{RedirectURIs: []string{"https://a.example/cb", "http://127.0.0.1/cb"}, ApplicationType: "native"}, dcr)
	if m.ApplicationType != "native" || m.LocalRedirectURIsOnly() {
		t.Fatalf("%+v local=%v", m, m.LocalRedirectURIsOnly())
	}
	wantKind(t, metadata.Input{RedirectURIs: []string{"https://a.example/cb"}, ApplicationType: "desktop"}, dcr, metadata.KindClientMetadata, "application_type")
	if m := mustValidate(t, metadata.Input{RedirectURIs: []string{"http://127.0.0.1/cb", "com.example.x:/cb"}}, dcr); !m.LocalRedirectURIsOnly() {
		t.Fatal("loopback + private-use is local only")
	}
}

func TestGrantAndResponseTypes(t *testing.T) {
	cb := []string{"https://a.example/cb"}
	wantKind(t, metadata.Input{RedirectURIs: cb, GrantTypes: []string{"implicit"}}, dcr, metadata.KindClientMetadata, "grant_types")
	wantKind(t, metadata.Input{RedirectURIs: cb, GrantTypes: []string{"password"}}, dcr, metadata.KindClientMetadata, "grant_types")
	wantKind(t, metadata.Input{RedirectURIs: cb, GrantTypes: []string{"refresh_token"}}, dcr, metadata.KindClientMetadata, "grant_types")
	wantKind(t, metadata.Input{RedirectURIs: cb, GrantTypes: []string{"authorization_code", "authorization_code"}}, dcr, metadata.KindClientMetadata, "grant_types")
	wantKind(t, metadata.Input{RedirectURIs: cb, ResponseTypes: []string{"token"}}, dcr, metadata.KindClientMetadata, "response_types")
	wantKind(t, metadata.Input{RedirectURIs: cb, ResponseTypes: []string{"code", "code"}}, dcr, metadata.KindClientMetadata, "response_types")
	wantKind(t, metadata.Input{GrantTypes: []string{"client_credentials"}, ResponseTypes: []string{"code"}}, dcr, metadata.KindClientMetadata, "response_types")
	wantKind(t, metadata.Input{GrantTypes: []string{"client_credentials"}, TokenEndpointAuthMethod: "none"}, dcr, metadata.KindClientCredentials, "grant_types")
	m := mustValidate(t, metadata.Input{GrantTypes: []string{"client_credentials"}}, dcr)
	if m.ResponseTypes() != nil || m.ApplicationType != "web" || m.LocalRedirectURIsOnly() {
		t.Fatalf("machine client: %+v", m)
	}
}

func TestAuthMethodsAndKeys(t *testing.T) {
	cb := []string{"https://a.example/cb"}
	wantKind(t, metadata.Input{RedirectURIs: cb, TokenEndpointAuthMethod: "client_secret_jwt"}, dcr, metadata.KindClientMetadata, "token_endpoint_auth_method")
	wantKind(t, metadata.Input{RedirectURIs: cb, TokenEndpointAuthMethod: "private_key_jwt"}, dcr, metadata.KindClientMetadata, "token_endpoint_auth_method")
	jwks := json.RawMessage(`{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","kid":"k1"}]}`)
	m := mustValidate(t, metadata.Input{RedirectURIs: cb, TokenEndpointAuthMethod: "private_key_jwt", JWKS: jwks}, dcr)
	if len(m.JWKS) == 0 {
		t.Fatal("jwks dropped")
	}
	mustValidate(t, metadata.Input{RedirectURIs: cb, TokenEndpointAuthMethod: "private_key_jwt", JWKSURI: "https://a.example/jwks.json"}, dcr)
	wantKind(t, metadata.Input{RedirectURIs: cb, TokenEndpointAuthMethod: "private_key_jwt", JWKSURI: "https://a.example/jwks.json", JWKS: jwks}, dcr, metadata.KindClientMetadata, "jwks")
	wantKind(t, metadata.Input{RedirectURIs: cb, TokenEndpointAuthMethod: "private_key_jwt", JWKSURI: "http://a.example/jwks.json"}, dcr, metadata.KindClientMetadata, "jwks_uri")
	private := json.RawMessage(`{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","d":"jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI"}]}`)
	wantKind(t, metadata.Input{RedirectURIs: cb, TokenEndpointAuthMethod: "private_key_jwt", JWKS: private}, dcr, metadata.KindClientMetadata, "jwks")
	for _, bad := range []string{`[]`, `{"keys":[]}`, `{"keys":{}}`, `{"keys":[{"kty":"oct","kid":"x"}]}`, `"x"`} {
		wantKind(t, metadata.Input{RedirectURIs: cb, TokenEndpointAuthMethod: "private_key_jwt", JWKS: json.RawMessage(bad)}, dcr, metadata.KindClientMetadata, "jwks")
	}
}

func TestDisplayMembersAndScope(t *testing.T) {
	cb := []string{"https://a.example/cb"}
	wantKind(t, metadata.Input{RedirectURIs: cb, ClientName: strings.Repeat("é", 201)}, dcr, metadata.KindClientMetadata, "client_name")
	mustValidate(t, metadata.Input{RedirectURIs: cb, ClientName: strings.Repeat("é", 200)}, dcr)
	wantKind(t, metadata.Input{RedirectURIs: cb, ClientName: "evil\nname"}, dcr, metadata.KindClientMetadata, "client_name")
	wantKind(t, metadata.Input{RedirectURIs: cb, ClientName: "rtl\u202eoverride\u0007"}, dcr, metadata.KindClientMetadata, "client_name")
	for _, f := range []func(*metadata.Input, string){
		func(in *metadata.Input, s string) { in.ClientURI = s },
		func(in *metadata.Input, s string) { in.LogoURI = s },
		func(in *metadata.Input, s string) { in.TOSURI = s },
		func(in *metadata.Input, s string) { in.PolicyURI = s },
	} {
		for _, bad := range []string{"http://a.example/", "javascript:alert(1)", "https://u@a.example/", "https://" + strings.Repeat("a", 2050)} {
			in := metadata.Input{RedirectURIs: cb}
			f(&in, bad)
			if _, err := metadata.Validate(in, dcr); err == nil {
				t.Errorf("accepted %q", bad)
			}
		}
	}
	wantKind(t, metadata.Input{RedirectURIs: cb, Scope: "read mcpid:admin"}, dcr, metadata.KindReservedScope, "scope")
	wantKind(t, metadata.Input{RedirectURIs: cb, Scope: "MCPID:Admin"}, dcr, metadata.KindReservedScope, "scope")
	wantKind(t, metadata.Input{RedirectURIs: cb, Scope: `read "quoted"`}, dcr, metadata.KindClientMetadata, "scope")
	wantKind(t, metadata.Input{RedirectURIs: cb, Scope: strings.Repeat("s ", 1025)}, dcr, metadata.KindClientMetadata, "scope")
	m := mustValidate(t, metadata.Input{RedirectURIs: cb, Scope: " crm:read  crm:write crm:read "}, dcr)
	if m.Scope != "crm:read crm:write" {
		t.Fatalf("scope normalized to %q", m.Scope)
	}
	wantKind(t, metadata.Input{RedirectURIs: cb, Contacts: []string{"Alice <alice@example.com>"}}, dcr, metadata.KindClientMetadata, "contacts")
	wantKind(t, metadata.Input{RedirectURIs: cb, Contacts: make([]string, 11)}, dcr, metadata.KindClientMetadata, "contacts")
	mustValidate(t, metadata.Input{RedirectURIs: cb, Contacts: []string{"alice@example.com"}}, dcr)
}

func TestRedirectHostAllowlist(t *testing.T) {
	hosts, err := metadata.ParseHostPatterns([]string{"app.example.com", "*.corp.example", "127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	p := metadata.Policy{DefaultAuthMethod: "none", RedirectHosts: hosts}
	for _, ok := range []string{"https://app.example.com/cb", "https://x.corp.example/cb", "http://127.0.0.1:9/cb", "http://localhost/cb", "example.corp.tool:/cb"} {
		mustValidate(t, metadata.Input{RedirectURIs: []string{ok}, ApplicationType: "native"}, p)
	}
	for _, bad := range []string{"https://evil.example/cb", "https://corp.example/cb", "https://app.example.com.evil/cb", "http://[::1]/cb", "com.evil.app:/cb"} {
		wantKind(t, metadata.Input{RedirectURIs: []string{bad}, ApplicationType: "native"}, p, metadata.KindRedirectURI, "redirect_uris")
	}
	for _, bad := range []string{"*", "*.com", "a b", "https://x"} {
		if _, err := metadata.ParseHostPatterns([]string{bad}); err == nil {
			t.Errorf("ParseHostPatterns(%q) accepted", bad)
		}
	}
}

func TestCIMDDocument(t *testing.T) {
	const id = "https://agent.example.com/oauth/client.json"
	good := `{"client_id":"` + id + `","client_name":"Agent","redirect_uris":["http://127.0.0.1/cb"],"unknown_member":1}`
	m, err := metadata.ParseCIMD(id, []byte(good), metadata.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	if m.TokenEndpointAuthMethod != "none" || m.ApplicationType != "native" {
		t.Fatalf("CIMD defaults: %+v", m)
	}
	bad := map[string]string{
		"mismatch":      `{"client_id":"https://evil.example/c.json","client_name":"A","redirect_uris":["https://a.example/cb"]}`,
		"no name":       `{"client_id":"` + id + `","redirect_uris":["https://a.example/cb"]}`,
		"no redirect":   `{"client_id":"` + id + `","client_name":"A"}`,
		"secret method": `{"client_id":"` + id + `","client_name":"A","redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"client_secret_post"}`,
		"secret":        `{"client_id":"` + id + `","client_name":"A","redirect_uris":["https://a.example/cb"],"client_secret":"x"}`,
		"array":         `[]`,
		"null":          `null`,
		"not json":      `<html>`,
		"too large":     `{"client_id":"` + id + `","client_name":"` + strings.Repeat("a", 5200) + `","redirect_uris":["https://a.example/cb"]}`,
		"wrong type":    `{"client_id":"` + id + `","client_name":"A","redirect_uris":"https://a.example/cb"}`,
	}
	for name, doc := range bad {
		if _, err := metadata.ParseCIMD(id, []byte(doc), metadata.Policy{}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestChangedFields(t *testing.T) {
	a := mustValidate(t, metadata.Input{RedirectURIs: []string{"https://a.example/cb"}, ClientName: "A"}, dcr)
	b := mustValidate(t, metadata.Input{RedirectURIs: []string{"https://a.example/cb2"}, ClientName: "A", Scope: "x"}, dcr)
	if got := a.ChangedFields(b); !slices.Equal(got, []string{"redirect_uris", "scope"}) {
		t.Fatalf("ChangedFields = %v", got)
	}
	if metadata.RedirectURIsChanged([]string{"x", "y"}, []string{"y", "x"}) || !metadata.RedirectURIsChanged([]string{"x"}, []string{"x", "y"}) {
		t.Fatal("RedirectURIsChanged")
	}
	if !a.Equal(a) || a.Equal(b) {
		t.Fatal("Equal")
	}
}
