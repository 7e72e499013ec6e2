package service

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/lib/telemetry"
)

// replica is one audit replica for the balancing tests: a real gRPC server
// on loopback with the health service, counting the calls it answers.
// QueryEvents is idempotent (retried), ErasePersonalData is a write (never
// retried by the channel).
type replica struct {
	auditv1.UnimplementedAuditServiceServer
	addr   string
	health *health.Server
	calls  atomic.Int64
	// failFirst answers this many calls with failCode before succeeding.
	failFirst atomic.Int64
	failCode  codes.Code
	// sawDeadline counts calls that arrived with a deadline.
	sawDeadline atomic.Int64
}

func startReplica(t *testing.T) *replica {
	t.Helper()
	var lc net.ListenConfig
	lis, err := lc.Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{addr: lis.Addr().String(), health: health.NewServer(), failCode: codes.Unavailable}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, r.health)
	auditv1.RegisterAuditServiceServer(srv, r)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return r
}

func (r *replica) answer(ctx context.Context) error {
	r.calls.Add(1)
	if _, ok := ctx.Deadline(); ok {
		r.sawDeadline.Add(1)
	}
	if r.failFirst.Add(-1) >= 0 {
		return status.Error(r.failCode, "injected failure")
	}
	return nil
}

func (r *replica) QueryEvents(ctx context.Context, _ *auditv1.QueryEventsRequest) (*auditv1.QueryEventsResponse, error) {
	if err := r.answer(ctx); err != nil {
		return nil, err
	}
	return &auditv1.QueryEventsResponse{}, nil
}

func (r *replica) ErasePersonalData(ctx context.Context, _ *auditv1.ErasePersonalDataRequest) (*auditv1.ErasePersonalDataResponse, error) {
	if err := r.answer(ctx); err != nil {
		return nil, err
	}
	return &auditv1.ErasePersonalDataResponse{}, nil
}

func testBase(t *testing.T) *Base {
	t.Helper()
	tel, err := telemetry.New(t.Context(), telemetry.Config{ServiceName: "mcpid-test"})
	if err != nil {
		t.Fatal(err)
	}
	b := &Base{Name: "test", Telemetry: tel}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	return b
}

func dialAudit(t *testing.T, addr string) auditv1.AuditServiceClient {
	t.Helper()
	conn, err := testBase(t).Dial(addr, "audit")
	if err != nil {
		t.Fatal(err)
	}
	return auditv1.NewAuditServiceClient(conn)
}

func query(ctx context.Context, c auditv1.AuditServiceClient) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := c.QueryEvents(ctx, &auditv1.QueryEventsRequest{})
	return err
}

// waitBoth polls until both replicas have answered (round robin connects
// to every address; the first calls may all land on whichever was ready
// first).
func waitBoth(t *testing.T, c auditv1.AuditServiceClient, a, b *replica) {
	t.Helper()
	for i := 0; i < 500 && (a.calls.Load() == 0 || b.calls.Load() == 0); i++ {
		if err := query(t.Context(), c); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if a.calls.Load() == 0 || b.calls.Load() == 0 {
		t.Fatalf("calls not spread: %d and %d", a.calls.Load(), b.calls.Load())
	}
}

func TestDialSpreadsCallsOverAddressList(t *testing.T) {
	a, b := startReplica(t), startReplica(t)
	c := dialAudit(t, a.addr+", "+b.addr)
	waitBoth(t, c, a, b)
	a.calls.Store(0)
	b.calls.Store(0)
	for range 20 {
		if err := query(t.Context(), c); err != nil {
			t.Fatal(err)
		}
	}
	// Round robin over two ready replicas alternates exactly.
	if a.calls.Load() != 10 || b.calls.Load() != 10 {
		t.Fatalf("20 calls split %d/%d, want 10/10", a.calls.Load(), b.calls.Load())
	}
}

func TestDialSingleAddressStillWorks(t *testing.T) {
	a := startReplica(t)
	c := dialAudit(t, a.addr)
	if err := query(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	if a.calls.Load() != 1 {
		t.Fatalf("calls = %d, want 1", a.calls.Load())
	}
}

func TestDialDNSTargetPassesThrough(t *testing.T) {
	a := startReplica(t)
	_, port, _ := net.SplitHostPort(a.addr)
	c := dialAudit(t, "dns:///127.0.0.1:"+port)
	if err := query(t.Context(), c); err != nil {
		t.Fatal(err)
	}
}

func TestDialSkipsNotServingReplica(t *testing.T) {
	a, b := startReplica(t), startReplica(t)
	c := dialAudit(t, a.addr+","+b.addr)
	waitBoth(t, c, a, b)

	a.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	// The health watch reaches the client asynchronously: poll until a
	// round of calls leaves a untouched.
	ok := false
	for i := 0; i < 200 && !ok; i++ {
		before := a.calls.Load()
		for range 10 {
			if err := query(t.Context(), c); err != nil {
				t.Fatal(err)
			}
		}
		ok = a.calls.Load() == before
		time.Sleep(10 * time.Millisecond)
	}
	if !ok {
		t.Fatal("calls still reach the NOT_SERVING replica")
	}

	a.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	before := a.calls.Load()
	for i := 0; i < 500 && a.calls.Load() == before; i++ {
		if err := query(t.Context(), c); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if a.calls.Load() == before {
		t.Fatal("the replica serving again gets no calls")
	}
}

func TestDialRetriesIdempotentCallOnUnavailable(t *testing.T) {
	a := startReplica(t)
	c := dialAudit(t, a.addr)
	a.failFirst.Store(2)
	if err := query(t.Context(), c); err != nil {
		t.Fatalf("idempotent call not retried: %v", err)
	}
	if got := a.calls.Load(); got != 3 {
		t.Fatalf("attempts = %d, want 3 (two failures, then success)", got)
	}
}

func TestDialDoesNotRetryIdempotentCallOnOtherCodes(t *testing.T) {
	a := startReplica(t)
	a.failCode = codes.Internal
	c := dialAudit(t, a.addr)
	a.failFirst.Store(1)
	err := query(t.Context(), c)
	if status.Code(err) != codes.Internal {
		t.Fatalf("err = %v, want INTERNAL", err)
	}
	if got := a.calls.Load(); got != 1 {
		t.Fatalf("attempts = %d, want 1", got)
	}
}

func TestDialNeverRetriesWrites(t *testing.T) {
	a := startReplica(t)
	c := dialAudit(t, a.addr)
	a.failFirst.Store(1)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err := c.ErasePersonalData(ctx, &auditv1.ErasePersonalDataRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("err = %v, want UNAVAILABLE passed to the caller", err)
	}
	if got := a.calls.Load(); got != 1 {
		t.Fatalf("attempts = %d, want 1: a write must not be repeated by the channel", got)
	}
}

func TestDialGivesCallsADefaultDeadline(t *testing.T) {
	a := startReplica(t)
	c := dialAudit(t, a.addr)
	// No deadline on the caller's context.
	if _, err := c.QueryEvents(t.Context(), &auditv1.QueryEventsRequest{}); err != nil {
		t.Fatal(err)
	}
	if a.sawDeadline.Load() != 1 {
		t.Fatal("a call without a deadline reached the server without one")
	}
}

func TestIdempotentMethodsExcludeNonIdempotentWrites(t *testing.T) {
	for _, m := range IdempotentMethods {
		for _, w := range []string{"/Token", "/AuthenticateClient", "/RegisterClient", "/Revoke", "/Create", "/Delete", "/Update", "/Put", "/Publish", "/Erase", "/Rotate", "/Set"} {
			if strings.Contains(m, w) {
				t.Errorf("%s is a write and must not be retried", m)
			}
		}
	}
}

func TestDialRefusesBadAddressList(t *testing.T) {
	b := testBase(t)
	for _, addr := range []string{"", "127.0.0.1:1,", "127.0.0.1:1,nohostport", "127.0.0.1:1,dns:///x:1"} {
		if _, err := b.Dial(addr, "audit"); err == nil {
			t.Errorf("Dial(%q) = nil error", addr)
		}
	}
}
