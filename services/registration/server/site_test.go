package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mcpid/mcpid/services/registration/server"
)

// publicIP is what the fake DNS answers for the test's "public" hosts. The
// fetcher checks it (a public address) and dials it; the test dialer
// connects that dial to the local TLS site instead, so no packet ever
// leaves 127.0.0.0/8.
var publicIP = netip.MustParseAddr("93.184.215.14")

// site is a local HTTPS server for *.example.test with a test CA: the
// CIMD documents and JWK sets the tests fetch.
type site struct {
	srv  *httptest.Server
	pool *x509.CertPool

	mu       sync.Mutex
	handlers map[string]http.HandlerFunc
	hits     map[string]int
}

func newSite(t testing.TB) *site {
	t.Helper()
	s := &site{handlers: map[string]http.HandlerFunc{}, hits: map[string]int{}}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test site CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "example.test"},
		DNSNames:  []string{"*.example.test", "example.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	s.pool = x509.NewCertPool()
	s.pool.AddCert(ca)
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER}, PrivateKey: leafKey}}, MinVersion: tls.VersionTLS12}
	s.srv.StartTLS()
	t.Cleanup(s.srv.Close)
	return s
}

func (s *site) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	h := s.handlers[r.URL.Path]
	s.hits[r.URL.Path]++
	s.mu.Unlock()
	if h == nil {
		http.NotFound(w, r)
		return
	}
	h(w, r)
}

// handle serves path with h (replacing any earlier handler).
func (s *site) handle(path string, h http.HandlerFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handlers[path] = h
}

// json serves a fixed document with headers ("Cache-Control", "max-age=600").
func (s *site) json(path, body string, header ...string) {
	s.handle(path, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		_, _ = w.Write([]byte(body))
	})
}

func (s *site) hitCount(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits[path]
}

// fakeDNS answers from a table and records every lookup.
type fakeDNS struct {
	mu      sync.Mutex
	table   map[string][]netip.Addr
	lookups []string
}

func (d *fakeDNS) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.lookups = append(d.lookups, host)
	if a, ok := d.table[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func (d *fakeDNS) looked(host string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Contains(d.lookups, host)
}

// testDialer stands in for the network: a dial to the public test address
// reaches the local site; any other address is recorded and refused (the
// fetcher must never get that far with one).
type testDialer struct {
	site  *site
	mu    sync.Mutex
	dials []string
}

func (d *testDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	d.mu.Lock()
	d.dials = append(d.dials, address)
	d.mu.Unlock()
	ap, err := netip.ParseAddrPort(address)
	if err != nil || ap.Addr() != publicIP {
		return nil, fmt.Errorf("test dialer: refusing %s", address)
	}
	var nd net.Dialer
	return nd.DialContext(ctx, network, d.site.srv.Listener.Addr().String())
}

// dialed returns every address a dial was attempted to.
func (d *testDialer) dialed() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.dials)
}

// fetchEnv is a service whose outbound fetches reach the local site.
type fetchEnv struct {
	*env
	site *site
	dns  *fakeDNS
	dial *testDialer
	clk  *clock
}

func newFetchEnv(t testing.TB, mutate func(*server.Config)) *fetchEnv {
	t.Helper()
	f := &fetchEnv{site: newSite(t), clk: &clock{}}
	f.dial = &testDialer{site: f.site}
	f.dns = &fakeDNS{table: map[string][]netip.Addr{
		"agent.example.test":    {publicIP},
		"other.example.test":    {publicIP},
		"trusted.example.test":  {publicIP},
		"keys.example.test":     {publicIP},
		"loopback.example.test": {netip.MustParseAddr("127.0.0.1")},
		"private.example.test":  {netip.MustParseAddr("10.0.0.1")},
		"metadata.example.test": {netip.MustParseAddr("169.254.169.254")},
		"mixed.example.test":    {publicIP, netip.MustParseAddr("10.0.0.1")},
	}}
	f.env = newEnv(t, func(c *server.Config) {
		c.FetchHooks = server.FetchHooks{Resolver: f.dns, DialContext: f.dial.DialContext, RootCAs: f.site.pool}
		c.CIMDAllowedDomains = []string{"*.example.test", "127.0.0.1", "169.254.169.254"}
		c.CIMDTrustedDomains = []string{"trusted.example.test"}
		c.CIMDFetchTimeout = time.Second
		c.Now = f.clk.Now
		if mutate != nil {
			mutate(c)
		}
	})
	return f
}
