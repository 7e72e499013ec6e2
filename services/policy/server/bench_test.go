package server_test

import (
	"context"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/protobuf/proto"

	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	"github.com/mcpid/mcpid/lib/devca"
)

// echoServer is the baseline: a trivial grpc-go server with the same mTLS
// as the policy service, answering its request's payload.
type echoServer struct {
	testpb.UnimplementedTestServiceServer
}

func (echoServer) UnaryCall(_ context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return &testpb.SimpleResponse{Payload: req.GetPayload()}, nil
}

func startEcho(b *testing.B, e *env) testpb.TestServiceClient {
	b.Helper()
	leaf, err := e.pki.CA.IssueService("policy")
	if err != nil {
		b.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(devca.ServerTLSConfig(e.pki.CA.Pool(), leaf.TLSCertificate()))))
	testpb.RegisterTestServiceServer(gs, echoServer{})
	go func() { _ = gs.Serve(lis) }()
	b.Cleanup(gs.Stop)
	cert := e.pki.AsMCPServer(b, crm)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(devca.ClientTLSConfig(e.pki.CA.Pool(), cert, "policy"))))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = conn.Close() })
	return testpb.NewTestServiceClient(conn)
}

// load runs b.N calls of call from conc goroutines and reports requests per
// second and the 99th percentile latency.
func load(b *testing.B, conc int, call func(context.Context) error) {
	b.Helper()
	ctx := context.Background()
	for range 200 { // warm the connection and the caches
		if err := call(ctx); err != nil {
			b.Fatal(err)
		}
	}
	lat := make([][]time.Duration, conc)
	per := b.N/conc + 1
	for i := range lat {
		lat[i] = make([]time.Duration, 0, per)
	}
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for g := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range per {
				t0 := time.Now()
				if err := call(ctx); err != nil {
					b.Error(err)
					return
				}
				lat[g] = append(lat[g], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	all := slices.Concat(lat...)
	slices.Sort(all)
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(0, "ns/op") // per-op time is meaningless with conc calls in flight
}

// BenchmarkCheckGRPC measures Check over real gRPC with mTLS (the MCP
// server's path) against a trivial echo server with the same transport and
// a request of the same size, in one run, at concurrency 16 and 64.
func BenchmarkCheckGRPC(b *testing.B) {
	e := newEnv(b)
	e.start()
	e.installCRM(nil)
	check := e.mcp(nil, crm)
	req := &policyv1.CheckRequest{AccessToken: e.keys.Token(b, crm, "crm:contacts.read crm:deals.write"), Resource: crm, Tool: "list_contacts"}
	echo := startEcho(b, e)
	payload := &testpb.SimpleRequest{Payload: &testpb.Payload{Body: make([]byte, proto.Size(req))}}

	for _, conc := range []int{16, 64} {
		b.Run("echo/c"+strconv.Itoa(conc), func(b *testing.B) {
			load(b, conc, func(ctx context.Context) error {
				_, err := echo.UnaryCall(ctx, payload)
				return err
			})
		})
		b.Run("check/c"+strconv.Itoa(conc), func(b *testing.B) {
			load(b, conc, func(ctx context.Context) error {
				resp, err := check.Check(ctx, req)
				if err == nil && resp.GetResult().GetDecision() != policyv1.Decision_DECISION_ALLOW {
					b.Fatalf("decision %v", resp.GetResult())
				}
				return err
			})
		})
	}
}
