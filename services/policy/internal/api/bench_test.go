package api_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/structpb"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	"github.com/mcpid/mcpid/lib/auditemit"
	"github.com/mcpid/mcpid/lib/etcdstore"
	"github.com/mcpid/mcpid/lib/etcdtest"
	"github.com/mcpid/mcpid/lib/principal"
	"github.com/mcpid/mcpid/services/policy/internal/api"
	"github.com/mcpid/mcpid/services/policy/internal/condition"
	"github.com/mcpid/mcpid/services/policy/internal/decision"
	"github.com/mcpid/mcpid/services/policy/internal/document"
	"github.com/mcpid/mcpid/services/policy/internal/store"
	"github.com/mcpid/mcpid/services/policy/internal/testutil"
	"github.com/mcpid/mcpid/services/policy/internal/tokens"
)

const res = "https://crm.example.com/mcp"

// ackAll acknowledges every event at once: the in-process cost of emitting,
// without a network.
type ackAll struct{}

func (ackAll) AppendEvents(_ context.Context, req *auditv1.AppendEventsRequest, _ ...grpc.CallOption) (*auditv1.AppendEventsResponse, error) {
	resp := &auditv1.AppendEventsResponse{}
	for _, ev := range req.GetEvents() {
		resp.Results = append(resp.Results, &auditv1.AppendEventResult{EventId: ev.GetId(), Status: auditv1.AppendEventStatus_APPEND_EVENT_STATUS_APPENDED})
	}
	return resp, nil
}

// newServer wires the handler as server.setup does, on a real etcd.
func newServer(b *testing.B, keys *testutil.Keys, batcher *auditemit.Batcher) *api.Server {
	b.Helper()
	e := etcdtest.Start(b)
	cli := e.Client(b)
	ob, err := auditemit.NewOutbox(auditemit.OutboxConfig{Service: "policy"})
	if err != nil {
		b.Fatal(err)
	}
	env, err := condition.NewEnv(0)
	if err != nil {
		b.Fatal(err)
	}
	st := store.NewEtcd(cli, etcdstore.MustPrefix("policy"), ob)
	idx, err := store.NewIndex(cli, st.Prefix(), env, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = idx.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-done })
	ver, err := tokens.NewVerifier(tokens.Config{Keys: keys.Set, Issuer: testutil.Issuer})
	if err != nil {
		b.Fatal(err)
	}
	s := api.New(api.Config{
		Store: st, Index: idx, Env: env, Validator: document.NewValidator(env), Batcher: batcher,
		Engine: decision.New(decision.Config{Policies: idx, Tokens: ver}),
	})
	admin := principal.NewContext(context.Background(), principal.Principal{Kind: principal.KindOperator, ID: "bench", Roles: []principal.Role{principal.RoleAdmin}})
	if _, err := s.PutPolicy(admin, &policyv1.PutPolicyRequest{Policy: &policyv1.Policy{
		Resource: res,
		Scopes: []*policyv1.Scope{
			{Name: "crm:contacts.read", Description: "Read your contacts"},
			{Name: "crm:admin", Description: "Administer", Implies: []string{"crm:contacts.read"}},
		},
		Tools: []*policyv1.Tool{
			{Name: "list_contacts", RequiredScopes: []string{"crm:contacts.read"}},
			{Name: "export_contacts", RequiredScopes: []string{"crm:contacts.read"}, Conditions: []*policyv1.Condition{
				{Expression: "arguments.limit <= 1000.0"}, {Expression: `"sales" in groups`},
			}},
		},
	}}); err != nil {
		b.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	if err := idx.WaitForRevision(wctx, 0); err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkCheckInProcess is the cost of one Check in the handler, after
// the transport: the token verified once and then served from the
// verified-token cache, the policy from memory.
func BenchmarkCheckInProcess(b *testing.B) {
	keys := testutil.NewKeys(b)
	claims := testutil.Claims(res, "crm:admin")
	claims["groups"] = []string{"sales"}
	tok := keys.Sign(b, claims)
	caller := principal.NewContext(context.Background(), principal.Principal{Kind: principal.KindMCPServer, ID: "crm", Resource: res})
	run := func(b *testing.B, s *api.Server, req *policyv1.CheckRequest) {
		if resp, err := s.Check(caller, req); err != nil || resp.GetResult().GetDecision() != policyv1.Decision_DECISION_ALLOW {
			b.Fatalf("%v %v", resp, err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			if _, err := s.Check(caller, req); err != nil {
				b.Fatal(err)
			}
		}
	}
	args, err := structpb.NewStruct(map[string]any{"limit": 10.0})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("scopes", func(b *testing.B) {
		run(b, newServer(b, keys, nil), &policyv1.CheckRequest{AccessToken: tok, Resource: res, Tool: "list_contacts"})
	})
	b.Run("scopes+2conditions", func(b *testing.B) {
		run(b, newServer(b, keys, nil), &policyv1.CheckRequest{AccessToken: tok, Resource: res, Tool: "export_contacts", Arguments: args})
	})
	b.Run("scopes+2conditions+audit", func(b *testing.B) {
		bat, err := auditemit.NewBatcher(auditemit.BatcherConfig{Appender: ackAll{}, Service: "policy"})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = bat.Close(context.Background()) })
		run(b, newServer(b, keys, bat), &policyv1.CheckRequest{AccessToken: tok, Resource: res, Tool: "export_contacts", Arguments: args})
	})
}
