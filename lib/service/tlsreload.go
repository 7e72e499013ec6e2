package service

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/mcpid/mcpid/lib/config"
)

// tlsMaterial is the service's certificate and CA bundle, used both to
// serve and to call other services. Certificates are short-lived and renewed
// on disk (cert-manager, a sidecar, an operator's script): every handshake
// compares the files' modification times and sizes with what was loaded and
// reads them again when they changed, so a renewal takes effect without a
// restart. A renewal caught half-written (key and certificate not matching
// yet) keeps the previous material until the files agree again.
type tlsMaterial struct {
	certFile string
	keyFile  config.SecretFile
	caFile   string // empty: no CA bundle

	mu      sync.Mutex
	stamp   fileStamps
	cert    *tls.Certificate
	pool    *x509.CertPool // nil without tls-ca-file
	lastErr error
}

// fileStamps identify the version of the files on disk.
type fileStamps [3]fileStamp

type fileStamp struct {
	mod  time.Time
	size int64
}

func loadTLS(f Flags) (*tlsMaterial, error) {
	m := &tlsMaterial{certFile: f.TLSCertFile, keyFile: f.TLSKeyFile, caFile: f.TLSCAFile}
	stamp, err := m.stamps()
	if err != nil {
		return nil, err
	}
	if err := m.load(stamp); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *tlsMaterial) stamps() (fileStamps, error) {
	var s fileStamps
	for i, p := range []struct{ setting, path string }{
		{"tls-cert-file", m.certFile}, {"tls-key-file", m.keyFile.Path}, {"tls-ca-file", m.caFile},
	} {
		if p.path == "" {
			continue
		}
		fi, err := os.Stat(p.path)
		if err != nil {
			return s, fmt.Errorf("setting %s: %w", p.setting, err)
		}
		s[i] = fileStamp{mod: fi.ModTime(), size: fi.Size()}
	}
	return s, nil
}

// load reads the files and installs them; the caller holds mu or owns m.
func (m *tlsMaterial) load(stamp fileStamps) error {
	key, err := m.keyFile.Read()
	if err != nil {
		return fmt.Errorf("setting tls-key-file: %w", err)
	}
	certPEM, err := os.ReadFile(m.certFile)
	if err != nil {
		return fmt.Errorf("setting tls-cert-file: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, key)
	if err != nil {
		return fmt.Errorf("settings tls-cert-file/tls-key-file: %w", err)
	}
	var pool *x509.CertPool
	if m.caFile != "" {
		caPEM, err := os.ReadFile(m.caFile)
		if err != nil {
			return fmt.Errorf("setting tls-ca-file: %w", err)
		}
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return errors.New("setting tls-ca-file: no PEM certificates found")
		}
	}
	m.cert, m.pool, m.stamp = &cert, pool, stamp
	return nil
}

// current returns the certificate and CA pool, reloading them when the
// files changed. A failed reload keeps the previous material (still valid
// until it expires) rather than breaking every handshake.
func (m *tlsMaterial) current() (*tls.Certificate, *x509.CertPool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	stamp, err := m.stamps()
	if err == nil && stamp != m.stamp {
		err = m.load(stamp)
	}
	m.lastErr = err
	return m.cert, m.pool
}

// serverConfig serves the current certificate and verifies client
// certificates against the current CA bundle, both read per handshake.
func (m *tlsMaterial) serverConfig() *tls.Config {
	base := &tls.Config{MinVersion: tls.VersionTLS13}
	if m.caFile != "" {
		// Callers may present a client certificate (services, operators, MCP
		// servers) or a bearer token; the principal interceptor decides.
		base.ClientAuth = tls.VerifyClientCertIfGiven
	}
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		cert, pool := m.current()
		cfg := base.Clone()
		cfg.GetConfigForClient = nil
		cfg.Certificates = []tls.Certificate{*cert}
		cfg.ClientCAs = pool
		return cfg, nil
	}
	return base
}

// clientConfig presents the current certificate and verifies the peer as
// serverName against the current CA bundle. The standard verification is
// replaced (not skipped) by VerifyConnection because RootCAs is fixed when
// the config is made, and a renewed CA bundle must take effect.
func (m *tlsMaterial) clientConfig(serverName string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: serverName,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert, _ := m.current()
			return cert, nil
		},
		InsecureSkipVerify: true, //nolint:gosec // VerifyConnection below verifies chain and name against the current CA bundle
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, pool := m.current()
			return verifyPeer(cs, pool, serverName)
		},
	}
}

func verifyPeer(cs tls.ConnectionState, pool *x509.CertPool, serverName string) error {
	if pool == nil {
		return errors.New("tls: no CA bundle to verify the peer with")
	}
	if len(cs.PeerCertificates) == 0 {
		return errors.New("tls: peer sent no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
		DNSName:       serverName,
		Roots:         pool,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("tls: verify %s: %w", serverName, err)
	}
	return nil
}
