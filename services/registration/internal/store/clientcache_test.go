package store_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/mcpid/mcpid/lib/etcdstore"
	"github.com/mcpid/mcpid/services/registration/internal/store"
)

// runCache runs a client cache over s until the test ends (or stop is
// called) and waits until it follows etcd.
func runCache(t *testing.T, s *store.Etcd) (cache *store.ClientCache, stop func()) {
	t.Helper()
	cache, err := store.NewClientCache(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = cache.Run(ctx) })
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	deadline := time.Now().Add(30 * time.Second)
	for !cache.Live() {
		if time.Now().After(deadline) {
			t.Fatal("the client cache did not start following etcd")
		}
		time.Sleep(2 * time.Millisecond)
	}
	return cache, stop
}

func suspend(t *testing.T, s *store.Etcd, id string) {
	t.Helper()
	if _, err := s.UpdateClient(ctxT(t), id, func(c *store.Client) ([]etcdstore.Op, error) {
		c.Verification.Status = store.StatusSuspended
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
}

func status(t *testing.T, cache *store.ClientCache, id string) string {
	t.Helper()
	c, err := cache.GetClient(ctxT(t), id)
	if err != nil {
		t.Fatalf("GetClient(%s): %v", id, err)
	}
	return c.Verification.Status
}

// A change this replica made is what the next read sees: no window in
// which a suspended or deleted client still authenticates here.
func TestClientCacheReadsItsOwnWrites(t *testing.T) {
	s, _ := newStore(t)
	ctx := ctxT(t)
	cache, _ := runCache(t, s)
	if _, err := s.CreateClient(ctx, client("c1"), store.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := status(t, cache, "c1"); got != store.StatusUnverified {
		t.Fatalf("status after create = %q", got)
	}
	for i := range 20 {
		suspend(t, s, "c1")
		if got := status(t, cache, "c1"); got != store.StatusSuspended {
			t.Fatalf("round %d: status right after suspension = %q", i, got)
		}
		if _, err := s.UpdateClient(ctx, "c1", func(c *store.Client) ([]etcdstore.Op, error) {
			c.Verification.Status = store.StatusUnverified
			return nil, nil
		}); err != nil {
			t.Fatal(err)
		}
		if got := status(t, cache, "c1"); got != store.StatusUnverified {
			t.Fatalf("round %d: status right after reinstatement = %q", i, got)
		}
	}
	if _, err := s.DeleteClient(ctx, "c1", func(*store.Client) ([]etcdstore.Op, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := cache.GetClient(ctx, "c1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetClient right after deletion = %v, want ErrNotFound", err)
	}
}

// Another replica's changes arrive through the watch; a client this
// replica has not seen yet is read from etcd.
func TestClientCacheFollowsOtherReplicas(t *testing.T) {
	s, srv := newStore(t)
	other, err := store.New(srv.Client(t), "registration", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	cache, _ := runCache(t, s)
	if _, err := other.CreateClient(ctx, client("c2"), store.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := status(t, cache, "c2"); got != store.StatusUnverified {
		t.Fatalf("client created elsewhere: status %q", got)
	}
	suspend(t, other, "c2")
	deadline := time.Now().Add(time.Second)
	for status(t, cache, "c2") != store.StatusSuspended {
		if time.Now().After(deadline) {
			t.Fatal("a suspension made by another replica was not seen within a second")
		}
		time.Sleep(2 * time.Millisecond)
	}
	if _, err := other.DeleteClient(ctx, "c2", func(*store.Client) ([]etcdstore.Op, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(time.Second)
	for {
		_, err := cache.GetClient(ctx, "c2")
		if errors.Is(err, store.ErrNotFound) {
			break
		}
		if err != nil || time.Now().After(deadline) {
			t.Fatalf("a deletion made by another replica: GetClient = %v after a second", err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// A cache that is not following etcd (not started, or stopped: a broken
// watch) never answers from what it holds.
func TestClientCacheReadsEtcdWhileNotWatching(t *testing.T) {
	s, srv := newStore(t)
	other, err := store.New(srv.Client(t), "registration", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	cache, err := store.NewClientCache(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.CreateClient(ctx, client("c3"), store.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := status(t, cache, "c3"); got != store.StatusUnverified {
		t.Fatalf("before Run: status %q", got)
	}

	running, stop := runCache(t, s)
	if got := status(t, running, "c3"); got != store.StatusUnverified {
		t.Fatalf("running: status %q", got)
	}
	stop()
	if running.Live() {
		t.Fatal("live after Run returned")
	}
	// The stopped cache still holds c3 unsuspended; etcd says otherwise.
	suspend(t, other, "c3")
	if got := status(t, running, "c3"); got != store.StatusSuspended {
		t.Fatalf("stopped cache answered from memory: status %q", got)
	}
}
