// Package kek holds the key-encryption keys (KEKs) that protect secrets the
// token service keeps in etcd (signing keys now, connector secrets later).
//
// A KEK file lists versioned 256-bit keys, one per line:
//
//	# comment
//	v2:<base64 of 32 random bytes>
//	v1:<base64 of 32 random bytes>
//
// The first key encrypts; every listed key decrypts. Rotating the KEK is
// therefore: put a new line on top, restart (or roll) the replicas, let the
// elected replica re-encrypt, then drop the old line. Secrets are sealed
// with AES-256-GCM; the additional data binds each ciphertext to its purpose,
// its record id (for example the signing key's kid) and the KEK version, so
// a ciphertext copied onto another record, or relabelled with another
// version, does not open.
package kek

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// KeySize is the size of a KEK in bytes (AES-256).
const KeySize = 32

// ErrUnknownVersion means the ciphertext names a KEK version this ring lacks.
var ErrUnknownVersion = errors.New("kek: unknown key-encryption key version")

// ErrOpen means the ciphertext does not open (wrong key, tampered, or bound to
// another record).
var ErrOpen = errors.New("kek: ciphertext does not open")

var versionRe = regexp.MustCompile(`^[A-Za-z0-9._-]{1,32}$`)

// Ring is an ordered set of KEK versions; the first one encrypts. It is
// immutable and safe for concurrent use.
type Ring struct {
	current   string
	aeads     map[string]cipher.AEAD
	ephemeral bool
}

// Sealed is an encrypted secret as stored.
type Sealed struct {
	// Version names the KEK that sealed it.
	Version string `json:"kek_version"`
	// Nonce and Ciphertext are the AES-GCM nonce and output (tag included).
	Nonce      []byte `json:"nonce"`
	Ciphertext []byte `json:"ciphertext"`
}

// Parse reads a KEK file's contents.
func Parse(data []byte) (*Ring, error) {
	r := &Ring{aeads: map[string]cipher.AEAD{}}
	sc := bufio.NewScanner(bytes.NewReader(data))
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		version, b64, ok := strings.Cut(text, ":")
		if !ok || !versionRe.MatchString(version) {
			return nil, fmt.Errorf("line %d: want <version>:<base64 key>, version of 1 to 32 letters, digits, '.', '_' or '-'", line)
		}
		key, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			key, err = base64.RawURLEncoding.DecodeString(b64)
		}
		if err != nil || len(key) != KeySize {
			// The key itself is never echoed.
			return nil, fmt.Errorf("line %d (version %s): key must be base64 of exactly %d bytes", line, version, KeySize)
		}
		if _, dup := r.aeads[version]; dup {
			return nil, fmt.Errorf("line %d: version %s listed twice", line, version)
		}
		aead, err := newAEAD(key)
		if err != nil {
			return nil, err
		}
		r.aeads[version] = aead
		if r.current == "" {
			r.current = version
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if r.current == "" {
		return nil, errors.New("no key found")
	}
	return r, nil
}

// Ephemeral returns a ring with one random key that lives only in this
// process: secrets it seals cannot be opened after a restart or by another
// replica. For development without a KEK file only.
func Ephemeral() (*Ring, error) {
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	suffix := make([]byte, 6)
	if _, err := rand.Read(suffix); err != nil {
		return nil, err
	}
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	v := "ephemeral-" + base64.RawURLEncoding.EncodeToString(suffix)
	return &Ring{current: v, aeads: map[string]cipher.AEAD{v: aead}, ephemeral: true}, nil
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("kek: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("kek: %w", err)
	}
	return aead, nil
}

// Current is the version that seals.
func (r *Ring) Current() string { return r.current }

// IsEphemeral reports whether the ring is a per-process development ring.
func (r *Ring) IsEphemeral() bool { return r.ephemeral }

// Has reports whether the ring holds version.
func (r *Ring) Has(version string) bool {
	_, ok := r.aeads[version]
	return ok
}

func additionalData(purpose, id, version string) []byte {
	return []byte("mcpid-kek-v1\x00" + purpose + "\x00" + id + "\x00" + version)
}

// Seal encrypts plaintext with the current KEK, bound to purpose and id.
func (r *Ring) Seal(purpose, id string, plaintext []byte) (Sealed, error) {
	aead := r.aeads[r.current]
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return Sealed{}, fmt.Errorf("kek: nonce: %w", err)
	}
	ct := aead.Seal(nil, nonce, plaintext, additionalData(purpose, id, r.current))
	return Sealed{Version: r.current, Nonce: nonce, Ciphertext: ct}, nil
}

// Open decrypts s, which must have been sealed for the same purpose and id.
func (r *Ring) Open(purpose, id string, s Sealed) ([]byte, error) {
	aead, ok := r.aeads[s.Version]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownVersion, s.Version)
	}
	if len(s.Nonce) != aead.NonceSize() {
		return nil, ErrOpen
	}
	pt, err := aead.Open(nil, s.Nonce, s.Ciphertext, additionalData(purpose, id, s.Version))
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}

// Generate returns the contents of a new KEK file with one random key of
// the given version.
func Generate(version string) ([]byte, error) {
	if !versionRe.MatchString(version) {
		return nil, fmt.Errorf("kek: invalid version %q", version)
	}
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	return []byte("# mcpid token service key-encryption key; the first line encrypts.\n" +
		version + ":" + base64.StdEncoding.EncodeToString(key) + "\n"), nil
}

// WriteFile creates path with a new KEK (version "v1"), readable by its owner
// only. It never overwrites an existing file: the keys in etcd would become
// unreadable.
func WriteFile(path string) error {
	data, err := Generate("v1")
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
