package fetch_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/mcpid/mcpid/lib/fetch"
)

// Names the test server's certificate is issued for. The certificate has no
// IP SANs, so a successful fetch proves verification used the name.
const (
	hostA = "cimd.example.test"
	hostB = "other.example.test"
)

// fakeResolver answers from a table and records every lookup.
type fakeResolver struct {
	mu    sync.Mutex
	table map[string][]netip.Addr
	calls []string
}

// add maps host to a comma-separated list of addresses.
func (r *fakeResolver) add(host, addrs string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.table == nil {
		r.table = map[string][]netip.Addr{}
	}
	r.table[host] = nil
	for a := range strings.SplitSeq(addrs, ",") {
		r.table[host] = append(r.table[host], netip.MustParseAddr(a))
	}
}

func (r *fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, host)
	if a, ok := r.table[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func (r *fakeResolver) Calls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

// loopbackDialer records every dial and only ever connects to loopback: the
// safety net that keeps a broken fetcher from sending a packet anywhere else.
type loopbackDialer struct {
	mu        sync.Mutex
	calls     []string
	forbidden []string
}

func (d *loopbackDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	d.mu.Lock()
	d.calls = append(d.calls, address)
	ap, err := netip.ParseAddrPort(address)
	if err != nil || !ap.Addr().Unmap().IsLoopback() {
		d.forbidden = append(d.forbidden, address)
		d.mu.Unlock()
		return nil, fmt.Errorf("test dialer: refusing non-loopback %q", address)
	}
	d.mu.Unlock()
	var nd net.Dialer
	return nd.DialContext(ctx, network, address)
}

func (d *loopbackDialer) Forbidden() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.forbidden...)
}

func (d *loopbackDialer) Calls() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.calls...)
}

// fakeClock drives caches and rate limits without sleeping.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// testServer is a real TLS server on 127.0.0.1 with a certificate for hostA
// and hostB only. It records the SNI names clients sent and counts requests.
type testServer struct {
	*httptest.Server
	port  uint16
	hits  atomic.Int64
	mu    sync.Mutex
	names []string
}

func newTLSServer(t *testing.T, h http.HandlerFunc) *testServer {
	t.Helper()
	ts := &testServer{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ts.hits.Add(1)
		h(w, r)
	}))
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{testCert(t, hostA, hostB)},
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			ts.mu.Lock()
			ts.names = append(ts.names, hello.ServerName)
			ts.mu.Unlock()
			return nil, nil
		},
	}
	// The tests provoke TLS failures on purpose; keep them out of the log.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ts.Server = srv
	ts.port = portOf(t, srv.Listener.Addr())
	return ts
}

func (ts *testServer) ServerNames() []string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]string(nil), ts.names...)
}

func (ts *testServer) URL(host, path string) string {
	return "https://" + net.JoinHostPort(host, strconv.Itoa(int(ts.port))) + path
}

func portOf(t *testing.T, a net.Addr) uint16 {
	t.Helper()
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		t.Fatal(err)
	}
	return ap.Port()
}

// testCert returns a self-signed certificate for the given DNS names only.
func testCert(t *testing.T, names ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: names[0]},
		DNSNames:              names,
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// env is a fetcher wired to a loopback test server through a fake resolver.
type env struct {
	f        *fetch.Fetcher
	srv      *testServer
	resolver *fakeResolver
	dialer   *loopbackDialer
	clock    *fakeClock
}

// newEnv starts a TLS server with handler h and a fetcher that trusts
// *.example.test, resolves hostA and hostB to 127.0.0.1 and may reach
// loopback (AllowPrivate). mutate adjusts the config.
func newEnv(t *testing.T, h http.HandlerFunc, mutate func(*fetch.Config)) *env {
	t.Helper()
	e := &env{
		resolver: &fakeResolver{},
		dialer:   &loopbackDialer{},
		clock:    &fakeClock{t: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)},
	}
	e.resolver.add(hostA, "127.0.0.1")
	e.resolver.add(hostB, "127.0.0.1")
	cfg := fetch.Config{
		AllowedHosts: []string{"*.example.test"},
		AllowPrivate: true,
		Timeout:      5 * time.Second,
		Resolver:     e.resolver,
		DialContext:  e.dialer.DialContext,
		Now:          e.clock.Now,
		HostRate:     rate.Inf,
	}
	if h != nil {
		e.srv = newTLSServer(t, h)
		pool := x509.NewCertPool()
		pool.AddCert(e.srv.Certificate())
		cfg.RootCAs = pool
		cfg.AllowedPorts = []uint16{e.srv.port}
	}
	if mutate != nil {
		mutate(&cfg)
	}
	f, err := fetch.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.Close()
		if bad := e.dialer.Forbidden(); len(bad) > 0 {
			t.Errorf("fetcher asked to dial non-loopback addresses: %v", bad)
		}
	})
	e.f = f
	return e
}

func jsonHandler(body string, header ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(body))
	}
}

func TestGetSuccess(t *testing.T) {
	var gotAccept, gotHost string
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		gotAccept, gotHost = r.Header.Get("Accept"), r.Host
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"client_id":"x"}`))
	}, nil)

	url := e.srv.URL(hostA, "/client.json")
	resp, err := e.f.Get(t.Context(), url, "application/json")
	if err != nil {
		t.Fatal(err)
	}
	if string(resp.Body) != `{"client_id":"x"}` || resp.StatusCode != 200 || resp.ContentType != "application/json" {
		t.Errorf("response = %d %q %q", resp.StatusCode, resp.ContentType, resp.Body)
	}
	if resp.URL != url || resp.FromCache || !resp.FetchedAt.Equal(e.clock.Now()) {
		t.Errorf("metadata = %q fromCache=%v fetchedAt=%v", resp.URL, resp.FromCache, resp.FetchedAt)
	}
	if gotAccept != "application/json" || gotHost != net.JoinHostPort(hostA, strconv.Itoa(int(e.srv.port))) {
		t.Errorf("server saw Accept %q Host %q", gotAccept, gotHost)
	}
	// SNI carried the name, and the connection went to the checked IP.
	if names := e.srv.ServerNames(); len(names) != 1 || names[0] != hostA {
		t.Errorf("TLS server names = %q, want [%q]", names, hostA)
	}
	wantDial := "127.0.0.1:" + strconv.Itoa(int(e.srv.port))
	if calls := e.dialer.Calls(); len(calls) != 1 || calls[0] != wantDial {
		t.Errorf("dials = %q, want [%q]", calls, wantDial)
	}
	if calls := e.resolver.Calls(); len(calls) != 1 || calls[0] != hostA {
		t.Errorf("lookups = %q, want [%q]", calls, hostA)
	}
}

// The certificate is checked against the URL's host name, not the IP that
// was dialled: a name the certificate does not cover fails even though the
// IP is the same server.
func TestTLSVerifiedAgainstHostName(t *testing.T) {
	e := newEnv(t, jsonHandler(`{}`), nil)
	e.resolver.add("wrong.example.test", "127.0.0.1")
	_, err := e.f.Get(t.Context(), e.srv.URL("wrong.example.test", "/"), "")
	var hostErr x509.HostnameError
	if !errors.As(err, &hostErr) {
		t.Fatalf("err = %v, want x509.HostnameError", err)
	}
	if e.srv.hits.Load() != 0 {
		t.Errorf("request reached the server despite the bad certificate")
	}

	// And without RootCAs the test CA is not trusted at all.
	e2 := newEnv(t, jsonHandler(`{}`), func(c *fetch.Config) { c.RootCAs = nil })
	_, err = e2.f.Get(t.Context(), e2.srv.URL(hostA, "/"), "")
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Fatalf("err = %v, want x509.UnknownAuthorityError", err)
	}
}

// IP literals are refused before any lookup or connection.
func TestRefusesForbiddenLiterals(t *testing.T) {
	e := newEnv(t, nil, func(c *fetch.Config) {
		c.AllowedHosts = nil
		c.AllowAnyHost = true
		c.AllowPrivate = false
	})
	for _, u := range []string{
		"https://127.0.0.1/",
		"https://127.0.0.2/x",
		"https://[::1]/",
		"https://10.0.0.1/",
		"https://172.16.0.1/",
		"https://192.168.0.1/",
		"https://[fc00::1]/",
		"https://169.254.169.254/latest/meta-data/",
		"https://169.254.1.1/",
		"https://[fe80::1]/",
		"https://[fe80::1%25eth0]/",
		"https://[fd00:ec2::254]/",
		"https://[::ffff:127.0.0.1]/",
		"https://[::ffff:10.0.0.1]/",
		"https://[::ffff:169.254.169.254]/",
		"https://[64:ff9b::a9fe:a9fe]/",
		"https://[2002:a00:1::]/",
		"https://0.0.0.0/",
		"https://[::]/",
		"https://100.64.0.1/",
		"https://100.100.100.200/",
		"https://224.0.0.1/",
		"https://255.255.255.255/",
		"https://192.0.2.1/",
		"https://198.18.0.1/",
		"https://[2001:db8::1]/",
	} {
		for range 2 {
			// Refused while parsing, so never negative-cached: a second
			// try gets the same plain error.
			_, err := e.f.Get(t.Context(), u, "")
			if !errors.Is(err, fetch.ErrForbiddenAddress) || errors.Is(err, fetch.ErrNegativeCached) {
				t.Errorf("Get(%s) = %v, want ErrForbiddenAddress before any network step", u, err)
			}
		}
	}
	if c := e.resolver.Calls(); len(c) != 0 {
		t.Errorf("resolver called: %q", c)
	}
	if c := e.dialer.Calls(); len(c) != 0 {
		t.Errorf("dialer called: %q", c)
	}
}

// A trusted-looking name that resolves to a forbidden address is refused
// after resolution, and the dialer is never called.
func TestRefusesNamesResolvingToForbidden(t *testing.T) {
	cases := map[string]string{
		"private.example.test":   "10.0.0.1",
		"meta.example.test":      "169.254.169.254",
		"loop6.example.test":     "::1",
		"loop4.example.test":     "127.0.0.1",
		"mapped.example.test":    "::ffff:10.0.0.1",
		"mapmeta.example.test":   "::ffff:169.254.169.254",
		"imds6.example.test":     "fd00:ec2::254",
		"nat64.example.test":     "64:ff9b::a00:1",
		"ula.example.test":       "fd12::1",
		"cgnat.example.test":     "100.64.1.1",
		"zero.example.test":      "0.0.0.0",
		"mcast.example.test":     "ff02::1",
		"linklocal.example.test": "fe80::1",
		// One bad record refuses the whole host (these public addresses
		// are never dialled: the test dialer would refuse them anyway).
		"rebind.example.test":  "8.8.8.8,10.0.0.1",
		"rebind6.example.test": "2606:4700:4700::1111,::1",
	}
	e := newEnv(t, nil, func(c *fetch.Config) { c.AllowPrivate = false })
	for host, addrs := range cases {
		e.resolver.add(host, addrs)
	}
	for host := range cases {
		_, err := e.f.Get(t.Context(), "https://"+host+"/doc.json", "")
		if !errors.Is(err, fetch.ErrForbiddenAddress) {
			t.Errorf("%s: err = %v, want ErrForbiddenAddress", host, err)
		}
	}
	if got := len(e.resolver.Calls()); got != len(cases) {
		t.Errorf("resolver calls = %d, want %d (refusal must come after resolution)", got, len(cases))
	}
	if c := e.dialer.Calls(); len(c) != 0 {
		t.Errorf("dialer called: %q", c)
	}
}

// AllowPrivate opens loopback and RFC 1918, never the metadata addresses.
func TestAllowPrivateStillRefusesMetadata(t *testing.T) {
	e := newEnv(t, nil, nil) // AllowPrivate is on in newEnv
	e.resolver.add("imds.example.test", "169.254.169.254")
	e.resolver.add("imds6.example.test", "fd00:ec2::254")
	e.resolver.add("ecs.example.test", "::ffff:169.254.170.2")
	for _, host := range []string{"imds.example.test", "imds6.example.test", "ecs.example.test"} {
		_, err := e.f.Get(t.Context(), "https://"+host+"/latest/meta-data/", "")
		if !errors.Is(err, fetch.ErrForbiddenAddress) {
			t.Errorf("%s: err = %v, want ErrForbiddenAddress", host, err)
		}
	}
	if c := e.dialer.Calls(); len(c) != 0 {
		t.Errorf("dialer called: %q", c)
	}
}

// The trusted-domain policy runs before any DNS lookup.
func TestHostPolicyBeforeResolve(t *testing.T) {
	e := newEnv(t, nil, func(c *fetch.Config) {
		c.AllowedHosts = []string{"*.trusted.test", "exact.test"}
		c.HostPolicy = func(h string) bool { return h == "bypolicy.test" }
	})
	for _, u := range []string{
		"https://evil.test/",
		"https://trusted.test/",             // "*." does not cover the apex
		"https://eviltrusted.test/",         // suffix match is on a label boundary
		"https://a.trusted.test.evil.test/", // nor a prefix of another name
		"https://sub.exact.test/",           // exact means exact
		"https://" + hostA + "/",            // trusted in newEnv's default config, not here
		"https://10.0.0.1/",                 // an IP literal is a host too
	} {
		_, err := e.f.Get(t.Context(), u, "")
		if !errors.Is(err, fetch.ErrHostNotTrusted) {
			t.Errorf("Get(%s) = %v, want ErrHostNotTrusted", u, err)
		}
	}
	if c := e.resolver.Calls(); len(c) != 0 {
		t.Fatalf("resolver called before the policy refused: %q", c)
	}
	// Trusted names do get resolved (and then fail: no such host).
	for _, u := range []string{"https://a.trusted.test/", "https://A.b.Trusted.Test/", "https://exact.test/", "https://bypolicy.test/"} {
		if _, err := e.f.Get(t.Context(), u, ""); errors.Is(err, fetch.ErrHostNotTrusted) {
			t.Errorf("Get(%s) = %v, want it trusted", u, err)
		}
	}
	if got := len(e.resolver.Calls()); got != 4 {
		t.Errorf("resolver calls = %d, want 4", got)
	}
}

func TestURLChecks(t *testing.T) {
	e := newEnv(t, nil, func(c *fetch.Config) { c.AllowAnyHost = true })
	cases := []struct {
		url  string
		want error
	}{
		{"http://" + hostA + "/", fetch.ErrSchemeNotAllowed},
		{"ftp://" + hostA + "/", fetch.ErrSchemeNotAllowed},
		{"file:///etc/passwd", fetch.ErrSchemeNotAllowed},
		{"gopher://" + hostA + "/", fetch.ErrSchemeNotAllowed},
		{"//" + hostA + "/", fetch.ErrInvalidURL},
		{"/relative", fetch.ErrInvalidURL},
		{"https:opaque", fetch.ErrInvalidURL},
		{"https://user:pw@" + hostA + "/", fetch.ErrInvalidURL},
		{"https://user@" + hostA + "/", fetch.ErrInvalidURL},
		{"https://" + hostA + "/#frag", fetch.ErrInvalidURL},
		{"https://" + hostA + ":8443/", fetch.ErrForbiddenAddress},
		{"https://" + hostA + ":0/", fetch.ErrInvalidURL},
		{"https://" + hostA + ":99999/", fetch.ErrInvalidURL},
		{"https:///path", fetch.ErrInvalidURL},
		{"https://2130706433/", fetch.ErrInvalidURL},
		{"https://0x7f000001/", fetch.ErrInvalidURL},
		{"https://127.1/", fetch.ErrInvalidURL},
		{"https://0177.0.0.1/", fetch.ErrInvalidURL},
		{"https://evil.test.2130706433/", fetch.ErrInvalidURL},
		{"https://bücher.example/", fetch.ErrInvalidURL},
		{"https://under_score.example/", fetch.ErrInvalidURL},
		{"https://" + hostA + "./", fetch.ErrInvalidURL},
		{"https://" + strings.Repeat("a", 5000) + ".test/", fetch.ErrInvalidURL},
		{"https://exa%6dple.test%00/", fetch.ErrInvalidURL},
	}
	for _, c := range cases {
		if _, err := e.f.Get(t.Context(), c.url, ""); !errors.Is(err, c.want) {
			t.Errorf("Get(%q) = %v, want %v", c.url, err, c.want)
		}
	}
	if c := e.resolver.Calls(); len(c) != 0 {
		t.Errorf("resolver called: %q", c)
	}
}

func TestNewRequiresPolicy(t *testing.T) {
	if _, err := fetch.New(fetch.Config{}); err == nil {
		t.Error("New accepted a config without a trusted-domain policy")
	}
	for _, c := range []fetch.Config{
		{AllowAnyHost: true, MinTTL: time.Hour, MaxTTL: time.Minute},
		{AllowAnyHost: true, MaxBodyBytes: -1},
		{AllowAnyHost: true, AllowedPorts: []uint16{0}},
		{AllowedHosts: []string{"*"}},
		{AllowedHosts: []string{"exa mple.test"}},
	} {
		if _, err := fetch.New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
}

func TestRedirectRefused(t *testing.T) {
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusFound)
	}, nil)
	_, err := e.f.Get(t.Context(), e.srv.URL(hostA, "/client.json"), "")
	if !errors.Is(err, fetch.ErrRedirect) {
		t.Fatalf("err = %v, want ErrRedirect", err)
	}
	var se *fetch.StatusError
	if !errors.As(err, &se) || se.StatusCode != http.StatusFound {
		t.Errorf("err = %v, want StatusError 302", err)
	}
	if n := e.srv.hits.Load(); n != 1 {
		t.Errorf("server hits = %d, want 1", n)
	}
	for _, c := range e.dialer.Calls() {
		if !strings.HasPrefix(c, "127.0.0.1:") {
			t.Errorf("followed the redirect: dialled %s", c)
		}
	}
}

func TestBadStatus(t *testing.T) {
	for _, code := range []int{404, 500, 304} {
		e := newEnv(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(code) }, nil)
		_, err := e.f.Get(t.Context(), e.srv.URL(hostA, "/"), "")
		var se *fetch.StatusError
		if !errors.As(err, &se) || se.StatusCode != code {
			t.Errorf("%d: err = %v, want StatusError %d", code, err, code)
		}
		want := fetch.ErrBadStatus
		if code/100 == 3 {
			want = fetch.ErrRedirect
		}
		if !errors.Is(err, want) {
			t.Errorf("%d: err = %v, want %v", code, err, want)
		}
	}
}

func TestBodySizeLimit(t *testing.T) {
	const limit = 1024
	body := strings.Repeat("x", limit)
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/exact":
			_, _ = w.Write([]byte(body))
		case "/one-over":
			_, _ = w.Write([]byte(body + "y"))
		case "/declared": // Content-Length says too much: refused before reading
			w.Header().Set("Content-Length", strconv.Itoa(10<<20))
			_, _ = w.Write([]byte(body))
		case "/chunked": // no Content-Length, streams far past the limit
			for i := 0; i < 1024; i++ {
				if _, err := w.Write([]byte(body)); err != nil {
					return
				}
				w.(http.Flusher).Flush()
			}
		}
	}, func(c *fetch.Config) { c.MaxBodyBytes = limit })

	resp, err := e.f.Get(t.Context(), e.srv.URL(hostA, "/exact"), "")
	if err != nil || len(resp.Body) != limit {
		t.Fatalf("exactly the limit: %v", err)
	}
	for _, p := range []string{"/one-over", "/declared", "/chunked"} {
		if _, err := e.f.Get(t.Context(), e.srv.URL(hostA, p), ""); !errors.Is(err, fetch.ErrTooLarge) {
			t.Errorf("%s: err = %v, want ErrTooLarge", p, err)
		}
	}
}

// A server that trickles its body forever is cut off by Timeout, and so is
// one that never sends headers.
func TestNeverEndingBodyTimesOut(t *testing.T) {
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/trickle":
			w.Header().Set("Content-Type", "application/json")
			for i := 0; i < 60000; i++ { // bounded: ~10 min at most, ends with the client
				if _, err := w.Write([]byte(" ")); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
		case "/silent":
			select {
			case <-r.Context().Done():
			case <-time.After(time.Minute):
			}
		}
	}, func(c *fetch.Config) { c.Timeout = 300 * time.Millisecond })

	for _, p := range []string{"/trickle", "/silent"} {
		_, err := e.f.Get(t.Context(), e.srv.URL(hostA, p), "")
		if !errors.Is(err, fetch.ErrTimeout) {
			t.Errorf("%s: err = %v, want ErrTimeout", p, err)
		}
	}
}

func TestRateLimitPerHost(t *testing.T) {
	e := newEnv(t, jsonHandler(`{}`), func(c *fetch.Config) {
		c.HostRate = rate.Every(10 * time.Second)
		c.HostBurst = 2
		c.MaxCacheBytes = -1 // every Get goes to the network
	})
	get := func(host, path string) error {
		_, err := e.f.Get(t.Context(), e.srv.URL(host, path), "")
		return err
	}
	if err := get(hostA, "/1"); err != nil {
		t.Fatal(err)
	}
	if err := get(hostA, "/2"); err != nil {
		t.Fatal(err)
	}
	if err := get(hostA, "/3"); !errors.Is(err, fetch.ErrRateLimited) {
		t.Fatalf("third fetch: err = %v, want ErrRateLimited", err)
	}
	if n := e.srv.hits.Load(); n != 2 {
		t.Errorf("server hits = %d, want 2 (a limited fetch sends nothing)", n)
	}
	// Another host has its own budget.
	if err := get(hostB, "/1"); err != nil {
		t.Errorf("other host: %v", err)
	}
	// The budget refills with time.
	e.clock.Advance(10 * time.Second)
	if err := get(hostA, "/3"); err != nil {
		t.Errorf("after refill: %v", err)
	}
	if err := get(hostA, "/4"); !errors.Is(err, fetch.ErrRateLimited) {
		t.Errorf("after one refill, second fetch: err = %v, want ErrRateLimited", err)
	}
}

func TestNegativeCache(t *testing.T) {
	var fail atomic.Bool
	fail.Store(true)
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		if fail.Load() {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte(`{}`))
	}, func(c *fetch.Config) { c.NegativeTTL = time.Minute })
	url := e.srv.URL(hostA, "/client.json")

	if _, err := e.f.Get(t.Context(), url, ""); !errors.Is(err, fetch.ErrBadStatus) || errors.Is(err, fetch.ErrNegativeCached) {
		t.Fatalf("first: err = %v, want ErrBadStatus, not cached", err)
	}
	fail.Store(false)
	_, err := e.f.Get(t.Context(), url, "")
	if !errors.Is(err, fetch.ErrNegativeCached) || !errors.Is(err, fetch.ErrBadStatus) {
		t.Fatalf("second: err = %v, want ErrNegativeCached wrapping ErrBadStatus", err)
	}
	var se *fetch.StatusError
	if !errors.As(err, &se) || se.StatusCode != 500 {
		t.Errorf("cached error lost its status: %v", err)
	}
	if _, err := e.f.GetFresh(t.Context(), url, ""); !errors.Is(err, fetch.ErrNegativeCached) {
		t.Errorf("GetFresh: err = %v, want ErrNegativeCached", err)
	}
	if n := e.srv.hits.Load(); n != 1 {
		t.Errorf("server hits = %d, want 1", n)
	}
	e.clock.Advance(time.Minute)
	if _, err := e.f.Get(t.Context(), url, ""); err != nil {
		t.Errorf("after NegativeTTL: %v", err)
	}

	// Resolution failures and refused addresses are remembered too.
	e.resolver.add("bad.example.test", "10.0.0.1")
	e.f = mustNew(t, fetch.Config{AllowedHosts: []string{"*.example.test"}, Resolver: e.resolver, DialContext: e.dialer.DialContext, Now: e.clock.Now})
	for range 3 {
		_, _ = e.f.Get(t.Context(), "https://bad.example.test/", "")
		_, _ = e.f.Get(t.Context(), "https://missing.example.test/", "")
	}
	calls := e.resolver.Calls()
	if n := count(calls, "bad.example.test"); n != 1 {
		t.Errorf("lookups of bad.example.test = %d, want 1", n)
	}
	if n := count(calls, "missing.example.test"); n != 1 {
		t.Errorf("lookups of missing.example.test = %d, want 1", n)
	}
}

func mustNew(t *testing.T, cfg fetch.Config) *fetch.Fetcher {
	t.Helper()
	f, err := fetch.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}

func count(xs []string, x string) int {
	n := 0
	for _, v := range xs {
		if v == x {
			n++
		}
	}
	return n
}

func TestCacheHonoursMaxAgeWithinBounds(t *testing.T) {
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/short":
			w.Header().Set("Cache-Control", "max-age=120")
		case "/zero":
			w.Header().Set("Cache-Control", "max-age=0")
		case "/long":
			w.Header().Set("Cache-Control", "max-age=31536000")
		case "/nostore":
			w.Header().Set("Cache-Control", "no-store")
		case "/aged":
			w.Header().Set("Cache-Control", "max-age=600")
			w.Header().Set("Age", "500")
		}
		_, _ = fmt.Fprintf(w, `{"n":%d}`, time.Now().UnixNano())
	}, func(c *fetch.Config) {
		c.MinTTL = time.Minute
		c.MaxTTL = time.Hour
	})
	hits := map[string]int64{}
	get := func(path string) *fetch.Response {
		t.Helper()
		before := e.srv.hits.Load()
		resp, err := e.f.Get(t.Context(), e.srv.URL(hostA, path), "application/json")
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		hits[path] += e.srv.hits.Load() - before
		if resp.FromCache != (e.srv.hits.Load() == before) {
			t.Errorf("%s: FromCache = %v but server hit = %v", path, resp.FromCache, e.srv.hits.Load() != before)
		}
		return resp
	}

	start := e.clock.Now()
	first := get("/short")
	if want := start.Add(120 * time.Second); !first.Expires.Equal(want) {
		t.Errorf("/short Expires = %v, want %v", first.Expires, want)
	}
	if second := get("/short"); string(second.Body) != string(first.Body) || !second.FromCache {
		t.Errorf("second Get not served from cache")
	}
	if e := get("/long").Expires; !e.Equal(start.Add(time.Hour)) {
		t.Errorf("/long Expires = %v, want MaxTTL", e)
	}
	if e := get("/zero").Expires; !e.Equal(start.Add(time.Minute)) {
		t.Errorf("/zero Expires = %v, want MinTTL", e)
	}
	if e := get("/aged").Expires; !e.Equal(start.Add(100 * time.Second)) {
		t.Errorf("/aged Expires = %v, want max-age minus Age", e)
	}
	if r := get("/nostore"); !r.Expires.IsZero() {
		t.Errorf("/nostore Expires = %v, want zero", r.Expires)
	}
	get("/nostore")
	get("/zero")

	e.clock.Advance(119 * time.Second)
	get("/short") // still fresh
	e.clock.Advance(time.Second)
	get("/short") // expired: refetched
	get("/long")  // still fresh
	e.clock.Advance(time.Hour)
	get("/long") // bounded by MaxTTL: refetched

	want := map[string]int64{"/short": 2, "/long": 2, "/zero": 1, "/nostore": 2, "/aged": 1}
	for p, n := range want {
		if hits[p] != n {
			t.Errorf("%s: server hits = %d, want %d", p, hits[p], n)
		}
	}

	// GetFresh skips the cache and refreshes it.
	before := e.srv.hits.Load()
	fresh, err := e.f.GetFresh(t.Context(), e.srv.URL(hostA, "/long"), "application/json")
	if err != nil || fresh.FromCache || e.srv.hits.Load() != before+1 {
		t.Errorf("GetFresh: err=%v fromCache=%v", err, fresh != nil && fresh.FromCache)
	}
	if again := get("/long"); string(again.Body) != string(fresh.Body) {
		t.Errorf("cache not refreshed by GetFresh")
	}

	// Callers get their own copy of the body.
	a := get("/long")
	a.Body[0] = 'X'
	if b := get("/long"); b.Body[0] == 'X' {
		t.Errorf("cached body shared with a caller")
	}
}

// Concurrent Gets of one URL share one fetch: with a burst of 1, separate
// fetches would be rate limited.
func TestConcurrentGetsShareOneFetch(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case entered <- struct{}{}:
		default:
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
		_, _ = w.Write([]byte(`{"shared":true}`))
	}, func(c *fetch.Config) {
		c.HostRate = rate.Every(time.Hour)
		c.HostBurst = 1
	})
	url := e.srv.URL(hostA, "/c.json")

	const n = 8
	errs := make(chan error, n)
	for range n {
		go func() {
			resp, err := e.f.Get(t.Context(), url, "")
			if err == nil && string(resp.Body) != `{"shared":true}` {
				err = fmt.Errorf("body %q", resp.Body)
			}
			errs <- err
		}()
	}
	<-entered
	close(release)
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if h := e.srv.hits.Load(); h != 1 {
		t.Errorf("server hits = %d, want 1", h)
	}
}

// A caller that gives up gets its context's error at once; the shared fetch
// carries on and its result is cached, not negative-cached.
func TestCallerCancelDoesNotPoisonCache(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
		_, _ = w.Write([]byte(`{}`))
	}, nil)
	url := e.srv.URL(hostA, "/c.json")

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := e.f.Get(ctx, url, "")
		done <- err
	}()
	<-entered
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Get: err = %v, want context.Canceled", err)
	}
	close(release)
	// The next Get joins or follows the still-running fetch and succeeds.
	if _, err := e.f.Get(t.Context(), url, ""); err != nil {
		t.Fatalf("Get after a cancelled caller: %v", err)
	}
	if n := e.srv.hits.Load(); n != 1 {
		t.Errorf("server hits = %d, want 1", n)
	}
}

func TestAllowHTTP(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = w.Write([]byte("ok"))
	}))
	t.Cleanup(srv.Close)
	port := portOf(t, srv.Listener.Addr())
	r := &fakeResolver{}
	r.add("plain.example.test", "127.0.0.1")
	d := &loopbackDialer{}
	url := "http://plain.example.test:" + strconv.Itoa(int(port)) + "/"

	strict := mustNew(t, fetch.Config{AllowedHosts: []string{"*.example.test"}, AllowPrivate: true, AllowedPorts: []uint16{port}, Resolver: r, DialContext: d.DialContext})
	if _, err := strict.Get(t.Context(), url, ""); !errors.Is(err, fetch.ErrSchemeNotAllowed) {
		t.Fatalf("without AllowHTTP: err = %v, want ErrSchemeNotAllowed", err)
	}
	lax := mustNew(t, fetch.Config{AllowedHosts: []string{"*.example.test"}, AllowHTTP: true, AllowPrivate: true, AllowedPorts: []uint16{port}, Resolver: r, DialContext: d.DialContext})
	resp, err := lax.Get(t.Context(), url, "")
	if err != nil || string(resp.Body) != "ok" {
		t.Fatalf("with AllowHTTP: %v", err)
	}
	if hits.Load() != 1 {
		t.Errorf("server hits = %d, want 1", hits.Load())
	}
}
