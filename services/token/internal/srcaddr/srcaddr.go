// Package srcaddr determines a request's source address for login throttling
// and audit: the peer address, or, when the peer is a configured trusted
// proxy (the edge router, an Ingress), the right-most X-Forwarded-For entry
// that is not itself a trusted proxy.
package srcaddr

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// Resolver resolves source addresses.
type Resolver struct {
	trusted []netip.Prefix
}

// New parses trusted proxy CIDRs (a bare address counts as /32 or /128).
func New(cidrs []string) (*Resolver, error) {
	r := &Resolver{}
	for _, c := range cidrs {
		c = strings.TrimSpace(c)
		if c == "" {
			continue
		}
		if !strings.Contains(c, "/") {
			a, err := netip.ParseAddr(c)
			if err != nil {
				return nil, fmt.Errorf("%q is not an address or CIDR", c)
			}
			r.trusted = append(r.trusted, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, fmt.Errorf("%q is not an address or CIDR", c)
		}
		r.trusted = append(r.trusted, p.Masked())
	}
	return r, nil
}

func (r *Resolver) isTrusted(a netip.Addr) bool {
	for _, p := range r.trusted {
		if p.Contains(a.Unmap()) {
			return true
		}
	}
	return false
}

func parse(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if host, _, err := net.SplitHostPort(s); err == nil {
		s = host
	}
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// Resolve returns the source address given the peer address (host:port or
// bare) and the X-Forwarded-For values, or "" if none can be determined.
func (r *Resolver) Resolve(peer string, xff []string) string {
	p, ok := parse(peer)
	if !ok {
		return ""
	}
	if !r.isTrusted(p) {
		return p.String()
	}
	var hops []string
	for _, v := range xff {
		hops = append(hops, strings.Split(v, ",")...)
	}
	for i := len(hops) - 1; i >= 0; i-- {
		a, ok := parse(hops[i])
		if !ok {
			return p.String() // a malformed chain is not trusted past here
		}
		if !r.isTrusted(a) {
			return a.String()
		}
		p = a
	}
	return p.String()
}
