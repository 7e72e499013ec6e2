// Package worker runs the audit service's background work on exactly one
// replica at a time: an etcd election (go.etcd.io/etcd/client/v3/
// concurrency) on the audit prefix picks the replica that signs
// checkpoints, projects the agent inventory and moves old events to the
// sink. Every task is safe if two replicas briefly overlap (a lease that
// has not expired yet): each writes by compare-and-swap or create-if-absent.
package worker

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/mcpid/mcpid/services/audit/internal/checkpoint"
	"github.com/mcpid/mcpid/services/audit/internal/index"
	"github.com/mcpid/mcpid/services/audit/internal/inventory"
	"github.com/mcpid/mcpid/services/audit/internal/retention"
	"github.com/mcpid/mcpid/services/audit/internal/store"
)

// Defaults.
const (
	DefaultSessionTTL = 10 // seconds
	projectorIdle     = time.Second
)

// Config configures a Worker.
type Config struct {
	Client *clientv3.Client
	// ID names this replica in the election (for operators reading etcd).
	ID     string
	Index  *index.Index
	Signer *checkpoint.Signer
	// Archiver may be nil: no sink configured, nothing is archived.
	Archiver  *retention.Archiver
	Projector *inventory.Projector

	CheckpointInterval time.Duration
	RetentionInterval  time.Duration
	// SessionTTL is the election lease in seconds; zero means the default.
	SessionTTL int
	Logger     *slog.Logger
}

// Worker campaigns and, while elected, runs the tasks.
type Worker struct {
	cfg    Config
	leader atomic.Bool
}

// New returns a Worker.
func New(cfg Config) *Worker {
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Worker{cfg: cfg}
}

// Leader reports whether this replica is the elected one right now.
func (w *Worker) Leader() bool { return w.leader.Load() }

// Run campaigns until ctx ends; it returns ctx.Err().
func (w *Worker) Run(ctx context.Context) error {
	failures := 0
	for ctx.Err() == nil {
		if err := w.term(ctx); err != nil && ctx.Err() == nil {
			failures++
			w.cfg.Logger.Warn("worker: election failed; campaigning again", "error", err, "failures", failures)
			sleep(ctx, backoff(failures))
			continue
		}
		failures = 0
	}
	return ctx.Err()
}

// term is one campaign and, if won, one term of office.
func (w *Worker) term(ctx context.Context) error {
	// The session outlives ctx long enough to resign cleanly, so the next
	// replica takes over at once instead of after the lease's TTL.
	sctx, scancel := context.WithCancel(context.WithoutCancel(ctx))
	defer scancel()
	sess, err := concurrency.NewSession(w.cfg.Client, concurrency.WithTTL(w.cfg.SessionTTL), concurrency.WithContext(sctx))
	if err != nil {
		return err
	}
	defer sess.Close()
	el := concurrency.NewElection(sess, strings.TrimSuffix(string(store.Election), "/"))
	if err := el.Campaign(ctx, w.cfg.ID); err != nil {
		return err
	}
	w.cfg.Logger.Info("worker: elected; signing checkpoints, projecting the inventory and archiving")
	w.leader.Store(true)
	lctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-sess.Done():
			w.cfg.Logger.Warn("worker: election session lost; stepping down")
		case <-lctx.Done():
		}
		cancel()
	}()
	w.lead(lctx)
	cancel()
	w.leader.Store(false)
	rctx, rcancel := context.WithTimeout(sctx, 2*time.Second)
	defer rcancel()
	if err := el.Resign(rctx); err != nil && ctx.Err() == nil {
		return err
	}
	if ctx.Err() == nil {
		return errors.New("worker: lost the election session")
	}
	return nil
}

// lead runs every task until ctx ends.
func (w *Worker) lead(ctx context.Context) {
	var wg sync.WaitGroup
	run := func(name string, every time.Duration, wake func() <-chan struct{}, task func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			failures := 0
			for ctx.Err() == nil {
				var ch <-chan struct{}
				if wake != nil {
					ch = wake()
				}
				if err := task(ctx); err != nil && ctx.Err() == nil {
					failures++
					w.cfg.Logger.Warn("worker: task failed", "task", name, "error", err, "failures", failures)
					sleep(ctx, backoff(failures))
					continue
				}
				failures = 0
				t := time.NewTimer(every)
				select {
				case <-ctx.Done():
				case <-t.C:
				case <-ch:
				}
				t.Stop()
			}
		}()
	}
	if w.cfg.Signer != nil {
		if err := w.cfg.Signer.AnnounceKey(ctx); err != nil && ctx.Err() == nil {
			w.cfg.Logger.Warn("worker: announcing the checkpoint key failed", "error", err)
		}
		run("checkpoint", w.cfg.CheckpointInterval, nil, func(ctx context.Context) error {
			_, err := w.cfg.Signer.SignHead(ctx)
			return err
		})
	}
	if w.cfg.Projector != nil {
		run("inventory", projectorIdle, w.cfg.Index.Changed, func(ctx context.Context) error {
			for ctx.Err() == nil {
				n, err := w.cfg.Projector.Round(ctx)
				if err != nil || n == 0 {
					return err
				}
			}
			return nil
		})
	}
	if w.cfg.Archiver != nil {
		run("retention", w.cfg.RetentionInterval, nil, func(ctx context.Context) error {
			_, err := w.cfg.Archiver.Pass(ctx)
			return err
		})
	}
	wg.Wait()
}

func backoff(failures int) time.Duration {
	d := 10 * time.Second
	if shift := failures - 1; shift < 10 && 100*time.Millisecond<<shift < d {
		d = 100 * time.Millisecond << shift
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
