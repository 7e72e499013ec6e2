package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// WatchClient is the part of *clientv3.Client a Cache uses.
type WatchClient interface {
	clientv3.KV
	clientv3.Watcher
}

// Cache backoff defaults, between failed lists or broken watches.
const (
	DefaultCacheMinBackoff = 100 * time.Millisecond
	DefaultCacheMaxBackoff = 5 * time.Second
)

// progressInterval is how often a WaitForRevision that is not yet satisfied
// asks etcd for a progress notification.
const progressInterval = 250 * time.Millisecond

// CacheConfig configures a Cache.
type CacheConfig[T any] struct {
	// Client reads and watches etcd. Required.
	Client WatchClient
	// Prefix is the range cached. Required.
	Prefix Prefix
	// Decode turns a stored record into the cached value. Required. A record
	// it rejects is left out of the cache (as if deleted) and logged, so one
	// bad record cannot stop the cache.
	Decode func(kv *mvccpb.KeyValue) (T, error)
	// OnChange, if set, is called after each change is visible through Get,
	// in revision order, from the cache's goroutine: it must return quickly.
	OnChange func(Change[T])
	// Logger receives list and watch failures; nil discards them.
	Logger *slog.Logger
	// PageSize is the page size of a (re-)list; see List.
	PageSize int
	// MinBackoff and MaxBackoff bound the jittered wait between retries;
	// zero means the defaults.
	MinBackoff, MaxBackoff time.Duration
}

// Change is one change applied to a Cache.
type Change[T any] struct {
	Key string
	// Value is the new value; the zero value when Deleted.
	Value T
	// Prev is the value before the change; the zero value when !HadPrev.
	Prev    T
	HadPrev bool
	Deleted bool
	// Revision is the etcd revision of the change. After a re-list it is the
	// list's revision, and changes made and undone during the gap are not seen.
	Revision int64
}

type entry[T any] struct {
	v      T
	modRev int64
}

// Cache is an in-memory copy of one prefix, kept fresh by list-then-watch:
// it lists the prefix (in pages, all at one revision), watches from the next
// revision, and applies every put and delete. Reads (Get, Snapshot) never
// touch etcd.
//
// When etcd has compacted the revision the watch must resume from, the cache
// lists again and replaces its contents, so deletions made during the gap
// disappear too. Watches use WithRequireLeader, so a member cut off from its
// cluster ends the watch instead of leaving it silently stuck; the cache then
// watches again from the last revision it applied, with backoff.
type Cache[T any] struct {
	cfg     CacheConfig[T]
	log     *slog.Logger
	running atomic.Bool
	// live is set while a watch stream is established (etcd confirmed it)
	// and has not ended; see Live.
	live atomic.Bool
	// progress carries WaitForRevision's requests for a progress
	// notification to the watch loop, which owns the watch stream.
	progress chan struct{}

	mu      sync.RWMutex
	items   map[string]entry[T]
	rev     int64
	ready   bool
	changed chan struct{} // closed and replaced whenever rev or ready change
}

// NewCache returns a cache; it fills once Run is called.
func NewCache[T any](cfg CacheConfig[T]) (*Cache[T], error) {
	switch {
	case cfg.Client == nil:
		return nil, errors.New("etcdstore: CacheConfig.Client is required")
	case cfg.Decode == nil:
		return nil, errors.New("etcdstore: CacheConfig.Decode is required")
	case !strings.HasSuffix(string(cfg.Prefix), "/"):
		return nil, fmt.Errorf("etcdstore: CacheConfig.Prefix %q must end in '/'", cfg.Prefix)
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultCacheMinBackoff
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(cfg.MinBackoff, DefaultCacheMaxBackoff)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Cache[T]{
		cfg:      cfg,
		log:      log.With("prefix", string(cfg.Prefix)),
		progress: make(chan struct{}, 1),
		items:    map[string]entry[T]{},
		changed:  make(chan struct{}),
	}, nil
}

// Run fills the cache and keeps it fresh until ctx ends, then returns
// ctx.Err(). Failures are retried with backoff, never returned: readiness
// (Ready, WaitForRevision) tells whether the cache can be trusted. Run may be
// called again after it returns; it then resumes from the last revision it
// applied (re-listing if that was compacted). Only one Run may be active.
func (c *Cache[T]) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("etcdstore: cache is already running")
	}
	defer c.running.Store(false)

	needList := !c.Ready()
	failures := 0
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if needList {
			if err := c.relist(ctx); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				failures++
				c.log.Warn("etcdstore: cache list failed", "error", err, "failures", failures)
				c.backoff(ctx, failures)
				continue
			}
			needList = false
			failures = 0
		}
		compacted, progressed, err := c.watch(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if compacted {
			c.log.Info("etcdstore: cache watch revision compacted; re-listing", "revision", c.Revision())
			needList = true
			continue
		}
		if progressed {
			failures = 0
		}
		failures++
		c.log.Warn("etcdstore: cache watch ended; watching again", "error", err, "revision", c.Revision(), "failures", failures)
		c.backoff(ctx, failures)
	}
}

// watch watches from the revision after the last applied one until the
// stream ends. It reports whether it ended on compaction, and whether it
// applied anything.
func (c *Cache[T]) watch(ctx context.Context) (compacted, progressed bool, err error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	defer c.live.Store(false)
	// Progress notifications keep the revision current while the prefix is
	// idle, so that a later resume does not fall behind compaction.
	wch := c.cfg.Client.Watch(wctx, string(c.cfg.Prefix),
		clientv3.WithPrefix(), clientv3.WithRev(c.Revision()+1), clientv3.WithProgressNotify(), clientv3.WithCreatedNotify())
	for {
		select {
		case <-c.progress:
			// Must use the watch's own context: etcd answers on the stream
			// the request arrives on, and streams are keyed by its metadata.
			if err := c.cfg.Client.RequestProgress(wctx); err != nil && wctx.Err() == nil {
				c.log.Debug("etcdstore: progress request failed", "error", err)
			}
		case wr, ok := <-wch:
			if !ok {
				return false, progressed, errors.New("watch channel closed")
			}
			if wr.CompactRevision != 0 {
				return true, progressed, nil
			}
			if err := wr.Err(); err != nil {
				return false, progressed, err
			}
			if wr.Created {
				c.live.Store(true)
				continue
			}
			if wr.IsProgressNotify() {
				// Every event up to the header's revision has been sent.
				c.advance(wr.Header.Revision)
				progressed = true
				continue
			}
			if len(wr.Events) > 0 {
				c.apply(wr.Events)
				progressed = true
			}
		}
	}
}

func (c *Cache[T]) decode(kv *mvccpb.KeyValue) (T, bool) {
	v, err := c.cfg.Decode(kv)
	if err != nil {
		c.log.Error("etcdstore: cache cannot decode record; leaving it out", "key", string(kv.Key), "error", err)
		return v, false
	}
	return v, true
}

func (c *Cache[T]) apply(events []*clientv3.Event) {
	// Decode outside the lock so readers wait only for the map updates.
	type decoded struct {
		key string
		v   T
		put bool
		rev int64
	}
	ds := make([]decoded, len(events))
	for i, ev := range events {
		d := decoded{key: string(ev.Kv.Key), rev: ev.Kv.ModRevision}
		if ev.Type == mvccpb.PUT {
			d.v, d.put = c.decode(ev.Kv)
		}
		ds[i] = d
	}
	var changes []Change[T]
	c.mu.Lock()
	for _, d := range ds {
		prev, had := c.items[d.key]
		switch {
		case d.put:
			c.items[d.key] = entry[T]{v: d.v, modRev: d.rev}
		case had:
			delete(c.items, d.key)
		default:
			continue // a deletion of something never cached
		}
		if c.cfg.OnChange != nil {
			changes = append(changes, Change[T]{Key: d.key, Value: d.v, Prev: prev.v, HadPrev: had, Deleted: !d.put, Revision: d.rev})
		}
	}
	c.mu.Unlock()
	// The revision advances (waking WaitForRevision) only after the
	// callbacks ran: a waiter must never act on a revision whose changes
	// its OnChange-fed state has not seen yet.
	c.emit(changes)
	c.advance(ds[len(ds)-1].rev)
}

func (c *Cache[T]) advance(rev int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if rev > c.rev {
		c.rev = rev
		c.notifyLocked()
	}
}

// relist reads the whole prefix at one revision and replaces the contents.
func (c *Cache[T]) relist(ctx context.Context) error {
	var (
		kvs   []*mvccpb.KeyValue
		after string
		rev   int64
		size  = clampPageSize(c.cfg.PageSize)
	)
	for {
		pg, err := listPage(ctx, c.cfg.Client, c.cfg.Prefix, after, rev, size)
		if err != nil {
			return err // compacted while paging: Run starts over
		}
		rev = pg.rev
		kvs = append(kvs, pg.kvs...)
		if !pg.more || len(pg.kvs) == 0 {
			break
		}
		after = string(pg.kvs[len(pg.kvs)-1].Key)[len(c.cfg.Prefix):]
	}

	// Only Run's goroutine writes items, so reading it here needs no lock.
	old := c.items
	items := make(map[string]entry[T], len(kvs))
	for _, kv := range kvs {
		k := string(kv.Key)
		if e, ok := old[k]; ok && e.modRev == kv.ModRevision {
			items[k] = e // unchanged since we decoded it
			continue
		}
		if v, ok := c.decode(kv); ok {
			items[k] = entry[T]{v: v, modRev: kv.ModRevision}
		}
	}
	var changes []Change[T]
	if c.cfg.OnChange != nil {
		changes = diff(old, items, rev)
	}

	c.mu.Lock()
	c.items = items
	c.mu.Unlock()
	c.emit(changes) // before the revision is published, as in apply
	c.mu.Lock()
	c.rev = rev
	c.ready = true
	c.notifyLocked()
	c.mu.Unlock()
	return nil
}

// diff returns the changes that turn old into cur, in key order.
func diff[T any](old, cur map[string]entry[T], rev int64) []Change[T] {
	var changes []Change[T]
	for k, e := range cur {
		if p, ok := old[k]; !ok || p.modRev != e.modRev {
			changes = append(changes, Change[T]{Key: k, Value: e.v, Prev: p.v, HadPrev: ok, Revision: rev})
		}
	}
	for k, p := range old {
		if _, ok := cur[k]; !ok {
			changes = append(changes, Change[T]{Key: k, Prev: p.v, HadPrev: true, Deleted: true, Revision: rev})
		}
	}
	slices.SortFunc(changes, func(a, b Change[T]) int { return strings.Compare(a.Key, b.Key) })
	return changes
}

func (c *Cache[T]) emit(changes []Change[T]) {
	for _, ch := range changes {
		c.cfg.OnChange(ch)
	}
}

func (c *Cache[T]) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *Cache[T]) backoff(ctx context.Context, failures int) {
	d := c.cfg.MaxBackoff
	if shift := failures - 1; shift < 30 && c.cfg.MinBackoff<<shift < d {
		d = c.cfg.MinBackoff << shift
	}
	// Half fixed, half random: never a hot loop, and replicas spread out.
	t := time.NewTimer(d/2 + rand.N(d/2+1))
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// Get returns the cached value at key (a full key, as built with
// Prefix.Key). It reads memory only.
func (c *Cache[T]) Get(key string) (T, bool) {
	c.mu.RLock()
	e, ok := c.items[key]
	c.mu.RUnlock()
	return e.v, ok
}

// Snapshot returns a copy of the cache's contents and the revision they
// reflect.
func (c *Cache[T]) Snapshot() (map[string]T, int64) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make(map[string]T, len(c.items))
	for k, e := range c.items {
		out[k] = e.v
	}
	return out, c.rev
}

// Len returns the number of cached records.
func (c *Cache[T]) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.items)
}

// Revision returns the etcd revision the contents reflect: every change up to
// it has been applied.
func (c *Cache[T]) Revision() int64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.rev
}

// Ready reports whether the first list has been applied.
func (c *Cache[T]) Ready() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.ready
}

// Live reports whether the cache is ready and following etcd right now: a
// watch stream is established and has not ended. Watches require a leader,
// so a member cut off from its cluster ends the stream and Live turns false
// until the cache watches again. Readers that must not act on state older
// than etcd's by more than the watch delay (security decisions) read through
// etcd instead while Live is false.
func (c *Cache[T]) Live() bool {
	return c.live.Load() && c.Ready()
}

// WaitForRevision waits until the cache is ready and reflects at least rev,
// or ctx ends. Pass the revision a write returned to read that write back
// through the cache; 0 waits for readiness only. A revision written outside
// the prefix is reached through etcd's progress notifications, which this
// method requests while it waits.
func (c *Cache[T]) WaitForRevision(ctx context.Context, rev int64) error {
	for {
		c.mu.RLock()
		ready, cur, changed := c.ready, c.rev, c.changed
		c.mu.RUnlock()
		if ready && cur >= rev {
			return nil
		}
		if ready {
			select {
			case c.progress <- struct{}{}:
			default: // a request is already pending
			}
		}
		t := time.NewTimer(progressInterval)
		select {
		case <-changed:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("etcdstore: cache at revision %d (ready: %v), waiting for %d: %w", cur, ready, rev, ctx.Err())
		}
		t.Stop()
	}
}
