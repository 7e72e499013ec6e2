package server_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// stable replaces what differs between runs (origin, random tokens, times)
// with placeholders, so the golden files pin everything else byte for byte.
func stable(e *env, s string) string {
	s = strings.ReplaceAll(s, e.issuer, "ISSUER")
	s = strings.ReplaceAll(s, url.QueryEscape(e.issuer), "ISSUER")
	return s
}

// maskJSON decodes a JSON object and replaces the values of the named
// members by "<name>"; it re-encodes with sorted keys and indentation.
func maskJSON(t *testing.T, body string, members ...string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatalf("not JSON: %q", body)
	}
	for _, k := range members {
		if _, ok := m[k]; ok {
			m[k] = "<" + k + ">"
		}
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b) + "\n"
}

var jwtRe = regexp.MustCompile(`^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$`)

// describeJWT is a token's header and claims with volatile values masked,
// for golden files.
func describeJWT(t *testing.T, e *env, tok string) string {
	t.Helper()
	if !jwtRe.MatchString(tok) {
		t.Fatalf("not a compact JWS: %q", tok)
	}
	h, c := claims(t, tok)
	h["kid"] = "<kid>"
	for _, k := range []string{"jti", "grant_id", "sub"} {
		if _, ok := c[k]; ok {
			c[k] = "<" + k + ">"
		}
	}
	// Times: pin their relations, not their values.
	iat := c["iat"].(float64)
	c["exp"] = "iat+" + itoa(int(c["exp"].(float64)-iat))
	c["nbf"] = "iat+" + itoa(int(c["nbf"].(float64)-iat))
	if at, ok := c["auth_time"].(float64); ok {
		if at > iat || iat-at > 60 {
			t.Errorf("auth_time %v not shortly before iat %v", at, iat)
		}
		c["auth_time"] = "<auth_time>"
	}
	c["iat"] = "<iat>"
	hb, _ := json.MarshalIndent(h, "", "  ")
	cb, _ := json.MarshalIndent(c, "", "  ")
	return stable(e, "header: "+string(hb)+"\nclaims: "+string(cb)+"\n")
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func testGoldenMetadata(t *testing.T, e *env) {
	req, _ := http.NewRequest(http.MethodGet, e.issuer+"/.well-known/oauth-authorization-server", nil)
	r := e.do(req)
	if r.code != http.StatusOK {
		t.Fatalf("metadata: %d %s", r.code, r.body)
	}
	if r.header.Get("Access-Control-Allow-Origin") != "*" || r.header.Get("Cache-Control") != "public, max-age=60" {
		t.Errorf("metadata headers: %v", r.header)
	}
	golden(t, "metadata.json", stable(e, r.body)+"\n")

	// Path-inserted URL for an issuer without a path: not found; the
	// OpenID document does not exist.
	for _, p := range []string{"/.well-known/oauth-authorization-server/tenant", "/.well-known/openid-configuration"} {
		if code, body := e.get(p); code != http.StatusNotFound {
			t.Errorf("GET %s = %d %s, want 404", p, code, body)
		}
	}

	jreq, _ := http.NewRequest(http.MethodGet, e.issuer+"/oauth2/jwks", nil)
	jr := e.do(jreq)
	if jr.code != http.StatusOK || jr.header.Get("Cache-Control") != "public, max-age=300" {
		t.Fatalf("jwks: %d %v %s", jr.code, jr.header, jr.body)
	}
	var jwks struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal([]byte(jr.body), &jwks); err != nil {
		t.Fatal(err)
	}
	for _, k := range jwks.Keys {
		for _, m := range []string{"kid", "x", "y"} {
			k[m] = "<" + m + ">"
		}
	}
	jb, _ := json.MarshalIndent(jwks, "", "  ")
	golden(t, "jwks.json", string(jb)+"\n")
}

func testGoldenTokenResponses(t *testing.T, e *env) {

	// authorization_code with offline_access.
	a := webAuthz("crm:read crm:write offline_access")
	code, _ := e.fullFlow(a, "crm:read", "crm:write", "offline_access")
	r := e.exchange(code, a)
	if r.header.Get("Cache-Control") != "no-store" || r.header.Get("Content-Type") != "application/json" {
		t.Errorf("token response headers: %v", r.header)
	}
	tr := decodeToken(t, r)
	golden(t, "token_authorization_code.json", maskJSON(t, r.body, "access_token", "refresh_token"))
	golden(t, "token_authorization_code_jwt.txt", describeJWT(t, e, tr.AccessToken))

	// refresh_token narrowing the scope.
	r = e.post("/oauth2/token", tokenForm("grant_type", "refresh_token", "refresh_token", tr.RefreshToken, "scope", "crm:read"), clientWeb, secretWeb)
	rt := decodeToken(t, r)
	golden(t, "token_refresh.json", maskJSON(t, r.body, "access_token", "refresh_token"))
	golden(t, "token_refresh_jwt.txt", describeJWT(t, e, rt.AccessToken))

	// client_credentials.
	r = e.post("/oauth2/token", tokenForm("grant_type", "client_credentials", "resource", resCRM, "client_id", clientMachine, "client_secret", secretMachine), "", "")
	cc := decodeToken(t, r)
	golden(t, "token_client_credentials.json", maskJSON(t, r.body, "access_token"))
	golden(t, "token_client_credentials_jwt.txt", describeJWT(t, e, cc.AccessToken))

	// client_credentials for the MCP server's own policy audience.
	r = e.post("/oauth2/token", tokenForm("grant_type", "client_credentials", "resource", "urn:mcpid:policy"), clientMCP, secretMCP)
	pt := decodeToken(t, r)
	golden(t, "token_policy_audience_jwt.txt", describeJWT(t, e, pt.AccessToken))

	// Introspection of an active token, and an error body.
	r = introspect(e, rt.AccessToken)
	golden(t, "introspection_active.json", stable(e, maskJSON(t, r.body, "jti", "grant_id", "sub", "iat", "exp", "nbf", "auth_time")))
	r = e.post("/oauth2/token", tokenForm("grant_type", "authorization_code", "code", "nope", "redirect_uri", webRedirect, "code_verifier", newVerifier()), clientWeb, secretWeb)
	golden(t, "token_error.json", r.body)
}
