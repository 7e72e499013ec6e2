package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

type echo struct {
	testpb.UnimplementedTestServiceServer
	log func(ctx context.Context)
}

func (e *echo) EmptyCall(ctx context.Context, _ *testpb.Empty) (*testpb.Empty, error) {
	e.log(ctx)
	return &testpb.Empty{}, nil
}

func TestGRPCTracedMetricsAndLogs(t *testing.T) {
	ctx := context.Background()
	tel, err := New(ctx, Config{ServiceName: "mcpid-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tel.Shutdown(ctx) }()

	var logs bytes.Buffer
	logger, err := NewLogger(&logs, "info")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(tel.GRPCServerOption())
	testpb.RegisterTestServiceServer(srv, &echo{log: func(ctx context.Context) { logger.InfoContext(ctx, "handled") }})
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := testpb.NewTestServiceClient(conn).EmptyCall(ctx, &testpb.Empty{}); err != nil {
		t.Fatal(err)
	}
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}

	// The handler's log line carries the RPC's trace id.
	var rec map[string]any
	if err := json.Unmarshal(logs.Bytes(), &rec); err != nil {
		t.Fatalf("log is not one JSON line: %q", logs.String())
	}
	if id, _ := rec["trace_id"].(string); len(id) != 32 {
		t.Fatalf("log line has no trace_id: %v", rec)
	}

	// Metrics record the test RPC but not the health check.
	rr := httptest.NewRecorder()
	tel.MetricsHandler().ServeHTTP(rr, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	body := rr.Body.String()
	if !strings.Contains(body, `rpc_method="grpc.testing.TestService/EmptyCall"`) {
		t.Fatalf("metrics lack the RPC:\n%s", grep(body, "rpc_"))
	}
	if strings.Contains(body, `rpc_method="grpc.health.v1.Health/Check"`) {
		t.Fatalf("health checks must not be instrumented:\n%s", grep(body, "rpc_"))
	}
	if !strings.Contains(body, "go_goroutines") {
		t.Fatal("runtime metrics missing")
	}
}

func TestHTTPProbesNotTraced(t *testing.T) {
	ctx := context.Background()
	tel, err := New(ctx, Config{ServiceName: "mcpid-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tel.Shutdown(ctx) }()
	var traced []string
	h := tel.HTTPHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if sc := spanOf(r); sc {
			traced = append(traced, r.URL.Path)
		}
	}), "edge")
	srv := httptest.NewServer(h)
	defer srv.Close()
	for _, p := range []string{"/readyz", "/oauth2/token", "/healthz"} {
		resp, err := http.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if strings.Join(traced, ",") != "/oauth2/token" {
		t.Fatalf("traced paths = %v, want only /oauth2/token", traced)
	}
}

func TestNewLoggerRejectsBadLevel(t *testing.T) {
	if _, err := NewLogger(io.Discard, "loud"); err == nil {
		t.Fatal("bad level accepted")
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
