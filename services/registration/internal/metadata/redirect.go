package metadata

import (
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strings"
)

type redirectKind int

const (
	redirectHTTPS        redirectKind = iota + 1 // https on a non-loopback host
	redirectLoopback                             // https on a loopback host
	redirectLoopbackHTTP                         // http on 127.0.0.1, [::1] or localhost (RFC 8252 §7.3)
	redirectPrivateUse                           // reverse-domain private-use scheme (RFC 8252 §7.1)
)

// local reports whether any program on the user's device can receive
// redirects to a URI of this kind.
func (k redirectKind) local() bool {
	return k == redirectLoopback || k == redirectLoopbackHTTP || k == redirectPrivateUse
}

// loopbackHosts are the host names RFC 8252 and MCP accept for loopback
// redirects, as url.URL.Hostname returns them.
var loopbackHosts = []string{"127.0.0.1", "::1", "localhost"}

// schemesNeverAllowed are schemes that run code or read local data in a
// browser; none is reverse-domain, but say it outright.
var schemesNeverAllowed = []string{"javascript", "data", "file", "vbscript", "about", "blob", "filesystem"}

// classifyRedirect checks one redirect URI against the rules that do not
// depend on the application type.
func classifyRedirect(raw string) (redirectKind, *Error) {
	bad := func(format string, args ...any) (redirectKind, *Error) {
		return 0, fail(KindRedirectURI, "redirect_uris", "%q: %s", clip(raw), fmt.Sprintf(format, args...))
	}
	switch {
	case raw == "":
		return bad("empty")
	case len(raw) > MaxURILen:
		return bad("longer than %d characters", MaxURILen)
	case hasSpaceOrControl(raw):
		return bad("contains whitespace or control characters")
	case strings.Contains(raw, "#"):
		return bad("must not contain a fragment")
	case strings.Contains(raw, "*"):
		return bad("wildcards are not allowed")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		return bad("not an absolute URI")
	}
	if !strings.HasPrefix(raw, u.Scheme+":") {
		// url.Parse lowercases the scheme; one spelling per URI keeps exact
		// matching at the authorization endpoint meaningful.
		return bad("the scheme must be lowercase")
	}
	if u.User != nil || strings.Contains(u.Host, "@") {
		return bad("must not contain userinfo")
	}
	switch u.Scheme {
	case "https":
		host := u.Hostname()
		if u.Opaque != "" || host == "" {
			return bad("https URI without a host")
		}
		if isLoopbackHost(host) {
			return redirectLoopback, nil
		}
		return redirectHTTPS, nil
	case "http":
		if u.Opaque != "" || !isLoopbackHost(u.Hostname()) {
			return bad("http is allowed only on loopback (127.0.0.1, [::1], localhost)")
		}
		return redirectLoopbackHTTP, nil
	}
	if slices.Contains(schemesNeverAllowed, strings.ToLower(u.Scheme)) {
		return bad("scheme %q is not allowed", u.Scheme)
	}
	if !reverseDomain(u.Scheme) {
		return bad("a private-use scheme must be a reverse domain name such as com.example.app")
	}
	return redirectPrivateUse, nil
}

func isLoopbackHost(h string) bool {
	return slices.Contains(loopbackHosts, h)
}

// reverseDomain reports whether a scheme is a reverse domain name: at least
// two dot-separated labels of lowercase letters, digits and '-', not
// starting or ending with '-'.
func reverseDomain(scheme string) bool {
	labels := strings.Split(scheme, ".")
	if len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if l == "" || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
				return false
			}
		}
	}
	return true
}

// redirectHost is the name the allowlist is checked against: the host of
// an http(s) URI, or the domain a private-use scheme reverses
// (com.example.app → app.example.com).
func redirectHost(raw string, k redirectKind) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	if k == redirectPrivateUse {
		labels := strings.Split(u.Scheme, ".")
		slices.Reverse(labels)
		return strings.Join(labels, ".")
	}
	return strings.ToLower(u.Hostname())
}

// HostPatterns is a redirect host allowlist: "example.com" (exactly), an IP
// address, or "*.example.com" (any name below example.com, not itself).
type HostPatterns []string

// ParseHostPatterns checks allowlist entries; the error names the bad one.
func ParseHostPatterns(list []string) (HostPatterns, error) {
	var out HostPatterns
	for _, p := range list {
		p = strings.ToLower(strings.TrimSpace(p))
		if p == "" {
			continue
		}
		name := strings.TrimPrefix(p, "*.")
		if _, err := netip.ParseAddr(name); err == nil && name == p {
			out = append(out, p)
			continue
		}
		if !validHostName(name) || (name != p && !strings.Contains(name, ".")) {
			return nil, fmt.Errorf("%q is not a host name, IP address or *.domain pattern", p)
		}
		out = append(out, p)
	}
	return out, nil
}

func validHostName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, l := range strings.Split(h, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
				return false
			}
		}
	}
	return true
}

// allows reports whether host matches; an empty allowlist allows all.
func (ps HostPatterns) allows(host string) bool {
	if len(ps) == 0 {
		return true
	}
	return ps.Match(host)
}

// Match reports whether host matches one of the patterns.
func (ps HostPatterns) Match(host string) bool {
	host = strings.ToLower(host)
	for _, p := range ps {
		if suffix, ok := strings.CutPrefix(p, "*"); ok {
			if len(host) > len(suffix) && strings.HasSuffix(host, suffix) {
				return true
			}
			continue
		}
		if host == p {
			return true
		}
	}
	return false
}
