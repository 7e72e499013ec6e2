package e2e_test

import (
	"context"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/mcpid/mcpid/examples/crm"
	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/lib/config"
	"github.com/mcpid/mcpid/lib/devca"
	"github.com/mcpid/mcpid/lib/etcdtest"
	"github.com/mcpid/mcpid/lib/service"
	"github.com/mcpid/mcpid/lib/service/servicetest"
	auditserver "github.com/mcpid/mcpid/services/audit/server"
	policyserver "github.com/mcpid/mcpid/services/policy/server"
	registrationserver "github.com/mcpid/mcpid/services/registration/server"
	tokenserver "github.com/mcpid/mcpid/services/token/server"
)

const (
	user     = "alice"
	password = "correct horse battery staple"
	// cimdHost is the CIMD document's host: the registration service
	// resolves it to loopback and trusts the test's CA for it.
	cimdHost = "example.com"
)

// system is the whole of mcpid, wired as `mcpid dev` wires it (one public
// origin with the edge router), plus the CRM MCP server.
type system struct {
	issuer   string
	crmURL   string
	regAdmin registrationv1.RegistrationServiceClient
	tokAdmin tokenv1.TokenServiceClient
	polAdmin policyv1.PolicyServiceClient
	audit    auditv1.AuditServiceClient
	cimd     *httptest.Server

	cimdMu      sync.Mutex
	cimdDocs    map[string]string
	cimdFetches atomic.Int64
}

func (s *system) setCIMD(path, doc string) {
	s.cimdMu.Lock()
	defer s.cimdMu.Unlock()
	s.cimdDocs[path] = doc
}

func (s *system) cimdDoc(path string) (string, bool) {
	s.cimdMu.Lock()
	defer s.cimdMu.Unlock()
	doc, ok := s.cimdDocs[path]
	return doc, ok
}

// crmMetadataURL is the CRM's RFC 9728 metadata URL (path-inserted).
func (s *system) crmMetadataURL() string {
	u, _ := url.Parse(s.crmURL)
	return u.Scheme + "://" + u.Host + "/.well-known/oauth-protected-resource" + u.Path
}

// loopbackResolver resolves every name to 127.0.0.1 (the CIMD host).
type loopbackResolver struct{}

func (loopbackResolver) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
}

func startSystem(t *testing.T) *system {
	t.Helper()
	ctx := context.Background()
	s := &system{cimdDocs: map[string]string{}}
	etcd := etcdtest.Start(t)
	pki := servicetest.NewPKI(t)

	// The CIMD documents, served over TLS by a certificate of the test's CA.
	s.cimd = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		doc, ok := s.cimdDoc(r.URL.Path)
		if !ok {
			http.NotFound(w, r)
			return
		}
		s.cimdFetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(doc))
	}))
	s.cimd.StartTLS()
	t.Cleanup(s.cimd.Close)
	cimdURL, err := url.Parse(s.cimd.URL)
	if err != nil {
		t.Fatal(err)
	}
	cimdRoots := x509.NewCertPool()
	cimdRoots.AddCert(s.cimd.Certificate())

	edge, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.issuer = "http://" + edge.Addr().String()
	flagsOf := func(name, auditAddr string) service.Flags {
		f := pki.ServeTLS(t, name, servicetest.Flags(etcd.Endpoints()))
		f.AuditAddr = auditAddr
		f.ShutdownTimeout = 15 * time.Second
		return f
	}
	admin := pki.AsOperator(t, "root", "admin")

	audit, err := auditserver.Config{Flags: flagsOf(auditserver.Name, ""), GatewayTLS: pki.GatewayTLS(auditserver.Name), Issuer: s.issuer}.Complete(ctx)
	if err != nil {
		t.Fatal(err)
	}
	servicetest.Run(t, audit)
	servicetest.WaitReady(t, audit, auditserver.Name)
	auditAddr := audit.GRPCAddr().String()
	s.audit = auditv1.NewAuditServiceClient(pki.Dial(t, audit, auditserver.Name, admin))

	reg, err := registrationserver.Config{Flags: flagsOf(registrationserver.Name, auditAddr), GatewayTLS: pki.GatewayTLS(registrationserver.Name),
		Issuer: s.issuer, TrustedProxies: config.StringList{"127.0.0.1/32"},
		FetchAllowPrivate: true,
		FetchAllowedPorts: config.StringList{cimdURL.Port()},
		FetchHooks:        registrationserver.FetchHooks{Resolver: loopbackResolver{}, RootCAs: cimdRoots},
	}.Complete(ctx)
	if err != nil {
		t.Fatal(err)
	}
	servicetest.Run(t, reg)
	servicetest.WaitReady(t, reg, registrationserver.Name)
	s.regAdmin = registrationv1.NewRegistrationServiceClient(pki.Dial(t, reg, registrationserver.Name, admin))

	pol, err := policyserver.Config{Flags: flagsOf(policyserver.Name, auditAddr), GatewayTLS: pki.GatewayTLS(policyserver.Name), Issuer: s.issuer}.Complete(ctx)
	if err != nil {
		t.Fatal(err)
	}
	servicetest.Run(t, pol)
	servicetest.WaitReady(t, pol, policyserver.Name)
	s.polAdmin = policyv1.NewPolicyServiceClient(pki.Dial(t, pol, policyserver.Name, admin))

	dir := t.TempDir()
	kek := filepath.Join(dir, "kek")
	if err := tokenserver.WriteKEKFile(kek); err != nil {
		t.Fatal(err)
	}
	pass := filepath.Join(dir, "password")
	if err := os.WriteFile(pass, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tok, err := tokenserver.Config{Flags: flagsOf(tokenserver.Name, auditAddr), GatewayTLS: pki.GatewayTLS(tokenserver.Name),
		Issuer: s.issuer, KEKFile: config.SecretFile{Path: kek},
		RegistrationAddr: reg.GRPCAddr().String(), PolicyAddr: pol.GRPCAddr().String(),
		TrustedProxies: config.StringList{"127.0.0.1/32"},
		SeedUser:       user, SeedPasswordFile: config.SecretFile{Path: pass},
	}.Complete(ctx)
	if err != nil {
		t.Fatal(err)
	}
	servicetest.Run(t, tok)
	servicetest.WaitReady(t, tok, tokenserver.Name)
	s.tokAdmin = tokenv1.NewTokenServiceClient(pki.Dial(t, tok, tokenserver.Name, admin))

	// The public origin, routed like `mcpid dev` routes it.
	regURL, _ := url.Parse("http://" + reg.HTTPAddr().String())
	tokURL, _ := url.Parse("http://" + tok.HTTPAddr().String())
	proxy := func(u *url.URL) *httputil.ReverseProxy {
		return &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(u)
			r.Out.Header.Del("Forwarded")
			r.SetXForwarded()
			r.Out.Host = r.In.Host
		}}
	}
	regProxy, tokProxy := proxy(regURL), proxy(tokURL)
	hs := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; p == "/oauth2/register" || strings.HasPrefix(p, "/oauth2/register/") {
			regProxy.ServeHTTP(w, r)
			return
		}
		tokProxy.ServeHTTP(w, r)
	})}
	go func() { _ = hs.Serve(edge) }()
	t.Cleanup(func() { _ = hs.Close() })

	// The CRM MCP server, authenticated to policy as its resource.
	crmLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.crmURL = "http://" + crmLis.Addr().String() + "/mcp"
	// Both connections present the CRM's MCP-server certificate: policy
	// for decisions, token for the CRM's revocation feed.
	crmCert := pki.AsMCPServer(t, s.crmURL)
	dialAsCRM := func(addr, serverName string) *grpc.ClientConn {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(
			devca.ClientTLSConfig(pki.CA.Pool(), crmCert, serverName))))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		return conn
	}
	srv, err := crm.New(crm.Config{Resource: s.crmURL, Issuer: s.issuer,
		Policy: dialAsCRM(pol.GRPCAddr().String(), policyserver.Name),
		Token:  dialAsCRM(tok.GRPCAddr().String(), tokenserver.Name)})
	if err != nil {
		t.Fatal(err)
	}
	crmCtx, stopCRM := context.WithCancel(context.Background())
	crmDone := make(chan error, 1)
	go func() { crmDone <- srv.Run(crmCtx, crmLis) }()
	t.Cleanup(func() {
		stopCRM()
		if err := <-crmDone; err != nil {
			t.Errorf("crm: %v", err)
		}
	})
	if _, err := s.polAdmin.PutPolicy(ctx, &policyv1.PutPolicyRequest{Policy: crm.Policy(s.crmURL)}); err != nil {
		t.Fatal(err)
	}
	// Ready when the manifest is in and the token service knows the
	// resource's scopes.
	waitFor(t, "CRM manifest and scope catalogue", func() bool {
		cat, err := s.polAdmin.GetScopeCatalog(ctx, &policyv1.GetScopeCatalogRequest{Resource: s.crmURL})
		return err == nil && len(cat.GetCatalog().GetScopes()) == 3
	})
	return s
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if !poll(cond, 30*time.Second) {
		t.Fatalf("timed out waiting for %s", what)
	}
}

// poll reports whether cond became true before the deadline.
func poll(cond func() bool, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}
