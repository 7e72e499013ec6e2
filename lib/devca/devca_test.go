package devca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func fixed(t time.Time) func() time.Time { return func() time.Time { return t } }

func newCA(t *testing.T, now func() time.Time) *CA {
	t.Helper()
	ca, err := New(now)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return ca
}

func TestNewRoot(t *testing.T) {
	ca := newCA(t, fixed(t0))
	c := ca.Certificate()
	if c.Subject.CommonName != CAName {
		t.Errorf("CN = %q, want %q", c.Subject.CommonName, CAName)
	}
	if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Errorf("basic constraints: IsCA=%v valid=%v maxPathLen=%d zero=%v", c.IsCA, c.BasicConstraintsValid, c.MaxPathLen, c.MaxPathLenZero)
	}
	if c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Error("root lacks KeyUsageCertSign")
	}
	pub, ok := c.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("public key %T, want ECDSA P-256", c.PublicKey)
	}
	if !c.NotAfter.Equal(t0.Add(CAValidity)) || !c.NotBefore.Before(t0) {
		t.Errorf("validity %v..%v, want ..%v", c.NotBefore, c.NotAfter, t0.Add(CAValidity))
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("root not self-signed: %v", err)
	}
}

// verify checks leaf against ca's pool for the given usage at time at.
func verify(ca *CA, leaf *Leaf, at time.Time, usage x509.ExtKeyUsage, dnsName string) error {
	_, err := leaf.Certificate.Verify(x509.VerifyOptions{
		Roots:       ca.Pool(),
		CurrentTime: at,
		KeyUsages:   []x509.ExtKeyUsage{usage},
		DNSName:     dnsName,
	})
	return err
}

func TestIssueService(t *testing.T) {
	ca := newCA(t, fixed(t0))
	for _, name := range []string{ServiceRegistration, ServiceToken, ServicePolicy, ServiceAudit} {
		leaf, err := ca.IssueService(name)
		if err != nil {
			t.Fatalf("IssueService(%s): %v", name, err)
		}
		c := leaf.Certificate
		if want := []string{name, "localhost"}; !slices.Equal(c.DNSNames, want) {
			t.Errorf("%s DNS SANs = %v, want %v", name, c.DNSNames, want)
		}
		if len(c.IPAddresses) != 2 || !c.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) || !c.IPAddresses[1].Equal(net.IPv6loopback) {
			t.Errorf("%s IP SANs = %v, want [127.0.0.1 ::1]", name, c.IPAddresses)
		}
		for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
			if err := verify(ca, leaf, t0, usage, ""); err != nil {
				t.Errorf("%s does not verify for usage %v: %v", name, usage, err)
			}
		}
		for _, host := range []string{name, "localhost", "127.0.0.1", "::1"} {
			if err := c.VerifyHostname(host); err != nil {
				t.Errorf("%s not valid for %s: %v", name, host, err)
			}
		}
		id, err := IdentityFromCertificate(c)
		if err != nil || id != (Identity{Kind: KindService, Name: name}) || leaf.Identity != id {
			t.Errorf("%s identity = %+v (leaf %+v), %v", name, id, leaf.Identity, err)
		}
		if c.IsCA {
			t.Errorf("%s leaf is a CA", name)
		}
	}
	if _, err := ca.IssueService("gateway"); !errors.Is(err, ErrInvalidID) {
		t.Errorf("IssueService(gateway) error = %v, want ErrInvalidID", err)
	}
}

func TestIssueOperatorAndMCPServer(t *testing.T) {
	ca := newCA(t, fixed(t0))
	op, err := ca.IssueOperator("alice", RoleAuditor)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := IdentityFromCertificate(op.Certificate); err != nil || id != (Identity{Kind: KindOperator, Name: "alice", Role: RoleAuditor}) {
		t.Errorf("operator identity = %+v, %v", id, err)
	}
	res := "https://crm.example.com/mcp"
	srv, err := ca.IssueMCPServer(res)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := IdentityFromCertificate(srv.Certificate); err != nil || id != (Identity{Kind: KindMCPServer, Resource: res}) {
		t.Errorf("MCP server identity = %+v, %v", id, err)
	}
	for _, leaf := range []*Leaf{op, srv} {
		if err := verify(ca, leaf, t0, x509.ExtKeyUsageClientAuth, ""); err != nil {
			t.Errorf("%s: client usage does not verify: %v", leaf.Identity, err)
		}
		// Client-only certificates must not be usable to serve.
		if err := verify(ca, leaf, t0, x509.ExtKeyUsageServerAuth, ""); err == nil {
			t.Errorf("%s verifies as a server certificate", leaf.Identity)
		}
		if len(leaf.Certificate.DNSNames)+len(leaf.Certificate.IPAddresses) != 0 {
			t.Errorf("%s has DNS/IP SANs", leaf.Identity)
		}
	}
	for _, c := range []struct{ name, role string }{{"alice", "root"}, {"", RoleAdmin}, {"a/b", RoleAdmin}} {
		if _, err := ca.IssueOperator(c.name, c.role); !errors.Is(err, ErrInvalidID) {
			t.Errorf("IssueOperator(%q, %q) error = %v, want ErrInvalidID", c.name, c.role, err)
		}
	}
	for _, r := range []string{"https://crm.example.com/", "crm.example.com", "https://crm.example.com/mcp#x", "HTTPS://crm.example.com"} {
		if _, err := ca.IssueMCPServer(r); !errors.Is(err, ErrInvalidID) {
			t.Errorf("IssueMCPServer(%q) error = %v, want ErrInvalidID", r, err)
		}
	}
}

func TestLeafValidity(t *testing.T) {
	ca := newCA(t, fixed(t0))
	leaf, err := ca.IssueService(ServiceToken)
	if err != nil {
		t.Fatal(err)
	}
	if !leaf.Certificate.NotAfter.Equal(t0.Add(LeafValidity)) {
		t.Errorf("leaf NotAfter = %v, want %v", leaf.Certificate.NotAfter, t0.Add(LeafValidity))
	}
	if err := verify(ca, leaf, t0.Add(LeafValidity+time.Second), x509.ExtKeyUsageServerAuth, ""); err == nil {
		t.Error("leaf verifies after its validity")
	}

	// Near the end of the root's life, leaves stop with the root.
	late := t0.Add(CAValidity - 10*24*time.Hour)
	ca.now = fixed(late)
	leaf, err = ca.IssueService(ServiceToken)
	if err != nil {
		t.Fatal(err)
	}
	if !leaf.Certificate.NotAfter.Equal(ca.Certificate().NotAfter) {
		t.Errorf("late leaf NotAfter = %v, want the root's %v", leaf.Certificate.NotAfter, ca.Certificate().NotAfter)
	}

	ca.now = fixed(t0.Add(CAValidity))
	if _, err := ca.IssueService(ServiceToken); !errors.Is(err, ErrExpired) {
		t.Errorf("issue after root expiry: error = %v, want ErrExpired", err)
	}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	ca := newCA(t, fixed(t0))
	if err := ca.Save(dir); err != nil {
		t.Fatalf("Save: %v", err)
	}
	for file, want := range map[string]os.FileMode{CAKeyFile: 0o600, CACertFile: 0o644} {
		fi, err := os.Stat(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode = %v, want %v", file, fi.Mode().Perm(), want)
		}
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("dir mode = %v, %v; want 0700", fi.Mode().Perm(), err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("dir holds %d entries, want 2 (no temp files left)", len(entries))
	}

	loaded, err := Load(dir, fixed(t0.Add(time.Hour)))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if !bytes.Equal(loaded.Certificate().Raw, ca.Certificate().Raw) {
		t.Error("loaded certificate differs")
	}
	if !loaded.key.Equal(ca.key) {
		t.Error("loaded key differs")
	}
	// A leaf from the loaded CA chains to the original root: restarts of
	// `mcpid dev` keep peers' trust.
	leaf, err := loaded.IssueOperator("alice", RoleAdmin)
	if err != nil {
		t.Fatal(err)
	}
	if err := verify(ca, leaf, t0.Add(time.Hour), x509.ExtKeyUsageClientAuth, ""); err != nil {
		t.Errorf("leaf from loaded CA does not verify against original root: %v", err)
	}
}

func TestLoadErrors(t *testing.T) {
	ca := newCA(t, fixed(t0))

	t.Run("not found", func(t *testing.T) {
		if _, err := Load(t.TempDir(), fixed(t0)); !errors.Is(err, ErrNotFound) {
			t.Errorf("error = %v, want ErrNotFound", err)
		}
	})
	t.Run("expired", func(t *testing.T) {
		dir := t.TempDir()
		if err := ca.Save(dir); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(dir, fixed(t0.Add(CAValidity))); !errors.Is(err, ErrExpired) {
			t.Errorf("error = %v, want ErrExpired", err)
		}
		if _, err := Load(dir, fixed(t0.Add(-time.Hour))); !errors.Is(err, ErrExpired) {
			t.Errorf("not yet valid: error = %v, want ErrExpired", err)
		}
	})
	t.Run("world-readable key", func(t *testing.T) {
		dir := t.TempDir()
		if err := ca.Save(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(dir, CAKeyFile), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(dir, fixed(t0)); !errors.Is(err, ErrInsecureKeyFile) {
			t.Errorf("error = %v, want ErrInsecureKeyFile", err)
		}
	})
	t.Run("key of another CA", func(t *testing.T) {
		dir, other := t.TempDir(), t.TempDir()
		if err := ca.Save(dir); err != nil {
			t.Fatal(err)
		}
		if err := newCA(t, fixed(t0)).Save(other); err != nil {
			t.Fatal(err)
		}
		copyFile(t, filepath.Join(other, CAKeyFile), filepath.Join(dir, CAKeyFile), 0o600)
		if _, err := Load(dir, fixed(t0)); !errors.Is(err, ErrInvalidCA) {
			t.Errorf("error = %v, want ErrInvalidCA", err)
		}
	})
	t.Run("leaf instead of root", func(t *testing.T) {
		dir := t.TempDir()
		leaf, err := ca.IssueService(ServiceToken)
		if err != nil {
			t.Fatal(err)
		}
		if err := leaf.Save(dir, "ca"); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(dir, fixed(t0)); !errors.Is(err, ErrInvalidCA) {
			t.Errorf("error = %v, want ErrInvalidCA", err)
		}
	})
	t.Run("key missing", func(t *testing.T) {
		dir := t.TempDir()
		if err := ca.Save(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(filepath.Join(dir, CAKeyFile)); err != nil {
			t.Fatal(err)
		}
		_, err := Load(dir, fixed(t0))
		if !errors.Is(err, ErrInvalidCA) || errors.Is(err, ErrNotFound) {
			t.Errorf("error = %v, want ErrInvalidCA and not ErrNotFound", err)
		}
	})
	t.Run("garbage", func(t *testing.T) {
		dir := t.TempDir()
		if err := ca.Save(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, CACertFile), []byte("not pem"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(dir, fixed(t0)); !errors.Is(err, ErrInvalidCA) {
			t.Errorf("error = %v, want ErrInvalidCA", err)
		}
	})
}

func TestLoadOrCreate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	first, err := LoadOrCreate(dir, fixed(t0))
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	again, err := LoadOrCreate(dir, fixed(t0.Add(24*time.Hour)))
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	if !bytes.Equal(first.Certificate().Raw, again.Certificate().Raw) {
		t.Error("LoadOrCreate made a new CA although a valid one was saved")
	}
	later := t0.Add(CAValidity + time.Hour)
	renewed, err := LoadOrCreate(dir, fixed(later))
	if err != nil {
		t.Fatalf("renew: %v", err)
	}
	if bytes.Equal(first.Certificate().Raw, renewed.Certificate().Raw) {
		t.Error("LoadOrCreate kept an expired CA")
	}
	if onDisk, err := Load(dir, fixed(later)); err != nil || !bytes.Equal(onDisk.Certificate().Raw, renewed.Certificate().Raw) {
		t.Errorf("renewed CA not saved: %v", err)
	}

	// A damaged CA is reported, not silently replaced.
	if err := os.Chmod(filepath.Join(dir, CAKeyFile), 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreate(dir, fixed(later)); !errors.Is(err, ErrInsecureKeyFile) {
		t.Errorf("error = %v, want ErrInsecureKeyFile", err)
	}
}

func TestLeafSave(t *testing.T) {
	ca := newCA(t, nil)
	leaf, err := ca.IssueOperator("alice", RoleAdmin)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "operator")
	if err := leaf.Save(dir, "alice"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "alice.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "alice.crt"), filepath.Join(dir, "alice.key"))
	if err != nil {
		t.Fatalf("LoadX509KeyPair: %v", err)
	}
	if !bytes.Equal(pair.Certificate[0], leaf.Certificate.Raw) {
		t.Error("saved certificate differs")
	}
	if err := leaf.Save(dir, "../escape"); err == nil {
		t.Error("Save accepted a base name with a path separator")
	}
}

// TestTLSHandshake runs real TLS 1.3 handshakes over loopback with the
// configurations the services use.
func TestTLSHandshake(t *testing.T) {
	ca := newCA(t, nil)
	srvLeaf, err := ca.IssueService(ServiceToken)
	if err != nil {
		t.Fatal(err)
	}
	op, err := ca.IssueOperator("alice", RoleAdmin)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := newCA(t, nil).IssueOperator("mallory", RoleAdmin)
	if err != nil {
		t.Fatal(err)
	}
	opCert, foreignCert := op.TLSCertificate(), foreign.TLSCertificate()

	ln, err := tls.Listen("tcp", "127.0.0.1:0", ServerTLSConfig(ca.Pool(), srvLeaf.TLSCertificate()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	type result struct {
		state tls.ConnectionState
		err   error
	}
	results := make(chan result, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := c.(*tls.Conn)
			_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
			err = tc.Handshake()
			if err == nil {
				// Under TLS 1.3 the client learns of a rejected certificate
				// only on its first read, so send it something to read.
				_, err = tc.Write([]byte("ok"))
			}
			results <- result{tc.ConnectionState(), err}
			_ = tc.Close()
		}
	}()
	dial := func(cfg *tls.Config) (result, error) {
		c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
		if err == nil {
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			_, err = c.Read(make([]byte, 2))
			_ = c.Close()
		}
		return <-results, err
	}

	t.Run("operator certificate", func(t *testing.T) {
		srv, err := dial(ClientTLSConfig(ca.Pool(), &opCert, "token"))
		if err != nil || srv.err != nil {
			t.Fatalf("client error %v, server error %v", err, srv.err)
		}
		if srv.state.Version != tls.VersionTLS13 {
			t.Errorf("version %x, want TLS 1.3", srv.state.Version)
		}
		if len(srv.state.VerifiedChains) == 0 {
			t.Fatal("server has no verified client chain")
		}
		id, err := IdentityFromCertificate(srv.state.VerifiedChains[0][0])
		if err != nil || id != (Identity{Kind: KindOperator, Name: "alice", Role: RoleAdmin}) {
			t.Errorf("server sees %+v, %v", id, err)
		}
	})
	t.Run("no client certificate", func(t *testing.T) {
		srv, err := dial(ClientTLSConfig(ca.Pool(), nil, "127.0.0.1"))
		if err != nil || srv.err != nil {
			t.Fatalf("client error %v, server error %v", err, srv.err)
		}
		if len(srv.state.PeerCertificates) != 0 {
			t.Error("server saw a client certificate")
		}
	})
	t.Run("certificate from another CA", func(t *testing.T) {
		srv, err := dial(ClientTLSConfig(ca.Pool(), &foreignCert, "token"))
		if srv.err == nil || err == nil {
			t.Errorf("handshake with a foreign certificate: client error %v, server error %v; want both to fail", err, srv.err)
		}
	})
	t.Run("server from another CA", func(t *testing.T) {
		other := newCA(t, nil)
		_, err := tls.Dial("tcp", ln.Addr().String(), ClientTLSConfig(other.Pool(), &opCert, "token"))
		var unknown x509.UnknownAuthorityError
		if !errors.As(err, &unknown) {
			t.Errorf("client error = %v, want UnknownAuthorityError", err)
		}
		<-results // the server's side of the failed handshake
	})
	t.Run("TLS 1.2 refused", func(t *testing.T) {
		cfg := ClientTLSConfig(ca.Pool(), nil, "token")
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
		_, err := tls.Dial("tcp", ln.Addr().String(), cfg)
		if err == nil {
			t.Error("TLS 1.2 handshake succeeded")
		}
		if srv := <-results; srv.err == nil {
			t.Error("server accepted TLS 1.2")
		}
	})
}

func copyFile(t *testing.T, from, to string, perm os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, perm); err != nil {
		t.Fatal(err)
	}
}
