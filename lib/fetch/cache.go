package fetch

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Bounds on the per-host and per-URL state, so that a stream of registrations
// naming ever new hosts cannot grow the fetcher's memory without limit.
const (
	maxNegativeEntries = 10000
	maxTrackedHosts    = 10000
)

type cacheEntry struct {
	resp *Response // never handed out; callers get clones
	size int64
}

type negEntry struct {
	err     error
	expires time.Time
}

// freshness reads how long a response may be reused from its headers
// (RFC 9111 as it applies to a private cache). store is false for no-store
// and no-cache (we do not revalidate, so no-cache means "do not reuse").
// A response without freshness information gets ttl 0, which the caller
// raises to MinTTL.
func freshness(h http.Header, now time.Time) (ttl time.Duration, store bool) {
	maxAge := int64(-1)
	for _, v := range h.Values("Cache-Control") {
		for d := range strings.SplitSeq(v, ",") {
			name, val, _ := strings.Cut(strings.TrimSpace(d), "=")
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "no-store", "no-cache":
				return 0, false
			case "max-age":
				n := deltaSeconds(strings.Trim(strings.TrimSpace(val), `"`))
				// Conflicting max-age directives: keep the shortest.
				if maxAge < 0 || n < maxAge {
					maxAge = n
				}
			}
		}
	}
	if maxAge >= 0 {
		if age := deltaSeconds(h.Get("Age")); age > 0 {
			maxAge -= age
		}
		return time.Duration(max(maxAge, 0)) * time.Second, true
	}
	if exp := h.Get("Expires"); exp != "" {
		t, err := http.ParseTime(exp)
		if err != nil {
			return 0, true // an invalid Expires means "already expired"
		}
		base := now
		if d, err := http.ParseTime(h.Get("Date")); err == nil {
			base = d
		}
		return max(t.Sub(base), 0), true
	}
	return 0, true
}

// deltaSeconds parses a non-negative number of seconds, capping large values
// (RFC 9111 §1.2.2) so the Duration multiplication cannot overflow. Invalid
// input yields 0, i.e. stale.
func deltaSeconds(s string) int64 {
	const capSeconds = 1 << 31
	n, err := strconv.ParseUint(s, 10, 63)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return capSeconds
		}
		return 0
	}
	return int64(min(n, capSeconds))
}

// clampTTL applies the configured bounds.
func (f *Fetcher) clampTTL(ttl time.Duration) time.Duration {
	return min(max(ttl, f.minTTL), f.maxTTL)
}

// The methods below must be called with f.mu held.

func (f *Fetcher) cached(key string, now time.Time) (*Response, bool) {
	e, ok := f.cache[key]
	if !ok {
		return nil, false
	}
	if !now.Before(e.resp.Expires) {
		f.dropCached(key, e)
		return nil, false
	}
	return e.resp, true
}

func (f *Fetcher) dropCached(key string, e *cacheEntry) {
	delete(f.cache, key)
	f.cacheBytes -= e.size
}

// putCached stores resp under key, evicting expired entries first and then
// arbitrary ones until it fits the byte budget. It reports whether resp was
// stored.
func (f *Fetcher) putCached(key string, resp *Response, now time.Time) bool {
	size := int64(len(resp.Body) + len(key) + len(resp.ContentType) + len(resp.URL))
	if f.maxCacheBytes <= 0 || size > f.maxCacheBytes {
		return false
	}
	if old, ok := f.cache[key]; ok {
		f.dropCached(key, old)
	}
	if f.cacheBytes+size > f.maxCacheBytes {
		for k, e := range f.cache {
			if !now.Before(e.resp.Expires) {
				f.dropCached(k, e)
			}
		}
	}
	for k, e := range f.cache {
		if f.cacheBytes+size <= f.maxCacheBytes {
			break
		}
		f.dropCached(k, e)
	}
	f.cache[key] = &cacheEntry{resp: resp, size: size}
	f.cacheBytes += size
	return true
}

// negative returns the remembered failure for key, or nil.
func (f *Fetcher) negative(key string, now time.Time) error {
	e, ok := f.neg[key]
	if !ok {
		return nil
	}
	if !now.Before(e.expires) {
		delete(f.neg, key)
		return nil
	}
	return e.err
}

func (f *Fetcher) putNegative(key string, err error, now time.Time) {
	if f.negTTL <= 0 {
		return
	}
	if len(f.neg) >= maxNegativeEntries {
		for k, e := range f.neg {
			if !now.Before(e.expires) {
				delete(f.neg, k)
			}
		}
		for k := range f.neg {
			if len(f.neg) < maxNegativeEntries {
				break
			}
			delete(f.neg, k)
		}
	}
	f.neg[key] = negEntry{err: err, expires: now.Add(f.negTTL)}
}

// allowHost takes a token from host's rate limiter. Limiters that are full
// again are indistinguishable from new ones, so they are dropped when the
// table is full; if it is still full, the fetch is refused (fail closed).
func (f *Fetcher) allowHost(host string, now time.Time) bool {
	if f.unlimited {
		return true
	}
	lim, ok := f.limiters[host]
	if !ok {
		if len(f.limiters) >= maxTrackedHosts {
			for h, l := range f.limiters {
				if l.TokensAt(now) >= float64(l.Burst()) {
					delete(f.limiters, h)
				}
			}
			if len(f.limiters) >= maxTrackedHosts {
				return false
			}
		}
		lim = f.newLimiter()
		f.limiters[host] = lim
	}
	return lim.AllowN(now, 1)
}
