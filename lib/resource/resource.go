// Package resource canonicalizes resource URIs (RFC 8707 resource indicators,
// RFC 9728 protected resource identifiers).
//
// One canonical form is what makes strict audience binding work: the token
// service writes it into `aud`, the policy service keys policies by it and the
// SDK compares it with its own configured URI. If any of them canonicalized
// differently, a token for "https://CRM.example.com/" would not match a server
// that calls itself "https://crm.example.com". So this is the only
// canonicalizer, and every service uses it.
package resource

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// ErrInvalid is returned (wrapped) for any URI that is not an acceptable
// resource identifier.
var ErrInvalid = errors.New("invalid resource URI")

// maxLen bounds resource URIs: they end up in tokens, keys and log lines.
const maxLen = 2048

// Canonicalize returns the canonical form of a resource URI:
//   - absolute, scheme http or https (lowercased), with a host (lowercased);
//   - default ports (:443 for https, :80 for http) removed;
//   - no userinfo, no fragment; a query is refused (RFC 8707 says SHOULD NOT,
//     and a query makes audience comparison ambiguous);
//   - no trailing slash: "https://a.example/" and "https://a.example" are the
//     same resource, as are ".../mcp/" and ".../mcp";
//   - the path keeps its case (paths are case-sensitive) and must not contain
//     dot segments or empty segments.
func Canonicalize(raw string) (string, error) {
	if raw == "" {
		return "", fmt.Errorf("%w: empty", ErrInvalid)
	}
	if len(raw) > maxLen {
		return "", fmt.Errorf("%w: longer than %d bytes", ErrInvalid, maxLen)
	}
	if strings.TrimSpace(raw) != raw || strings.ContainsAny(raw, " \t\r\n\\") {
		return "", fmt.Errorf("%w: contains whitespace or backslash", ErrInvalid)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "https" && scheme != "http" {
		if u.Scheme == "" {
			return "", fmt.Errorf("%w: not absolute", ErrInvalid)
		}
		return "", fmt.Errorf("%w: scheme %q is not http or https", ErrInvalid, u.Scheme)
	}
	if u.Opaque != "" || u.Host == "" {
		return "", fmt.Errorf("%w: no host", ErrInvalid)
	}
	if u.User != nil {
		return "", fmt.Errorf("%w: userinfo is not allowed", ErrInvalid)
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return "", fmt.Errorf("%w: fragment is not allowed", ErrInvalid)
	}
	if u.RawQuery != "" || u.ForceQuery {
		return "", fmt.Errorf("%w: query is not allowed", ErrInvalid)
	}

	host := strings.ToLower(u.Hostname())
	if host == "" {
		return "", fmt.Errorf("%w: no host", ErrInvalid)
	}
	port := u.Port()
	if strings.HasSuffix(u.Host, ":") {
		return "", fmt.Errorf("%w: empty port", ErrInvalid)
	}
	if (scheme == "https" && port == "443") || (scheme == "http" && port == "80") {
		port = ""
	}
	hostport := host
	if strings.Contains(host, ":") { // IPv6 literal
		hostport = "[" + host + "]"
	}
	if port != "" {
		hostport = net.JoinHostPort(host, port)
	}

	path := u.EscapedPath()
	path = strings.TrimRight(path, "/")
	if path != "" {
		for _, seg := range strings.Split(path[1:], "/") {
			if seg == "" || seg == "." || seg == ".." {
				return "", fmt.Errorf("%w: empty or dot path segment", ErrInvalid)
			}
		}
	}
	return scheme + "://" + hostport + path, nil
}

// Equal reports whether two resource URIs name the same resource. URIs that
// do not canonicalize are never equal to anything.
func Equal(a, b string) bool {
	ca, err := Canonicalize(a)
	if err != nil {
		return false
	}
	cb, err := Canonicalize(b)
	if err != nil {
		return false
	}
	return ca == cb
}
