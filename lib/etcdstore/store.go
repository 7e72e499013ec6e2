package etcdstore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Client is the part of *clientv3.Client a Store uses. A namespaced client
// (go.etcd.io/etcd/client/v3/namespace) fits as well.
type Client interface {
	clientv3.KV
	clientv3.Lease
}

// Retry defaults for Update and DeleteFunc. Optimistic concurrency is not
// fair: with eight writers hammering one key in a tight loop, one update
// occasionally needs a dozen attempts, so the bound leaves room for that
// while the short delays keep the worst case near a second.
const (
	DefaultMaxAttempts = 32
	DefaultBaseDelay   = 2 * time.Millisecond
	DefaultMaxDelay    = 100 * time.Millisecond
)

// Store writes records the way every service must: create-if-absent,
// compare-and-swap with retry, record and index keys in one transaction,
// expiry by lease, and paginated reads. It is safe for concurrent use.
type Store struct {
	c           Client
	maxAttempts int
	baseDelay   time.Duration
	maxDelay    time.Duration
}

// Option configures a Store.
type Option func(*Store)

// WithRetry sets how often Update and DeleteFunc try before answering
// ErrConflict, and the bounds of the jittered exponential backoff between
// tries.
func WithRetry(maxAttempts int, baseDelay, maxDelay time.Duration) Option {
	return func(s *Store) {
		s.maxAttempts = max(1, maxAttempts)
		s.baseDelay = max(0, baseDelay)
		s.maxDelay = max(s.baseDelay, maxDelay)
	}
}

// New returns a Store over c.
func New(c Client, opts ...Option) *Store {
	s := &Store{c: c, maxAttempts: DefaultMaxAttempts, baseDelay: DefaultBaseDelay, maxDelay: DefaultMaxDelay}
	for _, o := range opts {
		o(s)
	}
	return s
}

type opKind int

const (
	opPut opKind = iota + 1
	opPutIfAbsent
	opDelete
	opRaw
)

// Op is a change committed in the same transaction as a record: typically
// its index keys, or an audit outbox event (RawOp).
type Op struct {
	kind  opKind
	key   string
	value []byte
	raw   clientv3.Op
}

// PutOp writes key unconditionally (a non-unique index key). When the record
// is bound to a lease, so is this key.
func PutOp(key string, value []byte) Op { return Op{kind: opPut, key: key, value: value} }

// PutIfAbsentOp writes a unique index key: the whole transaction fails with
// ErrAlreadyExists (a *KeyError naming this key) if the key exists. In an
// Update, use it only for index keys the update adds, not ones the record
// already holds. When the record is bound to a lease, so is this key.
func PutIfAbsentOp(key string, value []byte) Op {
	return Op{kind: opPutIfAbsent, key: key, value: value}
}

// DeleteOp deletes key (absent is fine): an index key the record drops.
func DeleteOp(key string) Op { return Op{kind: opDelete, key: key} }

// RawOp commits a prepared etcd operation as it is (no lease is added).
func RawOp(op clientv3.Op) Op { return Op{kind: opRaw, raw: op} }

func (o Op) clientOp(lease clientv3.LeaseID) clientv3.Op {
	switch o.kind {
	case opPut, opPutIfAbsent:
		if lease != clientv3.NoLease {
			return clientv3.OpPut(o.key, string(o.value), clientv3.WithLease(lease))
		}
		return clientv3.OpPut(o.key, string(o.value))
	case opDelete:
		return clientv3.OpDelete(o.key)
	default:
		return o.raw
	}
}

// txnResult is a transaction's outcome. On failure, current holds the
// record as the transaction saw it (nil when absent) and taken the first
// unique index key found present.
type txnResult struct {
	ok       bool
	rev      int64
	current  *mvccpb.KeyValue
	taken    string
	hasTaken bool
}

// commit runs: if cond and every unique key absent, then primary + extra;
// else read the record and the unique keys, so a failure can be explained
// (and an Update retried) without another round trip.
func (s *Store) commit(ctx context.Context, key string, cond []clientv3.Cmp, primary clientv3.Op, extra []Op, lease clientv3.LeaseID) (txnResult, error) {
	cmps := append([]clientv3.Cmp(nil), cond...)
	thens := make([]clientv3.Op, 0, 1+len(extra))
	thens = append(thens, primary)
	elses := []clientv3.Op{clientv3.OpGet(key)}
	var unique []string
	for _, o := range extra {
		thens = append(thens, o.clientOp(lease))
		if o.kind == opPutIfAbsent {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(o.key), "=", 0))
			elses = append(elses, clientv3.OpGet(o.key, clientv3.WithCountOnly()))
			unique = append(unique, o.key)
		}
	}
	resp, err := s.c.Txn(ctx).If(cmps...).Then(thens...).Else(elses...).Commit()
	if err != nil {
		return txnResult{}, err
	}
	res := txnResult{ok: resp.Succeeded, rev: resp.Header.Revision}
	if resp.Succeeded {
		return res, nil
	}
	if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) > 0 {
		res.current = kvs[0]
	}
	for i, k := range unique {
		if resp.Responses[1+i].GetResponseRange().GetCount() > 0 {
			res.taken, res.hasTaken = k, true
			break
		}
	}
	return res, nil
}

// Get returns the record at key, or ErrNotFound.
func (s *Store) Get(ctx context.Context, key string) (*mvccpb.KeyValue, error) {
	kv, err := s.get(ctx, key)
	if err != nil {
		return nil, err
	}
	if kv == nil {
		return nil, keyErr(key, ErrNotFound)
	}
	return kv, nil
}

func (s *Store) get(ctx context.Context, key string) (*mvccpb.KeyValue, error) {
	resp, err := s.c.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("etcdstore: get %q: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	return resp.Kvs[0], nil
}

// Create writes key = value only if key does not exist, together with extra
// in one transaction; unique index keys (PutIfAbsentOp) must be absent too.
// Otherwise nothing is written and the error is ErrAlreadyExists naming the
// key found. It returns the revision of the write.
func (s *Store) Create(ctx context.Context, key string, value []byte, extra ...Op) (int64, error) {
	return s.create(ctx, key, value, clientv3.NoLease, extra)
}

func (s *Store) create(ctx context.Context, key string, value []byte, lease clientv3.LeaseID, extra []Op) (int64, error) {
	put := PutOp(key, value).clientOp(lease)
	absent := clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
	res, err := s.commit(ctx, key, []clientv3.Cmp{absent}, put, extra, lease)
	if err != nil {
		return 0, fmt.Errorf("etcdstore: create %q: %w", key, err)
	}
	switch {
	case res.ok:
		return res.rev, nil
	case res.current != nil:
		return 0, keyErr(key, ErrAlreadyExists)
	case res.hasTaken:
		return 0, keyErr(res.taken, ErrAlreadyExists)
	default: // the comparisons and the reads see one revision: unreachable
		return 0, keyErr(key, ErrConflict)
	}
}

// CreateWithTTL is Create with the record and its PutOp/PutIfAbsentOp keys
// bound to a new lease of ttl: etcd deletes them all when the lease expires.
// It returns the lease, which the caller may revoke early or keep alive.
// See PutWithTTL for how exact the expiry is.
func (s *Store) CreateWithTTL(ctx context.Context, key string, value []byte, ttl time.Duration, extra ...Op) (int64, clientv3.LeaseID, error) {
	return s.withLease(ctx, key, ttl, func(lease clientv3.LeaseID) (int64, error) {
		return s.create(ctx, key, value, lease, extra)
	})
}

// PutWithTTL writes key = value (replacing any previous value) bound to a
// new lease of ttl, with extra in the same transaction; PutOp and
// PutIfAbsentOp keys share the lease. When the lease expires etcd deletes
// the key and those index keys, and watchers see the deletions: no sweeper is
// needed. ttl is rounded up to whole seconds, and etcd raises it to its
// minimum (1.5 election timeouts, 1.5s by default); expiry may also lag by a
// moment, so a reader that must never accept a stale record compares an
// expiry time stored in the value as well.
func (s *Store) PutWithTTL(ctx context.Context, key string, value []byte, ttl time.Duration, extra ...Op) (int64, clientv3.LeaseID, error) {
	return s.withLease(ctx, key, ttl, func(lease clientv3.LeaseID) (int64, error) {
		put := PutOp(key, value).clientOp(lease)
		res, err := s.commit(ctx, key, nil, put, extra, lease)
		if err != nil {
			return 0, fmt.Errorf("etcdstore: put %q: %w", key, err)
		}
		if !res.ok {
			return 0, keyErr(res.taken, ErrAlreadyExists)
		}
		return res.rev, nil
	})
}

func (s *Store) withLease(ctx context.Context, key string, ttl time.Duration, write func(clientv3.LeaseID) (int64, error)) (int64, clientv3.LeaseID, error) {
	if ttl <= 0 {
		return 0, clientv3.NoLease, fmt.Errorf("etcdstore: key %q: ttl %v must be positive", key, ttl)
	}
	secs := int64((ttl + time.Second - 1) / time.Second)
	grant, err := s.c.Grant(ctx, secs)
	if err != nil {
		return 0, clientv3.NoLease, fmt.Errorf("etcdstore: grant lease for %q: %w", key, err)
	}
	rev, err := write(grant.ID)
	if err != nil {
		// An unused lease would live until its TTL; drop it now, even if ctx
		// is what failed.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_, _ = s.c.Revoke(rctx, grant.ID)
		cancel()
		return 0, clientv3.NoLease, err
	}
	return rev, grant.ID, nil
}

// UpdateFunc computes a record's new value from its current one, and the
// index changes that go with it. It may run several times (once per attempt),
// so it must not have side effects. An error stops the update: nothing is
// written and Update returns that error as it is.
type UpdateFunc func(old []byte) (value []byte, extra []Op, err error)

// Update replaces the record at key by fn(current value) with a
// compare-and-swap on its ModRevision, committing extra in the same
// transaction. When another writer got there first it calls fn again on the
// new value — at once the first time, after a jittered backoff and a fresh
// read later — up to the configured number of attempts; then it answers
// ErrConflict. ErrNotFound if the key is absent (also when it is deleted
// between attempts).
// A lease-bound record keeps its lease, and PutOp/PutIfAbsentOp keys in extra
// join it. It returns the revision of the write.
func (s *Store) Update(ctx context.Context, key string, fn UpdateFunc) (int64, error) {
	return s.mutate(ctx, key, func(old *mvccpb.KeyValue) (clientv3.Op, []Op, error) {
		value, extra, err := fn(old.Value)
		if err != nil {
			return clientv3.Op{}, nil, err
		}
		// IgnoreLease keeps the record on whatever lease it has.
		return clientv3.OpPut(key, string(value), clientv3.WithIgnoreLease()), extra, nil
	})
}

// DeleteFunc deletes the record at key together with the changes fn derives
// from its current value (typically DeleteOp for each of its index keys), in
// one compare-and-swap transaction retried like Update. ErrNotFound if the
// key is absent; fn's error is returned as it is, with nothing deleted.
func (s *Store) DeleteFunc(ctx context.Context, key string, fn func(old []byte) ([]Op, error)) (int64, error) {
	return s.mutate(ctx, key, func(old *mvccpb.KeyValue) (clientv3.Op, []Op, error) {
		extra, err := fn(old.Value)
		if err != nil {
			return clientv3.Op{}, nil, err
		}
		return clientv3.OpDelete(key), extra, nil
	})
}

func (s *Store) mutate(ctx context.Context, key string, fn func(*mvccpb.KeyValue) (clientv3.Op, []Op, error)) (int64, error) {
	kv, err := s.get(ctx, key)
	if err != nil {
		return 0, err
	}
	for attempt := 1; ; attempt++ {
		if kv == nil {
			return 0, keyErr(key, ErrNotFound)
		}
		primary, extra, err := fn(kv)
		if err != nil {
			return 0, err
		}
		same := clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)
		res, err := s.commit(ctx, key, []clientv3.Cmp{same}, primary, extra, clientv3.LeaseID(kv.Lease))
		if err != nil {
			return 0, fmt.Errorf("etcdstore: update %q: %w", key, err)
		}
		if res.ok {
			return res.rev, nil
		}
		if res.current != nil && res.current.ModRevision == kv.ModRevision {
			// The record did not change, so a unique index key failed.
			return 0, keyErr(res.taken, ErrAlreadyExists)
		}
		if attempt >= s.maxAttempts {
			return 0, keyErr(key, ErrConflict)
		}
		if attempt == 1 {
			// The Else branch read the winner's value: retry at once, which
			// settles most conflicts without waiting.
			kv = res.current
			continue
		}
		// Contended: wait, then read afresh — a value read before the wait
		// would be stale by the end of it.
		if err := s.sleep(ctx, attempt-1); err != nil {
			return 0, fmt.Errorf("etcdstore: update %q: %w", key, err)
		}
		if kv, err = s.get(ctx, key); err != nil {
			return 0, err
		}
	}
}

// sleep waits a full-jitter exponential backoff: uniform in [0, d) with d
// doubling per attempt up to maxDelay, so that colliding writers spread out.
func (s *Store) sleep(ctx context.Context, attempt int) error {
	d := s.maxDelay
	if shift := attempt - 1; shift < 30 && s.baseDelay<<shift < s.maxDelay {
		d = s.baseDelay << shift
	}
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(rand.N(d))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Delete deletes key together with extra in one transaction. With rev != 0
// it deletes only while the key's ModRevision is rev (ErrConflict otherwise,
// without retry: the caller decided on that version). ErrNotFound if the key
// is absent. It returns the revision of the delete.
func (s *Store) Delete(ctx context.Context, key string, rev int64, extra ...Op) (int64, error) {
	cond := clientv3.Compare(clientv3.CreateRevision(key), ">", 0)
	if rev != 0 {
		cond = clientv3.Compare(clientv3.ModRevision(key), "=", rev)
	}
	res, err := s.commit(ctx, key, []clientv3.Cmp{cond}, clientv3.OpDelete(key), extra, clientv3.NoLease)
	if err != nil {
		return 0, fmt.Errorf("etcdstore: delete %q: %w", key, err)
	}
	switch {
	case res.ok:
		return res.rev, nil
	case res.current == nil:
		return 0, keyErr(key, ErrNotFound)
	case rev != 0 && res.current.ModRevision != rev:
		return 0, keyErr(key, ErrConflict)
	case res.hasTaken:
		return 0, keyErr(res.taken, ErrAlreadyExists)
	default:
		return 0, keyErr(key, ErrConflict)
	}
}
