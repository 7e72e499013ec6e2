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

// WaitReady waits until srv's /readyz answers 200. /readyz and gRPC health
// reflect the same readiness (lib/server), and /readyz works whether gRPC is
// served with TLS or not.
func WaitReady(t testing.TB, srv Runnable, name string) {
	t.Helper()
	url := "http://" + srv.HTTPAddr().String() + "/readyz"
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := HTTP(t, http.MethodGet, url, "", "")
		if code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never became ready: /readyz = %d %s", name, code, body)
		}
		time.Sleep(20 * time.Millisecond)
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
