// Package secret generates and checks the bearer secrets the registration
// service hands out: client secrets, registration access tokens and initial
// access tokens.
//
// Every secret is 256 bits from crypto/rand, written as unpadded base64url.
// Only its SHA-256 digest is stored, and a presented secret is checked by
// comparing digests in constant time.
//
// Why a fast hash and not bcrypt/argon2: those exist to slow down guessing of
// low-entropy, human-chosen passwords. These secrets are generated here with
// 256 random bits, so guessing one is infeasible at any hash speed; a slow KDF
// would add nothing but CPU per token request (and a denial-of-service lever
// on the token endpoint). A plain SHA-256 digest of a high-entropy secret
// reveals nothing usable, and being unsalted and deterministic it can also
// serve as a lookup key (initial access tokens are found by their digest).
package secret

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
)

// Bytes is the number of random bytes in a secret (256 bits).
const Bytes = 32

// Digest is the stored form of a secret.
type Digest []byte

// Generate returns a new secret: 256 random bits, unpadded base64url (43
// characters).
func Generate() string {
	return RandomID(Bytes)
}

// RandomID returns n random bytes as unpadded base64url: identifiers that
// must not be guessable (DCR client_ids use 16 bytes, 128 bits).
func RandomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails: crypto/rand aborts the program instead
	return base64.RawURLEncoding.EncodeToString(b)
}

// Hash returns the digest to store for secret s.
func Hash(s string) Digest {
	sum := sha256.Sum256([]byte(s))
	return sum[:]
}

// Hex returns the digest in lowercase hex, for use as a key.
func (d Digest) Hex() string { return hex.EncodeToString(d) }

// Matches reports, in time independent of where the two differ, whether the
// presented secret s has digest d. An empty digest never matches.
func (d Digest) Matches(s string) bool {
	if len(d) != sha256.Size {
		return false
	}
	sum := sha256.Sum256([]byte(s))
	return subtle.ConstantTimeCompare(d, sum[:]) == 1
}
