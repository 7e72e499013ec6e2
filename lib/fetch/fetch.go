// Package fetch is the one way mcpid fetches URLs that someone else chose:
// CIMD client metadata documents, jwks_uri, software-statement keys and OIDC
// discovery. Those URLs come from clients and upstream issuers, so a plain
// http.Get would let anyone who can register a client make our servers call
// into the cluster (SSRF): the cloud metadata service, etcd, other services.
//
// A Fetcher therefore, in this order:
//   - parses the URL: https only (http only with AllowHTTP), no userinfo, no
//     fragment, an LDH host name or an IP literal, the scheme's default port
//     unless AllowedPorts lists another;
//   - applies the trusted-domain policy, before any DNS lookup or connection;
//   - serves from its response cache or negative cache, or takes a token from
//     the host's rate limiter;
//   - resolves the name itself, refuses the host if any address is loopback,
//     private, link-local, CGNAT, metadata, multicast, reserved, ... (also in
//     their IPv4-mapped, NAT64 and 6to4 forms), and dials exactly the checked
//     IP, so net/http never resolves anything; TLS is still verified against
//     the host name;
//   - never follows redirects, and bounds the time of the whole exchange
//     (body included) and the size of the body.
package fetch

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Errors callers can tell apart with errors.Is. Each is returned wrapped with
// details.
var (
	// ErrInvalidURL: the URL is malformed or has userinfo, a fragment or a
	// host name that is not a plain DNS name.
	ErrInvalidURL = errors.New("fetch: invalid URL")
	// ErrSchemeNotAllowed: not https (or http with AllowHTTP).
	ErrSchemeNotAllowed = errors.New("fetch: scheme not allowed")
	// ErrHostNotTrusted: the host is outside the trusted-domain policy.
	ErrHostNotTrusted = errors.New("fetch: host not trusted")
	// ErrForbiddenAddress: the host is, or resolves to, an address the
	// policy refuses, or the port is not allowed.
	ErrForbiddenAddress = errors.New("fetch: forbidden address")
	// ErrRedirect: the server answered 3xx. Redirects are never followed.
	ErrRedirect = errors.New("fetch: redirect refused")
	// ErrBadStatus: the server answered with a status other than 2xx/3xx.
	ErrBadStatus = errors.New("fetch: unexpected status")
	// ErrTooLarge: the body is larger than MaxBodyBytes.
	ErrTooLarge = errors.New("fetch: response too large")
	// ErrTimeout: the exchange did not finish within Timeout.
	ErrTimeout = errors.New("fetch: timed out")
	// ErrRateLimited: the host's rate limit is exhausted; nothing was sent.
	ErrRateLimited = errors.New("fetch: rate limited")
	// ErrNegativeCached: the same fetch failed recently; the error also
	// wraps that original failure.
	ErrNegativeCached = errors.New("fetch: recent failure cached")
)

// StatusError carries the status of a refused response. It matches
// ErrRedirect for 3xx and ErrBadStatus otherwise.
type StatusError struct {
	URL        string
	StatusCode int
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%v: %s answered %d", e.Unwrap(), e.URL, e.StatusCode)
}

// Unwrap returns ErrRedirect or ErrBadStatus.
func (e *StatusError) Unwrap() error {
	if e.StatusCode >= 300 && e.StatusCode < 400 {
		return ErrRedirect
	}
	return ErrBadStatus
}

// Defaults for zero Config fields.
const (
	DefaultMaxBodyBytes  = 256 << 10
	DefaultTimeout       = 10 * time.Second
	DefaultHostRate      = rate.Limit(1) // fetches per second per host, sustained
	DefaultHostBurst     = 10
	DefaultNegativeTTL   = 30 * time.Second
	DefaultMinTTL        = time.Minute
	DefaultMaxTTL        = time.Hour
	DefaultMaxCacheBytes = 8 << 20
	DefaultUserAgent     = "mcpid-fetch/1"
)

// Config configures a Fetcher. Zero values mean the defaults above; the
// escape hatches are all off by default.
type Config struct {
	// The trusted-domain policy, checked before any DNS lookup. A host is
	// trusted if it matches an AllowedHosts entry ("example.com" exactly, an
	// IP literal exactly, or "*.example.com" for any name below
	// example.com but not example.com itself), or HostPolicy returns true
	// for it (host lowercased, IPv6 without brackets), or AllowAnyHost is
	// set. One of the three must be set: New refuses a Config without a
	// policy, so "trust everyone" is always a visible choice.
	AllowedHosts []string
	HostPolicy   func(host string) bool
	AllowAnyHost bool

	// AllowHTTP permits http:// URLs (tests, development installs).
	AllowHTTP bool
	// AllowPrivate permits loopback, private (RFC 1918, fc00::/7),
	// link-local and CGNAT addresses, for tests and installs whose trusted
	// issuers live on an internal network. It never permits the metadata
	// addresses, unspecified, multicast, broadcast, documentation or
	// reserved ranges.
	AllowPrivate bool
	// AllowMetadata permits the cloud metadata addresses
	// (169.254.169.254, fd00:ec2::254, ...). There is almost never a reason
	// to set it.
	AllowMetadata bool
	// AllowedPorts lists ports allowed in addition to the scheme's default
	// (443, or 80 for http). Other ports are refused because they let a URL
	// reach arbitrary services on an otherwise public host.
	AllowedPorts []uint16

	// MaxBodyBytes bounds the response body (default 256 KiB).
	MaxBodyBytes int64
	// Timeout bounds the whole exchange: resolution, connection, TLS,
	// headers and reading the body (default 10 s).
	Timeout time.Duration

	// HostRate and HostBurst limit network fetches per host name; cache
	// hits are free. rate.Inf disables the limit.
	HostRate  rate.Limit
	HostBurst int

	// NegativeTTL is how long a failed fetch is remembered and answered
	// with ErrNegativeCached (default 30 s; negative disables).
	NegativeTTL time.Duration
	// MinTTL and MaxTTL bound how long a 200 response is reused: the
	// freshness from Cache-Control max-age (less Age) or Expires, clamped
	// to [MinTTL, MaxTTL]. Responses marked no-store or no-cache are not
	// reused at all. Defaults 1 min and 1 h.
	MinTTL, MaxTTL time.Duration
	// MaxCacheBytes bounds the response cache (default 8 MiB; negative
	// disables caching).
	MaxCacheBytes int64

	// Resolver defaults to net.DefaultResolver.
	Resolver Resolver
	// DialContext defaults to a net.Dialer that re-checks the address at
	// connect time. It is only ever called with a checked "ip:port".
	DialContext DialFunc
	// RootCAs defaults to the system roots.
	RootCAs *x509.CertPool
	// Now defaults to time.Now; it drives the caches and rate limits.
	Now func() time.Time
	// UserAgent defaults to DefaultUserAgent.
	UserAgent string
}

// Response is a successful (2xx) response.
type Response struct {
	URL         string // the normalized URL that was fetched
	StatusCode  int
	ContentType string // as sent; callers check it against what they accept
	Body        []byte // the caller's own copy
	FetchedAt   time.Time
	Expires     time.Time // until when it is served from the cache; zero if not cached
	FromCache   bool
}

func (r *Response) clone(fromCache bool) *Response {
	c := *r
	c.Body = bytes.Clone(r.Body)
	c.FromCache = fromCache
	return &c
}

// Fetcher fetches URLs under the policy of its Config. It is safe for
// concurrent use.
type Fetcher struct {
	hosts         []hostPattern
	hostPolicy    func(string) bool
	anyHost       bool
	allowHTTP     bool
	ports         []uint16
	addrs         addrPolicy
	maxBody       int64
	timeout       time.Duration
	unlimited     bool
	newLimiter    func() *rate.Limiter
	negTTL        time.Duration
	minTTL        time.Duration
	maxTTL        time.Duration
	maxCacheBytes int64
	resolver      Resolver
	dialContext   DialFunc
	now           func() time.Time
	userAgent     string
	transport     *http.Transport
	client        *http.Client

	mu         sync.Mutex
	cache      map[string]*cacheEntry
	cacheBytes int64
	neg        map[string]negEntry
	limiters   map[string]*rate.Limiter
	inflight   map[string]*call
}

// call is one network fetch that concurrent callers of the same URL share.
type call struct {
	done chan struct{}
	resp *Response
	err  error
}

// New returns a Fetcher for cfg, or an error naming the bad setting.
func New(cfg Config) (*Fetcher, error) {
	if len(cfg.AllowedHosts) == 0 && cfg.HostPolicy == nil && !cfg.AllowAnyHost {
		return nil, errors.New("fetch: no trusted-domain policy: set AllowedHosts, HostPolicy or AllowAnyHost")
	}
	f := &Fetcher{
		hostPolicy:    cfg.HostPolicy,
		anyHost:       cfg.AllowAnyHost,
		allowHTTP:     cfg.AllowHTTP,
		addrs:         addrPolicy{allowPrivate: cfg.AllowPrivate, allowMetadata: cfg.AllowMetadata},
		maxBody:       orDefault(cfg.MaxBodyBytes, DefaultMaxBodyBytes),
		timeout:       orDefault(cfg.Timeout, DefaultTimeout),
		negTTL:        orDefault(cfg.NegativeTTL, DefaultNegativeTTL),
		minTTL:        orDefault(cfg.MinTTL, DefaultMinTTL),
		maxTTL:        orDefault(cfg.MaxTTL, DefaultMaxTTL),
		maxCacheBytes: orDefault(cfg.MaxCacheBytes, DefaultMaxCacheBytes),
		resolver:      cfg.Resolver,
		dialContext:   cfg.DialContext,
		now:           cfg.Now,
		userAgent:     cfg.UserAgent,
		cache:         map[string]*cacheEntry{},
		neg:           map[string]negEntry{},
		limiters:      map[string]*rate.Limiter{},
		inflight:      map[string]*call{},
	}
	for _, h := range cfg.AllowedHosts {
		p, err := parseHostPattern(h)
		if err != nil {
			return nil, err
		}
		f.hosts = append(f.hosts, p)
	}
	for _, p := range cfg.AllowedPorts {
		if p == 0 {
			return nil, errors.New("fetch: AllowedPorts: port 0")
		}
	}
	f.ports = append([]uint16(nil), cfg.AllowedPorts...)
	if cfg.MinTTL == 0 && f.minTTL > f.maxTTL {
		f.minTTL = f.maxTTL // only MaxTTL was set, below the default minimum
	}
	switch {
	case f.maxBody < 0:
		return nil, errors.New("fetch: MaxBodyBytes must not be negative")
	case f.timeout < 0:
		return nil, errors.New("fetch: Timeout must not be negative")
	case f.minTTL < 0 || f.maxTTL < 0:
		return nil, errors.New("fetch: MinTTL and MaxTTL must not be negative")
	case f.minTTL > f.maxTTL:
		return nil, fmt.Errorf("fetch: MinTTL (%v) is above MaxTTL (%v)", f.minTTL, f.maxTTL)
	case cfg.HostRate < 0 || cfg.HostBurst < 0:
		return nil, errors.New("fetch: HostRate and HostBurst must not be negative")
	}

	hostRate, hostBurst := orDefault(cfg.HostRate, DefaultHostRate), orDefault(cfg.HostBurst, DefaultHostBurst)
	f.unlimited = hostRate == rate.Inf
	f.newLimiter = func() *rate.Limiter { return rate.NewLimiter(hostRate, hostBurst) }
	if f.resolver == nil {
		f.resolver = net.DefaultResolver
	}
	if f.dialContext == nil {
		f.dialContext = defaultDialer(f.addrs, f.timeout)
	}
	if f.now == nil {
		f.now = time.Now
	}
	if f.userAgent == "" {
		f.userAgent = DefaultUserAgent
	}

	f.transport = &http.Transport{
		// Never a proxy, whatever HTTPS_PROXY says: the proxy would resolve
		// and connect on our behalf, past every address check.
		Proxy:       nil,
		DialContext: f.dial,
		TLSClientConfig: &tls.Config{
			RootCAs:    cfg.RootCAs,
			MinVersion: tls.VersionTLS12,
			// ServerName stays empty: net/http sets it to the URL's
			// host, so SNI and verification use the name, not the IP.
		},
		ForceAttemptHTTP2:      true, // a custom DialContext would otherwise turn HTTP/2 off
		MaxResponseHeaderBytes: 64 << 10,
		MaxIdleConns:           64,
		MaxIdleConnsPerHost:    2,
		IdleConnTimeout:        30 * time.Second,
	}
	f.client = &http.Client{
		Transport: f.transport,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // hand the 3xx back; fetch refuses it
		},
	}
	return f, nil
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Close releases idle connections. The Fetcher stays usable.
func (f *Fetcher) Close() {
	f.transport.CloseIdleConnections()
}

// Get fetches rawURL with the given Accept header (none if empty) and
// returns a 2xx response, from the cache if a fresh copy is there.
//
// Concurrent Gets of the same URL share one network fetch. That fetch runs
// detached from ctx (keeping its values) and bounded by Timeout, so one
// caller giving up neither fails the others nor poisons the negative cache;
// a caller whose ctx ends gets ctx's error at once.
func (f *Fetcher) Get(ctx context.Context, rawURL, accept string) (*Response, error) {
	return f.get(ctx, rawURL, accept, true)
}

// GetFresh is Get without the response cache lookup, for when a cached copy
// is known to be stale (a JWKS without the kid a token names). The result
// replaces the cached copy. Rate limits and the negative cache still apply.
func (f *Fetcher) GetFresh(ctx context.Context, rawURL, accept string) (*Response, error) {
	return f.get(ctx, rawURL, accept, false)
}

func (f *Fetcher) get(ctx context.Context, rawURL, accept string, useCache bool) (*Response, error) {
	t, err := f.parseTarget(rawURL)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("fetch %s: %w", t.url, err) // spend no rate-limit token on it
	}
	key := t.url + " " + accept // a space cannot occur in a parsed URL
	now := f.now()

	f.mu.Lock()
	if useCache {
		if r, ok := f.cached(key, now); ok {
			r = r.clone(true)
			f.mu.Unlock()
			return r, nil
		}
	}
	if err := f.negative(key, now); err != nil {
		f.mu.Unlock()
		return nil, fmt.Errorf("%w: %w", ErrNegativeCached, err)
	}
	c, ok := f.inflight[key]
	if !ok {
		if !f.allowHost(t.host, now) {
			f.mu.Unlock()
			return nil, fmt.Errorf("%w: %s", ErrRateLimited, t.host)
		}
		c = &call{done: make(chan struct{})}
		f.inflight[key] = c
		go f.run(context.WithoutCancel(ctx), key, t, accept, c)
	}
	f.mu.Unlock()

	select {
	case <-c.done:
		if c.err != nil {
			return nil, c.err
		}
		return c.resp.clone(false), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("fetch %s: %w", t.url, ctx.Err())
	}
}

// run performs the shared fetch for c and records its outcome in the caches.
func (f *Fetcher) run(ctx context.Context, key string, t target, accept string, c *call) {
	resp, err := f.fetch(ctx, t, accept)
	now := f.now()
	f.mu.Lock()
	delete(f.inflight, key)
	if err != nil {
		f.putNegative(key, err, now)
	} else if !resp.Expires.IsZero() && !f.putCached(key, resp, now) {
		resp.Expires = time.Time{}
	}
	f.mu.Unlock()
	c.resp, c.err = resp, err
	close(c.done)
}

// fetch does the network exchange for t. Every error it returns is about
// the remote end, so all of them are negative-cached.
func (f *Fetcher) fetch(ctx context.Context, t target, accept string) (*Response, error) {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	// Any failure once our deadline has passed is reported as the timeout
	// it really is, whatever layer noticed it first.
	fail := func(err error) error {
		if ctx.Err() != nil {
			return fmt.Errorf("%w after %v: %w", ErrTimeout, f.timeout, err)
		}
		return err
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.url, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidURL, err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	req.Header.Set("User-Agent", f.userAgent)
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, fail(err)
	}
	defer func() { _ = resp.Body.Close() }() // nothing to do about a close error on a read-only body
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, fail(&StatusError{URL: t.url, StatusCode: resp.StatusCode})
	}
	if resp.ContentLength > f.maxBody {
		return nil, fmt.Errorf("%w: %s declares %d bytes, limit %d", ErrTooLarge, t.url, resp.ContentLength, f.maxBody)
	}
	body, err := readLimited(resp.Body, f.maxBody, resp.ContentLength)
	if err != nil {
		return nil, fail(fmt.Errorf("%s: %w", t.url, err))
	}
	if err := ctx.Err(); err != nil {
		// Cancelling closes the connection; a server that notices and
		// returns can still get an empty or truncated response through
		// as if it were complete. Whatever ends after the deadline is a
		// timeout, not a document.
		return nil, fail(err)
	}

	fetchedAt := f.now()
	out := &Response{
		URL:         t.url,
		StatusCode:  resp.StatusCode,
		ContentType: resp.Header.Get("Content-Type"),
		Body:        body,
		FetchedAt:   fetchedAt,
	}
	if resp.StatusCode == http.StatusOK && f.maxCacheBytes > 0 {
		if ttl, store := freshness(resp.Header, fetchedAt); store {
			out.Expires = fetchedAt.Add(f.clampTTL(ttl))
		}
	}
	return out, nil
}

// readLimited reads r to the end, holding at most limit+1 bytes: one byte
// over the limit is how we know the body is too large.
func readLimited(r io.Reader, limit, contentLength int64) ([]byte, error) {
	size := int64(512)
	if contentLength >= 0 {
		size = contentLength + 1 // +1 so the final io.EOF read needs no growth
	}
	buf := make([]byte, 0, min(size, limit+1))
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)] // grow
			if int64(cap(buf)) > limit+1 {
				buf = buf[: len(buf) : limit+1]
			}
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > limit {
			return nil, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, limit)
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}
