package query

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/lib/auditemit"
	"github.com/mcpid/mcpid/services/audit/internal/errs"
	"github.com/mcpid/mcpid/services/audit/internal/store"
)

// ProgressInterval is how long a tail stream goes without a matching event
// before it sends a progress message (the contract's 10 seconds).
const ProgressInterval = 10 * time.Second

// tailBatches is how many batches a tail reads at once: small, so the
// stream reads etcd at the client's pace.
const tailBatches = 4

// Tail answers TailEventsRequest, calling send for each message until ctx
// ends or send fails. Events are read from etcd by sequence, after the last
// one sent, and the index only says when to read again: a reconnect with
// the last sequence received resumes with no gap and no duplicate, and a
// slow client never makes the server buffer.
func (q *Querier) Tail(ctx context.Context, req *auditv1.TailEventsRequest, progressEvery time.Duration, send func(*auditv1.TailEventsResponse) error) error {
	f, err := CompileFilter(req.GetFilter(), "filter")
	if err != nil {
		return err
	}
	if progressEvery <= 0 {
		progressEvery = ProgressInterval
	}
	if err := q.Index.WaitIndexed(ctx, 0); err != nil {
		return errs.Store(err)
	}
	st, err := q.Store.State(ctx)
	if err != nil {
		return errs.Store(err)
	}
	after, err := q.resumePoint(req, st)
	if err != nil {
		return err
	}
	lastSent := time.Now() // of an event or a progress message
	live := false
	progress := func(isLive bool) error {
		p := &auditv1.TailProgress{Sequence: after, Live: isLive}
		if t, ok := q.Index.AppendTimeOf(after); ok {
			p.AppendTime = timestamppb.New(t)
		}
		lastSent = time.Now()
		return send(&auditv1.TailEventsResponse{Item: &auditv1.TailEventsResponse_Progress{Progress: p}})
	}
	for {
		changed := q.Index.Changed() // before reading, so no change slips between
		batches, err := q.Store.BatchesFrom(ctx, after+1, tailBatches, false)
		if err != nil {
			return errs.Store(err)
		}
		read := false
		for _, b := range batches {
			if b.First > after+1 {
				return q.gapError(ctx, after)
			}
			if b.Batch == nil {
				return fmt.Errorf("query: tail: batch %d cannot be decoded", b.First)
			}
			for i, e := range b.Batch.Entries {
				seq := b.First + uint64(i)
				if seq <= after {
					continue
				}
				read = true
				after = seq
				if f.Match(e.Event) {
					lastSent = time.Now()
					if err := send(&auditv1.TailEventsResponse{Item: &auditv1.TailEventsResponse_Event{Event: e.Event}}); err != nil {
						return err
					}
				} else if time.Since(lastSent) >= progressEvery {
					if err := progress(live); err != nil {
						return err
					}
				}
			}
		}
		if read {
			continue
		}
		if !live {
			live = true
			if err := progress(true); err != nil {
				return err
			}
		}
		wait := time.NewTimer(max(progressEvery-time.Since(lastSent), time.Millisecond))
		select {
		case <-ctx.Done():
			wait.Stop()
			return ctx.Err()
		case <-changed:
		case <-wait.C:
			if err := progress(true); err != nil {
				return err
			}
		}
		wait.Stop()
	}
}

// resumePoint returns the sequence after which the stream starts.
func (q *Querier) resumePoint(req *auditv1.TailEventsRequest, st store.State) (uint64, error) {
	oldest, head := st.Tail.Oldest, st.Head.Sequence
	switch s := req.GetStart().(type) {
	case *auditv1.TailEventsRequest_AfterEventId:
		idTime, err := auditemit.IDTime(s.AfterEventId)
		if err != nil {
			return 0, errs.Field("after_event_id", "not an event id")
		}
		hit, ok := q.Index.Lookup(s.AfterEventId)
		switch {
		case ok && hit.Archived:
			return 0, q.notRetained(st)
		case ok:
			return q.checkAfter(hit.Sequence, st)
		case oldest > 1 && idTime.Before(st.Tail.ArchivedTime):
			return 0, q.notRetained(st)
		}
		return 0, errs.New(codes.NotFound, auditv1.ErrorReason_ERROR_REASON_EVENT_NOT_FOUND, "no retained event has this id")
	case *auditv1.TailEventsRequest_AfterSequence:
		if s.AfterSequence == 0 {
			return oldest - 1, nil
		}
		return q.checkAfter(s.AfterSequence, st)
	case *auditv1.TailEventsRequest_SinceTime:
		if s.SinceTime.CheckValid() != nil {
			return 0, errs.Field("since_time", "not a valid timestamp")
		}
		if seq, ok := q.Index.FirstAppendedAtOrAfter(s.SinceTime.AsTime()); ok {
			return seq - 1, nil
		}
		return head, nil
	}
	return head, nil
}

func (q *Querier) checkAfter(after uint64, st store.State) (uint64, error) {
	if after > st.Head.Sequence {
		return 0, errs.New(codes.OutOfRange, auditv1.ErrorReason_ERROR_REASON_RESUME_POINT_AHEAD,
			"the resume point %d is beyond the chain head %d", after, st.Head.Sequence).
			WithMetadata("head_sequence", strconv.FormatUint(st.Head.Sequence, 10))
	}
	if after+1 < st.Tail.Oldest {
		return 0, q.notRetained(st)
	}
	return after, nil
}

func (q *Querier) notRetained(st store.State) error {
	md := []string{"oldest_retained_sequence", strconv.FormatUint(st.Tail.Oldest, 10)}
	if t, ok := q.Index.AppendTimeOf(st.Tail.Oldest); ok {
		md = append(md, "oldest_retained_time", t.UTC().Format(time.RFC3339Nano))
	}
	return errs.New(codes.OutOfRange, auditv1.ErrorReason_ERROR_REASON_RESUME_POINT_NOT_RETAINED,
		"events after the resume point left etcd for the sink; read them there, then resume from oldest_retained_sequence - 1").
		WithMetadata(md...)
}

// gapError explains why the event after `after` is missing: retention moved
// past a slow stream (an error the client can act on), or someone removed
// events (never skipped silently).
func (q *Querier) gapError(ctx context.Context, after uint64) error {
	st, err := q.Store.State(ctx)
	if err != nil {
		return errs.Store(err)
	}
	if after+1 < st.Tail.Oldest {
		return q.notRetained(st)
	}
	return errors.New("query: tail: the chain has a gap after sequence " + strconv.FormatUint(after, 10) + "; run VerifyChain")
}
