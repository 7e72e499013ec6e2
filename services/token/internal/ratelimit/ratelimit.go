// Package ratelimit is a keyed token bucket kept in memory (per replica): it
// throttles login attempts per source address and per account name before
// any password is hashed.
package ratelimit

import (
	"sync"
	"time"
)

// maxKeys bounds memory: when exceeded, full buckets are dropped (a key
// with a full bucket is indistinguishable from a new one).
const maxKeys = 100_000

// Limiter allows perMinute events per key with bursts of burst.
type Limiter struct {
	rate  float64 // tokens per second
	burst float64
	now   func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// New returns a limiter; perMinute <= 0 disables it.
func New(perMinute float64, burst int, now func() time.Time) *Limiter {
	if now == nil {
		now = time.Now
	}
	return &Limiter{rate: perMinute / 60, burst: float64(max(burst, 1)), now: now, buckets: map[string]*bucket{}}
}

// Allowed reports whether key has a token left, without taking one (a
// limiter that counts only failures checks first, then Takes on failure).
func (l *Limiter) Allowed(key string) bool {
	if l == nil || l.rate <= 0 {
		return true
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		return true
	}
	return min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate) >= 1
}

// Take takes one token for key (it may go negative-free to zero).
func (l *Limiter) Take(key string) { l.Allow(key) }

// Allow takes one token for key and reports whether there was one, and if
// not, how long until there is.
func (l *Limiter) Allow(key string) (bool, time.Duration) {
	if l == nil || l.rate <= 0 {
		return true, 0
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= maxKeys {
			l.pruneLocked(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
	return false, wait
}

func (l *Limiter) pruneLocked(now time.Time) {
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) >= maxKeys {
		clear(l.buckets) // under attack: forget rather than grow
	}
}
