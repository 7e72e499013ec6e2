// Package ingest chains events: AppendEvents' validation, deduplication by
// event id, hashing and the compare-and-swap on the chain head that keeps
// one chain across all audit replicas.
package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/lib/auditemit"
	"github.com/mcpid/mcpid/services/audit/internal/chain"
	"github.com/mcpid/mcpid/services/audit/internal/errs"
	"github.com/mcpid/mcpid/services/audit/internal/index"
	"github.com/mcpid/mcpid/services/audit/internal/store"
)

// Defaults of Config.
const (
	// DefaultChunkBytes bounds one batch value, well inside etcd's default
	// request limit (1.5 MiB) with the head and the transaction around it.
	DefaultChunkBytes = 1 << 20
	// DefaultMaxAttempts bounds the compare-and-swap retries of one call.
	DefaultMaxAttempts = 64
	// DefaultLockTTL is the lease of the append lock of a multi-batch call.
	DefaultLockTTL = 30 * time.Second
)

// Config configures an Appender.
type Config struct {
	Store store.Store
	Index *index.Index
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// MaxWindowBytes: appends are refused with RETENTION_BACKLOG_FULL while
	// the retained window is at least this large (0: never).
	MaxWindowBytes int64
	// ChunkBytes, MaxAttempts, LockTTL: zero means the defaults.
	ChunkBytes  int
	MaxAttempts int
	LockTTL     time.Duration
	// MeterProvider provides metrics; nil means none.
	MeterProvider metric.MeterProvider
}

// Appender chains events. It is safe for concurrent use; calls on one
// replica take turns (they would only contend for the head otherwise).
type Appender struct {
	cfg Config
	mu  sync.Mutex

	events metric.Int64Counter
	status map[auditv1.AppendEventStatus]metric.AddOption
}

// New returns an Appender.
func New(cfg Config) (*Appender, error) {
	if cfg.Store == nil || cfg.Index == nil {
		return nil, errors.New("ingest: Store and Index are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ChunkBytes <= 0 {
		cfg.ChunkBytes = DefaultChunkBytes
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.LockTTL <= 0 {
		cfg.LockTTL = DefaultLockTTL
	}
	mp := cfg.MeterProvider
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	a := &Appender{cfg: cfg, status: map[auditv1.AppendEventStatus]metric.AddOption{}}
	var err error
	if a.events, err = mp.Meter("github.com/mcpid/mcpid/services/audit/internal/ingest").Int64Counter("mcpid.audit.events",
		metric.WithUnit("{event}"), metric.WithDescription("Events received by AppendEvents, by outcome.")); err != nil {
		return nil, fmt.Errorf("ingest: metric: %w", err)
	}
	for _, s := range []auditv1.AppendEventStatus{auditv1.AppendEventStatus_APPEND_EVENT_STATUS_APPENDED,
		auditv1.AppendEventStatus_APPEND_EVENT_STATUS_DUPLICATE, auditv1.AppendEventStatus_APPEND_EVENT_STATUS_REJECTED} {
		a.status[s] = metric.WithAttributeSet(attribute.NewSet(attribute.String("status", s.String())))
	}
	return a, nil
}

// pending is an accepted event on its way into the chain.
type pending struct {
	i      int // request index
	ev     *auditv1.Event
	digest []byte
}

// Append chains events sent by the service callerName, as AppendEvents
// specifies, and returns one result per event in request order. Errors are
// caller-visible (apierr) or etcd failures for errs.Store.
func (a *Appender) Append(ctx context.Context, callerName string, events []*auditv1.Event) ([]*auditv1.AppendEventResult, error) {
	caller, err := auditemit.SourceServiceOf(callerName)
	if err != nil {
		return nil, errs.New(codes.PermissionDenied, auditv1.ErrorReason_ERROR_REASON_CALLER_NOT_ALLOWED, "only mcpid services append events")
	}
	if len(events) == 0 {
		return nil, errs.Field("events", "at least one event is required")
	}
	size := 0
	for _, ev := range events {
		size += proto.Size(ev) + 5
	}
	if len(events) > auditemit.MaxBatchEvents || size > auditemit.MaxBatchBytes {
		return nil, errs.New(codes.InvalidArgument, auditv1.ErrorReason_ERROR_REASON_BATCH_TOO_LARGE,
			"at most %d events and %d bytes per call; split the batch", auditemit.MaxBatchEvents, auditemit.MaxBatchBytes)
	}

	now := a.cfg.Now()
	results := make([]*auditv1.AppendEventResult, len(events))
	var todo []pending
	firstOf := map[string]int{} // id → index in todo of its first occurrence
	var repeats []pending       // later occurrences of an id in this request
	for i, ev := range events {
		results[i] = &auditv1.AppendEventResult{EventId: ev.GetId()}
		if rej := validate(ev, callerName, caller, now); rej != nil {
			reject(results[i], rej.reason, rej.message)
			continue
		}
		normalize(ev, caller)
		p := pending{i: i, ev: ev, digest: chain.ContentDigest(ev)}
		if _, dup := firstOf[ev.GetId()]; dup {
			repeats = append(repeats, p)
			continue
		}
		firstOf[ev.GetId()] = len(todo)
		chain.Protect(ev)
		todo = append(todo, p)
	}

	if len(todo) > 0 {
		if err := a.chain(ctx, todo, results); err != nil {
			return nil, err
		}
	}
	for _, p := range repeats {
		first := todo[firstOf[p.ev.GetId()]]
		r, fr := results[p.i], results[first.i]
		switch {
		case !bytes.Equal(p.digest, first.digest):
			reject(r, auditv1.ErrorReason_ERROR_REASON_EVENT_ID_CONFLICT, "id: sent twice in this call with different content")
		case fr.GetStatus() == auditv1.AppendEventStatus_APPEND_EVENT_STATUS_REJECTED:
			reject(r, fr.GetReason(), fr.GetMessage())
		default:
			r.Status, r.Sequence, r.Hash = auditv1.AppendEventStatus_APPEND_EVENT_STATUS_DUPLICATE, fr.GetSequence(), fr.GetHash()
		}
	}
	for _, r := range results {
		a.events.Add(ctx, 1, a.status[r.GetStatus()])
	}
	return results, nil
}

func reject(r *auditv1.AppendEventResult, reason auditv1.ErrorReason, msg string) {
	r.Status, r.Reason, r.Message = auditv1.AppendEventStatus_APPEND_EVENT_STATUS_REJECTED, reason, msg
}

// chain settles todo against the chain (DUPLICATE / EVENT_ID_CONFLICT from
// the index) and appends the rest, retrying when another replica moved the
// head first.
func (a *Appender) chain(ctx context.Context, todo []pending, results []*auditv1.AppendEventResult) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for attempt := 1; ; attempt++ {
		st, err := a.cfg.Store.State(ctx)
		if err != nil {
			return errs.Store(err)
		}
		// Every batch up to the head we are about to extend must be in the
		// index, or a retry of an event it holds would be chained twice.
		if err := a.cfg.Index.WaitIndexed(ctx, st.HeadRev); err != nil {
			return errs.Store(err)
		}
		var fresh []pending
		for _, p := range todo {
			r := results[p.i]
			hit, ok := a.cfg.Index.Lookup(p.ev.GetId())
			switch {
			case !ok:
				fresh = append(fresh, p)
			case bytes.Equal(hit.Digest, p.digest):
				r.Status, r.Sequence, r.Hash = auditv1.AppendEventStatus_APPEND_EVENT_STATUS_DUPLICATE, hit.Sequence, hit.Hash
			default:
				reject(r, auditv1.ErrorReason_ERROR_REASON_EVENT_ID_CONFLICT, "id: already chained with different content")
			}
		}
		if len(fresh) == 0 {
			return nil
		}
		if a.cfg.MaxWindowBytes > 0 && st.Window() >= a.cfg.MaxWindowBytes {
			return errs.New(codes.ResourceExhausted, auditv1.ErrorReason_ERROR_REASON_RETENTION_BACKLOG_FULL,
				"the retained window is full and older events cannot be moved to the sink yet; retry later")
		}
		chunks, err := a.link(st.Head, fresh)
		if err != nil {
			return err
		}
		_, err = a.cfg.Store.Append(ctx, st.HeadRev, chunks, a.cfg.LockTTL)
		if err == nil {
			for _, p := range fresh {
				r := results[p.i]
				r.Status, r.Sequence, r.Hash = auditv1.AppendEventStatus_APPEND_EVENT_STATUS_APPENDED, p.ev.GetSequence(), p.ev.GetHash()
			}
			return nil
		}
		if !errors.Is(err, store.ErrHeadMoved) {
			return errs.Store(err)
		}
		if attempt >= a.cfg.MaxAttempts {
			return errs.New(codes.Aborted, auditv1.ErrorReason_ERROR_REASON_CHAIN_HEAD_CONTENDED,
				"the chain head kept moving under concurrent appends; retry the same call").WithCause(err)
		}
		if attempt > 1 {
			if err := sleep(ctx, attempt); err != nil {
				return err
			}
		}
	}
}

// link gives fresh its places after head (sequence, append time, prev
// hash, hash) and packs it into batch values of at most ChunkBytes.
func (a *Appender) link(head store.Head, fresh []pending) ([]store.Chunk, error) {
	at := a.cfg.Now().UTC()
	if at.Before(head.AppendTime) {
		at = head.AppendTime // append_time never goes back, whatever the clocks
	}
	ts := timestamppb.New(at)
	seq, prev := head.Sequence, head.Hash
	for _, p := range fresh {
		seq++
		ev := p.ev
		ev.Sequence, ev.AppendTime, ev.HashVersion, ev.PrevHash = seq, ts, chain.HashVersion, prev
		h, err := chain.Hash(ev)
		if err != nil {
			return nil, fmt.Errorf("ingest: hash event %q: %w", ev.GetId(), err)
		}
		ev.Hash, prev = h, h
	}

	var chunks []store.Chunk
	bytesTotal := head.Bytes
	var cur store.Batch
	curSize := 0
	flush := func() error {
		if len(cur.Entries) == 0 {
			return nil
		}
		v, err := store.EncodeBatch(&cur)
		if err != nil {
			return err
		}
		last := cur.Entries[len(cur.Entries)-1].Event
		bytesTotal += int64(len(v))
		chunks = append(chunks, store.Chunk{First: cur.First, Value: v, Head: store.Head{
			Sequence: last.GetSequence(), Hash: last.GetHash(), EventID: last.GetId(), AppendTime: at, Bytes: bytesTotal,
		}})
		cur, curSize = store.Batch{}, 0
		return nil
	}
	for _, p := range fresh {
		n := proto.Size(p.ev) + len(p.digest) + 16
		if len(cur.Entries) > 0 && curSize+n > a.cfg.ChunkBytes {
			if err := flush(); err != nil {
				return nil, err
			}
		}
		if len(cur.Entries) == 0 {
			cur.First = p.ev.GetSequence()
		}
		cur.Entries = append(cur.Entries, store.Entry{Event: p.ev, Digest: p.digest})
		curSize += n
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return chunks, nil
}

// sleep waits a full-jitter exponential backoff (2 ms doubling to 200 ms).
func sleep(ctx context.Context, attempt int) error {
	d := 200 * time.Millisecond
	if shift := attempt - 2; shift < 8 && 2*time.Millisecond<<shift < d {
		d = 2 * time.Millisecond << shift
	}
	t := time.NewTimer(rand.N(d) + time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
