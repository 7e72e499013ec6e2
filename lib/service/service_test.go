package service

import (
	"context"
	"errors"
	"flag"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/mcpid/mcpid/lib/etcdtest"
	"github.com/mcpid/mcpid/lib/principal"
)

func TestValidateNamesTheSetting(t *testing.T) {
	cases := []struct {
		mutate func(*Flags)
		want   string
	}{
		{func(f *Flags) { f.GRPCAddr = "" }, "grpc-addr"},
		{func(f *Flags) { f.EtcdDialTimeout = 0 }, "etcd-dial-timeout"},
		{func(f *Flags) { f.ShutdownTimeout = -1 }, "shutdown-timeout"},
		{func(f *Flags) { f.TLSCertFile = "cert.pem" }, "tls-cert-file and tls-key-file"},
		{func(f *Flags) { f.TLSCAFile = "ca.pem" }, "tls-ca-file"},
	}
	for _, c := range cases {
		f := Flags{GRPCAddr: "127.0.0.1:0", EtcdDialTimeout: time.Second, ShutdownTimeout: time.Second}
		c.mutate(&f)
		if err := f.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate() = %v, want an error naming %q", err, c.want)
		}
	}
	f := Flags{GRPCAddr: "127.0.0.1:0", EtcdDialTimeout: time.Second, ShutdownTimeout: time.Second}
	if err := f.Validate(); err != nil || f.EtcdEndpoints.String() != "http://127.0.0.1:2379" {
		t.Fatalf("defaults: %v %v", err, f.EtcdEndpoints)
	}
}

func TestRunBadSettingStopsStartup(t *testing.T) {
	var f Flags
	register := func(fs *flag.FlagSet) { f.Register(fs, Defaults{GRPCAddr: "127.0.0.1:0"}) }
	complete := func(context.Context, io.Writer) (*Server, error) {
		t.Fatal("complete called despite a bad setting")
		return nil, nil
	}
	err := run(context.Background(), "svc", nil, []string{"MCPID_ETCD_DIAL_TIMEOUT=fast"}, io.Discard, io.Discard, register, complete)
	if err == nil || !strings.Contains(err.Error(), "MCPID_ETCD_DIAL_TIMEOUT") {
		t.Fatalf("run = %v", err)
	}
}

// TestNewRefusesIncompleteAllowlist: a served method nobody thought about
// must stop start-up, not be silently refused (or allowed) later.
func TestNewRefusesIncompleteAllowlist(t *testing.T) {
	etcd := etcdtest.Start(t)
	_, err := New(context.Background(), Spec{
		Name:    "policy",
		Flags:   Flags{GRPCAddr: "127.0.0.1:0", EtcdEndpoints: etcd.Endpoints(), EtcdDialTimeout: time.Second, ShutdownTimeout: time.Second, LogLevel: "error"},
		Methods: principal.Policy{},
		Setup: func(context.Context, *Base) (*Setup, error) {
			return &Setup{Register: healthlessEcho}, nil
		},
	})
	if err == nil || !strings.Contains(err.Error(), "/svc.Echo/Say") {
		t.Fatalf("New = %v, want the missing method named", err)
	}
}

func TestNewServesAndStops(t *testing.T) {
	etcd := etcdtest.Start(t)
	srv, err := New(context.Background(), Spec{
		Name:    "policy",
		Flags:   Flags{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", EtcdEndpoints: etcd.Endpoints(), EtcdDialTimeout: time.Second, ShutdownTimeout: time.Second, LogLevel: "error"},
		Methods: principal.Policy{},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()

	conn, err := grpc.NewClient(srv.GRPCAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: "policy"})
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never SERVING: %v %v", resp, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://"+srv.HTTPAddr().String()+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "go_goroutines") {
		t.Fatalf("/metrics = %d, want Prometheus metrics", resp.StatusCode)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// healthlessEcho registers a one-method service by hand.
func healthlessEcho(s *grpc.Server) {
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: "svc.Echo",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Say",
			Handler: func(any, context.Context, func(any) error, grpc.UnaryServerInterceptor) (any, error) {
				return nil, nil
			},
		}},
	}, struct{}{})
}

// TestBackgroundFailureStopsService: a background task (cache, relay) that
// fails must not leave a service serving stale or no data.
func TestBackgroundFailureStopsService(t *testing.T) {
	etcd := etcdtest.Start(t)
	failed := errors.New("watch lost for good")
	release := make(chan struct{})
	srv, err := New(context.Background(), Spec{
		Name:    "policy",
		Flags:   Flags{GRPCAddr: "127.0.0.1:0", EtcdEndpoints: etcd.Endpoints(), EtcdDialTimeout: time.Second, ShutdownTimeout: time.Second, LogLevel: "error"},
		Methods: principal.Policy{},
		Setup: func(context.Context, *Base) (*Setup, error) {
			return &Setup{Background: []func(context.Context) error{func(context.Context) error {
				<-release
				return failed
			}}}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(context.Background()) }()
	close(release)
	select {
	case err := <-done:
		if !errors.Is(err, failed) {
			t.Fatalf("Run = %v, want the background failure", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("service kept running after its background task failed")
	}
}
