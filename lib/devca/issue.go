package devca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
)

// Leaf is a certificate issued by the CA together with its private key.
type Leaf struct {
	Certificate *x509.Certificate
	PrivateKey  *ecdsa.PrivateKey
	Identity    Identity
}

// IssueService issues the certificate of one of the four services. It is
// both a server and a client certificate (services call each other), valid
// for the DNS names <name> and localhost and the addresses 127.0.0.1 and ::1.
func (ca *CA) IssueService(name string) (*Leaf, error) {
	id, err := ServiceID(name)
	if err != nil {
		return nil, fmt.Errorf("devca: %w", err)
	}
	return ca.issue(id, leafOptions{
		extKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		dnsNames:    []string{name, "localhost"},
		ips:         []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	})
}

// IssueOperator issues an operator's bootstrap client certificate carrying
// one role (RoleAdmin or RoleAuditor). Names are 1-128 characters of
// [A-Za-z0-9._-].
func (ca *CA) IssueOperator(name, role string) (*Leaf, error) {
	id, err := OperatorID(name, role)
	if err != nil {
		return nil, fmt.Errorf("devca: %w", err)
	}
	return ca.issue(id, leafOptions{extKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
}

// IssueMCPServer issues a client certificate identifying the MCP server of
// one resource. resourceURI must be canonical (lib/resource.Canonicalize);
// a non-canonical URI is refused rather than rewritten, so the caller learns
// that what it holds is not what the certificate would say.
func (ca *CA) IssueMCPServer(resourceURI string) (*Leaf, error) {
	id, err := MCPServerID(resourceURI)
	if err != nil {
		return nil, fmt.Errorf("devca: %w", err)
	}
	return ca.issue(id, leafOptions{extKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
}

type leafOptions struct {
	extKeyUsage []x509.ExtKeyUsage
	dnsNames    []string
	ips         []net.IP
}

func (ca *CA) issue(id Identity, opts leafOptions) (*Leaf, error) {
	t := ca.now()
	if !t.Before(ca.cert.NotAfter) {
		return nil, fmt.Errorf("devca: issue %s: %w", id, ErrExpired)
	}
	uri, err := id.URI()
	if err != nil {
		return nil, fmt.Errorf("devca: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("devca: generate key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	notAfter := t.Add(LeafValidity)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// The common name is for people reading the certificate; only the
		// URI SAN identifies the principal.
		Subject:               pkix.Name{CommonName: commonName(id)},
		NotBefore:             t.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           opts.extKeyUsage,
		BasicConstraintsValid: true,
		DNSNames:              opts.dnsNames,
		IPAddresses:           opts.ips,
		URIs:                  []*url.URL{uri},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("devca: issue %s: %w", id, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("devca: parse issued certificate: %w", err)
	}
	return &Leaf{Certificate: cert, PrivateKey: key, Identity: id}, nil
}

func commonName(id Identity) string {
	switch id.Kind {
	case KindService:
		return "mcpid service " + id.Name
	case KindOperator:
		return "mcpid operator " + id.Name + " (" + id.Role + ")"
	default:
		// Resource URIs can exceed the 64-byte limit on common names.
		return "mcpid MCP server"
	}
}

// TLSCertificate returns the leaf as a tls.Certificate for Config.Certificates.
func (l *Leaf) TLSCertificate() tls.Certificate {
	return tls.Certificate{
		Certificate: [][]byte{l.Certificate.Raw},
		PrivateKey:  l.PrivateKey,
		Leaf:        l.Certificate,
	}
}

// CertPEM returns the certificate in PEM form.
func (l *Leaf) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: l.Certificate.Raw})
}

// KeyPEM returns the private key as a PKCS #8 PEM block.
func (l *Leaf) KeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(l.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("devca: marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// Save writes the leaf as <base>.crt (0644) and <base>.key (0600) in dir,
// creating dir with mode 0700 if needed — e.g. an operator's bootstrap
// certificate for the CLI. tls.LoadX509KeyPair reads the pair back.
func (l *Leaf) Save(dir, base string) error {
	if !validSegment(base) {
		return fmt.Errorf("devca: file base name %q must be [A-Za-z0-9._-]", base)
	}
	keyPEM, err := l.KeyPEM()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("devca: create %s: %w", dir, err)
	}
	if err := writeFileAtomic(filepath.Join(dir, base+".key"), keyPEM, 0o600); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, base+".crt"), l.CertPEM(), 0o644)
}
