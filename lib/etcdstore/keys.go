package etcdstore

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// Root is the key prefix under which every mcpid service owns its own prefix.
const Root = "/mcpid/"

// emptyPart stands for an empty key part. url.PathEscape never produces a
// lone "%" (it writes '%' as "%25"), so the encoding stays injective.
const emptyPart = "%"

var serviceName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)

// Prefix is a key prefix ending in "/": a service's root ("/mcpid/token/")
// or a collection below it ("/mcpid/token/grants/"). Build keys with Key and
// collections with Sub; both escape their parts, so a part taken from user
// input (a client_id containing "/", "..", "%") stays one segment and can
// neither reach another collection nor collide with another key.
type Prefix string

// NewPrefix returns the prefix "/mcpid/<service>/". The service name is
// lowercase letters, digits and '-', starting with a letter.
func NewPrefix(service string) (Prefix, error) {
	if !serviceName.MatchString(service) {
		return "", fmt.Errorf("etcdstore: invalid service name %q", service)
	}
	return Prefix(Root + service + "/"), nil
}

// MustPrefix is NewPrefix for package-level variables with a constant service
// name; it panics on an invalid name, which is a programming error.
func MustPrefix(service string) Prefix {
	p, err := NewPrefix(service)
	if err != nil {
		panic(err)
	}
	return p
}

// String returns the prefix as a key string.
func (p Prefix) String() string { return string(p) }

// Key returns the key p + escaped parts joined by "/". It takes at least one
// part; Key("clients", id) under "/mcpid/registration/" is
// "/mcpid/registration/clients/<escaped id>".
func (p Prefix) Key(parts ...string) string {
	return string(p) + joinEscaped(parts)
}

// Sub returns the collection prefix p + escaped parts + "/". Listing or
// watching Sub(...) covers exactly the keys built from it with Key.
func (p Prefix) Sub(parts ...string) Prefix {
	return Prefix(string(p) + joinEscaped(parts) + "/")
}

// Contains reports whether key lies under p.
func (p Prefix) Contains(key string) bool {
	return strings.HasPrefix(key, string(p))
}

// Parts is the inverse of Key: it returns the unescaped parts of key below p.
func (p Prefix) Parts(key string) ([]string, error) {
	if !p.Contains(key) || len(key) == len(p) {
		return nil, fmt.Errorf("etcdstore: key %q not under %q", key, p)
	}
	segs := strings.Split(key[len(p):], "/")
	out := make([]string, len(segs))
	for i, s := range segs {
		part, err := UnescapePart(s)
		if err != nil {
			return nil, fmt.Errorf("etcdstore: key %q: %w", key, err)
		}
		out[i] = part
	}
	return out, nil
}

func joinEscaped(parts []string) string {
	var b strings.Builder
	for i, part := range parts {
		if i > 0 {
			b.WriteByte('/')
		}
		b.WriteString(EscapePart(part))
	}
	return b.String()
}

// EscapePart encodes one key part so that it contains no '/': it is
// url.PathEscape, with the empty string written as "%". The encoding is
// injective (distinct parts give distinct segments) and keeps ordinary
// identifiers readable in etcdctl. Etcd gives "." and ".." no meaning, so
// they are left as they are.
func EscapePart(s string) string {
	if s == "" {
		return emptyPart
	}
	return url.PathEscape(s)
}

var errBadSegment = errors.New("not an escaped key part")

// UnescapePart decodes a segment written by EscapePart. It accepts only the
// exact form EscapePart produces, so each part has one spelling.
func UnescapePart(seg string) (string, error) {
	if seg == emptyPart {
		return "", nil
	}
	s, err := url.PathUnescape(seg)
	if err != nil || seg == "" || EscapePart(s) != seg {
		return "", fmt.Errorf("%w: %q", errBadSegment, seg)
	}
	return s, nil
}
