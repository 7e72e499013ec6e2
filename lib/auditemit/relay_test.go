package auditemit_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/structpb"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/lib/auditemit"
	"github.com/mcpid/mcpid/lib/etcdstore"
	"github.com/mcpid/mcpid/lib/etcdtest"
)

type relayEnv struct {
	srv   *etcdtest.Server
	c     *clientv3.Client
	store *etcdstore.Store
	ob    *auditemit.Outbox
	dead  etcdstore.Prefix
	fake  *fakeAuditService
	n     int
}

func newRelayEnv(t *testing.T) *relayEnv {
	t.Helper()
	srv := etcdtest.Start(t)
	c := srv.Client(t)
	dead, err := auditemit.DeadLetterPrefix("registration")
	if err != nil {
		t.Fatal(err)
	}
	return &relayEnv{srv: srv, c: c, store: etcdstore.New(c), ob: newOutbox(t, "registration", nil), dead: dead, fake: newFakeAuditService()}
}

// write makes n state changes, each with its event in its own transaction,
// and returns the event ids in creation order.
func (e *relayEnv) write(t *testing.T, ctx context.Context, n int, details *structpb.Struct) []string {
	t.Helper()
	ids := make([]string, 0, n)
	for range n {
		e.n++
		ev := clientRegistered("client-" + strings.Repeat("x", e.n%3) + string(rune('a'+e.n%26)))
		ev.Details = details
		op, err := e.ob.Op(ctx, ev)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.store.Create(ctx, registrationPrefix.Key("clients", ev.GetId()), []byte("c"), op); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, ev.GetId())
	}
	return ids
}

func (e *relayEnv) outbox(t *testing.T, ctx context.Context) []string {
	t.Helper()
	return outboxKeys(t, ctx, e.c, e.ob.Prefix())
}

// startRelay runs r until the returned stop is called (or the test ends).
func startRelay(t *testing.T, ctx context.Context, r *auditemit.Relay) (stop func()) {
	t.Helper()
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("Run returned %v, want context.Canceled", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func newRelay(t *testing.T, cfg auditemit.RelayConfig) *auditemit.Relay {
	t.Helper()
	if cfg.Service == "" {
		cfg.Service = "registration"
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff, cfg.MaxBackoff = time.Millisecond, 10*time.Millisecond
	}
	r, err := auditemit.NewRelay(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// waitDrained waits until the outbox is empty and the fake chained want
// events.
func (e *relayEnv) waitDrained(t *testing.T, ctx context.Context, want int) fakeSnapshot {
	t.Helper()
	eventually(t, waitLimit, "the outbox to drain", func() bool {
		return len(e.outbox(t, ctx)) == 0 && len(e.fake.snapshot().appended) >= want
	})
	return e.fake.snapshot()
}

func TestRelayDeliversInIDOrderAndDeletes(t *testing.T) {
	ctx := testCtx(t)
	e := newRelayEnv(t)
	ids := e.write(t, ctx, 30, nil)

	// Over real gRPC: the generated client is the Appender.
	r := newRelay(t, auditemit.RelayConfig{Client: e.c, Appender: e.fake.serve(t), MaxBatchEvents: 8})
	startRelay(t, ctx, r)
	e.waitDrained(t, ctx, 30)

	// Events written while the relay watches are delivered too.
	ids = append(ids, e.write(t, ctx, 10, nil)...)
	got := e.waitDrained(t, ctx, 40)

	if !slices.Equal(got.appended, ids) {
		t.Fatalf("chained %v,\nwant in id order %v", got.appended, ids)
	}
	if !slices.IsSorted(ids) {
		t.Fatal("ids of one outbox are not increasing")
	}
	var sent []string
	for _, call := range got.calls {
		if len(call) > 8 {
			t.Errorf("a batch of %d events, more than MaxBatchEvents 8", len(call))
		}
		sent = append(sent, call...)
	}
	if !slices.Equal(sent, ids) || got.duplicates != 0 {
		t.Fatalf("sent %v (%d duplicates): every event should be sent once, in order", sent, got.duplicates)
	}
}

func TestRelayRetriesWithoutLossOrReordering(t *testing.T) {
	ctx := testCtx(t)
	e := newRelayEnv(t)
	ids := e.write(t, ctx, 20, nil)
	// Three calls fail outright, then one appends but its answer is lost.
	e.fake.set(func(f *fakeAuditService) { f.failNext = 3; f.loseAnswers = 1 })

	r := newRelay(t, auditemit.RelayConfig{Client: e.c, Appender: e.fake.direct(), MaxBatchEvents: 5})
	startRelay(t, ctx, r)
	got := e.waitDrained(t, ctx, 20)

	if !slices.Equal(got.appended, ids) {
		t.Fatalf("chained %v,\nwant every event once, in id order: %v", got.appended, ids)
	}
	if got.failed != 4 {
		t.Fatalf("failed calls = %d, want 4", got.failed)
	}
	// The batch whose answer was lost was sent again and answered DUPLICATE.
	if got.duplicates != 5 {
		t.Fatalf("duplicates = %d, want the 5 events of the batch whose answer was lost", got.duplicates)
	}
	// Every call, retries included, carries a run of consecutive ids in
	// order: nothing is skipped or reordered.
	for i, call := range got.calls {
		at := slices.Index(ids, call[0])
		if at < 0 || at+len(call) > len(ids) || !slices.Equal(call, ids[at:at+len(call)]) {
			t.Fatalf("call %d sent %v: not a run of consecutive ids", i, call)
		}
	}
}

func TestRelayMovesRejectedEventsToDeadLetter(t *testing.T) {
	ctx := testCtx(t)
	e := newRelayEnv(t)
	ids := e.write(t, ctx, 6, nil)
	rejected := ids[2]
	e.fake.set(func(f *fakeAuditService) {
		f.reject[rejected] = auditv1.ErrorReason_ERROR_REASON_EVENT_TYPE_NOT_ALLOWED
	})
	rejectedValue, err := e.store.Get(ctx, e.ob.Key(rejected))
	if err != nil {
		t.Fatal(err)
	}
	// An entry that is not an event at all must not block the outbox either.
	garbageKey := e.ob.Key(ids[4] + "G")
	if _, err := e.c.Put(ctx, garbageKey, "not a protobuf \xff\xff"); err != nil {
		t.Fatal(err)
	}

	var logs syncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	r := newRelay(t, auditemit.RelayConfig{Client: e.c, Appender: e.fake.direct(), Logger: log})
	startRelay(t, ctx, r)
	got := e.waitDrained(t, ctx, 5)

	want := slices.DeleteFunc(slices.Clone(ids), func(id string) bool { return id == rejected })
	if !slices.Equal(got.appended, want) {
		t.Fatalf("chained %v, want %v", got.appended, want)
	}
	deadKeys := outboxKeys(t, ctx, e.c, e.dead)
	wantDead := []string{string(e.dead) + rejected, string(e.dead) + ids[4] + "G"}
	if !slices.Equal(deadKeys, wantDead) {
		t.Fatalf("dead letter = %v, want %v", deadKeys, wantDead)
	}
	kv, err := e.store.Get(ctx, wantDead[0])
	if err != nil || !bytes.Equal(kv.Value, rejectedValue.Value) {
		t.Fatalf("dead-lettered value differs from the outbox value (%v)", err)
	}
	for _, s := range []string{"ERROR_REASON_EVENT_TYPE_NOT_ALLOWED", rejected, "undecodable"} {
		if !strings.Contains(logs.String(), s) {
			t.Errorf("log does not mention %q:\n%s", s, logs.String())
		}
	}
}

func TestRelayTreatsDuplicateAsDelivered(t *testing.T) {
	ctx := testCtx(t)
	e := newRelayEnv(t)
	ids := e.write(t, ctx, 10, nil)
	// A previous relay got the first four chained but crashed before
	// deleting them.
	e.fake.preload(ids[:4]...)

	r := newRelay(t, auditemit.RelayConfig{Client: e.c, Appender: e.fake.direct()})
	startRelay(t, ctx, r)
	got := e.waitDrained(t, ctx, 10)
	if !slices.Equal(got.appended, ids) || got.duplicates != 4 {
		t.Fatalf("chained %v with %d duplicates; want each id once and 4 duplicates", got.appended, got.duplicates)
	}
}

func TestRelayRestartDeliversWhatIsLeft(t *testing.T) {
	ctx := testCtx(t)
	e := newRelayEnv(t)
	ids := e.write(t, ctx, 40, nil)

	// The first relay dies during its third call, after audit appended the
	// batch but before the relay could delete it: the worst moment.
	rctx, crash := context.WithCancel(ctx)
	e.fake.set(func(f *fakeAuditService) {
		f.afterCall = func(call int) {
			if call == 3 {
				crash()
			}
		}
	})
	first := newRelay(t, auditemit.RelayConfig{Client: e.c, Appender: lostAnswerOn(e.fake, 3), MaxBatchEvents: 5})
	if err := first.Run(rctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("first relay: Run = %v", err)
	}
	left := e.outbox(t, ctx)
	if len(left) != 30 {
		t.Fatalf("after the crash the outbox holds %d events, want 30 (two batches delivered)", len(left))
	}
	e.fake.set(func(f *fakeAuditService) { f.afterCall = nil })

	second := newRelay(t, auditemit.RelayConfig{Client: e.c, Appender: e.fake.direct(), MaxBatchEvents: 5})
	startRelay(t, ctx, second)
	got := e.waitDrained(t, ctx, 40)
	if !slices.Equal(got.appended, ids) {
		t.Fatalf("chained %v,\nwant every event exactly once in id order: %v", got.appended, ids)
	}
	if got.duplicates != 5 {
		t.Fatalf("duplicates = %d, want the 5 events appended before the crash", got.duplicates)
	}
}

// lostAnswerOn makes call n of the fake (appended normally) look failed to
// the relay: a crash between audit's answer and the relay's delete.
func lostAnswerOn(f *fakeAuditService, n int) auditemit.Appender {
	return appenderFunc(func(ctx context.Context, req *auditv1.AppendEventsRequest) (*auditv1.AppendEventsResponse, error) {
		resp, err := f.AppendEvents(ctx, req)
		if len(f.snapshot().calls) == n {
			return nil, errors.New("connection lost")
		}
		return resp, err
	})
}

func TestRelayCatchesUpAfterCompaction(t *testing.T) {
	ctx := testCtx(t)
	e := newRelayEnv(t)

	// The relay finds the outbox empty and opens its watch; the watch is held
	// back until events were written and the revision it starts from was
	// compacted, so etcd answers the watch "compacted".
	requested := make(chan struct{})
	proceed := make(chan struct{})
	client := &holdFirstWatch{Client: e.c, requested: requested, proceed: proceed}
	var logs syncBuffer
	r := newRelay(t, auditemit.RelayConfig{Client: client, Appender: e.fake.direct(),
		Logger: slog.New(slog.NewJSONHandler(&logs, nil)), ResyncInterval: time.Hour})
	startRelay(t, ctx, r)

	select {
	case <-requested:
	case <-ctx.Done():
		t.Fatal("the relay never watched")
	}
	ids := e.write(t, ctx, 3, nil)
	e.srv.Compact(t, 0)
	close(proceed)

	got := e.waitDrained(t, ctx, 3)
	if !slices.Equal(got.appended, ids) {
		t.Fatalf("chained %v, want %v", got.appended, ids)
	}
	if !strings.Contains(logs.String(), "compacted") {
		t.Fatalf("the relay did not go through the compaction path:\n%s", logs.String())
	}
	// And it keeps watching afterwards.
	more := e.write(t, ctx, 2, nil)
	got = e.waitDrained(t, ctx, 5)
	if !slices.Equal(got.appended, append(ids, more...)) {
		t.Fatalf("chained %v", got.appended)
	}
}

// holdFirstWatch delays the relay's first Watch call until the test says.
type holdFirstWatch struct {
	*clientv3.Client
	once      sync.Once
	requested chan struct{}
	proceed   chan struct{}
}

func (h *holdFirstWatch) Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan {
	h.once.Do(func() {
		close(h.requested)
		select {
		case <-h.proceed:
		case <-ctx.Done():
		}
	})
	return h.Client.Watch(ctx, key, opts...)
}

func TestRelayBatchesWithinByteLimit(t *testing.T) {
	ctx := testCtx(t)
	e := newRelayEnv(t)
	details, err := structpb.NewStruct(map[string]any{"redirect_uris": strings.Repeat("u", 3000)})
	if err != nil {
		t.Fatal(err)
	}
	ids := e.write(t, ctx, 20, details)

	const maxBytes = 10_000
	r := newRelay(t, auditemit.RelayConfig{Client: e.c, Appender: e.fake.direct(), MaxBatchEvents: 7, MaxBatchBytes: maxBytes})
	startRelay(t, ctx, r)
	got := e.waitDrained(t, ctx, 20)
	if !slices.Equal(got.appended, ids) {
		t.Fatalf("chained %v, want %v", got.appended, ids)
	}
	for i, size := range got.sizes {
		if size > maxBytes || len(got.calls[i]) > 7 {
			t.Errorf("call %d: %d events, %d bytes; limits 7 and %d", i, len(got.calls[i]), size, maxBytes)
		}
	}
	if len(got.calls) < 20*3000/maxBytes {
		t.Fatalf("%d calls: the byte limit did not split the batches", len(got.calls))
	}
}

func TestRelayWithoutAppenderKeepsTheOutbox(t *testing.T) {
	ctx := testCtx(t)
	e := newRelayEnv(t)
	ids := e.write(t, ctx, 5, nil)

	var logs syncBuffer
	r := newRelay(t, auditemit.RelayConfig{Client: e.c, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	stop := startRelay(t, ctx, r)
	eventually(t, waitLimit, "the relay to start", func() bool { return strings.Contains(logs.String(), "no audit service") })
	stop()
	left := e.outbox(t, ctx)
	if len(left) != len(ids) {
		t.Fatalf("outbox = %v, want all %d events kept", left, len(ids))
	}
}

func TestNewRelayValidates(t *testing.T) {
	srv := etcdtest.Start(t)
	if _, err := auditemit.NewRelay(auditemit.RelayConfig{Service: "registration"}); err == nil {
		t.Error("NewRelay without a client succeeded")
	}
	if _, err := auditemit.NewRelay(auditemit.RelayConfig{Client: srv.Client(t), Service: "nope"}); err == nil {
		t.Error("NewRelay for an unknown service succeeded")
	}
}

type appenderFunc func(context.Context, *auditv1.AppendEventsRequest) (*auditv1.AppendEventsResponse, error)

func (f appenderFunc) AppendEvents(ctx context.Context, req *auditv1.AppendEventsRequest, _ ...grpc.CallOption) (*auditv1.AppendEventsResponse, error) {
	return f(ctx, req)
}

// syncBuffer is a log sink safe for the relay's goroutine and the test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
