// Package erasure implements ErasePersonalData: it removes the cleartext
// and salt of protected values from retained events, keeping their digests
// (the only part of them in the event hash), so the chain still verifies.
package erasure

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/lib/auditemit"
	"github.com/mcpid/mcpid/services/audit/internal/chain"
	"github.com/mcpid/mcpid/services/audit/internal/errs"
	"github.com/mcpid/mcpid/services/audit/internal/ingest"
	"github.com/mcpid/mcpid/services/audit/internal/store"
)

const (
	batchesPerRead  = 8
	maxBatchRetries = 16
	maxUserID       = 256
	maxJustify      = 256
)

// Eraser erases personal data. It is safe for concurrent use.
type Eraser struct {
	Store    store.Store
	Appender *ingest.Appender
	IDs      *auditemit.IDGenerator
	Now      func() time.Time
}

// Erase answers ErasePersonalDataRequest for the operator operatorID.
func (e *Eraser) Erase(ctx context.Context, req *auditv1.ErasePersonalDataRequest, operatorID string) (*auditv1.ErasePersonalDataResponse, error) {
	user := ""
	var from, through uint64
	switch t := req.GetTarget().(type) {
	case *auditv1.ErasePersonalDataRequest_UserId:
		if t.UserId == "" || len(t.UserId) > maxUserID {
			return nil, errs.Field("user_id", "1 to %d bytes", maxUserID)
		}
		user = t.UserId
	case *auditv1.ErasePersonalDataRequest_SequenceRange:
		from, through = t.SequenceRange.GetFromSequence(), t.SequenceRange.GetThroughSequence()
		if from == 0 && through == 0 {
			return nil, errs.Field("sequence_range", "give at least one bound")
		}
		if from != 0 && through != 0 && through < from {
			return nil, errs.Field("sequence_range.through_sequence", "must not be below from_sequence")
		}
	default:
		return nil, errs.Field("target", "user_id or sequence_range is required")
	}
	if j := req.GetJustification(); j == "" || len(j) > maxJustify {
		return nil, errs.Field("justification", "1 to %d bytes are required", maxJustify)
	}
	fields := map[auditv1.ProtectedField]bool{}
	var names []any
	for i, f := range req.GetFields() {
		if _, ok := auditv1.ProtectedField_name[int32(f)]; !ok || f == auditv1.ProtectedField_PROTECTED_FIELD_UNSPECIFIED {
			return nil, errs.Field(fmt.Sprintf("fields[%d]", i), "not a protected field")
		}
		fields[f] = true
	}
	for _, f := range chain.Fields {
		if len(fields) == 0 || fields[f.Enum] {
			names = append(names, f.Name)
		}
	}

	st, err := e.Store.State(ctx)
	if err != nil {
		return nil, errs.Store(err)
	}
	oldest, head := st.Tail.Oldest, st.Head.Sequence
	if from == 0 {
		from = oldest
	}
	if through == 0 || through > head {
		through = head
	}
	resp := &auditv1.ErasePersonalDataResponse{ThroughSequence: through, OldestRetainedSequence: oldest}
	if user == "" && (through < oldest || from > head) {
		return nil, errs.New(codes.OutOfRange, auditv1.ErrorReason_ERROR_REASON_RANGE_NOT_RETAINED,
			"the range lies outside the retained window %d..%d", oldest, head).
			WithMetadata("oldest_retained_sequence", strconv.FormatUint(oldest, 10), "head_sequence", strconv.FormatUint(head, 10))
	}
	from = max(from, oldest)

	match := func(ev *auditv1.Event) bool {
		if user == "" {
			return true
		}
		k := ev.GetActor().GetKind()
		return ev.GetUserId() == user ||
			((k == auditv1.ActorKind_ACTOR_KIND_USER || k == auditv1.ActorKind_ACTOR_KIND_OPERATOR) && ev.GetActor().GetId() == user)
	}
	now := e.Now().UTC()
	for cursor := from; cursor <= through && head > 0; {
		batches, err := e.Store.BatchesFrom(ctx, cursor, batchesPerRead, false)
		if err != nil {
			return nil, errs.Store(err)
		}
		if len(batches) == 0 {
			break
		}
		for _, b := range batches {
			if b.First > through {
				cursor = through + 1
				break
			}
			matched, erased, err := e.eraseBatch(ctx, b, from, through, match, fields, now, req.GetDryRun())
			if err != nil {
				return nil, err
			}
			resp.EventsMatched += matched
			resp.ValuesErased += erased
			cursor = b.First + 1
			if b.Batch != nil {
				cursor = b.Batch.Last() + 1
			}
		}
	}
	if req.GetDryRun() {
		return resp, nil
	}

	id, err := e.IDs.NewID()
	if err != nil {
		return nil, err
	}
	details, err := structpb.NewStruct(map[string]any{
		"justification":    req.GetJustification(),
		"fields":           names,
		"from_sequence":    float64(from),
		"through_sequence": float64(through),
		"values_erased":    float64(resp.GetValuesErased()),
	})
	if err != nil {
		return nil, err
	}
	ev := &auditv1.Event{
		Id: id, Time: timestamppb.New(now), Type: auditv1.EventType_EVENT_TYPE_PERSONAL_DATA_ERASED,
		Actor:  &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_OPERATOR, Id: operatorID},
		UserId: user, Details: details,
	}
	results, err := e.Appender.Append(ctx, "audit", []*auditv1.Event{ev})
	if err != nil {
		return nil, err
	}
	if r := results[0]; r.GetStatus() == auditv1.AppendEventStatus_APPEND_EVENT_STATUS_REJECTED {
		return nil, fmt.Errorf("erasure: own event rejected: %v: %s", r.GetReason(), r.GetMessage())
	}
	resp.ErasureEventId = id
	return resp, nil
}

// eraseBatch erases in one batch, re-reading it when a concurrent writer
// (another erasure, never an append) changed it first.
func (e *Eraser) eraseBatch(ctx context.Context, b store.StoredBatch, from, through uint64, match func(*auditv1.Event) bool,
	fields map[auditv1.ProtectedField]bool, now time.Time, dryRun bool,
) (matched, erased uint64, err error) {
	for range maxBatchRetries {
		if b.Batch == nil {
			return 0, 0, nil // unreadable: VerifyChain reports it; nothing to erase safely
		}
		matched, erased = 0, 0
		for _, en := range b.Batch.Entries {
			ev := en.Event
			if ev.GetSequence() < from || ev.GetSequence() > through || !match(ev) {
				continue
			}
			matched++
			n := uint64(0)
			for _, f := range chain.Fields {
				p := f.Get(ev)
				if p == nil || chain.Erased(p) || (len(fields) > 0 && !fields[f.Enum]) {
					continue
				}
				f.Set(ev, &auditv1.Protected{Digest: p.GetDigest()})
				n++
			}
			if n > 0 {
				ev.EraseTime = timestamppb.New(now)
				erased += n
			}
		}
		if dryRun || erased == 0 {
			return matched, erased, nil
		}
		v, err := store.EncodeBatch(b.Batch)
		if err != nil {
			return 0, 0, err
		}
		err = e.Store.ReplaceBatch(ctx, b.Key, b.ModRevision, v)
		if err == nil {
			return matched, erased, nil
		}
		if !errors.Is(err, store.ErrConflict) {
			return 0, 0, errs.Store(err)
		}
		fresh, err := e.Store.BatchesFrom(ctx, b.First, 1, false)
		if err != nil {
			return 0, 0, errs.Store(err)
		}
		if len(fresh) == 0 || fresh[0].Key != b.Key {
			return 0, 0, nil // archived meanwhile: the erasure event tells the sink's operator
		}
		b = fresh[0]
	}
	return 0, 0, fmt.Errorf("erasure: batch %q kept changing", b.Key)
}
