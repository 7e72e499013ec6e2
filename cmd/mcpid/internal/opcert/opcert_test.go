package opcert

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcpid/mcpid/lib/devca"
)

// testCA is a CA made the way an operator's PKI would: a root, optionally
// an intermediate below it.
type testCA struct {
	cert    *x509.Certificate
	key     crypto.Signer
	certPEM []byte
	keyPEM  []byte
}

func newCA(t *testing.T, key crypto.Signer, parent *testCA, notAfter time.Time) *testCA {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "test CA " + t.Name()},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	signerCert, signerKey := tmpl, key
	if parent != nil {
		tmpl.Subject.CommonName = "test intermediate " + t.Name()
		signerCert, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, key.Public(), signerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})}
}

func ecKey(t *testing.T) crypto.Signer {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// handshake presents the issued certificate to a TLS server that trusts
// root only and requires a verified client certificate — what the
// services do — and returns the identity the server sees.
func handshake(t *testing.T, root *x509.Certificate, is *Issued) devca.Identity {
	t.Helper()
	pair, err := tls.X509KeyPair(is.CertPEM, is.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	srvKey := ecKey(t)
	srvTmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "srv"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"srv"}}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, srvTmpl, srvKey.Public(), srvKey)
	if err != nil {
		t.Fatal(err)
	}
	srvCert, _ := x509.ParseCertificate(srvDER)
	clientPool := x509.NewCertPool()
	clientPool.AddCert(srvCert)
	c, s := net.Pipe()
	defer c.Close()
	defer s.Close()
	server := tls.Server(s, &tls.Config{MinVersion: tls.VersionTLS13, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert,
		Certificates: []tls.Certificate{{Certificate: [][]byte{srvDER}, PrivateKey: srvKey}}})
	client := tls.Client(c, &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: clientPool, ServerName: "srv", Certificates: []tls.Certificate{pair}})
	errs := make(chan error, 1)
	go func() { errs <- client.Handshake() }()
	if err := server.Handshake(); err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	if err := <-errs; err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	chains := server.ConnectionState().VerifiedChains
	if len(chains) == 0 {
		t.Fatal("no verified chain")
	}
	id, err := devca.IdentityFromCertificate(chains[0][0])
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestIssueFromRoots(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for name, key := range map[string]crypto.Signer{"ecdsa": ecKey(t), "rsa": rsaKey, "ed25519": edKey} {
		t.Run(name, func(t *testing.T) {
			root := newCA(t, key, nil, time.Now().Add(24*time.Hour))
			is, err := Issue(root.certPEM, root.keyPEM, Request{Name: "alice", Role: devca.RoleAdmin})
			if err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(string(is.CertPEM), "BEGIN CERTIFICATE"); n != 1 {
				t.Errorf("certificate file from a root holds %d certificates, want the leaf only", n)
			}
			id := handshake(t, root.cert, is)
			if id.Kind != devca.KindOperator || id.Name != "alice" || id.Role != devca.RoleAdmin {
				t.Errorf("identity = %+v", id)
			}
			// Validity is capped by the CA's.
			if is.NotAfter.After(root.cert.NotAfter) {
				t.Errorf("NotAfter %v beyond the CA's %v", is.NotAfter, root.cert.NotAfter)
			}
		})
	}
}

// TestIssueFromIntermediate: the services trust the root only, so the
// certificate file carries the intermediate after the leaf.
func TestIssueFromIntermediate(t *testing.T) {
	root := newCA(t, ecKey(t), nil, time.Now().Add(48*time.Hour))
	inter := newCA(t, ecKey(t), root, time.Now().Add(24*time.Hour))
	// The CA file may be the intermediate alone or the bundle with the root.
	for name, caPEM := range map[string][]byte{"intermediate": inter.certPEM, "bundle": append(append([]byte{}, inter.certPEM...), root.certPEM...)} {
		t.Run(name, func(t *testing.T) {
			is, err := Issue(caPEM, inter.keyPEM, Request{Name: "audit-team", Role: devca.RoleAuditor})
			if err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(string(is.CertPEM), "BEGIN CERTIFICATE"); n != 2 {
				t.Errorf("certificate file holds %d certificates, want leaf and intermediate", n)
			}
			id := handshake(t, root.cert, is)
			if id.Name != "audit-team" || id.Role != devca.RoleAuditor {
				t.Errorf("identity = %+v", id)
			}
			dir := t.TempDir()
			certPath, keyPath, err := is.Save(dir, "audit-team")
			if err != nil {
				t.Fatal(err)
			}
			if st, err := os.Stat(keyPath); err != nil || st.Mode().Perm() != 0o600 {
				t.Errorf("key file: %v %v", err, st)
			}
			if _, err := tls.LoadX509KeyPair(certPath, keyPath); err != nil {
				t.Errorf("saved pair: %v", err)
			}
			if filepath.Dir(certPath) != dir {
				t.Errorf("cert path %s", certPath)
			}
		})
	}
}

func TestIssueRefuses(t *testing.T) {
	root := newCA(t, ecKey(t), nil, time.Now().Add(24*time.Hour))
	other := newCA(t, ecKey(t), nil, time.Now().Add(24*time.Hour))
	expired := newCA(t, ecKey(t), nil, time.Now().Add(-time.Minute))
	leaf, err := Issue(root.certPEM, root.keyPEM, Request{Name: "bob", Role: devca.RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name          string
		caCert, caKey []byte
		req           Request
		want          string
	}{
		{"unknown role", root.certPEM, root.keyPEM, Request{Name: "x", Role: "superuser"}, "role"},
		{"empty role", root.certPEM, root.keyPEM, Request{Name: "x"}, "role"},
		{"service as role", root.certPEM, root.keyPEM, Request{Name: "x", Role: "token"}, "role"},
		{"bad name", root.certPEM, root.keyPEM, Request{Name: "a/b", Role: devca.RoleAdmin}, ""},
		{"empty name", root.certPEM, root.keyPEM, Request{Role: devca.RoleAdmin}, ""},
		{"key of another CA", root.certPEM, other.keyPEM, Request{Name: "x", Role: devca.RoleAdmin}, "does not belong"},
		{"not a CA", leaf.CertPEM, leaf.KeyPEM, Request{Name: "x", Role: devca.RoleAdmin}, "not a CA"},
		{"expired CA", expired.certPEM, expired.keyPEM, Request{Name: "x", Role: devca.RoleAdmin}, "expired"},
		{"no certificate", []byte("junk"), root.keyPEM, Request{Name: "x", Role: devca.RoleAdmin}, "CA certificate"},
		{"no key", root.certPEM, []byte("junk"), Request{Name: "x", Role: devca.RoleAdmin}, "CA key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			is, err := Issue(tc.caCert, tc.caKey, tc.req)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Issue = %v, %v; want an error naming %q", is, err, tc.want)
			}
		})
	}
}
