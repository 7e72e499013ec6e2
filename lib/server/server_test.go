package server

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

// blockingService is a real gRPC service whose UnaryCall blocks until
// released (or forever, to model a hung handler).
type blockingService struct {
	testpb.UnimplementedTestServiceServer
	started   chan struct{}
	release   chan struct{}
	ignoreCtx bool
}

func (b *blockingService) UnaryCall(ctx context.Context, _ *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	close(b.started)
	if b.ignoreCtx {
		<-b.release
	} else {
		select {
		case <-b.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return &testpb.SimpleResponse{Username: "done"}, nil
}

type running struct {
	srv    *Server
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, cfg Config) *running {
	t.Helper()
	srv, err := cfg.Complete(context.Background())
	if err != nil {
		t.Fatalf("Complete: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{srv: srv, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("server did not stop")
		}
	})
	return r
}

func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // let Cleanup see it too
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return")
		return nil
	}
}

func dial(t *testing.T, addr net.Addr) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestHealthFollowsReadiness(t *testing.T) {
	var ready atomic.Bool
	r := start(t, Config{
		Name:          "svc",
		HTTPAddr:      "127.0.0.1:0",
		ReadyInterval: 20 * time.Millisecond,
		Ready: []Check{func(context.Context) error {
			if !ready.Load() {
				return errors.New("etcd not answering")
			}
			return nil
		}},
	})
	hc := healthpb.NewHealthClient(dial(t, r.srv.GRPCAddr()))
	base := "http://" + r.srv.HTTPAddr().String()
	healthOf := func() healthpb.HealthCheckResponse_ServingStatus {
		resp, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: "svc"})
		if err != nil {
			t.Fatalf("health check: %v", err)
		}
		return resp.GetStatus()
	}

	if st := healthOf(); st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("before ready: %v, want NOT_SERVING", st)
	}
	if code, _ := httpGet(t, base+"/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz before ready = %d, want 503", code)
	}
	if code, _ := httpGet(t, base+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d, want 200", code)
	}

	ready.Store(true)
	waitFor(t, "SERVING", func() bool { return healthOf() == healthpb.HealthCheckResponse_SERVING })
	if code, _ := httpGet(t, base+"/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz after ready = %d, want 200", code)
	}

	// Losing the dependency takes the service out of rotation again.
	ready.Store(false)
	waitFor(t, "NOT_SERVING", func() bool { return healthOf() == healthpb.HealthCheckResponse_NOT_SERVING })
	waitFor(t, "/readyz 503", func() bool { c, _ := httpGet(t, base+"/readyz"); return c == http.StatusServiceUnavailable })
}

func TestGracefulShutdownFinishesInFlight(t *testing.T) {
	svc := &blockingService{started: make(chan struct{}), release: make(chan struct{})}
	r := start(t, Config{
		Name:            "svc",
		ShutdownTimeout: 20 * time.Second,
		DrainDelay:      50 * time.Millisecond,
		RegisterGRPC:    func(s *grpc.Server) { testpb.RegisterTestServiceServer(s, svc) },
	})
	conn := dial(t, r.srv.GRPCAddr())
	hc := healthpb.NewHealthClient(conn)
	// Watch health so we can see it go down before the RPC finishes.
	watch, err := hc.Watch(context.Background(), &healthpb.HealthCheckRequest{Service: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatal(err)
	}

	result := make(chan error, 1)
	go func() {
		resp, err := testpb.NewTestServiceClient(conn).UnaryCall(context.Background(), &testpb.SimpleRequest{})
		if err == nil && resp.GetUsername() != "done" {
			err = errors.New("unexpected response")
		}
		result <- err
	}()
	<-svc.started

	stopped := make(chan error, 1)
	go func() { stopped <- r.stop(t) }()
	// Health reports NOT_SERVING while the RPC is still in flight.
	for {
		msg, err := watch.Recv()
		if err != nil {
			t.Fatalf("health watch ended before NOT_SERVING: %v", err)
		}
		if msg.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING {
			break
		}
	}
	select {
	case err := <-stopped:
		t.Fatalf("Run returned (%v) while an RPC was in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(svc.release)
	if err := <-result; err != nil {
		t.Fatalf("in-flight RPC failed: %v", err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func TestShutdownBoundedWhenHandlerHangs(t *testing.T) {
	svc := &blockingService{started: make(chan struct{}), release: make(chan struct{}), ignoreCtx: true}
	defer close(svc.release) // let the hung handler goroutine end after the test
	r := start(t, Config{
		Name:            "svc",
		ShutdownTimeout: 100 * time.Millisecond,
		RegisterGRPC:    func(s *grpc.Server) { testpb.RegisterTestServiceServer(s, svc) },
	})
	conn := dial(t, r.srv.GRPCAddr())
	result := make(chan error, 1)
	go func() {
		_, err := testpb.NewTestServiceClient(conn).UnaryCall(context.Background(), &testpb.SimpleRequest{})
		result <- err
	}()
	<-svc.started
	if err := r.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	// The hung RPC was cut off by the hard stop, not completed.
	err := <-result
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("hung RPC error = %v, want Unavailable", err)
	}
}

func TestCompleteFailureClosesWhatItOpened(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	grpcLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	grpcAddr := grpcLis.Addr().String()
	grpcLis.Close()

	_, err = Config{Name: "svc", GRPCAddr: grpcAddr, HTTPAddr: taken.Addr().String()}.Complete(context.Background())
	if err == nil {
		t.Fatal("Complete succeeded on a taken port")
	}
	if !strings.Contains(err.Error(), "already in use") || !strings.Contains(err.Error(), taken.Addr().String()) {
		t.Fatalf("error does not name the taken address: %v", err)
	}
	// The gRPC listener opened before the failure was closed again.
	again, err := net.Listen("tcp", grpcAddr)
	if err != nil {
		t.Fatalf("gRPC port still held after failed Complete: %v", err)
	}
	again.Close()
}

func TestCloserStackReverseOrder(t *testing.T) {
	var order []string
	var s closerStack
	for _, name := range []string{"etcd", "listener", "gateway"} {
		s.push(name, func(context.Context) error {
			order = append(order, name)
			if name == "listener" {
				return errors.New("boom")
			}
			return nil
		})
	}
	err := s.close(context.Background())
	if got := strings.Join(order, ","); got != "gateway,listener,etcd" {
		t.Fatalf("close order %s", got)
	}
	if err == nil || !strings.Contains(err.Error(), "close listener: boom") {
		t.Fatalf("error %v does not name the failing closer", err)
	}
	order = nil
	if err := s.close(context.Background()); err != nil || len(order) != 0 {
		t.Fatalf("second close ran closers again: %v %v", order, err)
	}
}

// streamingService streams until its context ends.
type streamingService struct {
	testpb.UnimplementedTestServiceServer
	started chan struct{}
}

func (s *streamingService) StreamingOutputCall(_ *testpb.StreamingOutputCallRequest, stream testpb.TestService_StreamingOutputCallServer) error {
	if err := stream.Send(&testpb.StreamingOutputCallResponse{}); err != nil {
		return err
	}
	close(s.started)
	<-stream.Context().Done()
	return stream.Context().Err()
}

// TestShutdownEndsStreams: a long-lived stream (a tail, a revocation feed)
// ends with UNAVAILABLE when shutdown begins, well before the graceful
// bound, so its client reconnects elsewhere.
func TestShutdownEndsStreams(t *testing.T) {
	svc := &streamingService{started: make(chan struct{})}
	r := start(t, Config{
		Name:            "svc",
		ShutdownTimeout: 30 * time.Second,
		RegisterGRPC:    func(s *grpc.Server) { testpb.RegisterTestServiceServer(s, svc) },
	})
	stream, err := testpb.NewTestServiceClient(dial(t, r.srv.GRPCAddr())).StreamingOutputCall(context.Background(), &testpb.StreamingOutputCallRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	<-svc.started
	stopped := make(chan error, 1)
	go func() { stopped <- r.stop(t) }()
	_, err = stream.Recv()
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("stream ended with %v, want Unavailable", err)
	}
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(25 * time.Second):
		t.Fatal("shutdown waited for the stream's graceful deadline")
	}
}
