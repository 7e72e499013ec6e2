// Package index keeps, on every audit replica, an in-memory view of the
// chain that appends and readers need without reading etcd: which event ids
// are chained (for deduplication, with the archived ids of the ledger), the
// batches in sequence order with their append times, and a signal that
// fires whenever the chain changes (for live tails).
//
// It follows the store's chain prefix by list-then-watch (re-listing after
// compaction), like etcdstore.Cache, but applies each etcd revision whole
// and only then makes it visible: etcdstore.Cache advances its revision
// before its change callbacks run, so a reader waiting for a revision could
// look up an id that is about to be indexed and chain a duplicate.
package index

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mcpid/mcpid/lib/etcdstore"
	"github.com/mcpid/mcpid/services/audit/internal/store"
)

// item is what the index holds per key under the chain prefix.
type item struct {
	batch  *store.BatchSummary // a batch key
	ledger []store.IDRecord    // a ledger key
}

// Hit is a chained id found in the index.
type Hit struct {
	store.IDRecord
	// Archived: the event left etcd for the sink (found in the ledger).
	Archived bool
}

// BatchInfo is one retained batch.
type BatchInfo struct {
	First, Last uint64
	AppendTime  time.Time
	Bytes       int
}

// Backoff bounds between failed lists or broken watches.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
	listPage   = 200
)

// Index is the in-memory view. It is safe for concurrent use.
type Index struct {
	c   etcdstore.WatchClient
	log *slog.Logger

	mu      sync.RWMutex
	items   map[string]*item
	ids     map[string]idRef
	batches []BatchInfo // ascending First
	rev     int64       // every change up to rev is applied
	ready   bool
	changed chan struct{} // closed and replaced on every applied change

	// progress carries WaitIndexed's requests for a progress notification
	// to the watch loop, which owns the watch stream: a revision outside
	// the prefix (a head written by hand) is reached that way.
	progress chan struct{}
}

type idRef struct {
	rec    *store.IDRecord
	source string // the key it came from
}

// New returns an index over the chain prefix of c; it fills once Run runs.
func New(c etcdstore.WatchClient, logger *slog.Logger) *Index {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Index{
		c: c, log: logger.With("component", "chain-index"),
		items: map[string]*item{}, ids: map[string]idRef{}, changed: make(chan struct{}),
		progress: make(chan struct{}, 1),
	}
}

// decode reads a chain key. A corrupt record yields nil: it is left out,
// but its revision still counts as applied.
func decode(key string, value []byte) *item {
	switch {
	case store.Batches.Contains(key):
		if s, err := store.SummarizeBatch(value); err == nil {
			return &item{batch: s}
		}
	case store.Ledger.Contains(key):
		if recs, err := store.DecodeLedger(value); err == nil {
			return &item{ledger: recs}
		}
	}
	return nil
}

// Run keeps the index fresh until ctx ends, then returns ctx.Err().
// Failures are logged and retried with backoff.
func (x *Index) Run(ctx context.Context) error {
	needList := true
	failures := 0
	for ctx.Err() == nil {
		if needList {
			if err := x.list(ctx); err != nil {
				failures++
				x.log.Warn("index: listing the chain failed", "error", err, "failures", failures)
				sleep(ctx, backoff(failures))
				continue
			}
			needList, failures = false, 0
		}
		compacted, err := x.watch(ctx)
		switch {
		case ctx.Err() != nil:
		case compacted:
			x.log.Info("index: watch revision compacted; listing again")
			needList = true
		default:
			failures++
			x.log.Warn("index: chain watch ended; watching again", "error", err, "failures", failures)
			sleep(ctx, backoff(failures))
		}
	}
	return ctx.Err()
}

func backoff(failures int) time.Duration {
	d := maxBackoff
	if shift := failures - 1; shift < 20 && minBackoff<<shift < d {
		d = minBackoff << shift
	}
	return d/2 + rand.N(d/2+1)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// list reads the whole prefix at one revision and replaces the contents.
func (x *Index) list(ctx context.Context) error {
	end := clientv3.GetPrefixRangeEnd(string(store.Chain))
	from := string(store.Chain)
	var rev int64
	items := map[string]*item{}
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(listPage)}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := x.c.Get(ctx, from, opts...)
		if err != nil {
			return err
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			if it := decode(string(kv.Key), kv.Value); it != nil {
				items[string(kv.Key)] = it
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	x.items, x.ids, x.batches = map[string]*item{}, map[string]idRef{}, nil
	// Ledger first: where an id is in both (an archive in progress is not
	// visible here, but a sloppy writer might), the batch wins.
	keys := make([]string, 0, len(items))
	for k := range items {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		li, lj := store.Ledger.Contains(keys[i]), store.Ledger.Contains(keys[j])
		if li != lj {
			return li
		}
		return keys[i] < keys[j]
	})
	for _, k := range keys {
		x.add(k, items[k])
	}
	x.rev, x.ready = rev, true
	x.notifyLocked()
	return nil
}

// watch applies changes from the revision after the last applied one until
// the stream ends; it reports whether it ended on compaction.
func (x *Index) watch(ctx context.Context) (bool, error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	x.mu.RLock()
	from := x.rev + 1
	x.mu.RUnlock()
	wch := x.c.Watch(wctx, string(store.Chain), clientv3.WithPrefix(), clientv3.WithRev(from), clientv3.WithProgressNotify())
	for {
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-x.progress:
			if err := x.c.RequestProgress(wctx); err != nil && wctx.Err() == nil {
				x.log.Debug("index: progress request failed", "error", err)
			}
		case wr, ok := <-wch:
			switch {
			case !ok:
				return false, errors.New("watch channel closed")
			case wr.CompactRevision != 0:
				return true, nil
			case wr.Err() != nil:
				return false, wr.Err()
			}
			x.applyResponse(wr)
		}
	}
}

// applyResponse applies one watch response whole (etcd never splits a
// revision across responses without WithFragment), then publishes it.
func (x *Index) applyResponse(wr clientv3.WatchResponse) {
	type decoded struct {
		key string
		it  *item
		put bool
	}
	ds := make([]decoded, len(wr.Events))
	for i, ev := range wr.Events {
		ds[i] = decoded{key: string(ev.Kv.Key), put: ev.Type == mvccpb.PUT}
		if ds[i].put {
			ds[i].it = decode(ds[i].key, ev.Kv.Value)
		}
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, d := range ds {
		if prev, ok := x.items[d.key]; ok {
			x.remove(d.key, prev)
			delete(x.items, d.key)
		}
		if d.put && d.it != nil {
			x.items[d.key] = d.it
			x.add(d.key, d.it)
		}
	}
	rev := wr.Header.Revision
	if n := len(wr.Events); n > 0 && !wr.IsProgressNotify() {
		rev = wr.Events[n-1].Kv.ModRevision
	}
	if rev > x.rev {
		x.rev = rev
	}
	x.notifyLocked()
}

func (x *Index) notifyLocked() {
	close(x.changed)
	x.changed = make(chan struct{})
}

func (x *Index) add(key string, it *item) {
	var recs []store.IDRecord
	switch {
	case it.batch != nil:
		recs = it.batch.IDs
		b := BatchInfo{First: it.batch.First, Last: it.batch.Last, AppendTime: it.batch.AppendTime, Bytes: it.batch.Bytes}
		i, found := slices.BinarySearchFunc(x.batches, b.First, func(e BatchInfo, f uint64) int { return cmpU64(e.First, f) })
		if found {
			x.batches[i] = b
		} else {
			x.batches = slices.Insert(x.batches, i, b)
		}
	case it.ledger != nil:
		recs = it.ledger
	}
	for i := range recs {
		x.ids[recs[i].ID] = idRef{rec: &recs[i], source: key}
	}
}

func (x *Index) remove(key string, it *item) {
	var recs []store.IDRecord
	switch {
	case it.batch != nil:
		recs = it.batch.IDs
		if i, found := slices.BinarySearchFunc(x.batches, it.batch.First, func(e BatchInfo, f uint64) int { return cmpU64(e.First, f) }); found {
			x.batches = slices.Delete(x.batches, i, i+1)
		}
	case it.ledger != nil:
		recs = it.ledger
	}
	for _, r := range recs {
		// The archive transaction writes the ledger before it deletes the
		// batch: an id the ledger took over stays.
		if ref, ok := x.ids[r.ID]; ok && ref.source == key {
			delete(x.ids, r.ID)
		}
	}
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// WaitIndexed waits until the index is ready and every change up to
// revision rev is applied. Pass the ModRevision of the chain head: the head
// moves only together with a chain key, so the watch is sure to deliver
// that revision.
func (x *Index) WaitIndexed(ctx context.Context, rev int64) error {
	for {
		x.mu.RLock()
		cur, ready, changed := x.rev, x.ready, x.changed
		x.mu.RUnlock()
		if ready && cur >= rev {
			return nil
		}
		t := time.NewTimer(250 * time.Millisecond)
		select {
		case <-changed:
		case <-t.C:
			if ready {
				select {
				case x.progress <- struct{}{}:
				default: // one request is pending already
				}
			}
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("index: at revision %d (ready %v), waiting for %d: %w", cur, ready, rev, ctx.Err())
		}
		t.Stop()
	}
}

// Ready reports whether the first list has been applied.
func (x *Index) Ready() bool {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.ready
}

// Revision returns the revision the index reflects.
func (x *Index) Revision() int64 {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.rev
}

// Lookup returns the chained event with this id, if the index knows it.
func (x *Index) Lookup(id string) (Hit, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	ref, ok := x.ids[id]
	if !ok {
		return Hit{}, false
	}
	return Hit{IDRecord: *ref.rec, Archived: strings.HasPrefix(ref.source, string(store.Ledger))}, true
}

// Changed returns a channel that is closed at the next change of the chain.
func (x *Index) Changed() <-chan struct{} {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.changed
}

// FirstAppendedAtOrAfter returns the first sequence of the first retained
// batch chained at or after t, and false when none is.
func (x *Index) FirstAppendedAtOrAfter(t time.Time) (uint64, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	i := sort.Search(len(x.batches), func(i int) bool { return !x.batches[i].AppendTime.Before(t) })
	if i == len(x.batches) {
		return 0, false
	}
	return x.batches[i].First, true
}

// LastAppendedBefore returns the last sequence of the last retained batch
// chained before t, and false when none is.
func (x *Index) LastAppendedBefore(t time.Time) (uint64, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	i := sort.Search(len(x.batches), func(i int) bool { return !x.batches[i].AppendTime.Before(t) })
	if i == 0 {
		return 0, false
	}
	return x.batches[i-1].Last, true
}

// Batches returns a copy of the retained batches, ascending.
func (x *Index) Batches() []BatchInfo {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return slices.Clone(x.batches)
}

// Len returns how many ids the index holds (retained and ledger).
func (x *Index) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.ids)
}

// AppendTimeOf returns the append time of the retained event at seq.
func (x *Index) AppendTimeOf(seq uint64) (time.Time, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	i := sort.Search(len(x.batches), func(i int) bool { return x.batches[i].Last >= seq })
	if i == len(x.batches) || x.batches[i].First > seq {
		return time.Time{}, false
	}
	return x.batches[i].AppendTime, true
}
