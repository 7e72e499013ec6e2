package server_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/lib/auditemit"
	"github.com/mcpid/mcpid/lib/config"
	"github.com/mcpid/mcpid/lib/devca"
	"github.com/mcpid/mcpid/lib/etcdtest"
	"github.com/mcpid/mcpid/lib/service"
	"github.com/mcpid/mcpid/lib/service/servicetest"
	"github.com/mcpid/mcpid/services/audit/server"
)

// waitLimit bounds every wait for something asynchronous (a hang fails
// the test); it is never a timing assertion.
const waitLimit = 60 * time.Second

// env is one test's etcd and PKI, and the settings every audit replica of
// the test shares (one checkpoint key file, as replicas of a deployment do).
type env struct {
	etcd *etcdtest.Server
	pki  *servicetest.PKI
	base server.Config
	ids  *auditemit.IDGenerator
}

func newEnv(t testing.TB) *env {
	t.Helper()
	e := &env{etcd: etcdtest.Start(t), pki: servicetest.NewPKI(t), ids: auditemit.NewIDGenerator(nil, nil)}
	e.base = server.Config{
		CheckpointKeyFile:   config.SecretFile{Path: filepath.Join(t.TempDir(), "checkpoint.jwk")},
		CheckpointKeyCreate: true,
		CheckpointInterval:  100 * time.Millisecond,
		Issuer:              "https://mcpid.example.test",
	}
	return e
}

// replica is one running audit service.
type replica struct {
	srv  *service.Server
	stop func()
}

// start completes and runs an audit replica with real mTLS; mod adjusts
// its settings. It stops when the test ends, or earlier with stop.
func (e *env) start(t testing.TB, mod func(*server.Config)) *replica {
	t.Helper()
	cfg := e.base
	cfg.Flags = e.pki.ServeTLS(t, server.Name, servicetest.Flags(e.etcd.Endpoints()))
	cfg.ShutdownTimeout = 2 * time.Second
	cfg.GatewayTLS = e.pki.GatewayTLS(server.Name)
	if mod != nil {
		mod(&cfg)
	}
	srv, err := cfg.Complete(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	var once sync.Once
	r := &replica{srv: srv}
	r.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("audit Run: %v", err)
				}
			case <-time.After(waitLimit):
				t.Error("audit replica did not stop")
			}
		})
	}
	t.Cleanup(r.stop)
	e.waitReady(t, srv)
	return r
}

func (e *env) waitReady(t testing.TB, srv *service.Server) {
	t.Helper()
	c := e.client(t, srv, e.operator(t, devca.RoleAuditor))
	deadline := time.Now().Add(waitLimit)
	for {
		_, err := c.GetCheckpointKeys(context.Background(), &auditv1.GetCheckpointKeysRequest{})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("audit never answered: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Readiness includes the chain index having loaded.
	eventually(t, "/readyz", func() bool {
		code, _ := servicetest.HTTP(t, http.MethodGet, "http://"+srv.HTTPAddr().String()+"/readyz", "", "")
		return code == http.StatusOK
	})
}

func (e *env) client(t testing.TB, srv *service.Server, cert *grpcCert) auditv1.AuditServiceClient {
	t.Helper()
	var conn *grpc.ClientConn
	if cert == nil {
		conn = e.pki.Dial(t, srv, server.Name, nil)
	} else {
		conn = e.pki.Dial(t, srv, server.Name, cert.c)
	}
	return auditv1.NewAuditServiceClient(conn)
}

// grpcCert wraps a credential so a nil one reads as anonymous.
type grpcCert struct{ c *tls.Certificate }

func (e *env) service(t testing.TB, name string) *grpcCert {
	return &grpcCert{c: e.pki.AsService(t, name)}
}

func (e *env) operator(t testing.TB, role string) *grpcCert {
	return &grpcCert{c: e.pki.AsOperator(t, "op-"+role, role)}
}

func (e *env) as(t testing.TB, r *replica, cert *grpcCert) auditv1.AuditServiceClient {
	return e.client(t, r.srv, cert)
}

func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) id(t testing.TB) string {
	t.Helper()
	id, err := e.ids.NewID()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// decision is a policy decision event (service policy).
func (e *env) decision(t testing.TB, client, tool string, d auditv1.Decision) *auditv1.Event {
	args := fmt.Sprintf(`{"q":%q}`, tool)
	return &auditv1.Event{
		Id: e.id(t), Time: timestamppb.Now(), Type: auditv1.EventType_EVENT_TYPE_POLICY_DECISION,
		Actor:    &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_MCP_SERVER, Id: "https://mcp.example.test"},
		ClientId: client, Resource: "https://mcp.example.test", Tool: tool, Decision: d, Reason: "ok",
		Scopes: []string{"crm:read"}, ToolArguments: &auditv1.Protected{Value: &args},
	}
}

// login is a login event of user (service token) with personal data.
func (e *env) login(t testing.TB, user, client string) *auditv1.Event {
	email, ua, addr := user+"@example.test", "agent/1.0", "198.51.100.4"
	return &auditv1.Event{
		Id: e.id(t), Time: timestamppb.Now(), Type: auditv1.EventType_EVENT_TYPE_LOGIN_SUCCEEDED,
		Actor:  &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_USER, Id: user},
		UserId: user, ClientId: client,
		UserEmail: &auditv1.Protected{Value: &email}, UserAgent: &auditv1.Protected{Value: &ua},
		SourceAddress: &auditv1.Protected{Value: &addr},
	}
}

// registered is a client.registered event (service registration).
func (e *env) registered(t testing.TB, client, name string) *auditv1.Event {
	details, err := structpb.NewStruct(map[string]any{"client_name": name, "source": "dcr", "verification_status": "unverified"})
	if err != nil {
		t.Fatal(err)
	}
	return &auditv1.Event{
		Id: e.id(t), Time: timestamppb.Now(), Type: auditv1.EventType_EVENT_TYPE_CLIENT_REGISTERED,
		Actor: &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_ANONYMOUS}, ClientId: client, Details: details,
	}
}

func appendOK(t testing.TB, c auditv1.AuditServiceClient, evs ...*auditv1.Event) []*auditv1.AppendEventResult {
	t.Helper()
	resp, err := c.AppendEvents(testCtx(t), &auditv1.AppendEventsRequest{Events: evs})
	if err != nil {
		t.Fatalf("AppendEvents: %v", err)
	}
	for i, r := range resp.GetResults() {
		if r.GetStatus() != auditv1.AppendEventStatus_APPEND_EVENT_STATUS_APPENDED {
			t.Fatalf("event %d: %v %v %s", i, r.GetStatus(), r.GetReason(), r.GetMessage())
		}
	}
	return resp.GetResults()
}

// allEvents reads the whole retained chain oldest first through QueryEvents.
func allEvents(t testing.TB, c auditv1.AuditServiceClient) []*auditv1.Event {
	t.Helper()
	return queryAll(t, c, nil)
}

// producedEvents is allEvents without audit's own events (key.rotated at
// the first start, erasures).
func producedEvents(t testing.TB, c auditv1.AuditServiceClient) []*auditv1.Event {
	t.Helper()
	return queryAll(t, c, &auditv1.EventFilter{SourceServices: []auditv1.SourceService{
		auditv1.SourceService_SOURCE_SERVICE_REGISTRATION, auditv1.SourceService_SOURCE_SERVICE_TOKEN, auditv1.SourceService_SOURCE_SERVICE_POLICY,
	}})
}

func queryAll(t testing.TB, c auditv1.AuditServiceClient, f *auditv1.EventFilter) []*auditv1.Event {
	t.Helper()
	var out []*auditv1.Event
	tok := ""
	for range 10_000 {
		resp, err := c.QueryEvents(testCtx(t), &auditv1.QueryEventsRequest{Filter: f, Order: auditv1.EventOrder_EVENT_ORDER_OLDEST_FIRST, PageSize: 1000, PageToken: tok})
		if err != nil {
			t.Fatalf("QueryEvents: %v", err)
		}
		out = append(out, resp.GetEvents()...)
		if tok = resp.GetNextPageToken(); tok == "" {
			return out
		}
	}
	t.Fatal("QueryEvents never reached the last page")
	return nil
}

func verifyChain(t testing.TB, c auditv1.AuditServiceClient, req *auditv1.VerifyChainRequest) *auditv1.VerifyChainResponse {
	t.Helper()
	if req == nil {
		req = &auditv1.VerifyChainRequest{}
	}
	resp, err := c.VerifyChain(testCtx(t), req)
	if err != nil {
		t.Fatalf("VerifyChain: %v", err)
	}
	return resp
}

// waitCheckpoint waits until a checkpoint covers seq and returns the latest.
func waitCheckpoint(t testing.TB, c auditv1.AuditServiceClient, seq uint64) *auditv1.Checkpoint {
	t.Helper()
	var cp *auditv1.Checkpoint
	eventually(t, fmt.Sprintf("a checkpoint at sequence %d or later", seq), func() bool {
		resp, err := c.GetCheckpoint(testCtx(t), &auditv1.GetCheckpointRequest{})
		if err != nil {
			return false
		}
		cp = resp.GetCheckpoint()
		return cp.GetSequence() >= seq
	})
	return cp
}

func servicetestFlags(e *env) service.Flags { return servicetest.Flags(e.etcd.Endpoints()) }

// settled waits until the elected replica announced its checkpoint key
// (the key.rotated event of the first start), so a test counting events
// from then on sees only its own.
func settled(t testing.TB, c auditv1.AuditServiceClient) {
	t.Helper()
	eventually(t, "the checkpoint key announced", func() bool {
		return len(queryAll(t, c, &auditv1.EventFilter{Types: []auditv1.EventType{auditv1.EventType_EVENT_TYPE_KEY_ROTATED}})) > 0
	})
}
