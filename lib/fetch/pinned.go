package fetch

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
)

// Pinned fetches one URL an operator configured (a JWKS URL): unlike a URL a
// client chose, its host and port are trusted, private and loopback
// addresses included (the token service usually sits on the cluster
// network, or on loopback in development), and plain http is allowed only
// when the URL says http. Nothing else is reachable through it.
//
// Get bypasses the response cache, so *Pinned is a jose.Fetcher for
// jose.KeySetCache, which decides when to fetch: a refresh for an unknown
// kid must see the current document.
type Pinned struct{ f *Fetcher }

// NewPinned returns the Pinned fetcher of raw. Its errors do not name the
// setting; callers wrap them with it.
func NewPinned(raw string) (*Pinned, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Hostname() == "" {
		return nil, fmt.Errorf("%q is not an http(s) URL", raw)
	}
	fc := Config{
		AllowedHosts: []string{u.Hostname()},
		AllowHTTP:    u.Scheme == "http",
		AllowPrivate: true,
		MaxBodyBytes: 1 << 20,
		// The key-set cache spaces fetches already; a remembered failure
		// would only delay recovery once the token service is up.
		NegativeTTL: -1,
	}
	if p := u.Port(); p != "" {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("port %q: %w", p, err)
		}
		fc.AllowedPorts = []uint16{uint16(n)}
	}
	f, err := New(fc)
	if err != nil {
		return nil, err
	}
	return &Pinned{f: f}, nil
}

// Get fetches u fresh (never from the response cache) and returns its body.
func (p *Pinned) Get(ctx context.Context, u, accept string) ([]byte, error) {
	resp, err := p.f.GetFresh(ctx, u, accept)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// Close releases idle connections.
func (p *Pinned) Close() { p.f.Close() }
