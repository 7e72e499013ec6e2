package etcdstore_test

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mcpid/mcpid/lib/etcdstore"
)

func increment(old []byte) ([]byte, int, error) {
	n, err := strconv.Atoi(string(old))
	if err != nil {
		return nil, 0, err
	}
	return []byte(strconv.Itoa(n + 1)), n + 1, nil
}

// Eight writers, each on its own connection (as separate replicas would be),
// increment one counter. Each increment also writes an index key named after
// the value it produced, in the same transaction: if two writers ever
// committed on the same old value, an index key would be missing.
func TestUpdateConcurrentWritersLoseNoUpdate(t *testing.T) {
	const writers, perWriter = 8, 25
	_, _, srv := newStore(t)
	ctx := testCtx(t)
	c := srv.Client(t)
	s := etcdstore.New(c)
	key := testPrefix.Key("counters", "c")
	byValue := testPrefix.Sub("counter-values")
	if _, err := s.Create(ctx, key, []byte("0")); err != nil {
		t.Fatal(err)
	}

	var calls, maxRuns atomic.Int64
	errs := make(chan error, writers*perWriter)
	var wg sync.WaitGroup
	for range writers {
		ws := etcdstore.New(srv.Client(t))
		wg.Go(func() {
			for range perWriter {
				var runs int64
				_, err := ws.Update(ctx, key, func(old []byte) ([]byte, []etcdstore.Op, error) {
					calls.Add(1)
					runs++
					v, n, err := increment(old)
					return v, []etcdstore.Op{etcdstore.PutOp(byValue.Key(strconv.Itoa(n)), nil)}, err
				})
				if err != nil {
					errs <- err
				}
				for m := maxRuns.Load(); runs > m && !maxRuns.CompareAndSwap(m, runs); m = maxRuns.Load() {
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Update: %v", err)
	}

	const want = writers * perWriter
	if got, _ := value(t, ctx, c, key); got != strconv.Itoa(want) {
		t.Fatalf("counter = %s, want %d", got, want)
	}
	resp, err := c.Get(ctx, byValue.String(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != want {
		t.Fatalf("%d value index keys, want %d", len(resp.Kvs), want)
	}
	t.Logf("%d callback runs for %d increments; at most %d for one", calls.Load(), want, maxRuns.Load())
}

func TestUpdateGivesUpWithErrConflict(t *testing.T) {
	_, c, _ := newStore(t)
	s := etcdstore.New(c, etcdstore.WithRetry(3, time.Millisecond, 2*time.Millisecond))
	ctx := testCtx(t)
	key := testPrefix.Key("contended")
	if _, err := s.Create(ctx, key, []byte("start")); err != nil {
		t.Fatal(err)
	}
	calls := 0
	_, err := s.Update(ctx, key, func(old []byte) ([]byte, []etcdstore.Op, error) {
		calls++
		// Another writer wins every race.
		if _, err := c.Put(ctx, key, fmt.Sprintf("other-%d", calls)); err != nil {
			return nil, nil, err
		}
		return []byte("mine"), []etcdstore.Op{etcdstore.PutOp(testPrefix.Key("idx"), nil)}, nil
	})
	wantKeyErr(t, err, etcdstore.ErrConflict, key)
	if calls != 3 {
		t.Fatalf("callback ran %d times, want 3 attempts", calls)
	}
	if got, _ := value(t, ctx, c, key); got != "other-3" {
		t.Fatalf("value = %q, want the other writer's", got)
	}
	if _, ok := value(t, ctx, c, testPrefix.Key("idx")); ok {
		t.Fatal("index key of a failed update was written")
	}
}

func TestUpdateCallbackErrorWritesNothing(t *testing.T) {
	s, c, _ := newStore(t)
	ctx := testCtx(t)
	key := testPrefix.Key("r")
	rev, err := s.Create(ctx, key, []byte("v1"))
	if err != nil {
		t.Fatal(err)
	}
	errDomain := errors.New("client is suspended")
	_, err = s.Update(ctx, key, func(old []byte) ([]byte, []etcdstore.Op, error) {
		return []byte("v2"), []etcdstore.Op{etcdstore.PutOp(testPrefix.Key("idx"), nil)}, errDomain
	})
	if err != errDomain { //nolint:errorlint // the callback's error must come back as it is, unwrapped
		t.Fatalf("err = %v, want the callback's error as it is", err)
	}
	kv, err := s.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if string(kv.Value) != "v1" || kv.ModRevision != rev {
		t.Fatalf("record changed: %q at %d", kv.Value, kv.ModRevision)
	}
	if _, ok := value(t, ctx, c, testPrefix.Key("idx")); ok {
		t.Fatal("index key written although the callback failed")
	}
}

func TestUpdateAndGetMissingKey(t *testing.T) {
	s, _, _ := newStore(t)
	ctx := testCtx(t)
	key := testPrefix.Key("missing")
	called := false
	_, err := s.Update(ctx, key, func([]byte) ([]byte, []etcdstore.Op, error) {
		called = true
		return nil, nil, nil
	})
	wantKeyErr(t, err, etcdstore.ErrNotFound, key)
	if called {
		t.Fatal("callback ran for a missing key")
	}
	_, err = s.Get(ctx, key)
	wantKeyErr(t, err, etcdstore.ErrNotFound, key)
}

func TestUpdateUniqueIndexTakenFailsWithoutRetry(t *testing.T) {
	s, c, _ := newStore(t)
	ctx := testCtx(t)
	a, b := testPrefix.Key("clients", "a"), testPrefix.Key("clients", "b")
	name := testPrefix.Key("clients-by-name", "shared")
	if _, err := s.Create(ctx, a, []byte("a"), etcdstore.PutIfAbsentOp(name, []byte(a))); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, b, []byte("b")); err != nil {
		t.Fatal(err)
	}
	calls := 0
	_, err := s.Update(ctx, b, func([]byte) ([]byte, []etcdstore.Op, error) {
		calls++
		return []byte("b renamed"), []etcdstore.Op{etcdstore.PutIfAbsentOp(name, []byte(b))}, nil
	})
	wantKeyErr(t, err, etcdstore.ErrAlreadyExists, name)
	if calls != 1 {
		t.Fatalf("callback ran %d times; a taken index is not a conflict to retry", calls)
	}
	if v, _ := value(t, ctx, c, b); v != "b" {
		t.Fatalf("b = %q, want unchanged", v)
	}
	if v, _ := value(t, ctx, c, name); v != a {
		t.Fatalf("index = %q, want still %q", v, a)
	}
}

func TestCreateRaceHasExactlyOneWinner(t *testing.T) {
	const racers = 32
	_, c, srv := newStore(t)
	ctx := testCtx(t)
	key := testPrefix.Key("codes", "abc")
	stores := []*etcdstore.Store{etcdstore.New(c), etcdstore.New(srv.Client(t))}
	results := make([]error, racers)
	var wg sync.WaitGroup
	for i := range racers {
		wg.Go(func() {
			_, results[i] = stores[i%2].Create(ctx, key, []byte(strconv.Itoa(i)))
		})
	}
	wg.Wait()
	winner := -1
	for i, err := range results {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("racers %d and %d both created %q", winner, i, key)
		case err == nil:
			winner = i
		default:
			wantKeyErr(t, err, etcdstore.ErrAlreadyExists, key)
		}
	}
	if winner < 0 {
		t.Fatal("nobody won")
	}
	if got, _ := value(t, ctx, c, key); got != strconv.Itoa(winner) {
		t.Fatalf("stored %q, want the winner's %d", got, winner)
	}
}

// Records that claim the same unique index: the loser writes neither its
// record nor any of its other index keys.
func TestUniqueIndexCollisionWritesNothing(t *testing.T) {
	const racers = 16
	s, c, _ := newStore(t)
	ctx := testCtx(t)
	clients := testPrefix.Sub("clients")
	name := testPrefix.Key("clients-by-name", "My Agent")
	owners := testPrefix.Sub("clients-by-owner", "bob")

	results := make([]error, racers)
	var wg sync.WaitGroup
	for i := range racers {
		wg.Go(func() {
			id := strconv.Itoa(i)
			_, results[i] = s.Create(ctx, clients.Key(id), []byte(id),
				etcdstore.PutIfAbsentOp(name, []byte(id)),
				etcdstore.PutOp(owners.Key(id), nil))
		})
	}
	wg.Wait()
	winner := ""
	for i, err := range results {
		if err == nil {
			winner = strconv.Itoa(i)
			continue
		}
		wantKeyErr(t, err, etcdstore.ErrAlreadyExists, name)
	}
	for _, p := range []etcdstore.Prefix{clients, owners} {
		resp, err := c.Get(ctx, p.String(), clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 1 || string(resp.Kvs[0].Key) != p.Key(winner) {
			t.Fatalf("under %s: %d keys, want only the winner %s's", p, len(resp.Kvs), winner)
		}
	}
	if v, _ := value(t, ctx, c, name); v != winner {
		t.Fatalf("unique index -> %q, want %q", v, winner)
	}

	// And an existing record is reported as itself, not as its index.
	_, err := s.Create(ctx, clients.Key(winner), nil, etcdstore.PutIfAbsentOp(name, nil))
	wantKeyErr(t, err, etcdstore.ErrAlreadyExists, clients.Key(winner))
}

func TestDeleteWithIndexKeys(t *testing.T) {
	s, c, _ := newStore(t)
	ctx := testCtx(t)
	key, idx := testPrefix.Key("grants", "g1"), testPrefix.Key("grants-by-user", "u", "g1")
	rev, err := s.Create(ctx, key, []byte("g1"), etcdstore.PutOp(idx, nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(ctx, key, func([]byte) ([]byte, []etcdstore.Op, error) { return []byte("g1 v2"), nil, nil }); err != nil {
		t.Fatal(err)
	}

	_, err = s.Delete(ctx, key, rev, etcdstore.DeleteOp(idx))
	wantKeyErr(t, err, etcdstore.ErrConflict, key)
	if _, ok := value(t, ctx, c, idx); !ok {
		t.Fatal("stale delete removed the index key")
	}

	kv, err := s.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Delete(ctx, key, kv.ModRevision, etcdstore.DeleteOp(idx)); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{key, idx} {
		if _, ok := value(t, ctx, c, k); ok {
			t.Fatalf("%s survived the delete", k)
		}
	}
	_, err = s.Delete(ctx, key, 0)
	wantKeyErr(t, err, etcdstore.ErrNotFound, key)
}

func TestDeleteFuncDerivesIndexKeysFromTheRecord(t *testing.T) {
	s, c, _ := newStore(t)
	ctx := testCtx(t)
	key := testPrefix.Key("grants", "g1")
	idxFor := func(user []byte) string { return testPrefix.Key("grants-by-user", string(user), "g1") }
	if _, err := s.Create(ctx, key, []byte("alice"), etcdstore.PutOp(idxFor([]byte("alice")), nil)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteFunc(ctx, key, func(old []byte) ([]etcdstore.Op, error) {
		return []etcdstore.Op{etcdstore.DeleteOp(idxFor(old))}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, ok := value(t, ctx, c, idxFor([]byte("alice"))); ok {
		t.Fatal("index key survived")
	}
	_, err := s.DeleteFunc(ctx, key, func([]byte) ([]etcdstore.Op, error) { return nil, nil })
	wantKeyErr(t, err, etcdstore.ErrNotFound, key)
}

func TestLeaseBoundKeysExpire(t *testing.T) {
	s, c, _ := newStore(t)
	ctx := testCtx(t)
	key, idx := testPrefix.Key("codes", "c1"), testPrefix.Key("codes-by-client", "x", "c1")
	_, lease, err := s.CreateWithTTL(ctx, key, []byte("code"), time.Second, etcdstore.PutOp(idx, nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{key, idx} {
		resp, err := c.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 1 || clientv3.LeaseID(resp.Kvs[0].Lease) != lease {
			t.Fatalf("%s not bound to lease %x: %v", k, lease, resp.Kvs)
		}
	}
	// etcd's lessor decides the exact moment; only require that it happens.
	eventually(t, 30*time.Second, "the lease-bound keys to expire", func() bool {
		_, a := value(t, ctx, c, key)
		_, b := value(t, ctx, c, idx)
		return !a && !b
	})
}

func TestPutWithTTLAndUpdateKeepTheLease(t *testing.T) {
	s, c, _ := newStore(t)
	ctx := testCtx(t)
	key, idx := testPrefix.Key("sessions", "s1"), testPrefix.Key("sessions-by-user", "u", "s1")
	if _, _, err := s.PutWithTTL(ctx, key, []byte("v1"), 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.PutWithTTL(ctx, key, []byte("v1 again"), 5*time.Minute); err != nil {
		t.Fatalf("PutWithTTL over an existing key: %v", err)
	}
	// PutWithTTL replaced the key onto a new lease; Update must keep it.
	kv, err := s.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	lease := clientv3.LeaseID(kv.Lease)
	if _, err := s.Update(ctx, key, func([]byte) ([]byte, []etcdstore.Op, error) {
		return []byte("v2"), []etcdstore.Op{etcdstore.PutOp(idx, nil)}, nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{key, idx} {
		kv, err := s.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if clientv3.LeaseID(kv.Lease) != lease {
			t.Fatalf("%s on lease %x after Update, want %x", k, kv.Lease, lease)
		}
	}
	if _, _, err := s.PutWithTTL(ctx, key, nil, 0); err == nil {
		t.Fatal("PutWithTTL with ttl 0 accepted")
	}
	_ = c
}

func TestFailedCreateWithTTLLeaksNoLease(t *testing.T) {
	s, c, _ := newStore(t)
	ctx := testCtx(t)
	key := testPrefix.Key("codes", "c1")
	if _, err := s.Create(ctx, key, []byte("exists")); err != nil {
		t.Fatal(err)
	}
	_, _, err := s.CreateWithTTL(ctx, key, []byte("again"), time.Minute)
	wantKeyErr(t, err, etcdstore.ErrAlreadyExists, key)
	leases, err := c.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(leases.Leases) != 0 {
		t.Fatalf("%d leases left after a failed create", len(leases.Leases))
	}
}
