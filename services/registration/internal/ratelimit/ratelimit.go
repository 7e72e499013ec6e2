// Package ratelimit limits requests per source address (token bucket per
// address, IPv6 per /64 since one host usually holds a whole /64).
//
// The limit is kept in memory, per replica: it protects against bursts of
// registrations, not as an exact global quota (N replicas admit up to N
// times the rate). The table of addresses is bounded, so a flood of sources
// cannot grow memory without limit; when it is full, idle entries go first,
// then arbitrary ones (an evicted source simply starts with a full bucket).
package ratelimit

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// maxSources bounds the table.
const maxSources = 10000

// Limiter is a per-source token bucket. The zero value is not usable; use
// New. A nil *Limiter allows everything.
type Limiter struct {
	limit rate.Limit
	burst int
	now   func() time.Time

	mu      sync.Mutex
	sources map[netip.Addr]*rate.Limiter
}

// New returns a limiter allowing perMinute requests per minute per source
// with bursts of burst; perMinute <= 0 returns nil (no limit).
func New(perMinute float64, burst int, now func() time.Time) *Limiter {
	if perMinute <= 0 {
		return nil
	}
	if now == nil {
		now = time.Now
	}
	return &Limiter{limit: rate.Limit(perMinute / 60), burst: max(burst, 1), now: now, sources: map[netip.Addr]*rate.Limiter{}}
}

// Allow takes a token for src. When none is left it reports false and how
// long until one is.
func (l *Limiter) Allow(src netip.Addr) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	key := bucketKey(src)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.sources[key]
	if !ok {
		l.makeRoom(now)
		lim = rate.NewLimiter(l.limit, l.burst)
		l.sources[key] = lim
	}
	if lim.AllowN(now, 1) {
		return true, 0
	}
	missing := 1 - lim.TokensAt(now)
	return false, time.Duration(missing / float64(l.limit) * float64(time.Second))
}

func (l *Limiter) makeRoom(now time.Time) {
	if len(l.sources) < maxSources {
		return
	}
	for k, lim := range l.sources {
		if lim.TokensAt(now) >= float64(l.burst) {
			delete(l.sources, k)
		}
	}
	for k := range l.sources {
		if len(l.sources) < maxSources {
			return
		}
		delete(l.sources, k)
	}
}

// bucketKey groups IPv6 addresses by /64; an invalid address has one
// shared bucket.
func bucketKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		if p, err := a.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return a
}
