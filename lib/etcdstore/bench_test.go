package etcdstore_test

import (
	"fmt"
	"strconv"
	"testing"

	"github.com/mcpid/mcpid/lib/etcdstore"
)

// BenchmarkCacheGet measures the policy-check hot path: a read from a
// populated cache by many goroutines at once.
func BenchmarkCacheGet(b *testing.B) {
	_, c, _ := newStore(b)
	ctx := testCtx(b)
	items := testPrefix.Sub("items")
	const n = 10_000
	fill(b, ctx, c, items, n)
	cache := newCache(b, c, items, nil)
	run(b, cache)
	waitRev(b, cache, 0)
	keys := make([]string, n)
	for i := range keys {
		keys[i] = items.Key(fmt.Sprintf("item-%04d", i))
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, ok := cache.Get(keys[i%n]); !ok {
				b.Fatal("miss")
			}
			i++
		}
	})
}

// BenchmarkUpdate measures one uncontended compare-and-swap round trip
// (read, callback, transaction) against the embedded etcd.
func BenchmarkUpdate(b *testing.B) {
	s, _, _ := newStore(b)
	ctx := testCtx(b)
	key := testPrefix.Key("counter")
	if _, err := s.Create(ctx, key, []byte("0")); err != nil {
		b.Fatal(err)
	}
	idx := testPrefix.Key("counter-index")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Update(ctx, key, func(old []byte) ([]byte, []etcdstore.Op, error) {
			n, err := strconv.Atoi(string(old))
			return []byte(strconv.Itoa(n + 1)), []etcdstore.Op{etcdstore.PutOp(idx, old)}, err
		}); err != nil {
			b.Fatal(err)
		}
	}
}
