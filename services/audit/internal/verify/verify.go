// Package verify implements VerifyChain: it walks a range of the retained
// chain recomputing every link, then checks the signed checkpoints that
// cover it, so that an edited, removed or cut-off event is reported at the
// place where it happened.
package verify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"

	"google.golang.org/grpc/codes"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/services/audit/internal/chain"
	"github.com/mcpid/mcpid/services/audit/internal/checkpoint"
	"github.com/mcpid/mcpid/services/audit/internal/errs"
	"github.com/mcpid/mcpid/services/audit/internal/index"
	"github.com/mcpid/mcpid/services/audit/internal/store"
)

// Defaults.
const (
	DefaultMaxEvents  = 1_000_000
	maxTrusted        = 16
	batchesPerRead    = 32
	maxCheckpointScan = 10_000
)

// Verifier verifies the chain. It is safe for concurrent use.
type Verifier struct {
	Store store.Store
	Index *index.Index
	Ring  *checkpoint.Ring
	// MaxEvents is the per-call limit; zero means DefaultMaxEvents.
	MaxEvents uint64
}

// candidate is a checkpoint to check: stored or trusted.
type candidate struct {
	jws    string
	stored *store.CheckpointRecord
}

// Verify answers VerifyChainRequest.
func (v *Verifier) Verify(ctx context.Context, req *auditv1.VerifyChainRequest) (*auditv1.VerifyChainResponse, error) {
	if len(req.GetTrustedCheckpoints()) > maxTrusted {
		return nil, errs.Field("trusted_checkpoints", "at most %d entries", maxTrusted)
	}
	var cands []candidate
	for i, jws := range req.GetTrustedCheckpoints() {
		if _, err := checkpoint.Parse(jws); err != nil {
			return nil, errs.New(codes.InvalidArgument, auditv1.ErrorReason_ERROR_REASON_CHECKPOINT_MALFORMED,
				"trusted_checkpoints[%d] is not a checkpoint JWS", i).WithMetadata("index", strconv.Itoa(i))
		}
		cands = append(cands, candidate{jws: jws})
	}

	st, err := v.Store.State(ctx)
	if err != nil {
		return nil, errs.Store(err)
	}
	resp := &auditv1.VerifyChainResponse{HeadSequence: st.Head.Sequence, OldestRetainedSequence: st.Tail.Oldest, Complete: true}
	latest, err := v.Store.LatestCheckpoint(ctx)
	switch {
	case err == nil:
		resp.LatestCheckpoint = checkpoint.ToProto(latest)
	case !errors.Is(err, store.ErrNotFound):
		return nil, errs.Store(err)
	}

	from, through, toHead, err := v.resolve(req, st)
	if err != nil {
		return nil, err
	}
	resp.FromSequence = from

	// The end of what is stored: a chain cut off before a checkpoint or
	// the recorded head ends here.
	end := uint64(0)
	if lb, err := v.Store.LastBatch(ctx); err != nil {
		return nil, errs.Store(err)
	} else if lb != nil {
		end = lb.First
		if lb.Batch != nil {
			end = lb.Batch.Last()
		}
	}

	// Checkpoints to check, gathered before the walk so it can note the
	// hashes at their sequences on the way.
	if through >= from {
		stored, err := v.Store.Checkpoints(ctx, from, through, maxCheckpointScan, false)
		if err != nil {
			return nil, errs.Store(err)
		}
		for i := range stored {
			cands = append(cands, candidate{jws: stored[i].JWS, stored: &stored[i]})
		}
	}
	if resp.LatestCheckpoint != nil && (latest.Sequence < from || latest.Sequence > through) {
		cands = append(cands, candidate{jws: latest.JWS, stored: &latest})
	}
	want := map[uint64][]byte{}
	for _, c := range cands {
		if p, err := checkpoint.Parse(c.jws); err == nil {
			want[p.Claims.Sequence] = nil
		}
	}

	if brk := v.walk(ctx, st, from, through, want, resp); brk != nil || ctx.Err() != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		resp.FirstBreak = brk
		return resp, nil
	}
	if !resp.GetComplete() {
		return resp, nil // stopped at the limit: the caller continues
	}

	// Checkpoints and the recorded head: report the break at the lowest
	// sequence.
	var breaks []*auditv1.ChainBreak
	for _, c := range cands {
		brk, checked, err := v.checkCheckpoint(ctx, c, st, end, want)
		if err != nil {
			return nil, errs.Store(err)
		}
		if checked {
			resp.CheckpointsChecked++
		}
		if brk != nil {
			breaks = append(breaks, brk)
		}
	}
	if toHead && st.Head.Sequence > end && st.Head.Sequence >= st.Tail.Oldest {
		breaks = append(breaks, &auditv1.ChainBreak{
			Kind: auditv1.ChainBreakKind_CHAIN_BREAK_KIND_TRUNCATED, Sequence: st.Head.Sequence, Expected: st.Head.Hash,
			Detail: fmt.Sprintf("the chain ends at sequence %d, before the recorded head %d: the tail was cut off", end, st.Head.Sequence),
		})
	}
	if len(breaks) > 0 {
		sort.SliceStable(breaks, func(i, j int) bool { return breaks[i].GetSequence() < breaks[j].GetSequence() })
		resp.FirstBreak = breaks[0]
	}
	resp.Intact = resp.FirstBreak == nil
	return resp, nil
}

// resolve turns the request's range into [from, through] within the
// retained window; toHead tells whether it reaches the recorded head.
func (v *Verifier) resolve(req *auditv1.VerifyChainRequest, st store.State) (from, through uint64, toHead bool, err error) {
	oldest, head := st.Tail.Oldest, st.Head.Sequence
	from, through = oldest, head
	switch r := req.GetRange().(type) {
	case *auditv1.VerifyChainRequest_SequenceRange:
		f, t := r.SequenceRange.GetFromSequence(), r.SequenceRange.GetThroughSequence()
		if f != 0 && t != 0 && t < f {
			return 0, 0, false, errs.Field("sequence_range.through_sequence", "must not be below from_sequence")
		}
		if f != 0 {
			from = f
		}
		if t != 0 {
			through = t
		}
	case *auditv1.VerifyChainRequest_TimeRange:
		s, e := r.TimeRange.GetStartTime(), r.TimeRange.GetEndTime()
		if (s != nil && s.CheckValid() != nil) || (e != nil && e.CheckValid() != nil) {
			return 0, 0, false, errs.Field("time_range", "not a valid timestamp")
		}
		if s != nil && e != nil && !e.AsTime().After(s.AsTime()) {
			return 0, 0, false, errs.Field("time_range.end_time", "must be after start_time")
		}
		if s != nil {
			seq, ok := v.Index.FirstAppendedAtOrAfter(s.AsTime())
			if !ok {
				return 0, 0, false, notRetained(st)
			}
			from = seq
		}
		if e != nil {
			seq, ok := v.Index.LastAppendedBefore(e.AsTime())
			if !ok {
				return 0, 0, false, notRetained(st)
			}
			through = seq
		}
	}
	if req.GetRange() == nil && through < oldest {
		// Nothing retained (an empty chain, or everything in the sink):
		// only the checkpoints and the head are left to check.
		return oldest, head, true, nil
	}
	if through < oldest || from > head || through < from {
		return 0, 0, false, notRetained(st)
	}
	from = max(from, oldest)
	through = min(through, head)
	return from, through, through == head, nil
}

func notRetained(st store.State) error {
	return errs.New(codes.OutOfRange, auditv1.ErrorReason_ERROR_REASON_RANGE_NOT_RETAINED,
		"the range lies outside the retained window %d..%d", st.Tail.Oldest, st.Head.Sequence).
		WithMetadata("oldest_retained_sequence", strconv.FormatUint(st.Tail.Oldest, 10),
			"head_sequence", strconv.FormatUint(st.Head.Sequence, 10))
}

// walk checks every event in [from, through] and fills the counters of
// resp. It returns the first break, or nil.
func (v *Verifier) walk(ctx context.Context, st store.State, from, through uint64, want map[uint64][]byte, resp *auditv1.VerifyChainResponse) *auditv1.ChainBreak {
	limit := v.MaxEvents
	if limit == 0 {
		limit = DefaultMaxEvents
	}
	resp.ThroughSequence = from - 1
	if through < from {
		return nil
	}
	// The link into the range: the hash recorded when earlier events went
	// to the sink, or the stored hash of the event before from.
	var prev []byte
	start := from
	if from == st.Tail.Oldest {
		prev = st.Tail.PrevHash
	} else {
		start = from - 1
	}
	expected := start
	for expected <= through {
		if ctx.Err() != nil {
			return nil
		}
		batches, err := v.Store.BatchesFrom(ctx, expected, batchesPerRead, false)
		if err != nil {
			return unreadable(expected, "the batch could not be read")
		}
		if len(batches) == 0 {
			return nil // the stored chain ends here; truncation is judged after
		}
		for bi, b := range batches {
			switch {
			case b.First > expected:
				return gap(expected, b.First)
			case b.Batch == nil:
				return unreadable(expected, "a stored batch cannot be decoded")
			case bi > 0 && b.First < expected:
				return &auditv1.ChainBreak{Kind: auditv1.ChainBreakKind_CHAIN_BREAK_KIND_SEQUENCE_DISORDER, Sequence: b.First,
					Detail: fmt.Sprintf("a batch starting at %d overlaps events up to %d", b.First, expected-1)}
			}
			for i, e := range b.Batch.Entries {
				if b.First+uint64(i) < expected {
					continue // the part of the first batch before the range
				}
				ev := e.Event
				if expected < from {
					// The event before the range: only its stored hash is
					// used, as the link into the range.
					if ev.GetSequence() != expected {
						return gap(expected, ev.GetSequence())
					}
					prev = ev.GetHash()
					expected++
					continue
				}
				if expected > through {
					return nil
				}
				if resp.GetEventsChecked() >= limit {
					resp.Complete = false
					return nil
				}
				brk, erased := chain.CheckEvent(ev, expected, prev)
				if brk != nil {
					return brk
				}
				if _, ok := want[expected]; ok {
					want[expected] = ev.GetHash()
				}
				resp.EventsChecked++
				resp.ErasedValues += uint64(erased)
				resp.ThroughSequence = expected
				prev = ev.GetHash()
				expected++
			}
		}
	}
	return nil
}

func gap(missing, next uint64) *auditv1.ChainBreak {
	return &auditv1.ChainBreak{
		Kind: auditv1.ChainBreakKind_CHAIN_BREAK_KIND_SEQUENCE_GAP, Sequence: missing,
		Detail: fmt.Sprintf("sequences %d to %d are missing; the next stored event is %d", missing, next-1, next),
	}
}

func unreadable(seq uint64, detail string) *auditv1.ChainBreak {
	return &auditv1.ChainBreak{Kind: auditv1.ChainBreakKind_CHAIN_BREAK_KIND_RECORD_UNREADABLE, Sequence: seq, Detail: detail}
}

// checkCheckpoint checks one checkpoint's signature, its agreement with the
// stored record, and the event at its sequence. checked reports whether
// both signature and head hash were checked.
func (v *Verifier) checkCheckpoint(ctx context.Context, c candidate, st store.State, end uint64, want map[uint64][]byte) (*auditv1.ChainBreak, bool, error) {
	cpSeq := uint64(0)
	if c.stored != nil {
		cpSeq = c.stored.Sequence
	}
	p, err := v.Ring.Verify(ctx, c.jws)
	if err != nil {
		if p.Claims.Sequence != 0 {
			cpSeq = p.Claims.Sequence
		}
		kind := auditv1.ChainBreakKind_CHAIN_BREAK_KIND_CHECKPOINT_SIGNATURE_INVALID
		detail := "the checkpoint's signature, header or claims do not verify"
		if errors.Is(err, checkpoint.ErrUnknownKey) {
			kind = auditv1.ChainBreakKind_CHAIN_BREAK_KIND_CHECKPOINT_KEY_UNKNOWN
			detail = "the checkpoint names a key that is not a configured checkpoint key"
		}
		return &auditv1.ChainBreak{Kind: kind, Sequence: cpSeq, CheckpointSequence: cpSeq, Detail: detail}, false, nil
	}
	seq := p.Claims.Sequence
	if s := c.stored; s != nil && (s.Sequence != seq || !bytes.Equal(s.HeadHash, p.HeadHash) || s.HeadEventID != p.Claims.HeadEventID ||
		s.KeyID != p.KeyID || s.Issuer != p.Claims.Issuer || s.SignTime.Unix() != int64(*p.Claims.IssuedAt)) {
		return &auditv1.ChainBreak{Kind: auditv1.ChainBreakKind_CHAIN_BREAK_KIND_CHECKPOINT_SIGNATURE_INVALID,
			Sequence: s.Sequence, CheckpointSequence: s.Sequence,
			Detail: "the stored checkpoint record differs from its signed claims"}, false, nil
	}
	if seq < st.Tail.Oldest {
		return nil, false, nil // its event is in the sink: verified offline
	}
	if seq > end {
		return &auditv1.ChainBreak{Kind: auditv1.ChainBreakKind_CHAIN_BREAK_KIND_TRUNCATED, Sequence: seq, CheckpointSequence: seq,
			Expected: p.HeadHash,
			Detail:   fmt.Sprintf("the chain ends at sequence %d, before the checkpoint at %d: the tail was cut off", end, seq)}, false, nil
	}
	h := want[seq]
	var id string
	if h == nil {
		bs, err := v.Store.BatchesFrom(ctx, seq, 1, false)
		if err != nil {
			return nil, false, err
		}
		if len(bs) == 0 || bs[0].Batch == nil || bs[0].First > seq {
			return &auditv1.ChainBreak{Kind: auditv1.ChainBreakKind_CHAIN_BREAK_KIND_SEQUENCE_GAP, Sequence: seq, CheckpointSequence: seq,
				Detail: "the event a checkpoint signed is missing"}, false, nil
		}
		ev := bs[0].Batch.Entries[seq-bs[0].First].Event
		h, id = ev.GetHash(), ev.GetId()
	}
	if !bytes.Equal(h, p.HeadHash) {
		return &auditv1.ChainBreak{Kind: auditv1.ChainBreakKind_CHAIN_BREAK_KIND_CHECKPOINT_MISMATCH, Sequence: seq, EventId: id,
			CheckpointSequence: seq, Expected: p.HeadHash, Actual: h,
			Detail: "the event at the checkpoint's sequence is not the one the checkpoint signed"}, true, nil
	}
	return nil, true, nil
}
