package etcdstore_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/mcpid/mcpid/lib/etcdstore"
)

// decodeString caches values as strings and rejects values starting "bad".
func decodeString(kv *mvccpb.KeyValue) (string, error) {
	if strings.HasPrefix(string(kv.Value), "bad") {
		return "", errors.New("undecodable")
	}
	return string(kv.Value), nil
}

// changeLog records OnChange calls.
type changeLog struct {
	mu      sync.Mutex
	changes []etcdstore.Change[string]
}

func (l *changeLog) add(c etcdstore.Change[string]) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.changes = append(l.changes, c)
}

func (l *changeLog) find(key string, deleted bool) (etcdstore.Change[string], bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.changes) - 1; i >= 0; i-- { // the latest
		if c := l.changes[i]; c.Key == key && c.Deleted == deleted {
			return c, true
		}
	}
	return etcdstore.Change[string]{}, false
}

func newCache(t testing.TB, c etcdstore.WatchClient, p etcdstore.Prefix, log *changeLog) *etcdstore.Cache[string] {
	t.Helper()
	cfg := etcdstore.CacheConfig[string]{
		Client:     c,
		Prefix:     p,
		Decode:     decodeString,
		PageSize:   100,
		MinBackoff: 20 * time.Millisecond,
		MaxBackoff: 200 * time.Millisecond,
	}
	if log != nil {
		cfg.OnChange = log.add
	}
	cache, err := etcdstore.NewCache(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cache
}

// run runs the cache until the test ends (or stop is called) and reports
// Run's result.
func run(t testing.TB, cache *etcdstore.Cache[string]) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cache.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func waitRev(t testing.TB, cache *etcdstore.Cache[string], rev int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cache.WaitForRevision(ctx, rev); err != nil {
		t.Fatal(err)
	}
}

func TestCacheListsThenFollowsChanges(t *testing.T) {
	s, c, _ := newStore(t)
	ctx := testCtx(t)
	items := testPrefix.Sub("items")
	fill(t, ctx, c, items, 250) // three pages of 100
	if _, err := c.Put(ctx, items.Key("broken"), "bad value"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, testPrefix.Key("elsewhere"), "not cached"); err != nil {
		t.Fatal(err)
	}

	var log changeLog
	cache := newCache(t, c, items, &log)
	if cache.Ready() {
		t.Fatal("ready before Run")
	}
	run(t, cache)
	waitRev(t, cache, 0)
	if n := cache.Len(); n != 250 {
		t.Fatalf("Len = %d after the first list, want 250 (the bad record left out)", n)
	}
	if v, ok := cache.Get(items.Key("item-0249")); !ok || v != "249" {
		t.Fatalf("Get(item-0249) = %q, %v", v, ok)
	}
	if _, ok := cache.Get(testPrefix.Key("elsewhere")); ok {
		t.Fatal("a key outside the prefix is cached")
	}

	key := items.Key("new")
	rev, err := s.Create(ctx, key, []byte("v1"))
	if err != nil {
		t.Fatal(err)
	}
	waitRev(t, cache, rev)
	if v, ok := cache.Get(key); !ok || v != "v1" {
		t.Fatalf("after create Get = %q, %v", v, ok)
	}
	rev, err = s.Update(ctx, key, func([]byte) ([]byte, []etcdstore.Op, error) { return []byte("v2"), nil, nil })
	if err != nil {
		t.Fatal(err)
	}
	waitRev(t, cache, rev)
	if v, _ := cache.Get(key); v != "v2" {
		t.Fatalf("after update Get = %q", v)
	}
	// A record that becomes undecodable leaves the cache rather than
	// keeping its old value.
	if rev, err = s.Update(ctx, key, func([]byte) ([]byte, []etcdstore.Op, error) { return []byte("bad v3"), nil, nil }); err != nil {
		t.Fatal(err)
	}
	waitRev(t, cache, rev)
	if _, ok := cache.Get(key); ok {
		t.Fatal("undecodable update kept in the cache")
	}
	if _, err := s.Update(ctx, key, func([]byte) ([]byte, []etcdstore.Op, error) { return []byte("v4"), nil, nil }); err != nil {
		t.Fatal(err)
	}
	rev, err = s.Delete(ctx, key, 0)
	if err != nil {
		t.Fatal(err)
	}
	waitRev(t, cache, rev)
	if _, ok := cache.Get(key); ok {
		t.Fatal("deleted key still cached")
	}
	if cache.Revision() < rev {
		t.Fatalf("Revision = %d, want >= %d", cache.Revision(), rev)
	}

	snap, snapRev := cache.Snapshot()
	if len(snap) != 250 || snapRev < rev {
		t.Fatalf("Snapshot: %d entries at %d", len(snap), snapRev)
	}
	snap[items.Key("item-0000")] = "mutated"
	if v, _ := cache.Get(items.Key("item-0000")); v != "0" {
		t.Fatal("Snapshot shares memory with the cache")
	}

	if ch, ok := log.find(key, true); !ok || ch.Prev != "v4" || !ch.HadPrev || ch.Revision != rev {
		t.Fatalf("delete change = %+v, %v", ch, ok)
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	if len(log.changes) != 250+5 { // first list, v1, v2, bad v3 (a delete), v4, delete
		t.Fatalf("%d changes, want %d", len(log.changes), 255)
	}
}

func TestCacheWaitForRevisionWrittenElsewhere(t *testing.T) {
	_, c, _ := newStore(t)
	ctx := testCtx(t)
	cache := newCache(t, c, testPrefix.Sub("quiet"), nil)
	run(t, cache)
	waitRev(t, cache, 0)
	resp, err := c.Put(ctx, testPrefix.Key("busy"), "x")
	if err != nil {
		t.Fatal(err)
	}
	// No event arrives for this revision: only a progress notification
	// can move the cache there.
	waitRev(t, cache, resp.Header.Revision)

	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := cache.WaitForRevision(short, resp.Header.Revision+1000); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting for a revision never written: %v", err)
	}
}

// gap is what the tests below write while the cache is not watching: a
// deletion, an update, a creation, and a key created and deleted again.
func writeGap(t testing.TB, ctx context.Context, c *clientv3.Client, items etcdstore.Prefix) {
	t.Helper()
	ops := []func() error{
		func() error { _, err := c.Delete(ctx, items.Key("item-0001")); return err },
		func() error { _, err := c.Put(ctx, items.Key("item-0002"), "updated"); return err },
		func() error { _, err := c.Put(ctx, items.Key("created"), "in the gap"); return err },
		func() error { _, err := c.Put(ctx, items.Key("ephemeral"), "x"); return err },
		func() error { _, err := c.Delete(ctx, items.Key("ephemeral")); return err },
		func() error { _, err := c.Put(ctx, testPrefix.Key("filler"), "x"); return err },
	}
	for _, op := range ops {
		if err := op(); err != nil {
			t.Fatal(err)
		}
	}
}

func expectAfterGap(items etcdstore.Prefix, n int) map[string]string {
	want := map[string]string{}
	for i := range n {
		want[items.Key(fmt.Sprintf("item-%04d", i))] = fmt.Sprint(i)
	}
	delete(want, items.Key("item-0001"))
	want[items.Key("item-0002")] = "updated"
	want[items.Key("created")] = "in the gap"
	return want
}

// checkRelisted asserts the cache converged to want through a re-list: the
// gap's deletion is reported at a revision at or past the compaction (a
// watch event would carry the deletion's own, older revision), and the key
// created and deleted within the gap was never reported.
func checkRelisted(t testing.TB, cache *etcdstore.Cache[string], log *changeLog, items etcdstore.Prefix, want map[string]string, compacted int64) {
	t.Helper()
	eventually(t, 60*time.Second, "the cache to converge after compaction", func() bool {
		snap, _ := cache.Snapshot()
		return maps.Equal(snap, want)
	})
	if rev := cache.Revision(); rev < compacted {
		t.Fatalf("Revision = %d, want >= compacted %d", rev, compacted)
	}
	del, ok := log.find(items.Key("item-0001"), true)
	if !ok || del.Prev != "1" || del.Revision < compacted {
		t.Fatalf("deletion change = %+v (found %v); want one from a re-list at >= %d", del, ok, compacted)
	}
	if _, ok := log.find(items.Key("ephemeral"), false); ok {
		t.Fatal("a key that lived only inside the compacted gap was reported")
	}
}

// The cache's Run is stopped, history is written and compacted, and Run is
// started again: it cannot resume the watch and must re-list.
func TestCacheRelistsWhenResumeRevisionIsCompacted(t *testing.T) {
	_, c, srv := newStore(t)
	ctx := testCtx(t)
	items := testPrefix.Sub("items")
	fill(t, ctx, c, items, 150)

	var log changeLog
	cache := newCache(t, c, items, &log)
	stop := run(t, cache)
	waitRev(t, cache, 0)
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v, want context.Canceled", err)
	}
	before := cache.Revision()

	writeGap(t, ctx, c, items)
	compacted := srv.Compact(t, 0)
	if compacted <= before {
		t.Fatal("compaction did not pass the cache's revision")
	}
	// Still serving the old contents while stopped.
	if v, ok := cache.Get(items.Key("item-0001")); !ok || v != "1" {
		t.Fatal("stopped cache lost its contents")
	}

	run(t, cache)
	checkRelisted(t, cache, &log, items, expectAfterGap(items, 150), compacted)
}

// The cache's connection to etcd is cut while history is written and
// compacted. When the connection returns, the client library resumes the
// watch from its last revision, etcd answers "compacted", and the cache must
// re-list.
func TestCacheRecoversFromCompactionDuringOutage(t *testing.T) {
	_, direct, srv := newStore(t)
	ctx := testCtx(t)
	items := testPrefix.Sub("items")
	fill(t, ctx, direct, items, 150)

	px := startProxy(t, strings.TrimPrefix(srv.Endpoints()[0], "http://"))
	viaProxy, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{"http://" + px.addr()},
		DialTimeout: 10 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = viaProxy.Close() })

	var log changeLog
	cache := newCache(t, viaProxy, items, &log)
	run(t, cache)
	waitRev(t, cache, 0)
	// Prove the watch is live before cutting it.
	resp, err := direct.Put(ctx, items.Key("item-0000"), "0")
	if err != nil {
		t.Fatal(err)
	}
	waitRev(t, cache, resp.Header.Revision)

	px.cut()
	writeGap(t, ctx, direct, items)
	compacted := srv.Compact(t, 0)
	if cache.Revision() >= compacted {
		t.Fatalf("cache reached revision %d through a cut connection", cache.Revision())
	}
	px.restore()

	checkRelisted(t, cache, &log, items, expectAfterGap(items, 150), compacted)

	// And it keeps following after the re-list.
	resp, err = direct.Put(ctx, items.Key("after"), "x")
	if err != nil {
		t.Fatal(err)
	}
	waitRev(t, cache, resp.Header.Revision)
	if v, ok := cache.Get(items.Key("after")); !ok || v != "x" {
		t.Fatalf("after re-list Get = %q, %v", v, ok)
	}
}

func TestCacheRejectsBadConfigAndSecondRun(t *testing.T) {
	_, c, _ := newStore(t)
	for name, cfg := range map[string]etcdstore.CacheConfig[string]{
		"no client": {Prefix: testPrefix, Decode: decodeString},
		"no decode": {Client: c, Prefix: testPrefix},
		"no slash":  {Client: c, Prefix: "/mcpid/test", Decode: decodeString},
		"empty":     {Client: c, Decode: decodeString},
	} {
		if _, err := etcdstore.NewCache(cfg); err == nil {
			t.Errorf("%s: NewCache accepted", name)
		}
	}
	cache := newCache(t, c, testPrefix, nil)
	run(t, cache)
	waitRev(t, cache, 0)
	if err := cache.Run(context.Background()); err == nil {
		t.Fatal("a second concurrent Run was accepted")
	}
}

// proxy forwards TCP connections to etcd on loopback and can cut them all,
// refusing new ones until restored: a network outage between one client
// and the server.
type proxy struct {
	l      net.Listener
	target string

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func startProxy(t testing.TB, target string) *proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{l: l, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		_ = l.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) addr() string { return p.l.Addr().String() }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		down, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			_ = down.Close()
			continue
		}
		p.mu.Unlock()
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = down.Close()
			continue
		}
		p.mu.Lock()
		if p.down { // cut while dialling
			p.mu.Unlock()
			_ = down.Close()
			_ = up.Close()
			continue
		}
		p.conns[down], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(up, down)
		go p.pipe(down, up)
	}
}

func (p *proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	_ = dst.Close()
	_ = src.Close()
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		_ = c.Close()
		delete(p.conns, c)
	}
}

func (p *proxy) restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
}

// TestWaitForRevisionAfterCallbacks: a waiter woken for a revision must find
// that revision's changes already delivered to OnChange.
func TestWaitForRevisionAfterCallbacks(t *testing.T) {
	_, c, _ := newStore(t)
	ctx := testCtx(t)
	var mu sync.Mutex
	seen := map[int64]bool{}
	prefix := testPrefix.Sub("callbacks")
	cache, err := etcdstore.NewCache(etcdstore.CacheConfig[string]{
		Client: c,
		Prefix: prefix,
		Decode: decodeString,
		OnChange: func(ch etcdstore.Change[string]) {
			time.Sleep(5 * time.Millisecond) // a slow consumer widens the window
			mu.Lock()
			seen[ch.Revision] = true
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	run(t, cache)
	for i := range 20 {
		resp, err := c.Put(ctx, prefix.Key(fmt.Sprint(i)), "v")
		if err != nil {
			t.Fatal(err)
		}
		rev := resp.Header.Revision
		waitRev(t, cache, rev)
		mu.Lock()
		ok := seen[rev]
		mu.Unlock()
		if !ok {
			t.Fatalf("WaitForRevision(%d) returned before OnChange saw it", rev)
		}
	}
}

// waitLive polls Live until it equals want (bounded by a deadline).
func waitLive(t testing.TB, cache *etcdstore.Cache[string], want bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for cache.Live() != want {
		if time.Now().After(deadline) {
			t.Fatalf("Live() did not become %v", want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCacheLiveOnlyWhileWatching(t *testing.T) {
	_, c, _ := newStore(t)
	cache := newCache(t, c, testPrefix.Sub("live"), nil)
	if cache.Live() {
		t.Fatal("live before Run")
	}
	stop := run(t, cache)
	waitLive(t, cache, true)
	if !cache.Ready() {
		t.Fatal("live but not ready")
	}
	_ = stop()
	if cache.Live() {
		t.Fatal("live after Run returned")
	}
}
