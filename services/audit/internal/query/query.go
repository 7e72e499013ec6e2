package query

import (
	"context"
	"encoding/binary"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/services/audit/internal/errs"
	"github.com/mcpid/mcpid/services/audit/internal/index"
	"github.com/mcpid/mcpid/services/audit/internal/pagetoken"
	"github.com/mcpid/mcpid/services/audit/internal/store"
)

// Query limits.
const (
	defaultPageSize = 100
	maxPageSize     = 1000
	// maxScan bounds the events one QueryEvents call reads: a selective
	// filter over a large window answers a short page and a token to go on
	// rather than holding a request open.
	maxScan = 50_000
	// batchesPerRead is how many batch keys one etcd read fetches.
	batchesPerRead = 8
	// maxFutureSkew is how far Event.time may be ahead of its append time
	// (the contract's limit on producers), which bounds a time-range scan.
	maxFutureSkew = 5 * time.Minute
)

// Querier answers QueryEvents and TailEvents. It is safe for concurrent
// use.
type Querier struct {
	Store store.Store
	Index *index.Index

	mu         sync.Mutex
	oldestSeq  uint64
	oldestTime *timestamppb.Timestamp
}

// Query answers QueryEventsRequest.
func (q *Querier) Query(ctx context.Context, req *auditv1.QueryEventsRequest) (*auditv1.QueryEventsResponse, error) {
	f, err := CompileFilter(req.GetFilter(), "filter")
	if err != nil {
		return nil, err
	}
	tr := req.GetTimeRange()
	var start, end time.Time
	if s := tr.GetStartTime(); s != nil {
		if s.CheckValid() != nil {
			return nil, errs.Field("time_range.start_time", "not a valid timestamp")
		}
		start = s.AsTime()
	}
	if e := tr.GetEndTime(); e != nil {
		if e.CheckValid() != nil {
			return nil, errs.Field("time_range.end_time", "not a valid timestamp")
		}
		end = e.AsTime()
	}
	if !start.IsZero() && !end.IsZero() && !end.After(start) {
		return nil, errs.Field("time_range.end_time", "must be after start_time")
	}
	sr := req.GetSequenceRange()
	if sr.GetFromSequence() != 0 && sr.GetThroughSequence() != 0 && sr.GetThroughSequence() < sr.GetFromSequence() {
		return nil, errs.Field("sequence_range.through_sequence", "must not be below from_sequence")
	}
	if req.GetPageSize() < 0 {
		return nil, errs.Field("page_size", "must not be negative")
	}
	if _, ok := auditv1.EventOrder_name[int32(req.GetOrder())]; !ok {
		return nil, errs.Field("order", "not an order")
	}
	size := int(req.GetPageSize())
	switch {
	case size == 0:
		size = defaultPageSize
	case size > maxPageSize:
		size = maxPageSize
	}
	asc := req.GetOrder() == auditv1.EventOrder_EVENT_ORDER_OLDEST_FIRST
	binding := pagetoken.Binding("events", req.GetFilter(), req.GetTimeRange(), req.GetSequenceRange(), &auditv1.QueryEventsRequest{Order: req.GetOrder()})

	st, err := q.Store.State(ctx)
	if err != nil {
		return nil, errs.Store(err)
	}
	resp := &auditv1.QueryEventsResponse{OldestRetainedSequence: st.Tail.Oldest, HeadSequence: st.Head.Sequence}
	lo, hi := st.Tail.Oldest, st.Head.Sequence
	if s := sr.GetFromSequence(); s > lo {
		lo = s
	}
	if s := sr.GetThroughSequence(); s != 0 && s < hi {
		hi = s
	}
	// Events that happened at or after start were chained no earlier than
	// start minus the producers' allowed clock lead.
	if !start.IsZero() {
		if seq, ok := q.Index.FirstAppendedAtOrAfter(start.Add(-maxFutureSkew)); ok && seq > lo {
			lo = seq
		} else if !ok {
			lo = hi + 1
		}
	}
	cursor := lo
	if !asc {
		cursor = hi
	}
	if tok := req.GetPageToken(); tok != "" {
		c, err := pagetoken.Decode(binding, tok)
		if err != nil || len(c) != 8 {
			return nil, errs.PageToken()
		}
		cursor = binary.BigEndian.Uint64(c)
	}
	resp.OldestRetainedTime = q.oldestEventTime(ctx, st.Tail.Oldest, st.Head.Sequence)

	scanned := 0
	done := lo > hi || (asc && cursor > hi) || (!asc && (cursor < lo || cursor == 0))
	// Read one batch first (it often fills a page), then more at a time.
	read := 1
	for !done && len(resp.Events) < size && scanned < maxScan {
		batches, err := q.Store.BatchesFrom(ctx, cursor, read, !asc)
		read = min(read*2, batchesPerRead)
		if err != nil {
			return nil, errs.Store(err)
		}
		if len(batches) == 0 {
			done = true
			break
		}
		for _, b := range batches {
			if b.Batch == nil {
				// Unreadable (tampered) batch: VerifyChain reports it;
				// the query goes on past it.
				if asc {
					cursor = b.First + 1
				} else if b.First > 0 {
					cursor = b.First - 1
				}
				continue
			}
			n := len(b.Batch.Entries)
			for k := range n {
				i := k
				if !asc {
					i = n - 1 - k
				}
				ev := b.Batch.Entries[i].Event
				seq := b.First + uint64(i)
				if (asc && seq < cursor) || (!asc && seq > cursor) {
					continue
				}
				if seq < lo || seq > hi {
					if (asc && seq > hi) || (!asc && seq < lo) {
						done = true
						break
					}
					continue
				}
				if !asc && !start.IsZero() && ev.GetAppendTime().AsTime().Before(start.Add(-maxFutureSkew)) {
					done = true // older events were all chained too early to match
					break
				}
				scanned++
				if asc {
					cursor = seq + 1
				} else {
					cursor = seq - 1
				}
				if f.Match(ev) && inTime(ev, start, end) {
					resp.Events = append(resp.Events, ev)
				}
				if len(resp.Events) >= size || scanned >= maxScan {
					break
				}
			}
			if done || len(resp.Events) >= size || scanned >= maxScan {
				break
			}
		}
		if !asc && cursor == 0 {
			done = true
		}
		if (asc && cursor > hi) || (!asc && cursor < lo) {
			done = true
		}
	}
	if !done {
		c := binary.BigEndian.AppendUint64(nil, cursor)
		resp.NextPageToken = pagetoken.Encode(binding, c)
	}
	return resp, nil
}

func inTime(ev *auditv1.Event, start, end time.Time) bool {
	if start.IsZero() && end.IsZero() {
		return true
	}
	t := ev.GetTime().AsTime()
	return (start.IsZero() || !t.Before(start)) && (end.IsZero() || t.Before(end))
}

// oldestEventTime returns Event.time of the oldest retained event, remembered
// per oldest sequence so a query does not read that batch every time.
func (q *Querier) oldestEventTime(ctx context.Context, oldest, head uint64) *timestamppb.Timestamp {
	if oldest > head {
		return nil
	}
	q.mu.Lock()
	if q.oldestSeq == oldest && q.oldestTime != nil {
		t := q.oldestTime
		q.mu.Unlock()
		return t
	}
	q.mu.Unlock()
	bs, err := q.Store.BatchesFrom(ctx, oldest, 1, false)
	if err != nil || len(bs) == 0 || bs[0].Batch == nil || bs[0].First > oldest {
		return nil
	}
	t := bs[0].Batch.Entries[oldest-bs[0].First].Event.GetTime()
	q.mu.Lock()
	q.oldestSeq, q.oldestTime = oldest, t
	q.mu.Unlock()
	return t
}
