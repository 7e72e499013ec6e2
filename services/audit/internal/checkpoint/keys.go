// Package checkpoint signs the chain head and verifies signed checkpoints
// (mcpid.audit.v1.Checkpoint): compact JWS of typ mcpid-checkpoint+jwt,
// signed with a key loaded from a file, never stored in etcd, so that
// someone who can write to etcd cannot forge one.
package checkpoint

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mcpid/mcpid/lib/jose"
)

// Type is the JWS "typ" of a checkpoint.
const Type = "mcpid-checkpoint+jwt"

// PublicKey is one checkpoint verification key as GetCheckpointKeys shows
// it.
type PublicKey struct {
	KeyID      string
	Algorithm  string
	Active     bool
	JWK        map[string]any // public members with kid, alg, use
	Thumbprint string         // RFC 7638, SHA-256, base64url
	key        crypto.PublicKey
}

// LoadSigningKey reads the active signing key from path: a private JWK (as
// jose writes it) or a PEM private key (PKCS #8, or SEC 1 "EC PRIVATE
// KEY"), Ed25519 or P-256. When the file does not exist and create is set,
// a new EdDSA key is generated and written there (mode 0600). It never logs
// or returns key material.
func LoadSigningKey(path string, data []byte, readErr error, create bool, now time.Time) (*jose.SigningKey, bool, error) {
	if readErr != nil {
		if !create || !errors.Is(readErr, fs.ErrNotExist) {
			return nil, false, readErr
		}
		key, err := jose.GenerateKey(jose.EdDSA, now)
		if err != nil {
			return nil, false, err
		}
		b, err := key.MarshalPrivate()
		if err != nil {
			return nil, false, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, false, err
		}
		// O_EXCL: two replicas sharing a folder must not overwrite each
		// other's fresh key; the loser reads the winner's.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			data, err := os.ReadFile(path)
			if err != nil {
				return nil, false, err
			}
			k, err := ParseSigningKey(data)
			return k, false, err
		}
		if err != nil {
			return nil, false, err
		}
		if _, err := f.Write(b); err != nil {
			_ = f.Close()
			return nil, false, err
		}
		if err := f.Sync(); err != nil {
			_ = f.Close()
			return nil, false, err
		}
		return key, true, f.Close()
	}
	k, err := ParseSigningKey(data)
	return k, false, err
}

// ParseSigningKey parses a private JWK or PEM private key.
func ParseSigningKey(data []byte) (*jose.SigningKey, error) {
	trimmed := strings.TrimSpace(string(data))
	if strings.HasPrefix(trimmed, "{") {
		return jose.UnmarshalPrivateKey([]byte(trimmed))
	}
	block, _ := pem.Decode([]byte(trimmed))
	if block == nil {
		return nil, errors.New("neither a JWK nor a PEM private key")
	}
	var priv any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		priv, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		priv, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("PEM private key: %w", err)
	}
	jwk, err := privateJWK(priv)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(jwk)
	if err != nil {
		return nil, err
	}
	return jose.UnmarshalPrivateKey(b)
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// publicJWK returns the public JWK members of pub and its algorithm.
func publicJWK(pub crypto.PublicKey) (map[string]any, string, error) {
	switch k := pub.(type) {
	case ed25519.PublicKey:
		return map[string]any{"kty": "OKP", "crv": "Ed25519", "x": b64(k)}, jose.EdDSA, nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, "", errors.New("EC keys must be P-256 (ES256)")
		}
		raw, err := k.Bytes() // 0x04 || X || Y, fixed width
		if err != nil {
			return nil, "", err
		}
		return map[string]any{"kty": "EC", "crv": "P-256", "x": b64(raw[1:33]), "y": b64(raw[33:])}, jose.ES256, nil
	}
	return nil, "", fmt.Errorf("unsupported key type %T (want Ed25519 or P-256)", pub)
}

func privateJWK(priv any) (map[string]any, error) {
	var jwk map[string]any
	var alg string
	var err error
	switch k := priv.(type) {
	case ed25519.PrivateKey:
		jwk, alg, err = publicJWK(k.Public())
		if err == nil {
			jwk["d"] = b64(k.Seed())
		}
	case *ecdsa.PrivateKey:
		jwk, alg, err = publicJWK(&k.PublicKey)
		if err == nil {
			d, derr := k.Bytes()
			if derr != nil {
				return nil, derr
			}
			jwk["d"] = b64(d)
		}
	default:
		return nil, fmt.Errorf("unsupported private key type %T (want Ed25519 or P-256)", priv)
	}
	if err != nil {
		return nil, err
	}
	tp, err := thumbprint(jwk)
	if err != nil {
		return nil, err
	}
	jwk["kid"], jwk["alg"], jwk["use"] = tp, alg, "sig"
	return jwk, nil
}

// thumbprint is the RFC 7638 SHA-256 thumbprint: the required members in
// lexicographic order, no whitespace.
func thumbprint(jwk map[string]any) (string, error) {
	var members []string
	switch jwk["kty"] {
	case "OKP":
		members = []string{"crv", "kty", "x"}
	case "EC":
		members = []string{"crv", "kty", "x", "y"}
	default:
		return "", fmt.Errorf("no thumbprint for kty %v", jwk["kty"])
	}
	var b strings.Builder
	b.WriteByte('{')
	for i, m := range members {
		if i > 0 {
			b.WriteByte(',')
		}
		v, _ := json.Marshal(jwk[m])
		fmt.Fprintf(&b, "%q:%s", m, v)
	}
	b.WriteByte('}')
	sum := sha256.Sum256([]byte(b.String()))
	return b64(sum[:]), nil
}

// newPublicKey describes pub under kid.
func newPublicKey(kid string, pub crypto.PublicKey, active bool) (PublicKey, error) {
	jwk, alg, err := publicJWK(pub)
	if err != nil {
		return PublicKey{}, err
	}
	tp, err := thumbprint(jwk)
	if err != nil {
		return PublicKey{}, err
	}
	if kid == "" {
		kid = tp
	}
	jwk["kid"], jwk["alg"], jwk["use"] = kid, alg, "sig"
	return PublicKey{KeyID: kid, Algorithm: alg, Active: active, JWK: jwk, Thumbprint: tp, key: pub}, nil
}

// ParseVerificationKeys reads a retired key file: a JWK (public or private;
// private members are ignored), a JWK Set, or PEM ("PUBLIC KEY", or a
// private key whose public half is used).
func ParseVerificationKeys(data []byte) ([]PublicKey, error) {
	trimmed := strings.TrimSpace(string(data))
	if strings.HasPrefix(trimmed, "{") {
		doc := []byte(trimmed)
		var probe struct {
			Keys json.RawMessage `json:"keys"`
		}
		if err := json.Unmarshal(doc, &probe); err != nil {
			return nil, fmt.Errorf("JSON key: %w", err)
		}
		if probe.Keys == nil {
			doc = []byte(`{"keys":[` + trimmed + `]}`)
		}
		set, err := jose.ParseJWKS(doc)
		if err != nil {
			return nil, err
		}
		var out []PublicKey
		for _, k := range set.Keys() {
			pk, err := newPublicKey(k.KeyID, k.Key, false)
			if err != nil {
				return nil, err
			}
			out = append(out, pk)
		}
		if len(out) == 0 {
			return nil, errors.New("no Ed25519 or P-256 signature key found")
		}
		return out, nil
	}
	block, _ := pem.Decode([]byte(trimmed))
	if block == nil {
		return nil, errors.New("neither JWK/JWKS nor PEM")
	}
	if block.Type == "PUBLIC KEY" {
		pub, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM public key: %w", err)
		}
		pk, err := newPublicKey("", pub, false)
		if err != nil {
			return nil, err
		}
		return []PublicKey{pk}, nil
	}
	k, err := ParseSigningKey([]byte(trimmed))
	if err != nil {
		return nil, err
	}
	p := k.PublicKey()
	pk, err := newPublicKey(p.KeyID, p.Key, false)
	if err != nil {
		return nil, err
	}
	return []PublicKey{pk}, nil
}
