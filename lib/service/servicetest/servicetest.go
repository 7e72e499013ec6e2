// Package servicetest runs a real service (its real wiring, real sockets on
// loopback, a real etcd) inside a test, the way SpiceDB's testserver does.
package servicetest

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/mcpid/mcpid/lib/config"
	"github.com/mcpid/mcpid/lib/service"
)

// Runnable is a completed service.
type Runnable interface {
	Run(ctx context.Context) error
	GRPCAddr() net.Addr
	HTTPAddr() net.Addr
}

// Flags are service settings for a test: kernel-chosen loopback ports, the
// given etcd, quiet logs, a short shutdown bound.
func Flags(etcdEndpoints []string) service.Flags {
	return service.Flags{
		GRPCAddr:        "127.0.0.1:0",
		HTTPAddr:        "127.0.0.1:0",
		EtcdEndpoints:   config.StringList(etcdEndpoints),
		EtcdDialTimeout: 5 * time.Second,
		LogLevel:        "error",
		ShutdownTimeout: 5 * time.Second,
	}
}

// Run runs srv until the test ends and fails the test if Run reports an
// error or does not return.
func Run(t testing.TB, srv Runnable) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("service did not stop within 30s")
		}
	})
}

// Dial returns a plaintext gRPC connection to srv, closed when the test ends.
func Dial(t testing.TB, srv Runnable) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(srv.GRPCAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// WaitReady waits until gRPC health reports SERVING for name and /readyz
// answers 200.
func WaitReady(t testing.TB, srv Runnable, name string) {
	t.Helper()
	hc := healthpb.NewHealthClient(Dial(t, srv))
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: name})
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never became SERVING (last: %v, %v)", name, resp.GetStatus(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, body := HTTP(t, http.MethodGet, "http://"+srv.HTTPAddr().String()+"/readyz", "", ""); code != http.StatusOK {
		t.Fatalf("/readyz = %d %s", code, body)
	}
}

// HTTP sends one request on loopback (never following redirects) and
// returns the status and body.
func HTTP(t testing.TB, method, url, contentType, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}
