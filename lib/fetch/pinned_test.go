package fetch_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mcpid/mcpid/lib/fetch"
)

// TestPinned: the configured URL's loopback host and port are reachable
// over plain http, every fetch goes to the network (no response cache), and
// nothing else is reachable: another port, another host, a URL that is not
// http(s).
func TestPinned(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.Header().Set("Cache-Control", "max-age=3600")
		_, _ = w.Write([]byte(`{"keys":[]}`))
	}))
	t.Cleanup(srv.Close)
	p, err := fetch.NewPinned(srv.URL + "/oauth2/jwks")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	ctx := context.Background()
	for range 2 {
		body, err := p.Get(ctx, srv.URL+"/oauth2/jwks", "application/json")
		if err != nil {
			t.Fatal(err)
		}
		if string(body) != `{"keys":[]}` {
			t.Fatalf("body %q", body)
		}
	}
	if n := hits.Load(); n != 2 {
		t.Fatalf("%d fetches reached the server, want 2 (the response cache must be bypassed)", n)
	}

	// Another port on the same host: refused before any connection.
	other, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Close() })
	if _, err := p.Get(ctx, "http://"+other.Addr().String()+"/oauth2/jwks", ""); !errors.Is(err, fetch.ErrForbiddenAddress) {
		t.Fatalf("other port: %v, want ErrForbiddenAddress", err)
	}
	if _, err := p.Get(ctx, strings.Replace(srv.URL, "127.0.0.1", "localhost", 1), ""); !errors.Is(err, fetch.ErrHostNotTrusted) {
		t.Fatalf("other host: %v, want ErrHostNotTrusted", err)
	}
	// Only http(s) is ever fetched.
	if _, err := p.Get(ctx, strings.Replace(srv.URL, "http:", "ftp:", 1), ""); err == nil {
		t.Fatal("ftp URL fetched")
	}
}

// TestPinnedHTTPOnlyWhenSaid: a configured https URL does not open plain
// http to the same host.
func TestPinnedHTTPOnlyWhenSaid(t *testing.T) {
	p, err := fetch.NewPinned("https://127.0.0.1:8443/jwks")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	if _, err := p.Get(context.Background(), "http://127.0.0.1:8443/jwks", ""); !errors.Is(err, fetch.ErrSchemeNotAllowed) {
		t.Fatalf("http under an https setting: %v, want ErrSchemeNotAllowed", err)
	}
}

func TestNewPinnedRefuses(t *testing.T) {
	for _, raw := range []string{"ftp://x/jwks", "http:///jwks", "::", "http://127.0.0.1:99999/jwks"} {
		if _, err := fetch.NewPinned(raw); err == nil {
			t.Errorf("NewPinned(%q) succeeded", raw)
		}
	}
}
