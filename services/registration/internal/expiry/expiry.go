// Package expiry turns ended expiry leases into client expiries.
//
// Each client with an expiry has a marker key on its etcd lease
// (store.Store.ExpiryPrefix). When the lease runs out etcd deletes the
// marker; this worker follows the markers with a list-then-watch cache and,
// for every deletion, asks the domain to expire the client — which deletes
// it with its `client.expired` event in one transaction, so the event
// cannot be lost even if the worker stops right after. When it starts (and
// so after any time no replica was watching) it looks for clients whose
// marker is already gone.
package expiry

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/mcpid/mcpid/lib/etcdstore"
)

// Expirer is the domain side.
type Expirer interface {
	// ExpireClient expires the client if its lease (the marker's, 0 if
	// unknown) has ended; otherwise it does nothing.
	ExpireClient(ctx context.Context, id string, lease int64) error
	// ReconcileExpiry expires clients that have a lease but no marker.
	ReconcileExpiry(ctx context.Context, hasMarker func(id string) bool) error
}

// Config configures the worker.
type Config struct {
	Client etcdstore.WatchClient
	Prefix etcdstore.Prefix
	// MarkerClientID names the client of a marker key.
	MarkerClientID func(key string) (string, error)
	Expirer        Expirer
	Logger         *slog.Logger
}

type marker struct {
	id    string
	lease int64
}

// Worker expires clients.
type Worker struct {
	cfg   Config
	cache *etcdstore.Cache[marker]

	mu      sync.Mutex
	pending []marker
	wake    chan struct{}
	ready   chan struct{}
	once    sync.Once
}

// New returns a worker.
func New(cfg Config) (*Worker, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	w := &Worker{cfg: cfg, wake: make(chan struct{}, 1), ready: make(chan struct{})}
	cache, err := etcdstore.NewCache(etcdstore.CacheConfig[marker]{
		Client: cfg.Client,
		Prefix: cfg.Prefix,
		Decode: func(kv *mvccpb.KeyValue) (marker, error) {
			id, err := cfg.MarkerClientID(string(kv.Key))
			return marker{id: id, lease: kv.Lease}, err
		},
		OnChange: w.onChange,
		Logger:   cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	w.cache = cache
	return w, nil
}

// onChange runs on the cache's goroutine: it only queues.
func (w *Worker) onChange(ch etcdstore.Change[marker]) {
	if !ch.Deleted || !ch.HadPrev {
		return
	}
	w.mu.Lock()
	w.pending = append(w.pending, ch.Prev)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Ready is closed once the startup reconciliation is done.
func (w *Worker) Ready() <-chan struct{} { return w.ready }

// Run works until ctx ends.
func (w *Worker) Run(ctx context.Context) error {
	// The cache's error is ctx's: it retries everything else itself.
	var wg sync.WaitGroup
	wg.Go(func() { _ = w.cache.Run(ctx) })
	defer wg.Wait()
	if err := w.cache.WaitForRevision(ctx, 0); err != nil {
		return ctx.Err()
	}
	for failures := 0; ; {
		err := w.cfg.Expirer.ReconcileExpiry(ctx, func(id string) bool {
			_, ok := w.cache.Get(w.cfg.Prefix.Key(id))
			return ok
		})
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		failures++
		w.cfg.Logger.WarnContext(ctx, "expiry reconciliation failed; retrying", "error", err)
		sleep(ctx, failures)
	}
	w.once.Do(func() { close(w.ready) })
	failures := 0
	for {
		w.mu.Lock()
		batch := w.pending
		w.pending = nil
		w.mu.Unlock()
		var retry []marker
		for _, m := range batch {
			if err := w.cfg.Expirer.ExpireClient(ctx, m.id, m.lease); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				w.cfg.Logger.WarnContext(ctx, "client expiry failed; will retry", "client_id", m.id, "error", err)
				retry = append(retry, m)
			}
		}
		if len(retry) > 0 {
			w.mu.Lock()
			w.pending = append(retry, w.pending...)
			w.mu.Unlock()
			failures++
			sleep(ctx, failures)
			continue
		}
		failures = 0
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-w.wake:
		}
	}
}

func sleep(ctx context.Context, failures int) {
	d := min(100*time.Millisecond<<min(failures, 6), 5*time.Second)
	t := time.NewTimer(d/2 + rand.N(d/2+1))
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
