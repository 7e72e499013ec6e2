package server_test

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	"github.com/mcpid/mcpid/lib/apierr"
	"github.com/mcpid/mcpid/lib/devca"
	"github.com/mcpid/mcpid/lib/etcdtest"
	"github.com/mcpid/mcpid/lib/service"
	"github.com/mcpid/mcpid/lib/service/servicetest"
	"github.com/mcpid/mcpid/services/policy/internal/testutil"
	"github.com/mcpid/mcpid/services/policy/internal/tokens"
	"github.com/mcpid/mcpid/services/policy/server"
)

const (
	crm   = "https://crm.example.com/mcp"
	other = "https://other.example.com/mcp"
)

// fakeRevocations is a TEST STAND-IN for the token service's revocation
// feed (wired in by the token lifecycle issue): revoked grant ids and a
// readiness switch.
type fakeRevocations struct {
	notReady atomic.Bool
	mu       sync.Mutex
	grants   map[string]bool
}

func (f *fakeRevocations) Ready() bool { return !f.notReady.Load() }

func (f *fakeRevocations) Revoked(t *tokens.Token) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.grants[t.GrantID]
}

func (f *fakeRevocations) revokeGrant(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.grants == nil {
		f.grants = map[string]bool{}
	}
	f.grants[id] = true
}

// fakeAudit is a TEST STAND-IN for the audit service's AppendEvents (built
// by its own issue): it acknowledges every event and records it, over mTLS
// with the audit service's certificate.
type fakeAudit struct {
	auditv1.UnimplementedAuditServiceServer
	mu     sync.Mutex
	events []*auditv1.Event
	addr   string
}

func (f *fakeAudit) AppendEvents(_ context.Context, req *auditv1.AppendEventsRequest) (*auditv1.AppendEventsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	resp := &auditv1.AppendEventsResponse{}
	for _, ev := range req.GetEvents() {
		f.events = append(f.events, ev)
		resp.Results = append(resp.Results, &auditv1.AppendEventResult{EventId: ev.GetId(), Status: auditv1.AppendEventStatus_APPEND_EVENT_STATUS_APPENDED})
	}
	return resp, nil
}

func (f *fakeAudit) snapshot() []*auditv1.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*auditv1.Event(nil), f.events...)
}

func startFakeAudit(t testing.TB, pki *servicetest.PKI) *fakeAudit {
	t.Helper()
	leaf, err := pki.CA.IssueService(devca.ServiceAudit)
	if err != nil {
		t.Fatal(err)
	}
	cfg := devca.ServerTLSConfig(pki.CA.Pool(), leaf.TLSCertificate())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)))
	f := &fakeAudit{addr: lis.Addr().String()}
	auditv1.RegisterAuditServiceServer(gs, f)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return f
}

// env is one test's world: real etcd, a development CA, signing keys, the
// stand-ins and one or more policy replicas.
type env struct {
	t           testing.TB
	etcd        *etcdtest.Server
	pki         *servicetest.PKI
	keys        *testutil.Keys
	revocations *fakeRevocations
	audit       *fakeAudit
	srv         *service.Server
}

type option func(*server.Config)

func withAudit(e *env) option {
	return func(c *server.Config) { c.AuditAddr = e.audit.addr }
}

func newEnv(t testing.TB) *env {
	t.Helper()
	return &env{
		t:           t,
		etcd:        etcdtest.Start(t),
		pki:         servicetest.NewPKI(t),
		keys:        testutil.NewKeys(t),
		revocations: &fakeRevocations{},
	}
}

// start runs a policy replica on the env's etcd and waits until it is ready.
func (e *env) start(opts ...option) *service.Server {
	t := e.t
	t.Helper()
	cfg := server.Config{
		Flags:       e.pki.ServeTLS(t, server.Name, servicetest.Flags(e.etcd.Endpoints())),
		GatewayTLS:  e.pki.GatewayTLS(server.Name),
		Issuer:      testutil.Issuer,
		KeySource:   e.keys.Set,
		Revocations: e.revocations,
	}
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := cfg.Complete(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	servicetest.Run(t, srv)
	e.waitReady(srv)
	if e.srv == nil {
		e.srv = srv
	}
	return srv
}

// waitReady waits until health (over TLS, anonymously) reports SERVING and
// /readyz answers 200: servicetest.WaitReady dials without TLS.
func (e *env) waitReady(srv *service.Server) {
	t := e.t
	t.Helper()
	hc := healthpb.NewHealthClient(e.pki.Dial(t, srv, server.Name, nil))
	eventually(t, "SERVING", func() bool {
		resp, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: server.Name})
		return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
	})
	if code, body := servicetest.HTTP(t, "GET", "http://"+srv.HTTPAddr().String()+"/readyz", "", ""); code != 200 {
		t.Fatalf("/readyz = %d %s", code, body)
	}
}

func (e *env) client(srv *service.Server, cert *tls.Certificate) policyv1.PolicyServiceClient {
	if srv == nil {
		srv = e.srv
	}
	return policyv1.NewPolicyServiceClient(e.pki.Dial(e.t, srv, server.Name, cert))
}

func (e *env) admin(srv *service.Server) policyv1.PolicyServiceClient {
	return e.client(srv, e.pki.AsOperator(e.t, "alice", devca.RoleAdmin))
}

func (e *env) auditor(srv *service.Server) policyv1.PolicyServiceClient {
	return e.client(srv, e.pki.AsOperator(e.t, "bob", devca.RoleAuditor))
}

func (e *env) mcp(srv *service.Server, resource string) policyv1.PolicyServiceClient {
	return e.client(srv, e.pki.AsMCPServer(e.t, resource))
}

func (e *env) tokenService(srv *service.Server) policyv1.PolicyServiceClient {
	return e.client(srv, e.pki.AsService(e.t, devca.ServiceToken))
}

// bearer returns ctx carrying an authorization header.
func bearer(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

func ctx(t testing.TB) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func args(t testing.TB, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// reasonOf returns the ErrorInfo reason of a status error.
func reasonOf(err error) string {
	if info := apierr.Info(err); info != nil {
		return info.GetReason()
	}
	return ""
}

// eventually polls cond until it holds (bounded).
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// crmManifest is what the CRM server publishes.
func crmManifest() *policyv1.Manifest {
	return &policyv1.Manifest{
		Resource:      crm,
		DisplayName:   "Acme CRM",
		ServerVersion: "1.4.2",
		Scopes: []*policyv1.Scope{
			{Name: "crm:contacts.read", Description: "Read your contacts"},
			{Name: "crm:deals.write", Description: "Update your deals"},
			{Name: "crm:contacts.export", Description: "Export your contact lists", Sensitive: true},
			{Name: "crm:admin", Description: "Administer the CRM", Implies: []string{"crm:deals.write", "crm:contacts.read"}},
		},
		Tools: []*policyv1.Tool{
			{Name: "list_contacts", RequiredScopes: []string{"crm:contacts.read"}},
			{Name: "update_deal", RequiredScopes: []string{"crm:deals.write"}, Destructive: true},
			{Name: "export_contacts", RequiredScopes: []string{"crm:contacts.export", "crm:contacts.read"}},
			{Name: "merge_contacts", RequiredScopes: []string{"crm:contacts.read", "crm:deals.write"}},
			{Name: "purge", RequiredScopes: []string{"crm:admin"}},
		},
	}
}

// crmPolicy is the operators' layer on top.
func crmPolicy() *policyv1.Policy {
	return &policyv1.Policy{
		Resource: crm,
		Scopes: []*policyv1.Scope{
			{Name: "crm:reports.read", Description: "Read sales reports"},
		},
		Tools: []*policyv1.Tool{
			{Name: "export_contacts", RequireVerifiedClient: true, Conditions: []*policyv1.Condition{
				{Expression: "arguments.limit <= 1000.0", Message: "exports are limited to 1000 contacts"},
			}},
			{Name: "sales_report", RequiredScopes: []string{"crm:reports.read"}, Conditions: []*policyv1.Condition{
				{Expression: `"sales" in groups`, Message: "only the sales team may read reports"},
			}},
			{Name: "verified_only", Conditions: []*policyv1.Condition{{Expression: "client.verified"}}},
			{Name: "office_hours", Conditions: []*policyv1.Condition{{Expression: `now.getHours("UTC") >= 0`}}},
			{Name: "purge", Deny: true},
		},
	}
}

// installCRM publishes the manifest as the CRM server and applies the
// policy as an admin.
func (e *env) installCRM(srv *service.Server) {
	t := e.t
	t.Helper()
	if _, err := e.mcp(srv, crm).PublishManifest(ctx(t), &policyv1.PublishManifestRequest{Manifest: crmManifest()}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin(srv).PutPolicy(ctx(t), &policyv1.PutPolicyRequest{Policy: crmPolicy()}); err != nil {
		t.Fatal(err)
	}
}
