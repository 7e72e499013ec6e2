package jose

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"fmt"

	gojose "github.com/go-jose/go-jose/v4"
)

// Limits on key sets read from elsewhere. The fetcher bounds the bytes too;
// these bound the work done on what it returns.
const (
	maxJWKSBytes = 1 << 20
	maxJWKSKeys  = 100
)

// jwksMediaTypes is the Accept header for jwks_uri fetches (RFC 7517 §8.5.1).
const jwksMediaTypes = "application/jwk-set+json, application/json"

// PublicKey is one verification key.
type PublicKey struct {
	// KeyID is the key's "kid"; it may be empty for a key from a remote set.
	KeyID string
	// Algorithm is the key's declared "alg", or empty if the set did not
	// declare one (then any allowed algorithm that fits the key type is
	// accepted).
	Algorithm string
	// Key is *ecdsa.PublicKey, ed25519.PublicKey or *rsa.PublicKey.
	Key crypto.PublicKey
}

// KeySource finds the verification key a token names. Implementations must be
// safe for concurrent use.
type KeySource interface {
	// LookupKey returns the key whose kid is kid. For an empty kid it returns
	// the set's only key if it holds exactly one. It returns an error wrapping
	// ErrUnknownKey when no key matches, or ErrKeySetUnavailable when the set
	// itself cannot be obtained.
	LookupKey(ctx context.Context, kid string) (PublicKey, error)
}

// KeySet is an immutable set of public signature keys indexed by kid. It is a
// KeySource for keys held locally, and marshals to a JWKS document (RFC 7517
// §5) with "use":"sig", "alg" and "kid" on every key.
type KeySet struct {
	keys []PublicKey
	byID map[string]int
}

var _ KeySource = (*KeySet)(nil)

// NewKeySet returns the set of the public halves of keys, for publishing as a
// JWKS and for verifying locally signed tokens. Keys with the same kid (the
// same key, since kids are thumbprints) appear once.
func NewKeySet(keys ...*SigningKey) *KeySet {
	s := &KeySet{byID: make(map[string]int, len(keys))}
	for _, k := range keys {
		if _, dup := s.byID[k.kid]; dup {
			continue
		}
		s.byID[k.kid] = len(s.keys)
		s.keys = append(s.keys, k.PublicKey())
	}
	return s
}

// ParseJWKS parses a JWKS document. As RFC 7517 §5 asks, members it cannot
// use are ignored rather than failing the whole set: keys of unknown or
// symmetric type ("oct" keys are never used for verification), keys whose
// "use" is not "sig", keys declaring an algorithm we do not implement or that
// does not fit the key, and RSA keys under 2048 bits. Private parameters, if
// a publisher leaked them, are dropped. A document that is not a JSON object
// with a "keys" array, holds more than 100 keys, or repeats a kid is
// malformed.
func ParseJWKS(data []byte) (*KeySet, error) {
	if len(data) > maxJWKSBytes {
		return nil, fmt.Errorf("%w: JWKS of %d bytes exceeds %d", ErrTooLarge, len(data), maxJWKSBytes)
	}
	var doc struct {
		Keys *[]json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%w: JWKS: %w", ErrMalformed, err)
	}
	if doc.Keys == nil {
		return nil, fmt.Errorf("%w: JWKS has no \"keys\" array", ErrMalformed)
	}
	if len(*doc.Keys) > maxJWKSKeys {
		return nil, fmt.Errorf("%w: JWKS holds %d keys, more than %d", ErrMalformed, len(*doc.Keys), maxJWKSKeys)
	}
	s := &KeySet{byID: make(map[string]int, len(*doc.Keys))}
	for _, raw := range *doc.Keys {
		pk, ok := usableKey(raw)
		if !ok {
			continue
		}
		if pk.KeyID != "" {
			if _, dup := s.byID[pk.KeyID]; dup {
				// Two keys answering to one kid make key selection ambiguous.
				return nil, fmt.Errorf("%w: JWKS repeats kid %q", ErrMalformed, pk.KeyID)
			}
			s.byID[pk.KeyID] = len(s.keys)
		}
		s.keys = append(s.keys, pk)
	}
	return s, nil
}

// usableKey turns one JWKS member into a verification key, or reports false if
// it is not a usable signature key.
func usableKey(raw json.RawMessage) (PublicKey, bool) {
	var jwk gojose.JSONWebKey
	if err := jwk.UnmarshalJSON(raw); err != nil {
		return PublicKey{}, false
	}
	if jwk.Use != "" && jwk.Use != "sig" {
		return PublicKey{}, false
	}
	pub := jwk.Public() // drops private parameters; symmetric keys become invalid
	if !pub.Valid() {
		return PublicKey{}, false
	}
	switch pub.Key.(type) {
	case *ecdsa.PublicKey, ed25519.PublicKey, *rsa.PublicKey:
	default:
		return PublicKey{}, false
	}
	pk := PublicKey{KeyID: jwk.KeyID, Algorithm: jwk.Algorithm, Key: pub.Key}
	if pk.Algorithm != "" {
		if !keyFits(pk.Algorithm, pk.Key) {
			return PublicKey{}, false
		}
	} else if !fitsAny(pk.Key) {
		return PublicKey{}, false
	}
	return pk, true
}

// fitsAny reports whether some algorithm we implement can use key; it filters
// out, for example, short RSA keys and curves we do not sign with.
func fitsAny(key crypto.PublicKey) bool {
	for _, alg := range []string{ES256, ES384, ES512, EdDSA, RS256} {
		if keyFits(alg, key) {
			return true
		}
	}
	return false
}

// LookupKey implements KeySource. It never blocks and ignores ctx.
func (s *KeySet) LookupKey(_ context.Context, kid string) (PublicKey, error) {
	if k, ok := s.Lookup(kid); ok {
		return k, nil
	}
	return PublicKey{}, fmt.Errorf("%w: kid %q", ErrUnknownKey, kid)
}

// Lookup returns the key with the given kid. For an empty kid it returns the
// only key of a one-key set: a token without kid is only unambiguous then.
func (s *KeySet) Lookup(kid string) (PublicKey, bool) {
	if s == nil {
		return PublicKey{}, false
	}
	if kid == "" {
		if len(s.keys) == 1 {
			return s.keys[0], true
		}
		return PublicKey{}, false
	}
	i, ok := s.byID[kid]
	if !ok {
		return PublicKey{}, false
	}
	return s.keys[i], true
}

// Keys returns a copy of the keys in the set, in document order.
func (s *KeySet) Keys() []PublicKey {
	if s == nil {
		return nil
	}
	return append([]PublicKey(nil), s.keys...)
}

// Len returns the number of keys in the set.
func (s *KeySet) Len() int {
	if s == nil {
		return 0
	}
	return len(s.keys)
}

// MarshalJSON returns the set as a JWKS document holding public keys only.
func (s *KeySet) MarshalJSON() ([]byte, error) {
	doc := struct {
		Keys []gojose.JSONWebKey `json:"keys"`
	}{Keys: make([]gojose.JSONWebKey, 0, s.Len())}
	if s != nil {
		for _, k := range s.keys {
			doc.Keys = append(doc.Keys, gojose.JSONWebKey{Key: k.Key, KeyID: k.KeyID, Algorithm: k.Algorithm, Use: "sig"})
		}
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("jose: marshalling JWKS: %w", err)
	}
	return b, nil
}
