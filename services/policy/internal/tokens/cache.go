package tokens

import (
	"crypto/sha256"
	"sync"
	"time"
)

// cacheShards spreads the verified-token cache over independent locks so
// that concurrent checks rarely wait for one another.
const cacheShards = 16

// cache maps the SHA-256 of a token to what verifying it produced, until a
// deadline, holding at most about size entries. Only hashes are kept: a
// memory dump does not hand out usable tokens.
type cache[T any] struct {
	shards   [cacheShards]shard[T]
	perShard int
}

type shard[T any] struct {
	mu sync.RWMutex
	m  map[[32]byte]cacheEntry[T]
}

type cacheEntry[T any] struct {
	v        T
	deadline time.Time
}

func newCache[T any](size int) *cache[T] {
	c := &cache[T]{perShard: max(1, size/cacheShards)}
	for i := range c.shards {
		c.shards[i].m = make(map[[32]byte]cacheEntry[T])
	}
	return c
}

func hashToken(token string) [32]byte { return sha256.Sum256([]byte(token)) }

func (c *cache[T]) shard(h [32]byte) *shard[T] { return &c.shards[h[0]%cacheShards] }

// get returns the value for h if it is cached and now is before its deadline.
func (c *cache[T]) get(h [32]byte, now time.Time) (T, bool) {
	s := c.shard(h)
	s.mu.RLock()
	e, ok := s.m[h]
	s.mu.RUnlock()
	if !ok || !now.Before(e.deadline) {
		var zero T
		return zero, false
	}
	return e.v, true
}

// put caches v for h until deadline. A full shard first drops its expired
// entries, then arbitrary ones (Go's map order is random), an eighth of the
// shard at a time, so inserts stay cheap when the cache is under pressure.
func (c *cache[T]) put(h [32]byte, v T, deadline, now time.Time) {
	s := c.shard(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[h]; !ok && len(s.m) >= c.perShard {
		for k, e := range s.m {
			if !now.Before(e.deadline) {
				delete(s.m, k)
			}
		}
		for k := range s.m {
			if len(s.m) < c.perShard-c.perShard/8 {
				break
			}
			delete(s.m, k)
		}
	}
	s.m[h] = cacheEntry[T]{v: v, deadline: deadline}
}

// len returns the number of cached entries.
func (c *cache[T]) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}
