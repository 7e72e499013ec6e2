package edgerouter_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mcpid/mcpid/lib/edgerouter"
)

// backend is a replica that answers "<name> <path> <body>", and 418 when a
// client-sent X-Forwarded-For reached it (the edge must replace it).
func backend(t *testing.T, name string) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.Header.Get("X-Forwarded-For"), "10.6.6.6") {
			w.WriteHeader(http.StatusTeapot)
		}
		b, _ := io.ReadAll(r.Body)
		out := name + " " + r.URL.Path
		if len(b) > 0 {
			out += " " + string(b)
		}
		_, _ = io.WriteString(w, out)
	}))
	t.Cleanup(s.Close)
	return s
}

func hostOf(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }

// downAddr is a loopback address nothing listens on: dials are refused.
func downAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

func newEdge(t *testing.T, reg, tok []string, ready func(context.Context) error) *httptest.Server {
	t.Helper()
	rt, err := edgerouter.New(reg, tok, ready)
	if err != nil {
		t.Fatal(err)
	}
	edge := httptest.NewServer(rt)
	t.Cleanup(edge.Close)
	return edge
}

func do(t *testing.T, method, u, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Forwarded-For", "10.6.6.6")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestRouterRoutes(t *testing.T) {
	reg, tok := backend(t, "registration"), backend(t, "token")
	ready := errors.New("token not ready")
	edge := newEdge(t, []string{hostOf(reg)}, []string{hostOf(tok)}, func(context.Context) error { return ready })

	cases := map[string]string{
		"/oauth2/register":                        "registration /oauth2/register",
		"/oauth2/register/abc":                    "registration /oauth2/register/abc",
		"/oauth2/registered":                      "token /oauth2/registered",
		"/oauth2/token":                           "token /oauth2/token",
		"/.well-known/oauth-authorization-server": "token /.well-known/oauth-authorization-server",
		"/oauth2/authorize":                       "token /oauth2/authorize",
	}
	for path, want := range cases {
		if code, body := do(t, http.MethodGet, edge.URL+path, ""); code != http.StatusOK || body != want {
			t.Errorf("%s -> %d %q, want %q", path, code, body, want)
		}
	}

	if code, _ := do(t, http.MethodGet, edge.URL+"/readyz", ""); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz with a service not ready = %d", code)
	}
	ready = nil
	if code, _ := do(t, http.MethodGet, edge.URL+"/readyz", ""); code != http.StatusOK {
		t.Errorf("/readyz when ready = %d", code)
	}
	if code, body := do(t, http.MethodGet, edge.URL+"/healthz", ""); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}
}

// TestRouterWithoutReadyForwardsProbes: with no readiness function the
// probes are the token service's, like any other path.
func TestRouterWithoutReadyForwardsProbes(t *testing.T) {
	reg, tok := backend(t, "registration"), backend(t, "token")
	edge := newEdge(t, []string{hostOf(reg)}, []string{hostOf(tok)}, nil)
	for _, p := range []string{"/readyz", "/healthz"} {
		if code, body := do(t, http.MethodGet, edge.URL+p, ""); code != http.StatusOK || body != "token "+p {
			t.Errorf("%s -> %d %q", p, code, body)
		}
	}
}

// TestRouterBackendDown: a backend that is down is a 502 with an OAuth
// error body, not a hang; with several replicas, when all are down.
func TestRouterBackendDown(t *testing.T) {
	for name, replicas := range map[string][]string{
		"one replica":  {downAddr(t)},
		"all replicas": {downAddr(t), downAddr(t)},
	} {
		edge := newEdge(t, replicas, replicas, func(context.Context) error { return nil })
		code, body := do(t, http.MethodPost, edge.URL+"/oauth2/token", "grant_type=x")
		if code != http.StatusBadGateway || !strings.Contains(body, "temporarily_unavailable") {
			t.Errorf("%s: backend down -> %d %s", name, code, body)
		}
	}
}

// TestRouterRoundRobin: requests take the replicas in turn.
func TestRouterRoundRobin(t *testing.T) {
	reg := backend(t, "registration")
	a, b := backend(t, "a"), backend(t, "b")
	edge := newEdge(t, []string{hostOf(reg)}, []string{hostOf(a), hostOf(b)}, nil)
	seen := map[string]int{}
	for range 4 {
		code, body := do(t, http.MethodGet, edge.URL+"/oauth2/jwks", "")
		if code != http.StatusOK {
			t.Fatalf("%d %q", code, body)
		}
		seen[strings.Fields(body)[0]]++
	}
	if seen["a"] != 2 || seen["b"] != 2 {
		t.Fatalf("replicas hit %v, want each twice", seen)
	}
}

// TestRouterFailover: a replica that refuses connections is skipped, and a
// POST's body reaches the next replica whole.
func TestRouterFailover(t *testing.T) {
	reg := backend(t, "registration")
	live := backend(t, "live")
	edge := newEdge(t, []string{hostOf(reg)}, []string{downAddr(t), hostOf(live)}, nil)
	for range 4 { // whichever replica round robin starts with
		code, body := do(t, http.MethodPost, edge.URL+"/oauth2/token", "grant_type=client_credentials")
		if code != http.StatusOK || body != "live /oauth2/token grant_type=client_credentials" {
			t.Fatalf("-> %d %q", code, body)
		}
	}
}

// TestRouterFailoverBodyBound: with several replicas the body is buffered,
// so one larger than MaxBody is refused (502) rather than held in memory.
func TestRouterFailoverBodyBound(t *testing.T) {
	reg := backend(t, "registration")
	a, b := backend(t, "a"), backend(t, "b")
	edge := newEdge(t, []string{hostOf(reg)}, []string{hostOf(a), hostOf(b)}, nil)
	code, body := do(t, http.MethodPost, edge.URL+"/oauth2/token", strings.Repeat("x", edgerouter.MaxBody+1))
	if code != http.StatusBadGateway || !strings.Contains(body, "temporarily_unavailable") {
		t.Fatalf("oversized body -> %d %q", code, body)
	}
	if code, _ := do(t, http.MethodPost, edge.URL+"/oauth2/token", strings.Repeat("x", edgerouter.MaxBody)); code != http.StatusOK {
		t.Fatalf("body of MaxBody -> %d", code)
	}
}

func TestNewRefusesNoReplicas(t *testing.T) {
	if _, err := edgerouter.New(nil, []string{"127.0.0.1:1"}, nil); err == nil {
		t.Error("no registration replica accepted")
	}
	if _, err := edgerouter.New([]string{"127.0.0.1:1"}, nil, nil); err == nil {
		t.Error("no token replica accepted")
	}
}
