// Package store keeps the audit service's state in etcd, under
// /mcpid/audit/ only:
//
//	head                     the chain head (sequence, hash, bytes ever appended); moved
//	                         by compare-and-swap, once per appended batch
//	tail                     the retention watermark: oldest retained sequence and the
//	                         hash of the event before it (in the sink)
//	append-lock              held (with a lease) while one append spans several batches
//	chain/batches/<seq>      one key per appended batch, named by its first sequence
//	chain/ledger/<seq>       ids of archived events (lease: the deduplication window)
//	checkpoints/<seq>        signed checkpoints
//	meta/<name>              small records of the elected worker (key use, cursors)
//	agents/<hex client_id>   the agent inventory projection
//	election/                the elected worker's campaign
//
// Sequences in keys are 20 decimal digits, so key order is sequence order.
package store

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mcpid/mcpid/lib/etcdstore"
)

// Root is the audit service's prefix.
var Root = etcdstore.MustPrefix("audit")

// Collections and keys.
var (
	HeadKey     = Root.Key("head")
	TailKey     = Root.Key("tail")
	LockKey     = Root.Key("append-lock")
	Chain       = Root.Sub("chain") // batches and ledger: what the index follows
	Batches     = Chain.Sub("batches")
	Ledger      = Chain.Sub("ledger")
	Checkpoints = Root.Sub("checkpoints")
	Meta        = Root.Sub("meta")
	Agents      = Root.Sub("agents")
	Election    = Root.Sub("election")
)

// Conditions callers tell apart with errors.Is.
var (
	// ErrHeadMoved: another append (or a concurrent multi-batch append's
	// lock) got there first; read the state again and retry.
	ErrHeadMoved = errors.New("store: chain head moved")
	// ErrConflict: a record changed under a compare-and-swap.
	ErrConflict = errors.New("store: concurrent modification")
	// ErrNotFound: no such record.
	ErrNotFound = errors.New("store: not found")
	// ErrExists: the record already exists.
	ErrExists = errors.New("store: already exists")
)

// SeqKey returns the key of sequence seq in collection p.
func SeqKey(p etcdstore.Prefix, seq uint64) string {
	return p.Key(fmt.Sprintf("%020d", seq))
}

// KeySeq parses the sequence a key of collection p names.
func KeySeq(p etcdstore.Prefix, key string) (uint64, error) {
	if !p.Contains(key) || len(key) != len(p)+20 {
		return 0, fmt.Errorf("%w: key %q", ErrCorrupt, key)
	}
	return strconv.ParseUint(key[len(p):], 10, 64)
}

// AgentKey returns the inventory key of a client. The client_id is hex
// encoded: that keeps key order equal to client_id order (escaping would
// not), which ListAgents promises.
func AgentKey(clientID string) string {
	return string(Agents) + hex.EncodeToString([]byte(clientID))
}

// AgentID is the inverse of AgentKey.
func AgentID(key string) (string, error) {
	b, err := hex.DecodeString(key[len(Agents):])
	if err != nil {
		return "", fmt.Errorf("%w: agent key %q", ErrCorrupt, key)
	}
	return string(b), nil
}

// Head is the chain head.
type Head struct {
	// Sequence of the last chained event; 0 for an empty chain.
	Sequence uint64 `json:"sequence"`
	// Hash and EventID of that event.
	Hash    []byte `json:"hash,omitempty"`
	EventID string `json:"event_id,omitempty"`
	// AppendTime of that event: appends never go back in time.
	AppendTime time.Time `json:"append_time"`
	// Bytes is the total size of every batch value ever appended; minus
	// Tail.ArchivedBytes it approximates the retained window's size.
	Bytes int64 `json:"bytes"`
}

// Tail is the retention watermark: what left etcd for the sink.
type Tail struct {
	// Oldest is the oldest sequence still in etcd (1 until something was
	// archived; Head.Sequence+1 when everything was).
	Oldest uint64 `json:"oldest"`
	// PrevHash is the hash of event Oldest-1 (in the sink); empty for 1.
	PrevHash []byte `json:"prev_hash,omitempty"`
	// ArchivedBytes is the total size of archived batch values.
	ArchivedBytes int64 `json:"archived_bytes"`
	// ArchivedTime is the append time of the last archived event.
	ArchivedTime time.Time `json:"archived_time"`
}

// State is head and tail read together.
type State struct {
	Head Head
	// HeadRev is the head key's ModRevision (0: no head yet), the
	// compare-and-swap guard of the next append.
	HeadRev int64
	Tail    Tail
	// TailRev is the tail key's ModRevision (0: nothing archived yet).
	TailRev int64
	// Revision is the store revision the state was read at.
	Revision int64
}

// Window returns the retained window's approximate size in bytes.
func (s State) Window() int64 { return s.Head.Bytes - s.Tail.ArchivedBytes }

// Chunk is one batch key of an append with the head after it.
type Chunk struct {
	First uint64
	Value []byte
	Head  Head
}

// StoredBatch is one batch key as read.
type StoredBatch struct {
	Key         string
	First       uint64 // from the key
	ModRevision int64
	Raw         []byte
	// Batch is the decoded value, nil when Err is set.
	Batch *Batch
	// Err is set when the value cannot be decoded (ErrCorrupt) or does not
	// match its key.
	Err error
}

// CheckpointRecord is one stored checkpoint.
type CheckpointRecord struct {
	Sequence    uint64    `json:"sequence"`
	HeadHash    []byte    `json:"head_hash"`
	HeadEventID string    `json:"head_event_id"`
	SignTime    time.Time `json:"sign_time"`
	Issuer      string    `json:"issuer"`
	KeyID       string    `json:"key_id"`
	Algorithm   string    `json:"algorithm"`
	JWS         string    `json:"jws"`
}

// ArchiveOp removes archived batches from etcd in one transaction.
type ArchiveOp struct {
	// TailRev guards the tail (0: no tail yet).
	TailRev int64
	// Tail is the new tail.
	Tail Tail
	// Batches are the archived batch keys with the ModRevision the sink
	// copy was taken at: a batch changed since (erasure) fails the
	// transaction, so the sink never holds cleartext etcd no longer has.
	Batches []StoredBatch
	// Ledger, when set, is written at SeqKey(Ledger, first archived
	// sequence) with a lease of LedgerTTL, before the batches are deleted
	// (so the index never loses sight of an id).
	Ledger    []byte
	LedgerTTL time.Duration
	// Checkpoints are checkpoint sequences to delete (archived with their
	// events).
	Checkpoints []uint64
}

// Store is the audit service's etcd state. Methods return errors wrapping
// the sentinels above, or etcd's errors (unavailable, deadline).
type Store interface {
	// State reads head and tail in one linearizable read.
	State(ctx context.Context) (State, error)
	// Append writes chunks, in order, as the next batches of the chain,
	// moving the head to each chunk's Head. The first chunk commits only
	// if the head's ModRevision is still headRev and no multi-batch append
	// holds the append lock; otherwise ErrHeadMoved and nothing is
	// written. Several chunks are written under the append lock (a lease
	// of lockTTL), so no other append interleaves; if the lock is lost
	// midway the error wraps ErrHeadMoved and the chunks before it stay
	// chained. It returns the revision of the last write.
	Append(ctx context.Context, headRev int64, chunks []Chunk, lockTTL time.Duration) (int64, error)
	// BatchesFrom returns up to limit batches in sequence order: ascending,
	// starting with the batch that holds seq (or the first after it);
	// descending, starting with the batch that holds seq (or the last
	// before it). Undecodable batches are returned with Err set.
	BatchesFrom(ctx context.Context, seq uint64, limit int, desc bool) ([]StoredBatch, error)
	// LastBatch returns the batch with the highest sequence, or nil.
	LastBatch(ctx context.Context) (*StoredBatch, error)
	// ReplaceBatch overwrites a batch only if its ModRevision is still
	// modRev (ErrConflict otherwise).
	ReplaceBatch(ctx context.Context, key string, modRev int64, value []byte) error
	// Archive applies op atomically: ErrConflict when the tail or one of
	// the batches changed, nothing deleted then.
	Archive(ctx context.Context, op ArchiveOp) error

	// CreateCheckpoint stores a checkpoint; ErrExists if one is stored at
	// its sequence.
	CreateCheckpoint(ctx context.Context, cp CheckpointRecord) error
	// Checkpoint returns the checkpoint at seq, or ErrNotFound.
	Checkpoint(ctx context.Context, seq uint64) (CheckpointRecord, error)
	// LatestCheckpoint returns the checkpoint with the highest sequence, or
	// ErrNotFound.
	LatestCheckpoint(ctx context.Context) (CheckpointRecord, error)
	// Checkpoints returns up to limit checkpoints with from <= sequence <=
	// through (through 0: no upper bound), ascending or descending.
	// Undecodable records are returned with only Sequence set and JWS empty.
	Checkpoints(ctx context.Context, from, through uint64, limit int, desc bool) ([]CheckpointRecord, error)

	// Meta reads a small record (ErrNotFound when absent) with its
	// ModRevision; PutMeta writes it if the ModRevision is still rev (0:
	// absent), ErrConflict otherwise.
	Meta(ctx context.Context, name string) ([]byte, int64, error)
	PutMeta(ctx context.Context, name string, value []byte, rev int64) error

	// Agent reads one inventory record with its ModRevision (ErrNotFound
	// when absent); PutAgent writes it if the ModRevision is still rev (0:
	// absent), ErrConflict otherwise.
	Agent(ctx context.Context, clientID string) ([]byte, int64, error)
	PutAgent(ctx context.Context, clientID string, value []byte, rev int64) error
	// Agents returns up to limit inventory records after the client_id
	// after ("" from the start), in client_id order.
	Agents(ctx context.Context, after string, limit int) ([]AgentKV, error)
}

// AgentKV is one stored inventory record.
type AgentKV struct {
	ClientID string
	Value    []byte
}

// Etcd is the Store on an etcd client.
type Etcd struct {
	c *clientv3.Client
}

var _ Store = (*Etcd)(nil)

// New returns the Store on c.
func New(c *clientv3.Client) *Etcd { return &Etcd{c: c} }

// Client returns the etcd client (elections, watches).
func (s *Etcd) Client() *clientv3.Client { return s.c }

// State implements Store.
func (s *Etcd) State(ctx context.Context) (State, error) {
	resp, err := s.c.Txn(ctx).Then(clientv3.OpGet(HeadKey), clientv3.OpGet(TailKey)).Commit()
	if err != nil {
		return State{}, fmt.Errorf("store: read chain state: %w", err)
	}
	st := State{Revision: resp.Header.Revision, Tail: Tail{Oldest: 1}}
	if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) > 0 {
		if err := json.Unmarshal(kvs[0].Value, &st.Head); err != nil {
			return State{}, fmt.Errorf("%w: head: %w", ErrCorrupt, err)
		}
		st.HeadRev = kvs[0].ModRevision
	}
	if kvs := resp.Responses[1].GetResponseRange().GetKvs(); len(kvs) > 0 {
		if err := json.Unmarshal(kvs[0].Value, &st.Tail); err != nil {
			return State{}, fmt.Errorf("%w: tail: %w", ErrCorrupt, err)
		}
		st.TailRev = kvs[0].ModRevision
	}
	return st, nil
}

// Append implements Store.
func (s *Etcd) Append(ctx context.Context, headRev int64, chunks []Chunk, lockTTL time.Duration) (int64, error) {
	if len(chunks) == 0 {
		return 0, errors.New("store: append of nothing")
	}
	headGuard := clientv3.Compare(clientv3.ModRevision(HeadKey), "=", headRev)
	if len(chunks) == 1 {
		c := chunks[0]
		hv, err := json.Marshal(c.Head)
		if err != nil {
			return 0, err
		}
		resp, err := s.c.Txn(ctx).
			If(headGuard, clientv3.Compare(clientv3.CreateRevision(LockKey), "=", 0)).
			Then(clientv3.OpPut(HeadKey, string(hv)), clientv3.OpPut(SeqKey(Batches, c.First), string(c.Value))).
			Commit()
		if err != nil {
			return 0, fmt.Errorf("store: append batch %d: %w", c.First, err)
		}
		if !resp.Succeeded {
			return 0, ErrHeadMoved
		}
		return resp.Header.Revision, nil
	}
	return s.appendLocked(ctx, headRev, chunks, lockTTL)
}

// appendLocked writes several chunks under the append lock: every normal
// append compares the lock absent, so none interleaves; a crash leaves the
// lock to its lease and the chunks written so far correctly chained.
func (s *Etcd) appendLocked(ctx context.Context, headRev int64, chunks []Chunk, lockTTL time.Duration) (int64, error) {
	secs := max(int64((lockTTL+time.Second-1)/time.Second), 2)
	lease, err := s.c.Grant(ctx, secs)
	if err != nil {
		return 0, fmt.Errorf("store: append lock lease: %w", err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_, _ = s.c.Revoke(rctx, lease.ID)
		cancel()
	}()
	token := strconv.FormatInt(int64(lease.ID), 16)
	rev := headRev
	for i, c := range chunks {
		hv, err := json.Marshal(c.Head)
		if err != nil {
			return 0, err
		}
		var cmps []clientv3.Cmp
		ops := []clientv3.Op{clientv3.OpPut(HeadKey, string(hv)), clientv3.OpPut(SeqKey(Batches, c.First), string(c.Value))}
		if i == 0 {
			cmps = []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(HeadKey), "=", rev), clientv3.Compare(clientv3.CreateRevision(LockKey), "=", 0)}
			ops = append(ops, clientv3.OpPut(LockKey, token, clientv3.WithLease(lease.ID)))
		} else {
			cmps = []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(HeadKey), "=", rev), clientv3.Compare(clientv3.Value(LockKey), "=", token)}
		}
		if i == len(chunks)-1 {
			ops = append(ops, clientv3.OpDelete(LockKey))
		}
		resp, err := s.c.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return 0, fmt.Errorf("store: append batch %d of %d: %w", i+1, len(chunks), err)
		}
		if !resp.Succeeded {
			if i == 0 {
				return 0, ErrHeadMoved
			}
			return 0, fmt.Errorf("store: append lock lost after %d of %d batches: %w", i, len(chunks), ErrHeadMoved)
		}
		rev = resp.Header.Revision
	}
	return rev, nil
}

func (s *Etcd) decodeBatch(kv *mvccpb.KeyValue) StoredBatch {
	sb := StoredBatch{Key: string(kv.Key), ModRevision: kv.ModRevision, Raw: kv.Value}
	first, err := KeySeq(Batches, sb.Key)
	if err != nil {
		sb.Err = err
		return sb
	}
	sb.First = first
	b, err := DecodeBatch(kv.Value)
	switch {
	case err != nil:
		sb.Err = err
	case b.First != first || len(b.Entries) == 0:
		sb.Err = fmt.Errorf("%w: batch %q holds sequence %d with %d events", ErrCorrupt, sb.Key, b.First, len(b.Entries))
	default:
		sb.Batch = b
	}
	return sb
}

// BatchesFrom implements Store.
func (s *Etcd) BatchesFrom(ctx context.Context, seq uint64, limit int, desc bool) ([]StoredBatch, error) {
	limit = max(limit, 1)
	start, end := string(Batches), clientv3.GetPrefixRangeEnd(string(Batches))
	at := SeqKey(Batches, seq)
	var resp *clientv3.TxnResponse
	var err error
	if desc {
		resp, err = s.c.Txn(ctx).Then(clientv3.OpGet(start, clientv3.WithRange(at+"\x00"),
			clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(int64(limit)))).Commit()
	} else {
		// The batch holding seq starts at or before it: the last key <= at,
		// then everything after it.
		resp, err = s.c.Txn(ctx).Then(
			clientv3.OpGet(start, clientv3.WithRange(at+"\x00"), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(1)),
			clientv3.OpGet(at+"\x00", clientv3.WithRange(end), clientv3.WithLimit(int64(limit))),
		).Commit()
	}
	if err != nil {
		return nil, fmt.Errorf("store: read batches from %d: %w", seq, err)
	}
	var out []StoredBatch
	for _, r := range resp.Responses {
		for _, kv := range r.GetResponseRange().GetKvs() {
			out = append(out, s.decodeBatch(kv))
		}
	}
	if !desc && len(out) > 0 && out[0].Batch != nil && out[0].Batch.Last() < seq {
		out = out[1:] // the batch before seq does not hold it
	}
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// LastBatch implements Store.
func (s *Etcd) LastBatch(ctx context.Context) (*StoredBatch, error) {
	resp, err := s.c.Get(ctx, string(Batches), clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(1))
	if err != nil {
		return nil, fmt.Errorf("store: read last batch: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	b := s.decodeBatch(resp.Kvs[0])
	return &b, nil
}

// ReplaceBatch implements Store.
func (s *Etcd) ReplaceBatch(ctx context.Context, key string, modRev int64, value []byte) error {
	resp, err := s.c.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", modRev)).
		Then(clientv3.OpPut(key, string(value))).Commit()
	if err != nil {
		return fmt.Errorf("store: replace %q: %w", key, err)
	}
	if !resp.Succeeded {
		return ErrConflict
	}
	return nil
}

// Archive implements Store.
func (s *Etcd) Archive(ctx context.Context, op ArchiveOp) error {
	tv, err := json.Marshal(op.Tail)
	if err != nil {
		return err
	}
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(TailKey), "=", op.TailRev)}
	var ops []clientv3.Op
	if len(op.Ledger) > 0 && len(op.Batches) > 0 {
		secs := int64((op.LedgerTTL + time.Second - 1) / time.Second)
		lease, err := s.c.Grant(ctx, max(secs, 2))
		if err != nil {
			return fmt.Errorf("store: ledger lease: %w", err)
		}
		ops = append(ops, clientv3.OpPut(SeqKey(Ledger, op.Batches[0].First), string(op.Ledger), clientv3.WithLease(lease.ID)))
	}
	for _, b := range op.Batches {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(b.Key), "=", b.ModRevision))
		ops = append(ops, clientv3.OpDelete(b.Key))
	}
	for _, seq := range op.Checkpoints {
		ops = append(ops, clientv3.OpDelete(SeqKey(Checkpoints, seq)))
	}
	ops = append(ops, clientv3.OpPut(TailKey, string(tv)))
	resp, err := s.c.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("store: archive: %w", err)
	}
	if !resp.Succeeded {
		return ErrConflict
	}
	return nil
}

// CreateCheckpoint implements Store.
func (s *Etcd) CreateCheckpoint(ctx context.Context, cp CheckpointRecord) error {
	v, err := json.Marshal(cp)
	if err != nil {
		return err
	}
	key := SeqKey(Checkpoints, cp.Sequence)
	resp, err := s.c.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(v))).Commit()
	if err != nil {
		return fmt.Errorf("store: create checkpoint %d: %w", cp.Sequence, err)
	}
	if !resp.Succeeded {
		return ErrExists
	}
	return nil
}

func decodeCheckpoint(kv *mvccpb.KeyValue) CheckpointRecord {
	var cp CheckpointRecord
	if err := json.Unmarshal(kv.Value, &cp); err != nil {
		seq, _ := KeySeq(Checkpoints, string(kv.Key))
		return CheckpointRecord{Sequence: seq}
	}
	return cp
}

// Checkpoint implements Store.
func (s *Etcd) Checkpoint(ctx context.Context, seq uint64) (CheckpointRecord, error) {
	resp, err := s.c.Get(ctx, SeqKey(Checkpoints, seq))
	if err != nil {
		return CheckpointRecord{}, fmt.Errorf("store: read checkpoint %d: %w", seq, err)
	}
	if len(resp.Kvs) == 0 {
		return CheckpointRecord{}, ErrNotFound
	}
	return decodeCheckpoint(resp.Kvs[0]), nil
}

// LatestCheckpoint implements Store.
func (s *Etcd) LatestCheckpoint(ctx context.Context) (CheckpointRecord, error) {
	cps, err := s.Checkpoints(ctx, 0, 0, 1, true)
	if err != nil {
		return CheckpointRecord{}, err
	}
	if len(cps) == 0 {
		return CheckpointRecord{}, ErrNotFound
	}
	return cps[0], nil
}

// Checkpoints implements Store.
func (s *Etcd) Checkpoints(ctx context.Context, from, through uint64, limit int, desc bool) ([]CheckpointRecord, error) {
	start := SeqKey(Checkpoints, from)
	end := clientv3.GetPrefixRangeEnd(string(Checkpoints))
	if through > 0 {
		end = SeqKey(Checkpoints, through) + "\x00"
	}
	opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(int64(max(limit, 1)))}
	if desc {
		opts = append(opts, clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend))
	}
	resp, err := s.c.Get(ctx, start, opts...)
	if err != nil {
		return nil, fmt.Errorf("store: list checkpoints: %w", err)
	}
	out := make([]CheckpointRecord, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out = append(out, decodeCheckpoint(kv))
	}
	return out, nil
}

func (s *Etcd) getRev(ctx context.Context, key string) ([]byte, int64, error) {
	resp, err := s.c.Get(ctx, key)
	if err != nil {
		return nil, 0, fmt.Errorf("store: read %q: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, ErrNotFound
	}
	return resp.Kvs[0].Value, resp.Kvs[0].ModRevision, nil
}

func (s *Etcd) putRev(ctx context.Context, key string, value []byte, rev int64) error {
	resp, err := s.c.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
		Then(clientv3.OpPut(key, string(value))).Commit()
	if err != nil {
		return fmt.Errorf("store: write %q: %w", key, err)
	}
	if !resp.Succeeded {
		return ErrConflict
	}
	return nil
}

// Meta implements Store.
func (s *Etcd) Meta(ctx context.Context, name string) ([]byte, int64, error) {
	return s.getRev(ctx, Meta.Key(name))
}

// PutMeta implements Store.
func (s *Etcd) PutMeta(ctx context.Context, name string, value []byte, rev int64) error {
	return s.putRev(ctx, Meta.Key(name), value, rev)
}

// Agent implements Store.
func (s *Etcd) Agent(ctx context.Context, clientID string) ([]byte, int64, error) {
	return s.getRev(ctx, AgentKey(clientID))
}

// PutAgent implements Store.
func (s *Etcd) PutAgent(ctx context.Context, clientID string, value []byte, rev int64) error {
	return s.putRev(ctx, AgentKey(clientID), value, rev)
}

// Agents implements Store.
func (s *Etcd) Agents(ctx context.Context, after string, limit int) ([]AgentKV, error) {
	start := string(Agents)
	if after != "" {
		start = AgentKey(after) + "\x00"
	}
	resp, err := s.c.Get(ctx, start, clientv3.WithRange(clientv3.GetPrefixRangeEnd(string(Agents))), clientv3.WithLimit(int64(max(limit, 1))))
	if err != nil {
		return nil, fmt.Errorf("store: list agents: %w", err)
	}
	out := make([]AgentKV, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		id, err := AgentID(string(kv.Key))
		if err != nil {
			continue // not ours to show; never written by audit
		}
		out = append(out, AgentKV{ClientID: id, Value: kv.Value})
	}
	return out, nil
}
