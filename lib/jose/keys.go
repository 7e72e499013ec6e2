package jose

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	gojose "github.com/go-jose/go-jose/v4"
)

// Algorithm names ("alg" values, RFC 7518 and RFC 8037).
const (
	ES256 = "ES256"
	ES384 = "ES384"
	ES512 = "ES512"
	EdDSA = "EdDSA"
	RS256 = "RS256"
	RS384 = "RS384"
	RS512 = "RS512"
	PS256 = "PS256"
	PS384 = "PS384"
	PS512 = "PS512"
)

// minRSABits is the smallest RSA modulus accepted for verification (RFC 7518 §3.3).
const minRSABits = 2048

// SigningKey is a private signing key with its kid and algorithm. It is
// immutable and safe for concurrent use.
type SigningKey struct {
	kid     string
	alg     string
	created time.Time
	priv    crypto.Signer // *ecdsa.PrivateKey (P-256) or ed25519.PrivateKey

	// signers caches one go-jose signer per "typ" value, so that Sign on the
	// hot path does not rebuild header options each time.
	signers sync.Map // string → gojose.Signer
}

// GenerateKey creates a new signing key for alg, which must be ES256 or EdDSA.
// The kid is the key's RFC 7638 JWK thumbprint (SHA-256, base64url), so it is
// unique per key and can be recomputed by anyone holding the public key. now
// is recorded as the key's creation time.
func GenerateKey(alg string, now time.Time) (*SigningKey, error) {
	var priv crypto.Signer
	var err error
	switch alg {
	case ES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case EdDSA:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	default:
		return nil, fmt.Errorf("%w: cannot generate %q keys (want %s or %s)", ErrAlgNotAllowed, alg, ES256, EdDSA)
	}
	if err != nil {
		return nil, fmt.Errorf("jose: generating %s key: %w", alg, err)
	}
	kid, err := thumbprint(priv.Public())
	if err != nil {
		return nil, err
	}
	return &SigningKey{kid: kid, alg: alg, created: now, priv: priv}, nil
}

// KeyID returns the key's kid.
func (k *SigningKey) KeyID() string { return k.kid }

// Algorithm returns the key's "alg" (ES256 or EdDSA).
func (k *SigningKey) Algorithm() string { return k.alg }

// Created returns the creation time given to GenerateKey (or stored with the
// key by MarshalPrivate).
func (k *SigningKey) Created() time.Time { return k.created }

// PublicKey returns the public half of the key.
func (k *SigningKey) PublicKey() PublicKey {
	return PublicKey{KeyID: k.kid, Algorithm: k.alg, Key: k.priv.Public()}
}

// privateJWKMeta is the extra member MarshalPrivate adds to the JWK. RFC 7517 §4
// lets a JWK carry members an implementation does not understand, so the
// result is still a plain JWK for any other reader.
type privateJWKMeta struct {
	Created *int64 `json:"iat,omitempty"`
}

// MarshalPrivate returns the key as a private JWK in JSON, including "kid",
// "alg", "use":"sig" and the creation time as "iat" (Unix seconds). The
// result is secret: callers must encrypt it before storing it.
func (k *SigningKey) MarshalPrivate() ([]byte, error) {
	jwk := gojose.JSONWebKey{Key: k.priv, KeyID: k.kid, Algorithm: k.alg, Use: "sig"}
	b, err := jwk.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("jose: marshalling private key %s: %w", k.kid, err)
	}
	if k.created.IsZero() {
		return b, nil
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(b, &members); err != nil {
		return nil, fmt.Errorf("jose: marshalling private key %s: %w", k.kid, err)
	}
	members["iat"] = json.RawMessage(fmt.Sprint(k.created.Unix()))
	return json.Marshal(members)
}

// UnmarshalPrivateKey parses a private JWK written by MarshalPrivate. It
// accepts only ES256 (P-256) and EdDSA (Ed25519) keys that carry a kid, and
// checks that the private and public parts belong together by signing and
// verifying a test message.
func UnmarshalPrivateKey(data []byte) (*SigningKey, error) {
	var jwk gojose.JSONWebKey
	if err := jwk.UnmarshalJSON(data); err != nil {
		return nil, fmt.Errorf("%w: private key: %w", ErrMalformed, err)
	}
	var meta privateJWKMeta
	if err := json.Unmarshal(data, &meta); err != nil {
		return nil, fmt.Errorf("%w: private key iat: %w", ErrMalformed, err)
	}
	if jwk.KeyID == "" {
		return nil, fmt.Errorf("%w: private key has no kid", ErrMalformed)
	}
	if jwk.Use != "" && jwk.Use != "sig" {
		return nil, fmt.Errorf("%w: private key %s has use %q", ErrMalformed, jwk.KeyID, jwk.Use)
	}
	var priv crypto.Signer
	switch key := jwk.Key.(type) {
	case *ecdsa.PrivateKey:
		if jwk.Algorithm != ES256 || key.Curve != elliptic.P256() {
			return nil, fmt.Errorf("%w: private key %s: EC key must be P-256 with alg ES256", ErrAlgNotAllowed, jwk.KeyID)
		}
		priv = key
	case ed25519.PrivateKey:
		if jwk.Algorithm != EdDSA {
			return nil, fmt.Errorf("%w: private key %s: Ed25519 key must have alg EdDSA", ErrAlgNotAllowed, jwk.KeyID)
		}
		priv = key
	default:
		return nil, fmt.Errorf("%w: private key %s: want an ES256 or EdDSA private key, got %T", ErrMalformed, jwk.KeyID, jwk.Key)
	}
	k := &SigningKey{kid: jwk.KeyID, alg: jwk.Algorithm, priv: priv}
	if meta.Created != nil {
		k.created = time.Unix(*meta.Created, 0)
	}
	if err := k.selfTest(); err != nil {
		return nil, err
	}
	return k, nil
}

// selfTest signs and verifies a fixed message, catching a JWK whose public
// coordinates do not match its private scalar (go-jose trusts both as given).
func (k *SigningKey) selfTest() error {
	msg := sha256.Sum256([]byte("mcpid jose self-test"))
	switch priv := k.priv.(type) {
	case *ecdsa.PrivateKey:
		sig, err := ecdsa.SignASN1(rand.Reader, priv, msg[:])
		if err == nil && ecdsa.VerifyASN1(&priv.PublicKey, msg[:], sig) {
			return nil
		}
	case ed25519.PrivateKey:
		if ed25519.Verify(priv.Public().(ed25519.PublicKey), msg[:], ed25519.Sign(priv, msg[:])) {
			return nil
		}
	}
	return fmt.Errorf("%w: private key %s: public and private parts do not match", ErrMalformed, k.kid)
}

// thumbprint returns the RFC 7638 SHA-256 thumbprint of a public key, base64url.
func thumbprint(pub crypto.PublicKey) (string, error) {
	jwk := gojose.JSONWebKey{Key: pub}
	sum, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("jose: key thumbprint: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(sum), nil
}

// keyFits reports whether pub is the right kind of key for alg. go-jose checks
// some of this itself; checking here too gives one clear error for every
// mismatch and enforces our RSA minimum.
func keyFits(alg string, pub crypto.PublicKey) bool {
	switch key := pub.(type) {
	case *ecdsa.PublicKey:
		switch alg {
		case ES256:
			return key.Curve == elliptic.P256()
		case ES384:
			return key.Curve == elliptic.P384()
		case ES512:
			return key.Curve == elliptic.P521()
		}
	case ed25519.PublicKey:
		return alg == EdDSA && len(key) == ed25519.PublicKeySize
	case *rsa.PublicKey:
		switch alg {
		case RS256, RS384, RS512, PS256, PS384, PS512:
			return key.N != nil && key.N.BitLen() >= minRSABits
		}
	}
	return false
}
