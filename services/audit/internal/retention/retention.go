// Package retention keeps etcd's recent window of the chain within its age
// and size bounds: the oldest batches are written to the JSON-lines sink
// (one mcpid.audit.v1.ArchiveRecord per line, checkpoints after the event
// they sign) and only then removed from etcd, together with the advance of
// the tail watermark that keeps the oldest retained event verifiable.
package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/services/audit/internal/checkpoint"
	"github.com/mcpid/mcpid/services/audit/internal/index"
	"github.com/mcpid/mcpid/services/audit/internal/store"
)

// Limits of one archive transaction: etcd allows 128 operations per
// transaction and 1.5 MiB per request by default; the ledger of the ids
// (about 110 bytes per event) rides in the same transaction.
const (
	maxBatchesPerRun = 100
	maxEventsPerRun  = 8000
	maxRunsPerPass   = 64
	maxTxnOps        = 120
)

// Config configures an Archiver.
type Config struct {
	Store store.Store
	Index *index.Index
	// Dir is the sink folder. Required.
	Dir string
	// MaxAge and MaxBytes bound the window (0: no bound of that kind).
	MaxAge   time.Duration
	MaxBytes int64
	// DedupWindow is how long archived ids stay known to deduplication.
	DedupWindow time.Duration
	// Processed returns the sequence the inventory projection has applied
	// through: nothing later is archived, so the inventory never misses an
	// event. Nil means no such limit.
	Processed func(ctx context.Context) (uint64, error)
	Now       func() time.Time
	Logger    *slog.Logger
}

// Archiver moves old batches to the sink. Run it on the elected replica.
type Archiver struct {
	cfg Config
}

// New returns an Archiver; the sink folder is created if missing.
func New(cfg Config) (*Archiver, error) {
	if cfg.Dir == "" {
		return nil, errors.New("retention: a sink folder is required")
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("setting archive-dir: %w", err)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Archiver{cfg: cfg}, nil
}

// Pass archives until the window is within its bounds (or a bounded number
// of runs), returning how many events left etcd.
func (a *Archiver) Pass(ctx context.Context) (int, error) {
	total := 0
	for range maxRunsPerPass {
		n, err := a.run(ctx)
		total += n
		if err != nil || n == 0 {
			return total, err
		}
	}
	return total, nil
}

// run archives one group of the oldest batches, if any are due.
func (a *Archiver) run(ctx context.Context) (int, error) {
	st, err := a.cfg.Store.State(ctx)
	if err != nil {
		return 0, err
	}
	if err := a.cfg.Index.WaitIndexed(ctx, st.HeadRev); err != nil {
		return 0, err
	}
	limit := st.Head.Sequence
	if a.cfg.Processed != nil {
		p, err := a.cfg.Processed(ctx)
		if err != nil {
			return 0, err
		}
		limit = min(limit, p)
	}
	now := a.cfg.Now()
	window := st.Window()
	var due []index.BatchInfo
	events := 0
	for _, b := range a.cfg.Index.Batches() {
		if b.First < st.Tail.Oldest {
			continue
		}
		old := a.cfg.MaxAge > 0 && now.Sub(b.AppendTime) > a.cfg.MaxAge
		big := a.cfg.MaxBytes > 0 && window > a.cfg.MaxBytes
		if (!old && !big) || b.Last > limit || len(due) >= maxBatchesPerRun ||
			(len(due) > 0 && events+int(b.Last-b.First+1) > maxEventsPerRun) {
			break
		}
		due = append(due, b)
		events += int(b.Last - b.First + 1)
		window -= int64(b.Bytes)
	}
	if len(due) == 0 {
		return 0, nil
	}
	stored, err := a.cfg.Store.BatchesFrom(ctx, st.Tail.Oldest, len(due), false)
	if err != nil {
		return 0, err
	}
	expected := st.Tail.Oldest
	var batches []store.StoredBatch
	for _, b := range stored {
		if b.Batch == nil || b.First != expected || len(batches) == len(due) {
			break // archive only what verifies as contiguous; VerifyChain reports the rest
		}
		batches = append(batches, b)
		expected = b.Batch.Last() + 1
	}
	if len(batches) == 0 {
		a.cfg.Logger.Error("retention: the oldest retained batch is missing or unreadable; not archiving (run VerifyChain)", "sequence", st.Tail.Oldest)
		return 0, nil
	}
	first, last := batches[0].First, batches[len(batches)-1].Batch.Last()
	cps, err := a.cfg.Store.Checkpoints(ctx, first, last, 10_000, false)
	if err != nil {
		return 0, err
	}
	if err := a.write(batches, cps); err != nil {
		return 0, err
	}

	lastEv := batches[len(batches)-1].Batch.Entries[len(batches[len(batches)-1].Batch.Entries)-1].Event
	op := store.ArchiveOp{
		TailRev: st.TailRev,
		Tail: store.Tail{
			Oldest: last + 1, PrevHash: lastEv.GetHash(), ArchivedBytes: st.Tail.ArchivedBytes,
			ArchivedTime: lastEv.GetAppendTime().AsTime(),
		},
		Batches: batches,
	}
	var ids []store.IDRecord
	for _, b := range batches {
		op.Tail.ArchivedBytes += int64(len(b.Raw))
		for _, e := range b.Batch.Entries {
			ids = append(ids, store.IDRecord{ID: e.Event.GetId(), Sequence: e.Event.GetSequence(), Hash: e.Event.GetHash(),
				Digest: e.Digest, AppendTime: e.Event.GetAppendTime().AsTime()})
		}
	}
	// Archived ids stay known to deduplication for the rest of the window
	// the contract promises, counted from the newest one's append.
	if ttl := a.cfg.DedupWindow - now.Sub(op.Tail.ArchivedTime); ttl > 0 {
		op.Ledger, op.LedgerTTL = store.EncodeLedger(ids), ttl+time.Hour
	}
	latest, err := a.cfg.Store.LatestCheckpoint(ctx)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return 0, err
	}
	for _, cp := range cps {
		// The latest stays: truncation is judged against it. Others beyond
		// the transaction's operation budget stay too (harmless: below the
		// window they are only listed).
		if cp.Sequence != latest.Sequence && len(op.Checkpoints)+len(op.Batches) < maxTxnOps {
			op.Checkpoints = append(op.Checkpoints, cp.Sequence)
		}
	}
	if err := a.cfg.Store.Archive(ctx, op); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return 0, nil // an erasure or another worker raced us: next pass
		}
		return 0, err
	}
	a.cfg.Logger.Info("retention: archived events to the sink", "from", first, "through", last)
	return int(last - first + 1), nil
}

var lineJSON = protojson.MarshalOptions{UseProtoNames: true}

// write writes the records of batches (and the checkpoints among them) to
// one file named by the sequence range, atomically (temporary file, fsync,
// rename): archiving the same range again after a crash rewrites the same
// file rather than duplicating lines.
func (a *Archiver) write(batches []store.StoredBatch, cps []store.CheckpointRecord) error {
	first, last := batches[0].First, batches[len(batches)-1].Batch.Last()
	bySeq := map[uint64][]store.CheckpointRecord{}
	for _, cp := range cps {
		bySeq[cp.Sequence] = append(bySeq[cp.Sequence], cp)
	}
	var buf []byte
	for _, b := range batches {
		for _, e := range b.Batch.Entries {
			line, err := lineJSON.Marshal(&auditv1.ArchiveRecord{Record: &auditv1.ArchiveRecord_Event{Event: e.Event}})
			if err != nil {
				return fmt.Errorf("retention: encode event %d: %w", e.Event.GetSequence(), err)
			}
			buf = append(append(buf, line...), '\n')
			for _, cp := range bySeq[e.Event.GetSequence()] {
				line, err := lineJSON.Marshal(&auditv1.ArchiveRecord{Record: &auditv1.ArchiveRecord_Checkpoint{Checkpoint: checkpoint.ToProto(cp)}})
				if err != nil {
					return fmt.Errorf("retention: encode checkpoint %d: %w", cp.Sequence, err)
				}
				buf = append(append(buf, line...), '\n')
			}
		}
	}
	name := filepath.Join(a.cfg.Dir, fmt.Sprintf("audit-%020d-%020d.jsonl", first, last))
	tmp := name + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("retention: sink: %w", err)
	}
	if _, err := f.Write(buf); err != nil {
		_ = f.Close()
		return fmt.Errorf("retention: sink: %w", err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return fmt.Errorf("retention: sink: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("retention: sink: %w", err)
	}
	if err := os.Rename(tmp, name); err != nil {
		return fmt.Errorf("retention: sink: %w", err)
	}
	d, err := os.Open(a.cfg.Dir)
	if err != nil {
		return fmt.Errorf("retention: sink: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("retention: sink: %w", err)
	}
	return nil
}
