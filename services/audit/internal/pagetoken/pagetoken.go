// Package pagetoken makes the opaque page tokens of the audit service's
// lists: a cursor bound to the request it came from (filters, ranges,
// order), so a token replayed with other filters is refused
// (PAGE_TOKEN_INVALID) instead of silently skipping results.
package pagetoken

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"

	"google.golang.org/protobuf/proto"
)

const (
	version  = 1
	bindLen  = 8
	maxToken = 8192
)

// ErrInvalid means the token is malformed or was issued for another request.
var ErrInvalid = errors.New("pagetoken: invalid")

var deterministic = proto.MarshalOptions{Deterministic: true}

// Binding returns the part of a request a token is bound to: a digest of
// the given messages (filters and ranges; never the page size or token).
func Binding(kind string, msgs ...proto.Message) []byte {
	h := sha256.New()
	h.Write([]byte(kind))
	for _, m := range msgs {
		b, _ := deterministic.Marshal(m) // nil and valid messages always marshal
		h.Write([]byte{0})
		h.Write(b)
	}
	return h.Sum(nil)[:bindLen]
}

// Encode returns the token for cursor under binding.
func Encode(binding, cursor []byte) string {
	b := make([]byte, 0, 1+bindLen+len(cursor))
	b = append(b, version)
	b = append(b, binding...)
	b = append(b, cursor...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Decode returns the cursor of token, or ErrInvalid.
func Decode(binding []byte, token string) ([]byte, error) {
	if len(token) > maxToken {
		return nil, ErrInvalid
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(b) < 1+bindLen || b[0] != version || !bytes.Equal(b[1:1+bindLen], binding) {
		return nil, ErrInvalid
	}
	return b[1+bindLen:], nil
}
