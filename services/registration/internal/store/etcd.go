package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mcpid/mcpid/lib/auditemit"
	"github.com/mcpid/mcpid/lib/etcdstore"
	"github.com/mcpid/mcpid/services/registration/internal/secret"
)

// Collections under /mcpid/registration/.
const (
	collClients     = "clients"     // clients/<client_id>: Client
	collExpiry      = "expiry"      // expiry/<client_id>: marker on the client's lease
	collIATs        = "iats"        // iats/<reversed id>: IAT, on a lease until it expires
	collIATHashes   = "iat-hashes"  // iat-hashes/<hex digest>: id, on the same lease
	collJTIs        = "jtis"        // jtis/<hex sha256(client_id NUL jti)>: on a lease until exp
	collDuplicates  = "duplicates"  // duplicates/<fingerprint>/<client_id>: on a lease of the window
	collRevocations = "revocations" // revocations/<ulid>: Revocation, until delivered
)

// maxUpdateAttempts bounds the outer retry of UpdateClient/DeleteClient
// when the record changed between reading it and the compare-and-swap.
const maxUpdateAttempts = 16

// errStale stops an etcdstore update whose input is not the version this
// package read; the caller reads again.
var errStale = errors.New("store: record changed since read")

// Etcd is the Store on etcd.
type Etcd struct {
	cli    *clientv3.Client
	es     *etcdstore.Store
	prefix etcdstore.Prefix
	ids    *auditemit.IDGenerator
	jti    leaseBuckets
	now    func() time.Time
	// clientWrites is the highest revision at which this store wrote a
	// client record: a ClientCache reads through etcd until it has caught
	// up with it (read-your-writes within the replica).
	clientWrites atomic.Int64
}

// wroteClient records a client write at rev.
func (s *Etcd) wroteClient(rev int64) {
	for {
		cur := s.clientWrites.Load()
		if rev <= cur || s.clientWrites.CompareAndSwap(cur, rev) {
			return
		}
	}
}

var _ Store = (*Etcd)(nil)

// New returns the store for the service named service (its etcd prefix).
func New(cli *clientv3.Client, service string, now func() time.Time) (*Etcd, error) {
	p, err := etcdstore.NewPrefix(service)
	if err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	return &Etcd{
		cli:    cli,
		es:     etcdstore.New(cli),
		prefix: p,
		ids:    auditemit.NewIDGenerator(now, nil),
		jti:    leaseBuckets{cli: cli, leases: map[int64]clientv3.LeaseID{}},
		now:    now,
	}, nil
}

func (s *Etcd) clientKey(id string) string { return s.prefix.Key(collClients, id) }
func (s *Etcd) markerKey(id string) string { return s.prefix.Key(collExpiry, id) }

// ExpiryPrefix implements Store.
func (s *Etcd) ExpiryPrefix() etcdstore.Prefix { return s.prefix.Sub(collExpiry) }

// ExpiryMarkerClientID implements Store.
func (s *Etcd) ExpiryMarkerClientID(key string) (string, error) {
	parts, err := s.ExpiryPrefix().Parts(key)
	if err != nil || len(parts) != 1 {
		return "", fmt.Errorf("store: %q is not an expiry marker", key)
	}
	return parts[0], nil
}

func encode(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("store: encode: %w", err)
	}
	return b, nil
}

func decodeClient(kv *mvccpb.KeyValue) (*Client, error) {
	var c Client
	if err := json.Unmarshal(kv.Value, &c); err != nil {
		return nil, fmt.Errorf("store: decode client %q: %w", kv.Key, err)
	}
	c.Revision = kv.ModRevision
	if c.ConsentEpoch == 0 {
		// Written by the transaction that created the client or changed
		// its redirect URIs: that transaction's revision.
		c.ConsentEpoch = kv.ModRevision
	}
	return &c, nil
}

// leaseTTL is the lease length that ends at or just after until (etcd leases
// are whole seconds, at least one).
func leaseTTL(now, until time.Time) int64 {
	d := until.Sub(now)
	secs := int64((d + time.Second - 1) / time.Second)
	return max(secs, 1)
}

// grant grants a lease ending at until.
func (s *Etcd) grant(ctx context.Context, until time.Time) (clientv3.LeaseID, error) {
	resp, err := s.cli.Grant(ctx, leaseTTL(s.now(), until))
	if err != nil {
		return 0, fmt.Errorf("store: grant lease: %w", err)
	}
	return resp.ID, nil
}

// revoke drops leases that ended up unused (or whose keys were deleted),
// even when ctx is done; a failure only leaves the lease to run out.
func (s *Etcd) revoke(ctx context.Context, leases ...clientv3.LeaseID) {
	for _, l := range leases {
		if l == clientv3.NoLease {
			continue
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_, _ = s.cli.Revoke(rctx, l)
		cancel()
	}
}

func (s *Etcd) markerOp(id string, lease clientv3.LeaseID) etcdstore.Op {
	return etcdstore.RawOp(clientv3.OpPut(s.markerKey(id), id, clientv3.WithLease(lease)))
}

// CreateClient implements Store.
func (s *Etcd) CreateClient(ctx context.Context, c *Client, opts CreateOptions) (_ int64, err error) {
	var leases []clientv3.LeaseID
	defer func() {
		if err != nil {
			s.revoke(ctx, leases...)
		}
	}()
	c.ConsentEpoch = 0
	c.LeaseID = 0
	c.Version = 1
	var ops []etcdstore.Op
	if !c.ExpireTime.IsZero() {
		l, err := s.grant(ctx, c.ExpireTime)
		if err != nil {
			return 0, err
		}
		leases = append(leases, l)
		c.LeaseID = int64(l)
		ops = append(ops, s.markerOp(c.ClientID, l))
	}
	if opts.DuplicateSlot != "" {
		l, err := s.grant(ctx, s.now().Add(opts.DuplicateWindow))
		if err != nil {
			return 0, err
		}
		leases = append(leases, l)
		ops = append(ops, etcdstore.RawOp(clientv3.OpPut(opts.DuplicateSlot, c.ClientID, clientv3.WithLease(l))))
	}
	value, err := encode(c)
	if err != nil {
		return 0, err
	}
	ops = append(ops, opts.Extra...)
	key := s.clientKey(c.ClientID)
	var rev int64
	if opts.IAT == nil {
		rev, err = s.es.Create(ctx, key, value, ops...)
	} else {
		rev, err = s.createWithIAT(ctx, key, value, opts.IAT, ops)
	}
	if err != nil {
		return 0, err
	}
	s.wroteClient(rev)
	c.Revision = rev
	c.ConsentEpoch = rev
	return rev, nil
}

// createWithIAT writes the client as part of the compare-and-swap of the
// initial access token it consumes, so the use count is exact. The client
// key itself is written without an absence check: only DCR registers with a
// token, and DCR client_ids are 128 random bits.
func (s *Etcd) createWithIAT(ctx context.Context, key string, value []byte, t *IAT, ops []etcdstore.Op) (int64, error) {
	newIAT, err := encode(t)
	if err != nil {
		return 0, err
	}
	// A raw put: etcdstore would attach plain PutOps to the token's lease.
	ops = append([]etcdstore.Op{etcdstore.RawOp(clientv3.OpPut(key, string(value)))}, ops...)
	first := true
	rev, err := s.es.Update(ctx, s.iatKey(t.ID), func(old []byte) ([]byte, []etcdstore.Op, error) {
		var cur IAT
		if err := json.Unmarshal(old, &cur); err != nil || cur.UseCount != t.UseCount-1 || !cur.RevokeTime.IsZero() || !first {
			return nil, nil, ErrIATChanged
		}
		first = false
		return newIAT, ops, nil
	})
	if errors.Is(err, etcdstore.ErrNotFound) {
		return 0, fmt.Errorf("%w: %w", ErrIATChanged, err)
	}
	return rev, err
}

// GetClient implements Store.
func (s *Etcd) GetClient(ctx context.Context, id string) (*Client, error) {
	kv, err := s.es.Get(ctx, s.clientKey(id))
	if err != nil {
		return nil, err
	}
	return decodeClient(kv)
}

// UpdateClient implements Store.
func (s *Etcd) UpdateClient(ctx context.Context, id string, fn func(c *Client) ([]etcdstore.Op, error)) (*Client, error) {
	key := s.clientKey(id)
	for range maxUpdateAttempts {
		cur, err := s.GetClient(ctx, id)
		if err != nil {
			return nil, err
		}
		var (
			out      *Client
			newLease clientv3.LeaseID
			oldLease clientv3.LeaseID
		)
		rev, err := s.es.Update(ctx, key, func(old []byte) ([]byte, []etcdstore.Op, error) {
			if out != nil || !sameVersion(old, cur.Version) {
				return nil, nil, errStale
			}
			c := cur.Clone()
			extra, err := fn(c)
			if err != nil {
				return nil, nil, err
			}
			c.ClientID = cur.ClientID
			c.Version = cur.Version + 1
			c.LeaseID = cur.LeaseID
			var ops []etcdstore.Op
			if !c.ExpireTime.Equal(cur.ExpireTime) {
				oldLease = clientv3.LeaseID(cur.LeaseID)
				c.LeaseID = 0
				if c.ExpireTime.IsZero() {
					ops = append(ops, etcdstore.DeleteOp(s.markerKey(id)))
				} else {
					l, err := s.grant(ctx, c.ExpireTime)
					if err != nil {
						return nil, nil, err
					}
					newLease = l
					c.LeaseID = int64(l)
					ops = append(ops, s.markerOp(id, l))
				}
			}
			value, err := encode(c)
			if err != nil {
				return nil, nil, err
			}
			out = c
			return value, append(ops, extra...), nil
		})
		if errors.Is(err, errStale) {
			s.revoke(ctx, newLease)
			continue
		}
		if err != nil {
			s.revoke(ctx, newLease)
			return nil, err
		}
		s.wroteClient(rev)
		// The marker moved to the new lease; the old one holds nothing now.
		s.revoke(ctx, oldLease)
		out.Revision = rev
		if out.ConsentEpoch == 0 {
			out.ConsentEpoch = rev // this write changed the redirect URIs
		}
		return out, nil
	}
	return nil, fmt.Errorf("store: update client %q: %w", id, ErrConflict)
}

// sameVersion reports whether an encoded client has this version.
func sameVersion(b []byte, version int64) bool {
	var v struct {
		Version int64 `json:"version"`
	}
	return json.Unmarshal(b, &v) == nil && v.Version == version
}

// DeleteClient implements Store.
func (s *Etcd) DeleteClient(ctx context.Context, id string, fn func(c *Client) ([]etcdstore.Op, error)) (*Client, error) {
	key := s.clientKey(id)
	for range maxUpdateAttempts {
		cur, err := s.GetClient(ctx, id)
		if err != nil {
			return nil, err
		}
		called := false
		rev, err := s.es.DeleteFunc(ctx, key, func(old []byte) ([]etcdstore.Op, error) {
			if called || !sameVersion(old, cur.Version) {
				return nil, errStale
			}
			called = true
			extra, err := fn(cur.Clone())
			if err != nil {
				return nil, err
			}
			return append([]etcdstore.Op{etcdstore.DeleteOp(s.markerKey(id))}, extra...), nil
		})
		if errors.Is(err, errStale) {
			continue
		}
		if err != nil {
			return nil, err
		}
		s.wroteClient(rev)
		s.revoke(ctx, clientv3.LeaseID(cur.LeaseID))
		return cur, nil
	}
	return nil, fmt.Errorf("store: delete client %q: %w", id, ErrConflict)
}

// ListClients implements Store.
func (s *Etcd) ListClients(ctx context.Context, pageSize int, pageToken string) ([]*Client, string, error) {
	kvs, next, err := s.es.List(ctx, s.prefix.Sub(collClients), pageSize, pageToken)
	if err != nil {
		if errors.Is(err, etcdstore.ErrInvalidPageToken) || errors.Is(err, etcdstore.ErrPageTokenExpired) {
			return nil, "", fmt.Errorf("%w: %w", ErrInvalidPageToken, err)
		}
		return nil, "", err
	}
	out := make([]*Client, 0, len(kvs))
	for _, kv := range kvs {
		c, err := decodeClient(kv)
		if err != nil {
			return nil, "", err
		}
		out = append(out, c)
	}
	return out, next, nil
}

// CountClients implements Store.
func (s *Etcd) CountClients(ctx context.Context) (int64, error) {
	p := s.prefix.Sub(collClients).String()
	resp, err := s.cli.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, fmt.Errorf("store: count clients: %w", err)
	}
	return resp.Count, nil
}

// RenewClient implements Store.
func (s *Etcd) RenewClient(ctx context.Context, c *Client, now, expire time.Time) error {
	if c.IdleExpiry && c.LeaseID != 0 {
		if _, err := s.cli.KeepAliveOnce(ctx, clientv3.LeaseID(c.LeaseID)); err != nil {
			if errors.Is(err, rpctypes.ErrLeaseNotFound) {
				return fmt.Errorf("store: client %q: expiry lease gone: %w", c.ClientID, ErrNotFound)
			}
			return fmt.Errorf("store: renew client %q: %w", c.ClientID, err)
		}
	}
	rev, err := s.es.Update(ctx, s.clientKey(c.ClientID), func(old []byte) ([]byte, []etcdstore.Op, error) {
		if !sameVersion(old, c.Version) {
			return nil, nil, errStale
		}
		n := c.Clone()
		n.Version++
		n.LastUsedTime = now
		if c.IdleExpiry && c.LeaseID != 0 {
			n.ExpireTime = expire
		}
		v, err := encode(n)
		return v, nil, err
	})
	if errors.Is(err, errStale) || errors.Is(err, etcdstore.ErrNotFound) {
		return nil
	}
	if err == nil {
		s.wroteClient(rev)
	}
	return err
}

// LeaseAlive implements Store.
func (s *Etcd) LeaseAlive(ctx context.Context, lease int64) (bool, error) {
	resp, err := s.cli.TimeToLive(ctx, clientv3.LeaseID(lease))
	if err != nil {
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return false, nil
		}
		return false, fmt.Errorf("store: lease %x: %w", lease, err)
	}
	return resp.TTL > 0, nil
}

// --- initial access tokens ---

// reverseID maps an id to a key part that sorts the other way round, so a
// plain ascending listing returns the newest token first. Ids are ULIDs:
// fixed length, one alphabet; each character is mirrored in it.
func reverseID(id string) string {
	const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
	b := []byte(id)
	for i, c := range b {
		if j := strings.IndexByte(alphabet, c); j >= 0 {
			b[i] = alphabet[len(alphabet)-1-j]
		}
	}
	return string(b)
}

func (s *Etcd) iatKey(id string) string { return s.prefix.Key(collIATs, reverseID(id)) }
func (s *Etcd) iatHashKey(d secret.Digest) string {
	return s.prefix.Key(collIATHashes, d.Hex())
}

// CreateIAT implements Store.
func (s *Etcd) CreateIAT(ctx context.Context, t *IAT, extra ...etcdstore.Op) error {
	value, err := encode(t)
	if err != nil {
		return err
	}
	ops := append([]etcdstore.Op{etcdstore.PutIfAbsentOp(s.iatHashKey(t.Hash), []byte(t.ID))}, extra...)
	_, _, err = s.es.CreateWithTTL(ctx, s.iatKey(t.ID), value, t.ExpireTime.Sub(s.now()), ops...)
	return err
}

func decodeIAT(kv *mvccpb.KeyValue) (*IAT, error) {
	var t IAT
	if err := json.Unmarshal(kv.Value, &t); err != nil {
		return nil, fmt.Errorf("store: decode initial access token %q: %w", kv.Key, err)
	}
	t.Revision = kv.ModRevision
	return &t, nil
}

// GetIATByHash implements Store.
func (s *Etcd) GetIATByHash(ctx context.Context, hash secret.Digest) (*IAT, error) {
	kv, err := s.es.Get(ctx, s.iatHashKey(hash))
	if err != nil {
		return nil, err
	}
	return s.GetIAT(ctx, string(kv.Value))
}

// GetIAT implements Store.
func (s *Etcd) GetIAT(ctx context.Context, id string) (*IAT, error) {
	kv, err := s.es.Get(ctx, s.iatKey(id))
	if err != nil {
		return nil, err
	}
	return decodeIAT(kv)
}

// UpdateIAT implements Store.
func (s *Etcd) UpdateIAT(ctx context.Context, id string, fn func(t *IAT) ([]etcdstore.Op, error)) (*IAT, error) {
	var out *IAT
	_, err := s.es.Update(ctx, s.iatKey(id), func(old []byte) ([]byte, []etcdstore.Op, error) {
		var t IAT
		if err := json.Unmarshal(old, &t); err != nil {
			return nil, nil, fmt.Errorf("store: decode initial access token %q: %w", id, err)
		}
		extra, err := fn(&t)
		if err != nil {
			return nil, nil, err
		}
		t.ID = id
		v, err := encode(&t)
		out = &t
		return v, extra, err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ListIATs implements Store.
func (s *Etcd) ListIATs(ctx context.Context, pageSize int, pageToken string) ([]*IAT, string, error) {
	kvs, next, err := s.es.List(ctx, s.prefix.Sub(collIATs), pageSize, pageToken)
	if err != nil {
		if errors.Is(err, etcdstore.ErrInvalidPageToken) || errors.Is(err, etcdstore.ErrPageTokenExpired) {
			return nil, "", fmt.Errorf("%w: %w", ErrInvalidPageToken, err)
		}
		return nil, "", err
	}
	out := make([]*IAT, 0, len(kvs))
	for _, kv := range kvs {
		t, err := decodeIAT(kv)
		if err != nil {
			return nil, "", err
		}
		out = append(out, t)
	}
	return out, next, nil
}

// --- assertion ids ---

// RememberJTI implements Store.
func (s *Etcd) RememberJTI(ctx context.Context, clientID, jti string, until time.Time) error {
	h := sha256.Sum256([]byte(clientID + "\x00" + jti))
	key := s.prefix.Key(collJTIs, hex.EncodeToString(h[:]))
	for attempt := 0; attempt < 2; attempt++ {
		lease, err := s.jti.lease(ctx, s.now(), until)
		if err != nil {
			return err
		}
		resp, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, "", clientv3.WithLease(lease))).
			Commit()
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			s.jti.forget(lease) // the bucket's lease ran out early; take a new one
			continue
		}
		if err != nil {
			return fmt.Errorf("store: remember assertion id: %w", err)
		}
		if !resp.Succeeded {
			return fmt.Errorf("store: assertion id: %w", ErrAlreadyExists)
		}
		return nil
	}
	return fmt.Errorf("store: remember assertion id: no usable lease")
}

// leaseBuckets shares one lease among the assertion ids that expire within
// the same bucket of time, so a token request costs a transaction but not a
// lease grant. A key may outlive its assertion by up to one bucket: that
// only remembers a used id a little longer.
type leaseBuckets struct {
	cli    *clientv3.Client
	mu     sync.Mutex
	leases map[int64]clientv3.LeaseID // bucket end (unix seconds) → lease
}

const jtiBucket = 30 // seconds

func (b *leaseBuckets) lease(ctx context.Context, now, until time.Time) (clientv3.LeaseID, error) {
	end := (until.Unix()/jtiBucket + 1) * jtiBucket
	b.mu.Lock()
	defer b.mu.Unlock()
	if l, ok := b.leases[end]; ok {
		return l, nil
	}
	for e := range b.leases {
		if e < now.Unix() {
			delete(b.leases, e)
		}
	}
	resp, err := b.cli.Grant(ctx, end-now.Unix()+1)
	if err != nil {
		return 0, fmt.Errorf("store: grant assertion id lease: %w", err)
	}
	b.leases[end] = resp.ID
	return resp.ID, nil
}

func (b *leaseBuckets) forget(l clientv3.LeaseID) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for e, v := range b.leases {
		if v == l {
			delete(b.leases, e)
		}
	}
}

// --- duplicate registrations ---

// DuplicateSlot implements Store. Slots are keys under the fingerprint, one
// per registration, each on a lease of the window: the count of live keys is
// the number of recent identical registrations.
func (s *Etcd) DuplicateSlot(ctx context.Context, fingerprint string, limit int) (string, time.Duration, error) {
	p := s.prefix.Sub(collDuplicates, fingerprint)
	resp, err := s.cli.Get(ctx, p.String(), clientv3.WithPrefix(), clientv3.WithLimit(int64(limit)+1))
	if err != nil {
		return "", 0, fmt.Errorf("store: duplicate slots: %w", err)
	}
	if len(resp.Kvs) < limit {
		return p.Key(secret.RandomID(12)), 0, nil
	}
	// Full: the first slot to free decides when to come back.
	wait := time.Duration(0)
	for _, kv := range resp.Kvs {
		ttl, err := s.cli.TimeToLive(ctx, clientv3.LeaseID(kv.Lease))
		if err != nil || ttl.TTL <= 0 {
			continue
		}
		if d := time.Duration(ttl.TTL) * time.Second; wait == 0 || d < wait {
			wait = d
		}
	}
	return "", max(wait, time.Second), fmt.Errorf("store: %d registrations: %w", len(resp.Kvs), ErrDuplicateLimit)
}

// --- pending revocations ---

// RevocationPrefix implements Store.
func (s *Etcd) RevocationPrefix() etcdstore.Prefix { return s.prefix.Sub(collRevocations) }

// RevocationOp implements Store.
func (s *Etcd) RevocationOp(clientID, reason string, now time.Time) (etcdstore.Op, error) {
	id, err := s.ids.NewID()
	if err != nil {
		return etcdstore.Op{}, err
	}
	v, err := encode(&Revocation{ClientID: clientID, Reason: reason, Time: now})
	if err != nil {
		return etcdstore.Op{}, err
	}
	return etcdstore.PutOp(s.RevocationPrefix().Key(id), v), nil
}

// ListRevocations implements Store.
func (s *Etcd) ListRevocations(ctx context.Context, limit int) ([]*Revocation, error) {
	kvs, _, err := s.es.List(ctx, s.RevocationPrefix(), limit, "")
	if err != nil {
		return nil, err
	}
	out := make([]*Revocation, 0, len(kvs))
	for _, kv := range kvs {
		var r Revocation
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			return nil, fmt.Errorf("store: decode revocation %q: %w", kv.Key, err)
		}
		r.Key = string(kv.Key)
		out = append(out, &r)
	}
	return out, nil
}

// DeleteRevocation implements Store.
func (s *Etcd) DeleteRevocation(ctx context.Context, key string) error {
	if !s.RevocationPrefix().Contains(key) {
		return fmt.Errorf("store: %q is not a revocation", key)
	}
	if _, err := s.es.Delete(ctx, key, 0); err != nil && !errors.Is(err, etcdstore.ErrNotFound) {
		return err
	}
	return nil
}
