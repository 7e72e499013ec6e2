package clients

import (
	"encoding/base64"
	"errors"
	"testing"

	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
	"github.com/mcpid/mcpid/lib/apierr"
)

func TestMatchRedirectURI(t *testing.T) {
	c := &registrationv1.Client{Metadata: &registrationv1.ClientMetadata{RedirectUris: []string{
		"https://app.example.com/cb", "http://127.0.0.1/cb", "http://localhost/native?x=1", "com.example.app:/oauth",
	}}}
	for uri, want := range map[string]bool{
		"https://app.example.com/cb":       true,
		"https://app.example.com/cb/":      false,
		"https://APP.example.com/cb":       false,
		"https://app.example.com:443/cb":   false,
		"https://app.example.com/cb?x=1":   false,
		"https://app.example.com/cb#f":     false,
		"http://app.example.com/cb":        false,
		"http://127.0.0.1/cb":              true,
		"http://127.0.0.1:51234/cb":        true,
		"http://127.0.0.1:51234/cb/../x":   false,
		"http://127.0.0.1:51234/cb?x=1":    false,
		"http://127.0.0.1:51234/cb#frag":   false,
		"http://user@127.0.0.1:51234/cb":   false,
		"http://127.0.0.2:51234/cb":        false,
		"http://127.0.0.1.evil.example/cb": false,
		"https://127.0.0.1:51234/cb":       false,
		"http://localhost:8080/native?x=1": true,
		"http://localhost:8080/native":     false,
		"http://[::1]:8080/cb":             false,
		"com.example.app:/oauth":           true,
		"com.example.app:/oauth2":          false,
		"":                                 false,
	} {
		if got := MatchRedirectURI(c, uri); got != want {
			t.Errorf("MatchRedirectURI(%q) = %v, want %v", uri, got, want)
		}
	}
}

func TestIsLocalRedirect(t *testing.T) {
	for uri, want := range map[string]bool{
		"http://127.0.0.1:3/cb": true, "http://localhost/cb": true, "http://[::1]/cb": true,
		"com.example:/cb": true, "https://127.0.0.1/cb": false, "https://a.example/cb": false, "http://a.example/cb": false,
	} {
		if got := IsLocalRedirect(uri); got != want {
			t.Errorf("IsLocalRedirect(%q) = %v", uri, got)
		}
	}
}

func oauthCode(err error) string {
	var ae *apierr.Error
	if errors.As(err, &ae) {
		return ae.Reason
	}
	return ""
}

func TestExtract(t *testing.T) {
	basic := func(u, p string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(u+":"+p)) }
	for _, c := range []struct {
		name   string
		in     Presented
		method registrationv1.TokenEndpointAuthMethod
		id     string
		secret string
		err    string
	}{
		{"none", Presented{ClientID: "a"}, registrationv1.TokenEndpointAuthMethod_TOKEN_ENDPOINT_AUTH_METHOD_NONE, "a", "", ""},
		{"basic", Presented{Authorization: basic("a%3Ab", "s%26t")}, registrationv1.TokenEndpointAuthMethod_TOKEN_ENDPOINT_AUTH_METHOD_CLIENT_SECRET_BASIC, "a:b", "s&t", ""},
		{"basic with matching client_id", Presented{Authorization: basic("a", "s"), ClientID: "a"}, registrationv1.TokenEndpointAuthMethod_TOKEN_ENDPOINT_AUTH_METHOD_CLIENT_SECRET_BASIC, "a", "s", ""},
		{"basic with another client_id", Presented{Authorization: basic("a", "s"), ClientID: "b"}, 0, "", "", "invalid_client"},
		{"post", Presented{ClientID: "a", ClientSecret: "s"}, registrationv1.TokenEndpointAuthMethod_TOKEN_ENDPOINT_AUTH_METHOD_CLIENT_SECRET_POST, "a", "s", ""},
		{"post without client_id", Presented{ClientSecret: "s"}, 0, "", "", "invalid_request"},
		{"jwt", Presented{Assertion: "x.y.z", AssertionType: "urn"}, registrationv1.TokenEndpointAuthMethod_TOKEN_ENDPOINT_AUTH_METHOD_PRIVATE_KEY_JWT, "", "", ""},
		{"basic and post", Presented{Authorization: basic("a", "s"), ClientSecret: "s"}, 0, "", "", "invalid_request"},
		{"post and jwt", Presented{ClientID: "a", ClientSecret: "s", Assertion: "x"}, 0, "", "", "invalid_request"},
		{"nothing", Presented{}, 0, "", "", "invalid_client"},
		{"bearer scheme", Presented{Authorization: "Bearer x"}, 0, "", "", "invalid_client"},
		{"bad base64", Presented{Authorization: "Basic !!!"}, 0, "", "", "invalid_client"},
		{"no colon", Presented{Authorization: "Basic " + base64.StdEncoding.EncodeToString([]byte("abc"))}, 0, "", "", "invalid_client"},
	} {
		got, err := Extract(c.in, "https://issuer/oauth2/token")
		if c.err != "" {
			if oauthCode(err) != c.err {
				t.Errorf("%s: error %v, want %s", c.name, err, c.err)
			}
			continue
		}
		if err != nil || got.Method != c.method || got.ClientID != c.id || got.Secret != c.secret {
			t.Errorf("%s: %+v, %v", c.name, got, err)
		}
	}
}
