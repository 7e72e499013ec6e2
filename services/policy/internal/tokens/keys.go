package tokens

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/mcpid/mcpid/lib/fetch"
	"github.com/mcpid/mcpid/lib/jose"
)

// minRefresh is the least time between two JWKS fetches.
const minRefresh = 5 * time.Second

// RemoteKeys is a jose.KeySource that answers from memory only: a
// background task (Run) fetches the token service's JWKS through a
// jose.KeySetCache and refreshes it periodically and when a token names a
// kid the set lacks. A check therefore never waits for the network; a token
// signed with a key not yet fetched is refused until the refresh lands
// (the token service publishes a key well before it signs with it).
type RemoteKeys struct {
	cache    *jose.KeySetCache
	closer   func()
	interval time.Duration
	log      *slog.Logger
	set      atomic.Pointer[jose.KeySet]
	unknown  chan string
}

var _ jose.KeySource = (*RemoteKeys)(nil)

// RemoteKeysConfig configures RemoteKeys.
type RemoteKeysConfig struct {
	// URL is the JWKS URL (the token service's /oauth2/jwks).
	URL string
	// MaxAge is how long a fetched set is used before it is fetched again.
	MaxAge time.Duration
	// MaxStale is how long the last good set is used while fetches fail.
	MaxStale time.Duration
	Logger   *slog.Logger
	// Fetcher overrides the fetcher built from URL (tests).
	Fetcher jose.Fetcher
}

// NewRemoteKeys returns the key source of cfg.URL. The URL is an operator's
// setting, not something a caller chose, so the fetcher trusts exactly its
// host and port, including private and loopback addresses (the token
// service usually sits on the cluster network), and plain http only when
// the URL says http.
func NewRemoteKeys(cfg RemoteKeysConfig) (*RemoteKeys, error) {
	f := cfg.Fetcher
	var closer func()
	if f == nil {
		ff, err := fetch.NewPinned(cfg.URL)
		if err != nil {
			return nil, fmt.Errorf("setting jwks-url: %w", err)
		}
		f = ff
		closer = ff.Close
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	interval := cfg.MaxAge
	if interval <= 0 {
		interval = jose.DefaultMaxAge
	}
	return &RemoteKeys{
		cache: jose.NewKeySetCache(f, cfg.URL, jose.CacheOptions{
			MaxAge:   cfg.MaxAge,
			MaxStale: cfg.MaxStale,
			// Fetches (for unknown kids, or while the token service is not
			// up yet) at most every 5 s per replica.
			MinRefreshInterval: min(minRefresh, interval),
		}),
		closer:   closer,
		interval: interval,
		log:      log,
		unknown:  make(chan string, 1),
	}, nil
}

// LookupKey implements jose.KeySource from memory.
func (k *RemoteKeys) LookupKey(ctx context.Context, kid string) (jose.PublicKey, error) {
	set := k.set.Load()
	if set == nil {
		// Not fetched yet (the token service started after this one) or
		// too old: ask Run for a fetch now rather than at its next retry,
		// and wait for it briefly, so the first calls after start-up do
		// not fail for want of a fetch that was about to happen.
		select {
		case k.unknown <- "":
		default: // a refresh is already asked for
		}
		if set = k.awaitSet(ctx, awaitKeysTimeout); set == nil {
			return jose.PublicKey{}, fmt.Errorf("%w: %s not fetched yet", jose.ErrKeySetUnavailable, k.cache.URL())
		}
	}
	key, err := set.LookupKey(ctx, kid)
	if errors.Is(err, jose.ErrUnknownKey) {
		select {
		case k.unknown <- kid:
		default: // a refresh is already asked for
		}
	}
	return key, err
}

// awaitKeysTimeout bounds how long a lookup waits for a key set that is
// being fetched.
const awaitKeysTimeout = 2 * time.Second

// awaitSet waits until a key set is in memory, ctx ends or timeout passes.
func (k *RemoteKeys) awaitSet(ctx context.Context, timeout time.Duration) *jose.KeySet {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if set := k.set.Load(); set != nil {
			return set
		}
		select {
		case <-ctx.Done():
			return nil
		case <-deadline.C:
			return nil
		case <-tick.C:
		}
	}
}

// SetLogger sets where refresh failures are logged; call it before Run.
func (k *RemoteKeys) SetLogger(l *slog.Logger) {
	if l != nil {
		k.log = l
	}
}

// Close releases the fetcher's idle connections; call it after Run
// returned.
func (k *RemoteKeys) Close() {
	if k.closer != nil {
		k.closer()
	}
}

// Ready reports whether a usable key set is in memory.
func (k *RemoteKeys) Ready() bool { return k.set.Load() != nil }

// Run fetches the set and keeps it fresh until ctx ends. Failures are
// logged when they start and when they end, not on every retry (in
// development the token service starts after this one).
func (k *RemoteKeys) Run(ctx context.Context) error {
	t := time.NewTimer(0)
	defer t.Stop()
	failing := false
	report := func(err error) {
		switch {
		case err != nil && !failing:
			k.log.Warn("jwks: cannot refresh the verification keys", "url", k.cache.URL(), "error", err)
		case err != nil:
			k.log.Debug("jwks: refresh failed", "url", k.cache.URL(), "error", err)
		case failing:
			k.log.Info("jwks: verification keys available again", "url", k.cache.URL())
		}
		failing = err != nil
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		case kid := <-k.unknown:
			// KeySetCache refetches for an unknown kid, at a bounded rate;
			// "" asks for the set itself (none in memory), fetched below.
			if kid != "" {
				if _, err := k.cache.LookupKey(ctx, kid); err != nil && !errors.Is(err, jose.ErrUnknownKey) {
					report(err)
				}
			}
		}
		set, err := k.cache.KeySet(ctx)
		if err == nil {
			k.set.Store(set)
		} else if errors.Is(err, jose.ErrKeySetUnavailable) {
			// Too old to trust (or never fetched): checks answer NOT_READY.
			k.set.Store(nil)
		}
		report(err)
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		next := k.interval
		if k.set.Load() == nil {
			next = min(next, 2*time.Second) // keep trying while unavailable
		}
		t.Reset(next)
	}
}
