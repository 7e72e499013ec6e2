package dev

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func TestRouterRoutes(t *testing.T) {
	backend := func(name string) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// The edge replaces client-sent forwarding headers.
			if strings.Contains(r.Header.Get("X-Forwarded-For"), "10.6.6.6") {
				w.WriteHeader(http.StatusTeapot)
			}
			_, _ = io.WriteString(w, name+" "+r.URL.Path)
		}))
	}
	reg, tok := backend("registration"), backend("token")
	defer reg.Close()
	defer tok.Close()
	ready := errors.New("token not ready")
	router := NewRouter(mustURL(reg.URL), mustURL(tok.URL), func(context.Context) error { return ready })
	edge := httptest.NewServer(router)
	defer edge.Close()

	cases := map[string]string{
		"/oauth2/register":                        "registration /oauth2/register",
		"/oauth2/register/abc":                    "registration /oauth2/register/abc",
		"/oauth2/registered":                      "token /oauth2/registered",
		"/oauth2/token":                           "token /oauth2/token",
		"/.well-known/oauth-authorization-server": "token /.well-known/oauth-authorization-server",
		"/oauth2/authorize":                       "token /oauth2/authorize",
	}
	for path, want := range cases {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, edge.URL+path, nil)
		req.Header.Set("X-Forwarded-For", "10.6.6.6")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != want {
			t.Errorf("%s -> %d %q, want %q", path, resp.StatusCode, body, want)
		}
	}

	readyz := func() int {
		resp, err := http.Get(edge.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := readyz(); c != http.StatusServiceUnavailable {
		t.Errorf("/readyz with a service not ready = %d", c)
	}
	ready = nil
	if c := readyz(); c != http.StatusOK {
		t.Errorf("/readyz when ready = %d", c)
	}

	// A backend that is down is a 502 with an OAuth error body, not a hang.
	down, _ := url.Parse("http://127.0.0.1:1")
	broken := httptest.NewServer(NewRouter(down, down, func(context.Context) error { return nil }))
	defer broken.Close()
	resp, err := http.Get(broken.URL + "/oauth2/token")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "temporarily_unavailable") {
		t.Errorf("backend down -> %d %s", resp.StatusCode, body)
	}
}
