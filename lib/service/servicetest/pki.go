package servicetest

import (
	"crypto/tls"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/mcpid/mcpid/lib/config"
	"github.com/mcpid/mcpid/lib/devca"
	"github.com/mcpid/mcpid/lib/service"
)

// PKI is a development CA for one test: it gives a service its mTLS
// settings and callers their identities (service, operator, MCP server,
// anonymous), so tests exercise the real allowlist over real TLS.
type PKI struct {
	CA  *devca.CA
	dir string
}

// NewPKI creates a CA in a temporary folder.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	ca, err := devca.New(time.Now)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := ca.Save(filepath.Join(dir, "ca")); err != nil {
		t.Fatal(err)
	}
	return &PKI{CA: ca, dir: dir}
}

// ServeTLS returns f with the TLS settings of service name: its
// certificate, key and the CA bundle (client certificates verified if
// given).
func (p *PKI) ServeTLS(t testing.TB, name string, f service.Flags) service.Flags {
	t.Helper()
	leaf, err := p.CA.IssueService(name)
	if err != nil {
		t.Fatal(err)
	}
	pki := filepath.Join(p.dir, "pki")
	if err := leaf.Save(pki, name); err != nil {
		t.Fatal(err)
	}
	f.TLSCertFile = filepath.Join(pki, name+".crt")
	f.TLSKeyFile = config.SecretFile{Path: filepath.Join(pki, name+".key")}
	f.TLSCAFile = filepath.Join(p.dir, "ca", devca.CACertFile)
	return f
}

// GatewayTLS is the client TLS config for service name's in-process gateway.
func (p *PKI) GatewayTLS(name string) *tls.Config {
	return devca.ClientTLSConfig(p.CA.Pool(), nil, name)
}

// AsService is the credential of mcpid service name.
func (p *PKI) AsService(t testing.TB, name string) *tls.Certificate {
	t.Helper()
	leaf, err := p.CA.IssueService(name)
	if err != nil {
		t.Fatal(err)
	}
	c := leaf.TLSCertificate()
	return &c
}

// AsOperator is the credential of an operator with role (admin, auditor).
func (p *PKI) AsOperator(t testing.TB, name, role string) *tls.Certificate {
	t.Helper()
	leaf, err := p.CA.IssueOperator(name, role)
	if err != nil {
		t.Fatal(err)
	}
	c := leaf.TLSCertificate()
	return &c
}

// AsMCPServer is the credential of the MCP server of a canonical resource.
func (p *PKI) AsMCPServer(t testing.TB, resource string) *tls.Certificate {
	t.Helper()
	leaf, err := p.CA.IssueMCPServer(resource)
	if err != nil {
		t.Fatal(err)
	}
	c := leaf.TLSCertificate()
	return &c
}

// Dial connects to srv (served as service name) over TLS presenting cert;
// a nil cert is an anonymous TLS caller.
func (p *PKI) Dial(t testing.TB, srv Runnable, name string, cert *tls.Certificate) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(srv.GRPCAddr().String(),
		grpc.WithTransportCredentials(credentials.NewTLS(devca.ClientTLSConfig(p.CA.Pool(), cert, name))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}
