package jose

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Fetcher gets a document over HTTPS. lib/fetch's SSRF-safe client satisfies
// it; the interface lives here so this package does not depend on it.
type Fetcher interface {
	// Get fetches url sending accept as the Accept header and returns the
	// body of a 200 response, or an error for anything else.
	Get(ctx context.Context, url, accept string) ([]byte, error)
}

// Defaults for CacheOptions.
const (
	DefaultMaxAge             = 5 * time.Minute
	DefaultMinRefreshInterval = 30 * time.Second
	DefaultMaxStale           = time.Hour
	DefaultFetchTimeout       = 10 * time.Second
)

// CacheOptions configures a KeySetCache.
type CacheOptions struct {
	// MaxAge is how long a fetched set is used before it is fetched again;
	// default DefaultMaxAge.
	MaxAge time.Duration
	// MinRefreshInterval is the least time between two fetches, whatever
	// triggers them (age, an unknown kid, a failed fetch); default
	// DefaultMinRefreshInterval. It stops tokens with made-up kids from
	// turning into a flood of requests to the issuer.
	MinRefreshInterval time.Duration
	// MaxStale is how old the last good set may grow while fetches fail and
	// still be used; default DefaultMaxStale, and never less than MaxAge.
	// Beyond it lookups fail with ErrKeySetUnavailable rather than trust
	// keys the issuer may have withdrawn long ago.
	MaxStale time.Duration
	// FetchTimeout bounds one fetch; default DefaultFetchTimeout.
	FetchTimeout time.Duration
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// KeySetCache is a KeySource backed by a remote JWKS (a jwks_uri). It is safe
// for concurrent use.
//
// A lookup of a kid the cached set lacks triggers a refresh, since the issuer
// may have rotated keys; concurrent refreshes are coalesced into one fetch,
// and fetches are at least MinRefreshInterval apart. While fetches fail the
// last good set keeps being served until it is MaxStale old.
type KeySetCache struct {
	fetcher Fetcher
	url     string
	opts    CacheOptions

	mu          sync.Mutex
	set         *KeySet   // last good set, nil until the first successful fetch
	fetchedAt   time.Time // when the fetch that produced set started
	lastAttempt time.Time // when the latest fetch started
	attempted   bool
	lastErr     error   // error of the latest fetch, nil if it succeeded
	flight      *flight // the fetch in progress, if any

	// onJoin, if set, is called (with mu held) when a caller joins a fetch
	// already in progress; tests use it to know callers were coalesced.
	onJoin func()
}

var _ KeySource = (*KeySetCache)(nil)

// flight is one fetch in progress; done is closed when it has finished and
// the cache state has been updated.
type flight struct {
	done chan struct{}
}

// NewKeySetCache returns a cache of the JWKS at url, fetched with f. Nothing
// is fetched until the first lookup.
func NewKeySetCache(f Fetcher, url string, opts CacheOptions) *KeySetCache {
	if opts.MaxAge <= 0 {
		opts.MaxAge = DefaultMaxAge
	}
	if opts.MinRefreshInterval <= 0 {
		opts.MinRefreshInterval = DefaultMinRefreshInterval
	}
	if opts.MaxStale <= 0 {
		opts.MaxStale = DefaultMaxStale
	}
	if opts.MaxStale < opts.MaxAge {
		opts.MaxStale = opts.MaxAge
	}
	if opts.FetchTimeout <= 0 {
		opts.FetchTimeout = DefaultFetchTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &KeySetCache{fetcher: f, url: url, opts: opts}
}

// URL returns the jwks_uri the cache fetches.
func (c *KeySetCache) URL() string { return c.url }

// KeySet returns the cached set, fetching it first if there is none or it is
// older than MaxAge and the rate limit allows. If that fetch fails, the old
// set is returned while it is younger than MaxStale; otherwise the error
// wraps ErrKeySetUnavailable.
func (c *KeySetCache) KeySet(ctx context.Context) (*KeySet, error) {
	c.mu.Lock()
	if c.set != nil && c.opts.Now().Sub(c.fetchedAt) < c.opts.MaxAge {
		s := c.set
		c.mu.Unlock()
		return s, nil
	}
	return c.refreshLocked(ctx)
}

// LookupKey implements KeySource. An unknown kid causes one refresh (subject
// to the rate limit) before ErrUnknownKey is returned.
func (c *KeySetCache) LookupKey(ctx context.Context, kid string) (PublicKey, error) {
	set, err := c.KeySet(ctx)
	if err != nil {
		return PublicKey{}, err
	}
	if k, ok := set.Lookup(kid); ok {
		return k, nil
	}
	c.mu.Lock()
	set, err = c.refreshLocked(ctx)
	if err != nil {
		return PublicKey{}, err
	}
	if k, ok := set.Lookup(kid); ok {
		return k, nil
	}
	return PublicKey{}, fmt.Errorf("%w: kid %q not in %s", ErrUnknownKey, kid, c.url)
}

// refreshLocked fetches the set, joining a fetch in progress or, when the
// rate limit forbids a new one, answering from what is cached. It must be
// called with mu held and releases it.
func (c *KeySetCache) refreshLocked(ctx context.Context) (*KeySet, error) {
	f := c.flight
	switch {
	case f != nil:
		if c.onJoin != nil {
			c.onJoin()
		}
	case c.attempted && c.opts.Now().Sub(c.lastAttempt) < c.minIntervalLocked():
		defer c.mu.Unlock()
		return c.usableLocked()
	default:
		f = c.startLocked(ctx)
	}
	c.mu.Unlock()

	select {
	case <-f.done:
	case <-ctx.Done():
		return nil, fmt.Errorf("jose: waiting for key set %s: %w", c.url, ctx.Err())
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.usableLocked()
}

// unusableRetryInterval is the least time between fetches while no usable
// set is cached (never fetched, or too old): MinRefreshInterval protects
// the issuer from being hammered for unknown kids, but a verifier with no
// keys at all (its issuer started after it) should not wait that long.
const unusableRetryInterval = 500 * time.Millisecond

// minIntervalLocked is the least time between two fetch attempts now.
func (c *KeySetCache) minIntervalLocked() time.Duration {
	if c.set == nil || c.opts.Now().Sub(c.fetchedAt) >= c.opts.MaxStale {
		return min(c.opts.MinRefreshInterval, unusableRetryInterval)
	}
	return c.opts.MinRefreshInterval
}

// usableLocked returns the cached set if it is younger than MaxStale.
func (c *KeySetCache) usableLocked() (*KeySet, error) {
	if c.set != nil && c.opts.Now().Sub(c.fetchedAt) < c.opts.MaxStale {
		return c.set, nil
	}
	cause := c.lastErr
	if cause == nil {
		cause = errors.New("cached set is too old")
	}
	// The cause is flattened to text, not wrapped: it may wrap ErrMalformed
	// (a bad document), which callers must not mistake for a bad token.
	return nil, fmt.Errorf("%w: %s: %s", ErrKeySetUnavailable, c.url, cause.Error())
}

// startLocked starts a fetch. The fetch runs detached from the caller's
// cancellation, bounded by FetchTimeout, because other callers may join it:
// one impatient caller must not fail the fetch for all of them.
func (c *KeySetCache) startLocked(ctx context.Context) *flight {
	f := &flight{done: make(chan struct{})}
	started := c.opts.Now()
	c.flight = f
	c.attempted = true
	c.lastAttempt = started
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.FetchTimeout)
	go func() {
		defer cancel()
		set, err := c.fetch(fctx)
		c.mu.Lock()
		if err == nil {
			c.set, c.fetchedAt, c.lastErr = set, started, nil
		} else {
			c.lastErr = err
		}
		c.flight = nil
		c.mu.Unlock()
		close(f.done)
	}()
	return f
}

func (c *KeySetCache) fetch(ctx context.Context) (*KeySet, error) {
	body, err := c.fetcher.Get(ctx, c.url, jwksMediaTypes)
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %w", c.url, err)
	}
	set, err := ParseJWKS(body)
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", c.url, err)
	}
	return set, nil
}
