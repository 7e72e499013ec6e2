package server_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// TestGoldenJSON pins the exact bytes of the RFC 7591/7592 answers, with
// the random values replaced by placeholders.
func TestGoldenJSON(t *testing.T) {
	e := newEnv(t, nil)
	r := e.do(t, http.MethodPost, "/oauth2/register", "", `{"redirect_uris":["https://app.example.com/cb"],"client_name":"Golden","scope":"crm:read","contacts":["ops@example.com"]}`)
	if r.code != http.StatusCreated {
		t.Fatalf("POST = %d %s", r.code, r.body)
	}
	m := r.json(t)
	id, rat := str(m, "client_id"), str(m, "registration_access_token")
	norm := func(body string) string {
		body = strings.ReplaceAll(body, id, "<client_id>")
		body = strings.ReplaceAll(body, rat, "<rat>")
		if s := str(m, "client_secret"); s != "" {
			body = strings.ReplaceAll(body, s, "<secret>")
		}
		return strings.ReplaceAll(body, strconv.FormatInt(int64(m["client_id_issued_at"].(float64)), 10), "<iat>")
	}
	const post = `{"client_id":"<client_id>","client_secret":"<secret>","client_id_issued_at":<iat>,"client_secret_expires_at":0,` +
		`"registration_access_token":"<rat>","registration_client_uri":"http://127.0.0.1:8080/oauth2/register/<client_id>",` +
		`"redirect_uris":["https://app.example.com/cb"],"token_endpoint_auth_method":"client_secret_basic","grant_types":["authorization_code"],` +
		`"response_types":["code"],"client_name":"Golden","scope":"crm:read","contacts":["ops@example.com"],"application_type":"web"}`
	if got := norm(r.body); got != post {
		t.Fatalf("POST body\n got %s\nwant %s", got, post)
	}
	get := e.do(t, http.MethodGet, "/oauth2/register/"+id, rat, "")
	wantGet := strings.Replace(post, `"client_secret":"<secret>",`, "", 1)
	if got := norm(get.body); get.code != http.StatusOK || got != wantGet {
		t.Fatalf("GET body\n got %s\nwant %s", got, wantGet)
	}
	bad := e.do(t, http.MethodPost, "/oauth2/register", "", `{"redirect_uris":["https://app.example.com/cb#x"]}`)
	const wantBad = `{"error":"invalid_redirect_uri","error_description":"redirect_uris: 'https://app.example.com/cb#x': must not contain a fragment"}` + "\n"
	if bad.body != wantBad {
		t.Fatalf("error body\n got %q\nwant %q", bad.body, wantBad)
	}
	unauth := e.do(t, http.MethodGet, "/oauth2/register/"+id, "wrong", "")
	if unauth.header.Get("WWW-Authenticate") != `Bearer error="invalid_token", error_description="the registration access token is invalid"` ||
		unauth.body != `{"error":"invalid_token","error_description":"the registration access token is invalid"}`+"\n" {
		t.Fatalf("401: %q %q", unauth.header.Get("WWW-Authenticate"), unauth.body)
	}
}
