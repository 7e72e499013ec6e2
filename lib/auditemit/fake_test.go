package auditemit_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/lib/auditemit"
)

// fakeAuditService is a TEST FAKE of the audit service's AppendEvents: the
// real audit service does not exist yet. It models what the contract
// promises producers — idempotency by event id (an id appended before is
// answered DUPLICATE and not appended again), per-event REJECTED results,
// one result per event in request order — and records every call. It can be
// told to fail calls, to lose its answer after appending, to reject chosen
// ids, and to hold calls until released.
type fakeAuditService struct {
	auditv1.UnimplementedAuditServiceServer

	mu         sync.Mutex
	calls      [][]string // ids of every call that reached the fake, failed ones included
	sizes      []int      // proto.Size of every request
	appended   []string   // ids in the order they were first appended: the chain
	seen       map[string]bool
	duplicates int
	failed     int

	failNext    int  // the next n calls fail with UNAVAILABLE, appending nothing
	failAlways  bool // every call fails with UNAVAILABLE
	loseAnswers int  // the next n calls append, then fail (the answer is lost)
	reject      map[string]auditv1.ErrorReason
	gate        chan struct{}  // when set, calls wait until it is closed or their ctx ends
	afterCall   func(call int) // called (unlocked) after each call has been handled
	started     chan struct{}  // receives a value (if room) when a call starts
}

func newFakeAuditService() *fakeAuditService {
	return &fakeAuditService{
		seen:    map[string]bool{},
		reject:  map[string]auditv1.ErrorReason{},
		started: make(chan struct{}, 1000),
	}
}

// AppendEvents implements the server side (auditv1.AuditServiceServer).
func (f *fakeAuditService) AppendEvents(ctx context.Context, req *auditv1.AppendEventsRequest) (*auditv1.AppendEventsResponse, error) {
	select {
	case f.started <- struct{}{}:
	default:
	}
	f.mu.Lock()
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}

	f.mu.Lock()
	ids := make([]string, len(req.GetEvents()))
	for i, ev := range req.GetEvents() {
		ids[i] = ev.GetId()
	}
	f.calls = append(f.calls, ids)
	f.sizes = append(f.sizes, proto.Size(req))
	call := len(f.calls)
	resp, err := f.handleLocked(req)
	after := f.afterCall
	f.mu.Unlock()
	if after != nil {
		after(call)
	}
	return resp, err
}

func (f *fakeAuditService) handleLocked(req *auditv1.AppendEventsRequest) (*auditv1.AppendEventsResponse, error) {
	if len(req.GetEvents()) == 0 || len(req.GetEvents()) > auditemit.MaxBatchEvents || proto.Size(req) > auditemit.MaxBatchBytes {
		f.failed++
		return nil, status.Error(codes.InvalidArgument, "batch too large or empty")
	}
	if f.failAlways || f.failNext > 0 {
		if f.failNext > 0 {
			f.failNext--
		}
		f.failed++
		return nil, status.Error(codes.Unavailable, "fake: audit unavailable")
	}
	resp := &auditv1.AppendEventsResponse{}
	for _, ev := range req.GetEvents() {
		r := &auditv1.AppendEventResult{EventId: ev.GetId()}
		switch reason, rejected := f.reject[ev.GetId()]; {
		case rejected:
			r.Status = auditv1.AppendEventStatus_APPEND_EVENT_STATUS_REJECTED
			r.Reason = reason
			r.Message = "fake: rejected on request"
		case f.seen[ev.GetId()]:
			r.Status = auditv1.AppendEventStatus_APPEND_EVENT_STATUS_DUPLICATE
			f.duplicates++
		default:
			f.seen[ev.GetId()] = true
			f.appended = append(f.appended, ev.GetId())
			r.Status = auditv1.AppendEventStatus_APPEND_EVENT_STATUS_APPENDED
		}
		r.Sequence = uint64(slices.Index(f.appended, ev.GetId()) + 1)
		resp.Results = append(resp.Results, r)
	}
	if f.loseAnswers > 0 {
		f.loseAnswers--
		f.failed++
		return nil, status.Error(codes.Unavailable, "fake: answer lost after appending")
	}
	return resp, nil
}

// preload marks ids as appended earlier (a previous relay's work).
func (f *fakeAuditService) preload(ids ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range ids {
		f.seen[id] = true
		f.appended = append(f.appended, id)
	}
}

func (f *fakeAuditService) set(fn func(f *fakeAuditService)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

type fakeSnapshot struct {
	calls      [][]string
	sizes      []int
	appended   []string
	duplicates int
	failed     int
}

func (f *fakeAuditService) snapshot() fakeSnapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	calls := make([][]string, len(f.calls))
	for i, c := range f.calls {
		calls[i] = slices.Clone(c)
	}
	return fakeSnapshot{calls: calls, sizes: slices.Clone(f.sizes), appended: slices.Clone(f.appended), duplicates: f.duplicates, failed: f.failed}
}

// direct returns an Appender calling the fake in-process.
func (f *fakeAuditService) direct() auditemit.Appender { return directAppender{f} }

type directAppender struct{ f *fakeAuditService }

func (d directAppender) AppendEvents(ctx context.Context, req *auditv1.AppendEventsRequest, _ ...grpc.CallOption) (*auditv1.AppendEventsResponse, error) {
	return d.f.AppendEvents(ctx, req)
}

// serve runs the fake as a real gRPC server on 127.0.0.1 and returns the
// generated client, which is the Appender services will use.
func (f *fakeAuditService) serve(t *testing.T) auditemit.Appender {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	auditv1.RegisterAuditServiceServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return auditv1.NewAuditServiceClient(cc)
}

// testCtx bounds every test: a hang fails it instead of stalling the run.
func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond every 10ms for at most limit; limit is a bound on a
// hang, not a timing assertion.
func eventually(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

const waitLimit = 30 * time.Second

func policyDecision(i int) *auditv1.Event {
	return &auditv1.Event{
		Type:     auditv1.EventType_EVENT_TYPE_POLICY_DECISION,
		Actor:    &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_MCP_SERVER, Id: "https://mcp.example.test"},
		Resource: "https://mcp.example.test",
		Tool:     fmt.Sprintf("tool-%d", i),
		Decision: auditv1.Decision_DECISION_DENY,
		Reason:   "missing_scope",
	}
}

func clientRegistered(clientID string) *auditv1.Event {
	return &auditv1.Event{
		Type:     auditv1.EventType_EVENT_TYPE_CLIENT_REGISTERED,
		Actor:    &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_ANONYMOUS},
		ClientId: clientID,
	}
}
