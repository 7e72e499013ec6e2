// Package srcaddr determines the network address a request came from (for
// CIDR allowlists, rate limits, throttling and audit), and whether it lies
// in a configured set of CIDRs — one rule for every service.
//
// REST requests reach the service through the in-process gateway, which
// passes the HTTP peer in the gRPC metadata "x-forwarded-for": the values
// the HTTP client (or a proxy in front of us) sent, then the HTTP peer
// address last. Anyone can write an X-Forwarded-For header, so entries are
// trusted only as far as they were appended by a configured trusted proxy:
// walking from the right, each address that is a trusted proxy passes the
// decision to the entry on its left; the first address that is not a
// trusted proxy is the client. Direct gRPC callers are identified by their
// TCP peer address, and whatever x-forwarded-for metadata they send is
// ignored.
package srcaddr

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/mcpid/mcpid/lib/server"
)

// maxForwardedEntries bounds the X-Forwarded-For walk: a header with
// thousands of entries must not cost thousands of parses.
const maxForwardedEntries = 32

// Prefixes is a set of CIDRs.
type Prefixes []netip.Prefix

// ParsePrefixes parses CIDRs ("10.0.0.0/8", "2001:db8::/32") and bare
// addresses (a /32 or /128). The error names the bad entry.
func ParsePrefixes(list []string) (Prefixes, error) {
	out := make(Prefixes, 0, len(list))
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if p, err := netip.ParsePrefix(s); err == nil {
			if p.Addr().Zone() != "" {
				return nil, fmt.Errorf("%q: zones are not allowed", s)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("%q is neither a CIDR nor an IP address", s)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// Contains reports whether a lies in one of the prefixes. An invalid
// address is in none.
func (ps Prefixes) Contains(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	a = a.Unmap()
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Resolver finds a request's client address.
type Resolver struct {
	trusted Prefixes
}

// NewResolver returns a Resolver that trusts X-Forwarded-For entries
// appended by the given proxies.
func NewResolver(trustedProxies Prefixes) *Resolver {
	return &Resolver{trusted: trustedProxies}
}

// FromContext returns the client address of the gRPC call in ctx, or the
// invalid Addr when it cannot be determined (no peer, a malformed forwarded
// entry in the trusted part of the chain).
func (r *Resolver) FromContext(ctx context.Context) netip.Addr {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return netip.Addr{}
	}
	if !server.IsGatewayPeer(p.Addr) {
		return addrOf(p.Addr)
	}
	md, _ := metadata.FromIncomingContext(ctx)
	return r.Walk(md.Get("x-forwarded-for"))
}

// FromHTTP returns the client address of a plain net/http request (the
// token service's pages): remoteAddr is the immediate peer, after the
// request's X-Forwarded-For values.
func (r *Resolver) FromHTTP(remoteAddr string, xff []string) netip.Addr {
	return r.Walk(append(append([]string(nil), xff...), remoteAddr))
}

// Walk applies the trusted-proxy rule to X-Forwarded-For values (each a
// comma-separated list; the last entry is the immediate peer).
func (r *Resolver) Walk(values []string) netip.Addr {
	var entries []string
	for _, v := range values {
		for e := range strings.SplitSeq(v, ",") {
			entries = append(entries, strings.TrimSpace(e))
		}
	}
	if len(entries) == 0 {
		return netip.Addr{}
	}
	var client netip.Addr
	for i, steps := len(entries)-1, 0; i >= 0 && steps < maxForwardedEntries; i, steps = i-1, steps+1 {
		a, ok := parseEntry(entries[i])
		if !ok {
			// Something a trusted hop vouched for is not an address: the
			// client is unknown.
			return netip.Addr{}
		}
		client = a
		if !r.trusted.Contains(a) {
			return client
		}
	}
	// Every entry was a trusted proxy: the leftmost is the best we know.
	return client
}

// parseEntry parses one X-Forwarded-For entry: an IP, possibly with a port
// ("1.2.3.4:5678", "[2001:db8::1]:443").
func parseEntry(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil && ap.Addr().Zone() == "" {
		return ap.Addr().Unmap(), true
	}
	return netip.Addr{}, false
}

func addrOf(a net.Addr) netip.Addr {
	switch v := a.(type) {
	case *net.TCPAddr:
		if ip, ok := netip.AddrFromSlice(v.IP); ok {
			return ip.Unmap()
		}
	default:
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			return ap.Addr().Unmap()
		}
	}
	return netip.Addr{}
}
