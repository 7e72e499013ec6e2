// Package devca is mcpid's development certificate authority and the one
// definition of how an mcpid principal is written into a certificate.
//
// `mcpid dev` creates a throwaway ECDSA P-256 root, keeps it on disk across
// restarts, and issues leaf certificates to the four services, to operators
// (bootstrap certificates) and to MCP servers. Each leaf names its principal
// in exactly one URI SAN, a SPIFFE ID in the "mcpid" trust domain (see
// Identity); IdentityFromCertificate parses it back strictly, and
// lib/principal uses that parser so the scheme lives in one place.
//
// The CA is for development only: its key sits in a file next to the data,
// and nothing revokes what it issued.
package devca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"time"
)

// Validity periods. The root is short-lived because it is a development
// root; leaves are shorter still and never outlive the root.
const (
	CAValidity   = 365 * 24 * time.Hour
	LeafValidity = 90 * 24 * time.Hour
	// backdate covers clock skew between the process that issues and the
	// peer that verifies.
	backdate = 5 * time.Minute
)

// CAName is the common name of the development root.
const CAName = "mcpid development CA"

// File names used by Save and Load inside the CA directory.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// Sentinel errors of Load.
var (
	// ErrNotFound means the directory holds no CA (neither file exists).
	ErrNotFound = errors.New("development CA not found")
	// ErrExpired means the CA certificate is not valid at the current time.
	ErrExpired = errors.New("development CA expired or not yet valid")
	// ErrInsecureKeyFile means the key file is readable by group or others.
	ErrInsecureKeyFile = errors.New("development CA key file is readable by others")
	// ErrInvalidCA means the files exist but do not hold a usable CA.
	ErrInvalidCA = errors.New("invalid development CA")
)

// CA is a development certificate authority. It is safe for concurrent use.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	now  func() time.Time
}

// New generates a new root valid for CAValidity from now(). A nil now means
// time.Now.
func New(now func() time.Time) (*CA, error) {
	if now == nil {
		now = time.Now
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("devca: generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	t := now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: CAName},
		NotBefore:             t.Add(-backdate),
		NotAfter:              t.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// The root signs leaves only, never intermediates.
		MaxPathLen:     0,
		MaxPathLenZero: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("devca: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("devca: parse CA certificate: %w", err)
	}
	return &CA{cert: cert, key: key, now: now}, nil
}

// Certificate returns the root certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// CertPEM returns the root certificate in PEM form, for peers that must
// trust it.
func (ca *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})
}

// Pool returns a new pool holding only the root, for ClientCAs and RootCAs.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// Save writes the root certificate (ca.crt, 0644) and its private key
// (ca.key, 0600) to dir, creating dir with mode 0700 if needed. Each file is
// replaced atomically, so a crash never leaves half a key behind.
func (ca *CA) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("devca: create %s: %w", dir, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return fmt.Errorf("devca: marshal CA key: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	// Key first: a certificate on disk without its key would make the next
	// Load fail rather than silently mint a new CA.
	if err := writeFileAtomic(filepath.Join(dir, CAKeyFile), keyPEM, 0o600); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, CACertFile), ca.CertPEM(), 0o644)
}

// Load reads a CA saved by Save from dir and checks that it is a
// self-signed ECDSA P-256 CA whose key matches, valid at now(). A nil now
// means time.Now. It returns ErrNotFound if neither file exists,
// ErrInsecureKeyFile if the key is readable by group or others, ErrExpired
// if the root is outside its validity, and ErrInvalidCA for anything else
// wrong with the files.
func Load(dir string, now func() time.Time) (*CA, error) {
	if now == nil {
		now = time.Now
	}
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	certPEM, certErr := os.ReadFile(certPath)
	keyInfo, keyErr := os.Stat(keyPath)
	if errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist) {
		return nil, fmt.Errorf("devca: %s: %w", dir, ErrNotFound)
	}
	if certErr != nil {
		return nil, fmt.Errorf("devca: read %s: %w", certPath, errors.Join(ErrInvalidCA, certErr))
	}
	if keyErr != nil {
		return nil, fmt.Errorf("devca: stat %s: %w", keyPath, errors.Join(ErrInvalidCA, keyErr))
	}
	// File modes mean nothing on Windows; elsewhere refuse a key others
	// could have read, as ssh does.
	if runtime.GOOS != "windows" && keyInfo.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("devca: %s has mode %v, want 0600: %w", keyPath, keyInfo.Mode().Perm(), ErrInsecureKeyFile)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("devca: read %s: %w", keyPath, errors.Join(ErrInvalidCA, err))
	}
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("devca: %s: %w", certPath, err)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("devca: %s: %w", keyPath, err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("devca: %s does not belong to %s: %w", keyPath, certPath, ErrInvalidCA)
	}
	if !cert.IsCA || !cert.BasicConstraintsValid || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("devca: %s is not a CA certificate: %w", certPath, ErrInvalidCA)
	}
	if err := cert.CheckSignatureFrom(cert); err != nil {
		return nil, fmt.Errorf("devca: %s is not self-signed: %w", certPath, errors.Join(ErrInvalidCA, err))
	}
	if t := now(); t.Before(cert.NotBefore) || !t.Before(cert.NotAfter) {
		return nil, fmt.Errorf("devca: %s valid %s to %s: %w", certPath,
			cert.NotBefore.UTC().Format(time.RFC3339), cert.NotAfter.UTC().Format(time.RFC3339), ErrExpired)
	}
	return &CA{cert: cert, key: key, now: now}, nil
}

// LoadOrCreate loads the CA in dir, or creates and saves a new one when dir
// holds none or the saved one has expired. Any other problem (a corrupt or
// world-readable key) is returned rather than papered over with a new CA.
func LoadOrCreate(dir string, now func() time.Time) (*CA, error) {
	ca, err := Load(dir, now)
	switch {
	case err == nil:
		return ca, nil
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrExpired):
	default:
		return nil, err
	}
	ca, err = New(now)
	if err != nil {
		return nil, err
	}
	if err := ca.Save(dir); err != nil {
		return nil, err
	}
	return ca, nil
}

func parseCertPEM(b []byte) (*x509.Certificate, error) {
	block, rest := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" || len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("want exactly one CERTIFICATE PEM block: %w", ErrInvalidCA)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, errors.Join(ErrInvalidCA, err)
	}
	return cert, nil
}

func parseKeyPEM(b []byte) (*ecdsa.PrivateKey, error) {
	block, rest := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" || len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("want exactly one PRIVATE KEY PEM block: %w", ErrInvalidCA)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, errors.Join(ErrInvalidCA, err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("want an ECDSA P-256 key: %w", ErrInvalidCA)
	}
	return key, nil
}

// newSerial returns a random positive 128-bit serial number.
func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("devca: serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// writeFileAtomic writes data to a temporary file in the same directory and
// renames it over path, so readers see the old or the new file, never part.
func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("devca: write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	// CreateTemp creates files 0600; widen only where asked (the certificate).
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("devca: write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("devca: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("devca: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("devca: write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("devca: write %s: %w", path, err)
	}
	return nil
}
