// Package revoke delivers pending grant revocations to the token service.
//
// Deleting, expiring or suspending a client records, in the same etcd
// transaction, a pending revocation of the client's grants and consents
// (store.Store.RevocationOp). This worker hands each one to a Revoker and
// deletes it only once acknowledged, retrying with backoff, so a crash
// loses nothing; several replicas may deliver the same one (the token
// service's revocation is idempotent). Until delivered, the client is
// already refused by AuthenticateClient and ResolveClient.
//
// The Revoker is TokenRevoker (the token service over mTLS, setting
// token-addr). With none configured the worker does not run and revocations
// wait in etcd for a replica that has one.
package revoke

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/mcpid/mcpid/lib/etcdstore"
	"github.com/mcpid/mcpid/services/registration/internal/store"
)

// Revoker revokes every grant and consent of a client at the token service
// (mcpid.token.v1 RevokeGrants with the client_id selector, then
// RevokeConsents). It must be idempotent.
type Revoker interface {
	RevokeClient(ctx context.Context, clientID, reason string) error
}

// batch is how many revocations one pass delivers.
const batch = 100

// Worker delivers revocations.
type Worker struct {
	store   store.Store
	revoker Revoker
	cache   *etcdstore.Cache[struct{}]
	wake    chan struct{}
	log     *slog.Logger
}

// New returns a worker watching the store's revocations.
func New(cli etcdstore.WatchClient, s store.Store, r Revoker, log *slog.Logger) (*Worker, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	w := &Worker{store: s, revoker: r, wake: make(chan struct{}, 1), log: log}
	cache, err := etcdstore.NewCache(etcdstore.CacheConfig[struct{}]{
		Client: cli,
		Prefix: s.RevocationPrefix(),
		Decode: func(*mvccpb.KeyValue) (struct{}, error) { return struct{}{}, nil },
		OnChange: func(ch etcdstore.Change[struct{}]) {
			if !ch.Deleted {
				select {
				case w.wake <- struct{}{}:
				default:
				}
			}
		},
		Logger: log,
	})
	if err != nil {
		return nil, err
	}
	w.cache = cache
	return w, nil
}

// Run delivers until ctx ends.
func (w *Worker) Run(ctx context.Context) error {
	// The cache's error is ctx's: it retries everything else itself.
	var wg sync.WaitGroup
	wg.Go(func() { _ = w.cache.Run(ctx) })
	defer wg.Wait()
	failures := 0
	for {
		n, err := w.deliver(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			failures++
			w.log.WarnContext(ctx, "grant revocation delivery failed; retrying", "error", err, "failures", failures)
			sleep(ctx, failures)
			continue
		}
		failures = 0
		if n == batch {
			continue // more waiting
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-w.wake:
		}
	}
}

func (w *Worker) deliver(ctx context.Context) (int, error) {
	rs, err := w.store.ListRevocations(ctx, batch)
	if err != nil {
		return 0, err
	}
	for _, r := range rs {
		if err := w.revoker.RevokeClient(ctx, r.ClientID, r.Reason); err != nil {
			return 0, err
		}
		if err := w.store.DeleteRevocation(ctx, r.Key); err != nil {
			return 0, err
		}
	}
	return len(rs), nil
}

func sleep(ctx context.Context, failures int) {
	d := min(100*time.Millisecond<<min(failures, 6), 10*time.Second)
	t := time.NewTimer(d/2 + rand.N(d/2+1))
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
