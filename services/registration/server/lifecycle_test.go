package server_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
	"github.com/mcpid/mcpid/lib/devca"
	"github.com/mcpid/mcpid/lib/etcdtest"
	"github.com/mcpid/mcpid/lib/service/servicetest"
	"github.com/mcpid/mcpid/services/registration/server"
)

func TestUnusedClientsExpire(t *testing.T) {
	e := newEnv(t, func(c *server.Config) {
		c.ClientIdleLifetime = 5 * time.Second
		c.LastUsedInterval = time.Second
	})
	ctx := tctx(t)
	// Expired: the record is deleted together with its event.
	expired := func(id string) func() bool {
		return func() bool {
			_, err := e.admin.GetClient(ctx, &registrationv1.GetClientRequest{ClientId: id})
			return err != nil && len(e.keys(t, "/clients/"+id)) == 0 && len(e.eventsFor(t, id, auditv1.EventType_EVENT_TYPE_CLIENT_EXPIRED)) == 1
		}
	}
	idle := str(e.register(t, `{"redirect_uris":["https://a.example/idle"],"token_endpoint_auth_method":"none"}`), "client_id")
	used := str(e.register(t, `{"redirect_uris":["https://a.example/used"],"token_endpoint_auth_method":"none"}`), "client_id")

	// Use one client for longer than the lifetime: each recorded use
	// renews its lease.
	for end := time.Now().Add(7 * time.Second); time.Now().Before(end); time.Sleep(300 * time.Millisecond) {
		if _, err := e.token.AuthenticateClient(ctx, &registrationv1.AuthenticateClientRequest{ClientId: used, AuthMethod: authNone}); err != nil {
			t.Fatalf("client in use expired: %v", err)
		}
	}
	eventually(t, 30*time.Second, "the idle client to expire", expired(idle))
	evs := e.eventsFor(t, idle, auditv1.EventType_EVENT_TYPE_CLIENT_EXPIRED)
	if len(evs) != 1 || evs[0].GetActor().GetKind() != auditv1.ActorKind_ACTOR_KIND_SYSTEM || evs[0].GetActor().GetId() != "client-expiry" {
		t.Fatalf("client.expired: %v", evs)
	}
	if len(e.keys(t, "/revocations/")) == 0 {
		t.Fatal("expiry recorded no grant revocation")
	}
	// Unused from now on, it expires too.
	eventually(t, 30*time.Second, "the formerly used client to expire", expired(used))
	if len(e.eventsFor(t, used, auditv1.EventType_EVENT_TYPE_CLIENT_EXPIRED)) != 1 {
		t.Fatal("exactly one client.expired event expected")
	}
	// RFC 7592 no longer knows it either.
	if len(e.keys(t, "/expiry/")) != 0 {
		t.Fatalf("markers left: %v", e.keys(t, "/expiry/"))
	}
}

// TestExpiryWhileNoReplicaRuns: a lease that ends while no replica is
// watching is found when one starts — the client.expired event is not lost.
func TestExpiryWhileNoReplicaRuns(t *testing.T) {
	etcd := etcdtest.Start(t)
	cli := etcd.Client(t)
	start := func() (string, func()) {
		srv, err := server.Config{Flags: servicetest.Flags(etcd.Endpoints())}.Complete(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.Run(ctx) }()
		base := "http://" + srv.HTTPAddr().String()
		waitReady(t, base)
		return base, func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	}
	base, stop := start()
	code, body := servicetest.HTTP(t, http.MethodPost, base+"/oauth2/register", "application/json", `{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"none"}`)
	if code != http.StatusCreated {
		t.Fatalf("register = %d %s", code, body)
	}
	stop()

	ctx := tctx(t)
	resp, err := cli.Get(ctx, "/mcpid/registration/expiry/", clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("markers: %v %v", resp, err)
	}
	// The lease ends while nobody watches.
	if _, err := cli.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	_, stop = start()
	defer stop()
	eventually(t, 30*time.Second, "the client to be expired by the new replica", func() bool {
		r, err := cli.Get(ctx, "/mcpid/registration/clients/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && r.Count == 1 // only the pre-registered mcpid client is left
	})
	r, err := cli.Get(ctx, "/mcpid/registration/outbox/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	expired := 0
	for _, kv := range r.Kvs {
		if containsEvent(kv.Value, auditv1.EventType_EVENT_TYPE_CLIENT_EXPIRED) {
			expired++
		}
	}
	if expired != 1 {
		t.Fatalf("%d client.expired events, want 1", expired)
	}
}

// fakeTokenRevoker stands in for the token service (a real one is in the
// token service's tests): it records the revocations delivered to it and
// fails the first one, which a real service cannot be made to do on cue, to
// prove delivery is retried.
type fakeTokenRevoker struct {
	mu      sync.Mutex
	calls   []string
	failed  bool
	revoked map[string]string
	done    map[string]int
}

func (f *fakeTokenRevoker) RevokeClient(_ context.Context, clientID, reason string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, clientID)
	if !f.failed {
		f.failed = true
		return errors.New("token service unavailable")
	}
	if f.revoked == nil {
		f.revoked, f.done = map[string]string{}, map[string]int{}
	}
	f.revoked[clientID] = reason
	f.done[clientID]++
	return nil
}

func (f *fakeTokenRevoker) reason(id string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.revoked[id]
	return r, ok
}

func TestGrantRevocationsAreDelivered(t *testing.T) {
	rev := &fakeTokenRevoker{}
	e := newEnv(t, func(c *server.Config) { c.GrantRevoker = rev })
	ctx := tctx(t)
	m := e.register(t, `{"redirect_uris":["https://a.example/cb"]}`)
	id := str(m, "client_id")
	if r := e.do(t, http.MethodDelete, "/oauth2/register/"+id, str(m, "registration_access_token"), ""); r.code != http.StatusNoContent {
		t.Fatalf("delete = %d", r.code)
	}
	op, err := e.admin.CreateClient(ctx, &registrationv1.CreateClientRequest{Metadata: webApp("https://a.example/cb")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.SetClientVerification(ctx, &registrationv1.SetClientVerificationRequest{ClientId: op.GetClient().GetClientId(), Status: suspended, Reason: "x"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "both revocations delivered", func() bool {
		a, okA := rev.reason(id)
		b, okB := rev.reason(op.GetClient().GetClientId())
		return okA && okB && a == "deleted" && b == "suspended" && len(e.keys(t, "/revocations/")) == 0
	})
}

// fakeAudit stands in for the audit service (built in parallel, not
// available here): AppendEvents acknowledges and records every event.
type fakeAudit struct {
	auditv1.UnimplementedAuditServiceServer
	mu     sync.Mutex
	events []*auditv1.Event
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

func (f *fakeAudit) find(typ auditv1.EventType, reason, clientID string) *auditv1.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ev := range f.events {
		if ev.GetType() == typ && (reason == "" || ev.GetReason() == reason) && (clientID == "" || ev.GetClientId() == clientID) {
			return ev
		}
	}
	return nil
}

// TestEventsReachAudit: state-change events go through the outbox relay,
// refusals through the batcher; both arrive, over mTLS as the registration
// service.
func TestEventsReachAudit(t *testing.T) {
	pki := servicetest.NewPKI(t)
	leaf, err := pki.CA.IssueService("audit")
	if err != nil {
		t.Fatal(err)
	}
	fa := &fakeAudit{}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(devca.ServerTLSConfig(pki.CA.Pool(), leaf.TLSCertificate()))))
	auditv1.RegisterAuditServiceServer(gs, fa)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)

	e := newEnvWithPKI(t, pki, func(c *server.Config) { c.AuditAddr = lis.Addr().String() })
	m := e.register(t, `{"redirect_uris":["https://a.example/cb"]}`)
	r := e.do(t, http.MethodPost, "/oauth2/register", "", `{"redirect_uris":["https://a.example/cb#fragment"]}`, "User-Agent", "rejected-agent/2")
	wantOAuthError(t, r, http.StatusBadRequest, "invalid_redirect_uri")

	eventually(t, 30*time.Second, "client.registered relayed", func() bool {
		return fa.find(auditv1.EventType_EVENT_TYPE_CLIENT_REGISTERED, "", str(m, "client_id")) != nil
	})
	eventually(t, 30*time.Second, "the refusal emitted", func() bool {
		return fa.find(auditv1.EventType_EVENT_TYPE_CLIENT_REGISTRATION_REJECTED, "invalid_redirect_uri", "") != nil
	})
	// A refused CIMD client_id is this service's refusal.
	if _, err := e.token.ResolveClient(tctx(t), &registrationv1.ResolveClientRequest{ClientId: "http://agent.example/client.json"}); err == nil {
		t.Fatal("http CIMD URL resolved")
	}
	eventually(t, 30*time.Second, "the CIMD refusal emitted", func() bool {
		ev := fa.find(auditv1.EventType_EVENT_TYPE_CLIENT_REGISTRATION_REJECTED, "cimd_fetch_refused", "")
		return ev != nil && ev.GetActor().GetKind() == auditv1.ActorKind_ACTOR_KIND_SERVICE && ev.GetActor().GetId() == "registration"
	})
	ev := fa.find(auditv1.EventType_EVENT_TYPE_CLIENT_REGISTRATION_REJECTED, "invalid_redirect_uri", "")
	if ev.GetActor().GetKind() != auditv1.ActorKind_ACTOR_KIND_ANONYMOUS || ev.GetSourceAddress().GetValue() != "127.0.0.1" ||
		ev.GetUserAgent().GetValue() != "rejected-agent/2" || ev.GetDetails().GetFields()["error"].GetStringValue() != "invalid_redirect_uri" {
		t.Fatalf("rejection event: %v", ev)
	}
}

func containsEvent(b []byte, typ auditv1.EventType) bool {
	ev := &auditv1.Event{}
	return proto.Unmarshal(b, ev) == nil && ev.GetType() == typ
}

// TestLosingVerificationRevokesGrants: a client that goes from VERIFIED to
// UNVERIFIED (operator decision, changed redirect URIs) gets its grants
// revoked at the token service, so tokens claiming client_verified=true die;
// changes that do not lose VERIFIED revoke nothing.
func TestLosingVerificationRevokesGrants(t *testing.T) {
	rev := &fakeTokenRevoker{}
	e := newEnv(t, func(c *server.Config) { c.GrantRevoker = rev })
	ctx := tctx(t)
	mask := func(p ...string) *fieldmaskpb.FieldMask { return &fieldmaskpb.FieldMask{Paths: p} }
	create := func(id string) {
		t.Helper()
		if _, err := e.admin.CreateClient(ctx, &registrationv1.CreateClientRequest{ClientId: id, Metadata: webApp("https://a.example/cb")}); err != nil {
			t.Fatal(err)
		}
	}
	set := func(id string, s registrationv1.VerificationStatus) {
		t.Helper()
		if _, err := e.admin.SetClientVerification(ctx, &registrationv1.SetClientVerificationRequest{ClientId: id, Status: s, Reason: "test"}); err != nil {
			t.Fatal(err)
		}
	}
	unverified := registrationv1.VerificationStatus_VERIFICATION_STATUS_UNVERIFIED
	verified := registrationv1.VerificationStatus_VERIFICATION_STATUS_VERIFIED

	// Operator decision.
	create("by-operator")
	set("by-operator", unverified)
	// Redirect URIs changed on a verified client.
	create("by-redirects")
	if _, err := e.admin.UpdateClient(ctx, &registrationv1.UpdateClientRequest{Client: &registrationv1.Client{ClientId: "by-redirects",
		Metadata: &registrationv1.ClientMetadata{RedirectUris: []string{"https://b.example/cb"}}}, UpdateMask: mask("metadata.redirect_uris")}); err != nil {
		t.Fatal(err)
	}
	// Not losing VERIFIED: verified again, renamed, unverified again, a
	// DCR client (never verified) changing its redirect URIs.
	create("stays")
	set("stays", verified)
	if _, err := e.admin.UpdateClient(ctx, &registrationv1.UpdateClientRequest{Client: &registrationv1.Client{ClientId: "stays",
		Metadata: &registrationv1.ClientMetadata{ClientName: "Renamed"}}, UpdateMask: mask("metadata.client_name")}); err != nil {
		t.Fatal(err)
	}
	create("twice")
	set("twice", unverified)
	m := e.register(t, `{"redirect_uris":["https://d.example/cb"]}`)
	dcr := str(m, "client_id")
	if r := e.do(t, http.MethodPut, "/oauth2/register/"+dcr, str(m, "registration_access_token"),
		`{"client_id":"`+dcr+`","redirect_uris":["https://d.example/other"]}`); r.code != http.StatusOK {
		t.Fatalf("dcr update = %d %s", r.code, r.body)
	}

	eventually(t, 30*time.Second, "revocations delivered", func() bool {
		a, okA := rev.reason("by-operator")
		b, okB := rev.reason("by-redirects")
		_, okC := rev.reason("twice")
		return okA && okB && okC && a == "unverified" && b == "unverified" && len(e.keys(t, "/revocations/")) == 0
	})
	// Setting UNVERIFIED again loses nothing: no second revocation.
	set("twice", unverified)
	eventually(t, 30*time.Second, "pending revocations drained", func() bool { return len(e.keys(t, "/revocations/")) == 0 })
	rev.mu.Lock()
	defer rev.mu.Unlock()
	for id, want := range map[string]int{"by-operator": 1, "by-redirects": 1, "twice": 1, "stays": 0, dcr: 0} {
		if rev.done[id] != want {
			t.Errorf("%s revoked %d times, want %d", id, rev.done[id], want)
		}
	}
}
