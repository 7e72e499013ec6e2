package fetch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"time"
)

// Resolver looks up the IP addresses of a host name. *net.Resolver
// implements it; tests inject one so that no real lookup happens.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// DialFunc opens a connection to address, which the fetcher always passes as
// a literal "ip:port" it has already checked. (*net.Dialer).DialContext has
// this signature.
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// dial is the http.Transport's DialContext. It resolves the host itself,
// refuses the whole host if any of its addresses is forbidden, and dials the
// checked IPs, so net/http never resolves anything and a DNS answer that
// changes between check and use (rebinding) cannot slip through.
func (f *Fetcher) dial(ctx context.Context, network, address string) (net.Conn, error) {
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("fetch: dial %q: %w", address, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("fetch: dial %q: bad port", address)
	}
	addrs, err := f.resolve(ctx, network, host)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, a := range addrs {
		conn, err := f.dialContext(ctx, network, netip.AddrPortFrom(a, uint16(port)).String())
		if err == nil {
			return conn, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("fetch: dial %s: %w", host, errors.Join(errs...))
}

// resolve returns the addresses to dial for host, all of them checked.
func (f *Fetcher) resolve(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		if err := f.addrs.check(a); err != nil {
			return nil, err
		}
		return []netip.Addr{a.Unmap()}, nil
	}
	lookup := "ip"
	switch network {
	case "tcp4":
		lookup = "ip4"
	case "tcp6":
		lookup = "ip6"
	}
	addrs, err := f.resolver.LookupNetIP(ctx, lookup, host)
	if err != nil {
		return nil, fmt.Errorf("fetch: resolve %s: %w", host, err)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("fetch: resolve %s: no addresses", host)
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		// All or nothing: a public name with a private address among its
		// records is an attack or a misconfiguration, either way not a
		// server to trust with a fetch.
		if err := f.addrs.check(a); err != nil {
			return nil, fmt.Errorf("%s resolves to a refused address: %w", host, err)
		}
		out = append(out, a.Unmap())
	}
	return out, nil
}

// defaultDialer is used when Config.DialContext is nil. Its Control hook
// checks the address once more at connect time, as a second line of defence
// should a code path ever reach the dialer without going through resolve.
func defaultDialer(p addrPolicy, timeout time.Duration) DialFunc {
	d := &net.Dialer{
		Timeout:   timeout,
		KeepAlive: 30 * time.Second,
		ControlContext: func(_ context.Context, _, address string, _ syscall.RawConn) error {
			return p.checkAddrPort(address)
		},
	}
	return d.DialContext
}

func (p addrPolicy) checkAddrPort(address string) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %q is not ip:port", ErrForbiddenAddress, address)
	}
	return p.check(ap.Addr())
}
