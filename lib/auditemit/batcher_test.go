package auditemit_test

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/grpc"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/lib/auditemit"
)

func newBatcher(t testing.TB, cfg auditemit.BatcherConfig) *auditemit.Batcher {
	t.Helper()
	if cfg.Service == "" {
		cfg.Service = "policy"
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff, cfg.MaxBackoff = time.Millisecond, 5*time.Millisecond
	}
	b, err := auditemit.NewBatcher(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Close(ctx)
	})
	return b
}

// emit emits n policy decisions and returns their ids.
func emit(t testing.TB, ctx context.Context, b *auditemit.Batcher, n int) []string {
	t.Helper()
	ids := make([]string, 0, n)
	for i := range n {
		ev := policyDecision(i)
		if err := b.Emit(ctx, ev); err != nil {
			t.Fatalf("Emit %d: %v", i, err)
		}
		ids = append(ids, ev.GetId())
	}
	return ids
}

func newMetricReader() (*sdkmetric.ManualReader, *sdkmetric.MeterProvider) {
	r := sdkmetric.NewManualReader()
	return r, sdkmetric.NewMeterProvider(sdkmetric.WithReader(r))
}

// metricValue sums the points of the int64 sum or gauge name whose
// attributes include attrs.
func metricValue(t testing.TB, r *sdkmetric.ManualReader, name string, attrs ...attribute.KeyValue) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	match := func(set attribute.Set) bool {
		for _, kv := range attrs {
			if v, ok := set.Value(kv.Key); !ok || v != kv.Value {
				return false
			}
		}
		return true
	}
	var total int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					if match(dp.Attributes) {
						total += dp.Value
					}
				}
			case metricdata.Gauge[int64]:
				for _, dp := range d.DataPoints {
					if match(dp.Attributes) {
						total += dp.Value
					}
				}
			}
		}
	}
	return total
}

func reason(r string) attribute.KeyValue { return attribute.String("reason", r) }

func callSizes(s fakeSnapshot) []int {
	out := make([]int, len(s.calls))
	for i, c := range s.calls {
		out[i] = len(c)
	}
	return out
}

func TestBatcherFlushesBySize(t *testing.T) {
	ctx := testCtx(t)
	fake := newFakeAuditService()
	b := newBatcher(t, auditemit.BatcherConfig{Appender: fake.direct(), MaxBatchEvents: 10, MaxDelay: time.Hour})
	ids := emit(t, ctx, b, 25)

	// The delay is an hour: only the size can have sent these.
	eventually(t, waitLimit, "two full batches", func() bool { return len(fake.snapshot().appended) >= 20 })
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	got := fake.snapshot()
	if !slices.Equal(callSizes(got), []int{10, 10, 5}) || !slices.Equal(got.appended, ids) {
		t.Fatalf("calls %v chained %v; want batches of 10, 10 and (at Close) 5, in emit order", callSizes(got), got.appended)
	}
}

func TestBatcherFlushesByTime(t *testing.T) {
	ctx := testCtx(t)
	fake := newFakeAuditService()
	reader, mp := newMetricReader()
	b := newBatcher(t, auditemit.BatcherConfig{Appender: fake.direct(), MaxDelay: 20 * time.Millisecond, MeterProvider: mp})
	ids := emit(t, ctx, b, 3)

	// Far below the batch size of 500: only the delay sends them.
	eventually(t, waitLimit, "the delayed batch", func() bool { return len(fake.snapshot().appended) == 3 })
	got := fake.snapshot()
	if !slices.Equal(got.appended, ids) {
		t.Fatalf("chained %v, want %v", got.appended, ids)
	}
	eventually(t, waitLimit, "the sent counter", func() bool {
		return metricValue(t, reader, "mcpid.audit.emitter.events_sent") == 3
	})
}

func TestBatcherDropsWhenQueueIsFull(t *testing.T) {
	ctx := testCtx(t)
	fake := newFakeAuditService()
	gate := make(chan struct{})
	fake.set(func(f *fakeAuditService) { f.gate = gate })
	reader, mp := newMetricReader()
	b := newBatcher(t, auditemit.BatcherConfig{Appender: fake.direct(), QueueSize: 5, MaxBatchEvents: 1, MeterProvider: mp})

	// The first event fills a batch and its call hangs: the sender is busy.
	first := emit(t, ctx, b, 1)
	<-fake.started
	queued := emit(t, ctx, b, 5)
	for i := range 3 {
		if err := b.Emit(ctx, policyDecision(100+i)); !errors.Is(err, auditemit.ErrQueueFull) {
			t.Fatalf("Emit into a full queue: err = %v, want ErrQueueFull", err)
		}
	}
	if n := metricValue(t, reader, "mcpid.audit.emitter.events_dropped", reason(auditemit.DropQueueFull)); n != 3 {
		t.Fatalf("dropped{queue_full} = %d, want 3", n)
	}
	if n := metricValue(t, reader, "mcpid.audit.emitter.queue_depth"); n != 5 {
		t.Fatalf("queue_depth = %d, want 5", n)
	}

	close(gate)
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got := fake.snapshot().appended; !slices.Equal(got, append(first, queued...)) {
		t.Fatalf("chained %v, want the 6 accepted events", got)
	}
	if n := metricValue(t, reader, "mcpid.audit.emitter.events_sent"); n != 6 {
		t.Fatalf("events_sent = %d, want 6", n)
	}
}

func TestBatcherStrictReturnsOnlyAfterAcknowledgement(t *testing.T) {
	ctx := testCtx(t)
	fake := newFakeAuditService()
	gate := make(chan struct{})
	fake.set(func(f *fakeAuditService) { f.gate = gate })
	b := newBatcher(t, auditemit.BatcherConfig{Appender: fake.serve(t), Strict: true, MaxDelay: time.Hour})

	ev := policyDecision(1)
	result := make(chan error, 1)
	go func() { result <- b.Emit(ctx, ev) }()

	// Strict mode does not wait for MaxDelay: the call arrives at once.
	<-fake.started
	select {
	case err := <-result:
		t.Fatalf("Emit returned %v while audit had not answered", err)
	default:
	}
	close(gate)
	if err := <-result; err != nil {
		t.Fatalf("Emit = %v after acknowledgement", err)
	}
	if got := fake.snapshot().appended; !slices.Equal(got, []string{ev.GetId()}) {
		t.Fatalf("chained %v, want %s", got, ev.GetId())
	}
}

func TestBatcherStrictFailsWhenAppenderKeepsFailing(t *testing.T) {
	ctx := testCtx(t)
	fake := newFakeAuditService()
	fake.set(func(f *fakeAuditService) { f.failAlways = true })
	reader, mp := newMetricReader()
	b := newBatcher(t, auditemit.BatcherConfig{Appender: fake.direct(), Strict: true, MaxAttempts: 3, MeterProvider: mp})

	err := b.Emit(ctx, policyDecision(1))
	if !errors.Is(err, auditemit.ErrNotDelivered) {
		t.Fatalf("Emit = %v, want ErrNotDelivered", err)
	}
	if got := fake.snapshot(); len(got.calls) != 3 || len(got.appended) != 0 {
		t.Fatalf("%d calls, %d chained; want 3 attempts, nothing chained", len(got.calls), len(got.appended))
	}
	if n := metricValue(t, reader, "mcpid.audit.emitter.batches_failed"); n != 3 {
		t.Fatalf("batches_failed = %d, want 3", n)
	}
	if n := metricValue(t, reader, "mcpid.audit.emitter.events_dropped", reason(auditemit.DropSendFailed)); n != 1 {
		t.Fatalf("dropped{send_failed} = %d, want 1", n)
	}
}

func TestBatcherStrictReportsRejection(t *testing.T) {
	ctx := testCtx(t)
	fake := newFakeAuditService()
	ids := auditemit.NewIDGenerator(nil, nil)
	b := newBatcher(t, auditemit.BatcherConfig{Appender: fake.direct(), Strict: true, IDs: ids})
	id, err := ids.NewID()
	if err != nil {
		t.Fatal(err)
	}
	fake.set(func(f *fakeAuditService) { f.reject[id] = auditv1.ErrorReason_ERROR_REASON_INVALID_EVENT })
	ev := policyDecision(1)
	ev.Id = id

	err = b.Emit(ctx, ev)
	var rej *auditemit.RejectedError
	if !errors.Is(err, auditemit.ErrRejected) || !errors.As(err, &rej) || rej.Reason != auditv1.ErrorReason_ERROR_REASON_INVALID_EVENT || rej.EventID != id {
		t.Fatalf("Emit = %v, want a RejectedError for %s with INVALID_EVENT", err, id)
	}
	// A duplicate is a success.
	fake.preload("01KA0000000000000000000000")
	dup := policyDecision(2)
	dup.Id = "01KA0000000000000000000000"
	if err := b.Emit(ctx, dup); err != nil {
		t.Fatalf("Emit of an event audit already holds = %v, want nil", err)
	}
}

func TestBatcherStrictGivesUpWhenContextEnds(t *testing.T) {
	ctx := testCtx(t)
	fake := newFakeAuditService()
	fake.set(func(f *fakeAuditService) { f.gate = make(chan struct{}) }) // never answers
	b := newBatcher(t, auditemit.BatcherConfig{Appender: fake.direct(), Strict: true})

	ectx, cancel := context.WithCancel(ctx)
	result := make(chan error, 1)
	go func() { result <- b.Emit(ectx, policyDecision(1)) }()
	<-fake.started
	cancel()
	if err := <-result; !errors.Is(err, context.Canceled) {
		t.Fatalf("Emit = %v, want context.Canceled", err)
	}

	// Close cannot deliver the hanging call's event within its deadline.
	cctx, ccancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer ccancel()
	if err := b.Close(cctx); !errors.Is(err, auditemit.ErrNotDelivered) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close = %v, want ErrNotDelivered and DeadlineExceeded", err)
	}
}

func TestBatcherRetriesAFailedBatch(t *testing.T) {
	ctx := testCtx(t)
	fake := newFakeAuditService()
	fake.set(func(f *fakeAuditService) { f.failNext = 2 })
	reader, mp := newMetricReader()
	b := newBatcher(t, auditemit.BatcherConfig{Appender: fake.direct(), MaxAttempts: 3, MaxDelay: time.Millisecond, MeterProvider: mp})
	ids := emit(t, ctx, b, 4)
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got := fake.snapshot().appended; !slices.Equal(got, ids) {
		t.Fatalf("chained %v, want %v", got, ids)
	}
	if n := metricValue(t, reader, "mcpid.audit.emitter.batches_failed"); n != 2 {
		t.Fatalf("batches_failed = %d, want 2", n)
	}
	if n := metricValue(t, reader, "mcpid.audit.emitter.events_dropped"); n != 0 {
		t.Fatalf("events_dropped = %d, want 0", n)
	}
}

func TestBatcherCloseFlushes(t *testing.T) {
	ctx := testCtx(t)
	fake := newFakeAuditService()
	reader, mp := newMetricReader()
	b := newBatcher(t, auditemit.BatcherConfig{Appender: fake.direct(), MaxDelay: time.Hour, MeterProvider: mp})
	ids := emit(t, ctx, b, 7)
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got := fake.snapshot().appended; !slices.Equal(got, ids) {
		t.Fatalf("after Close chained %v, want %v", got, ids)
	}
	if err := b.Emit(ctx, policyDecision(8)); !errors.Is(err, auditemit.ErrClosed) {
		t.Fatalf("Emit after Close = %v, want ErrClosed", err)
	}
	if n := metricValue(t, reader, "mcpid.audit.emitter.events_dropped", reason(auditemit.DropClosed)); n != 1 {
		t.Fatalf("dropped{closed} = %d, want 1", n)
	}
	if err := b.Close(ctx); err != nil {
		t.Fatalf("second Close = %v", err)
	}
}

func TestBatcherRefusesInvalidEvents(t *testing.T) {
	ctx := testCtx(t)
	fake := newFakeAuditService()
	reader, mp := newMetricReader()
	b := newBatcher(t, auditemit.BatcherConfig{Appender: fake.direct(), MeterProvider: mp})
	// Registration events are not the policy service's to emit.
	if err := b.Emit(ctx, clientRegistered("c")); !errors.Is(err, auditemit.ErrInvalidEvent) {
		t.Fatalf("Emit = %v, want ErrInvalidEvent", err)
	}
	if n := metricValue(t, reader, "mcpid.audit.emitter.events_dropped", reason(auditemit.DropInvalid)); n != 1 {
		t.Fatalf("dropped{invalid} = %d, want 1", n)
	}
	if _, err := auditemit.NewBatcher(auditemit.BatcherConfig{Service: "policy"}); err == nil {
		t.Fatal("NewBatcher without an Appender succeeded")
	}
}

// ackAll answers every event APPENDED at once: the cheapest audit service,
// so that the benchmark measures Emit.
type ackAll struct{ calls atomic.Int64 }

func (a *ackAll) AppendEvents(_ context.Context, req *auditv1.AppendEventsRequest, _ ...grpc.CallOption) (*auditv1.AppendEventsResponse, error) {
	a.calls.Add(1)
	resp := &auditv1.AppendEventsResponse{Results: make([]*auditv1.AppendEventResult, len(req.GetEvents()))}
	for i, ev := range req.GetEvents() {
		resp.Results[i] = &auditv1.AppendEventResult{EventId: ev.GetId(), Status: auditv1.AppendEventStatus_APPEND_EVENT_STATUS_APPENDED}
	}
	return resp, nil
}

func BenchmarkBatcherEmit(b *testing.B) {
	reader, mp := newMetricReader()
	bt := newBatcher(b, auditemit.BatcherConfig{Appender: &ackAll{}, QueueSize: 1 << 16, MaxDelay: 10 * time.Millisecond, MeterProvider: mp})
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			ev := &auditv1.Event{
				Type:     auditv1.EventType_EVENT_TYPE_POLICY_DECISION,
				Actor:    &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_MCP_SERVER, Id: "https://mcp.example.test"},
				Resource: "https://mcp.example.test",
				Tool:     "search",
				Decision: auditv1.Decision_DECISION_ALLOW,
			}
			_ = bt.Emit(ctx, ev) // a full queue drops, as in production
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(metricValue(b, reader, "mcpid.audit.emitter.events_dropped"))/float64(b.N), "dropped/op")
}
