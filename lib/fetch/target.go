package fetch

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// maxURLLen bounds the URLs we accept; they come from client registrations.
const maxURLLen = 4096

// target is a URL that passed every check that needs no network.
type target struct {
	url  string     // normalized URL: sent, and the cache key
	host string     // lowercase hostname, or the IP literal without brackets
	addr netip.Addr // valid when host is an IP literal
}

// parseTarget checks everything about rawURL that can be checked without DNS
// or a connection: scheme, userinfo, fragment, host syntax, port, the
// trusted-domain policy and, for IP literals, the address policy.
func (f *Fetcher) parseTarget(rawURL string) (target, error) {
	if len(rawURL) > maxURLLen {
		return target{}, fmt.Errorf("%w: longer than %d bytes", ErrInvalidURL, maxURLLen)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return target{}, fmt.Errorf("%w: %w", ErrInvalidURL, err)
	}
	var defaultPort uint16
	switch u.Scheme {
	case "https":
		defaultPort = 443
	case "http":
		if !f.allowHTTP {
			return target{}, fmt.Errorf("%w: http (only https)", ErrSchemeNotAllowed)
		}
		defaultPort = 80
	case "":
		return target{}, fmt.Errorf("%w: %q is not an absolute URL", ErrInvalidURL, rawURL)
	default:
		return target{}, fmt.Errorf("%w: %q", ErrSchemeNotAllowed, u.Scheme)
	}
	switch {
	case u.Opaque != "":
		return target{}, fmt.Errorf("%w: opaque URL", ErrInvalidURL)
	case u.User != nil:
		// Credentials in a URL would be sent to whoever serves it; never
		// legitimate for the documents we fetch.
		return target{}, fmt.Errorf("%w: userinfo not allowed", ErrInvalidURL)
	case strings.Contains(rawURL, "#"):
		return target{}, fmt.Errorf("%w: fragment not allowed", ErrInvalidURL)
	}

	host := strings.ToLower(u.Hostname())
	t := target{host: host}
	if a, err := netip.ParseAddr(host); err == nil {
		t.addr = a
	} else if err := checkHostname(host); err != nil {
		return target{}, err
	}

	port := defaultPort
	if p := u.Port(); p != "" {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return target{}, fmt.Errorf("%w: bad port %q", ErrInvalidURL, p)
		}
		port = uint16(n)
	}
	if port != defaultPort && !f.portAllowed(port) {
		return target{}, fmt.Errorf("%w: port %d not allowed", ErrForbiddenAddress, port)
	}

	if !f.hostTrusted(host) {
		return target{}, fmt.Errorf("%w: %s", ErrHostNotTrusted, host)
	}
	if t.addr.IsValid() {
		if err := f.addrs.check(t.addr); err != nil {
			return target{}, err
		}
	}

	// Rebuild the authority from the checked parts, so what is sent (and
	// cached) is exactly what was checked.
	hostport := host
	if t.addr.Is6() {
		hostport = "[" + host + "]"
	}
	if port != defaultPort {
		hostport = net.JoinHostPort(host, strconv.Itoa(int(port)))
	}
	u.Host = hostport
	u.ForceQuery = false
	t.url = u.String()
	return t, nil
}

func (f *Fetcher) portAllowed(port uint16) bool {
	for _, p := range f.ports {
		if p == port {
			return true
		}
	}
	return false
}

func (f *Fetcher) hostTrusted(host string) bool {
	if f.anyHost {
		return true
	}
	for _, p := range f.hosts {
		if p.match(host) {
			return true
		}
	}
	return f.hostPolicy != nil && f.hostPolicy(host)
}

// checkHostname accepts only LDH DNS names (IDNs must come as xn-- A-labels).
// A name whose last label is numeric is refused: browsers and some resolvers
// read "127.1", "0x7f000001" or "2130706433" as IPv4 addresses, and a name
// must never be an address in disguise.
func checkHostname(h string) error {
	if h == "" {
		return fmt.Errorf("%w: no host", ErrInvalidURL)
	}
	if len(h) > 253 {
		return fmt.Errorf("%w: host name too long", ErrInvalidURL)
	}
	last := ""
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("%w: bad host name %q", ErrInvalidURL, h)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
				return fmt.Errorf("%w: bad host name %q (only a-z, 0-9, '-'; IDNs as xn--)", ErrInvalidURL, h)
			}
		}
		last = label
	}
	if numericLabel(last) {
		return fmt.Errorf("%w: host name %q looks like an IPv4 address", ErrInvalidURL, h)
	}
	return nil
}

// numericLabel reports whether l is a decimal or 0x-hex number, which the
// WHATWG URL parser would treat as (part of) an IPv4 address.
func numericLabel(l string) bool {
	digits := l
	hex := false
	if len(l) >= 2 && l[0] == '0' && l[1] == 'x' {
		digits, hex = l[2:], true
	}
	for i := 0; i < len(digits); i++ {
		c := digits[i]
		if (c < '0' || c > '9') && (!hex || c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// hostPattern is one AllowedHosts entry: an exact host, or "*.suffix" for
// any name below suffix (not suffix itself).
type hostPattern struct {
	exact  string
	suffix string // ".example.com" for "*.example.com"
}

func parseHostPattern(s string) (hostPattern, error) {
	p := strings.ToLower(s)
	if rest, ok := strings.CutPrefix(p, "*."); ok {
		if err := checkHostname(rest); err != nil || !strings.Contains(rest, ".") {
			return hostPattern{}, fmt.Errorf("fetch: AllowedHosts: bad pattern %q (want host, IP or *.domain.tld)", s)
		}
		return hostPattern{suffix: "." + rest}, nil
	}
	if _, err := netip.ParseAddr(p); err == nil {
		return hostPattern{exact: p}, nil
	}
	if err := checkHostname(p); err != nil {
		return hostPattern{}, fmt.Errorf("fetch: AllowedHosts: bad pattern %q (want host, IP or *.domain.tld)", s)
	}
	return hostPattern{exact: p}, nil
}

func (p hostPattern) match(host string) bool {
	if p.suffix != "" {
		return len(host) > len(p.suffix) && strings.HasSuffix(host, p.suffix)
	}
	return host == p.exact
}
