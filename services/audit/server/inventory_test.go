package server_test

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/lib/devca"
	"github.com/mcpid/mcpid/services/audit/server"
)

// fakeRegistrationService is a TEST FAKE of the registration service's
// GetClient (the real service does not implement it yet): it knows a fixed
// set of clients and answers NOT_FOUND for others, over real mTLS.
type fakeRegistrationService struct {
	registrationv1.UnimplementedRegistrationServiceServer
	clients map[string]*registrationv1.Client
}

func (f *fakeRegistrationService) GetClient(_ context.Context, req *registrationv1.GetClientRequest) (*registrationv1.GetClientResponse, error) {
	c, ok := f.clients[req.GetClientId()]
	if !ok {
		return nil, status.Error(codes.NotFound, "no such client")
	}
	return &registrationv1.GetClientResponse{Client: c}, nil
}

// fakeTokenService is a TEST FAKE of the token service's ListGrants (the
// real service does not implement it yet).
type fakeTokenService struct {
	tokenv1.UnimplementedTokenServiceServer
	grants []*tokenv1.Grant
}

func (f *fakeTokenService) ListGrants(_ context.Context, req *tokenv1.ListGrantsRequest) (*tokenv1.ListGrantsResponse, error) {
	resp := &tokenv1.ListGrantsResponse{}
	for _, g := range f.grants {
		if g.GetClientId() == req.GetClientId() {
			resp.Grants = append(resp.Grants, g)
		}
	}
	return resp, nil
}

// serveFake serves fakes as mcpid service name over mTLS on loopback.
func (e *env) serveFake(t *testing.T, name string, register func(*grpc.Server)) string {
	t.Helper()
	leaf, err := e.pki.CA.IssueService(name)
	if err != nil {
		t.Fatal(err)
	}
	cert := leaf.TLSCertificate()
	creds := credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert},
		ClientCAs: e.pki.CA.Pool(), ClientAuth: tls.RequireAndVerifyClientCert,
	})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(creds))
	register(srv)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func inventoryEvents(t *testing.T, e *env, r *replica) uint64 {
	t.Helper()
	reg := e.as(t, r, e.service(t, devca.ServiceRegistration))
	policy := e.as(t, r, e.service(t, devca.ServicePolicy))
	appendOK(t, reg, e.registered(t, "c1", "Agent One"), e.registered(t, "c2", "Agent Two"))
	weighted := e.decision(t, "c1", "search", auditv1.Decision_DECISION_ALLOW)
	weighted.SampleWeight = 5
	appendOK(t, policy, weighted, e.decision(t, "c1", "search", auditv1.Decision_DECISION_DENY),
		e.decision(t, "c1", "delete", auditv1.Decision_DECISION_DENY))
	deleted := &auditv1.Event{Id: e.id(t), Time: timestamppb.Now(), Type: auditv1.EventType_EVENT_TYPE_CLIENT_DELETED,
		Actor: &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_CLIENT, Id: "c2"}, ClientId: "c2"}
	res := appendOK(t, reg, deleted)
	return res[0].GetSequence()
}

func waitProjected(t *testing.T, c auditv1.AuditServiceClient, id string, seq uint64) {
	t.Helper()
	eventually(t, "the inventory projection", func() bool {
		resp, err := c.GetAgent(testCtx(t), &auditv1.GetAgentRequest{ClientId: id, View: auditv1.AgentView_AGENT_VIEW_BASIC})
		return err == nil && resp.GetAgent().GetActivity().GetAsOfSequence() >= seq
	})
}

func TestInventoryFromEventsAlone(t *testing.T) {
	e := newEnv(t)
	r := e.start(t, nil)
	last := inventoryEvents(t, e, r)
	auditor := e.as(t, r, e.operator(t, devca.RoleAuditor))
	waitProjected(t, auditor, "c2", last)
	waitProjected(t, auditor, "c1", last-1)

	got, err := auditor.GetAgent(testCtx(t), &auditv1.GetAgentRequest{ClientId: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	a := got.GetAgent()
	act := a.GetActivity()
	if a.GetClientName() != "Agent One" || a.GetSource() != auditv1.AgentSource_AGENT_SOURCE_DCR || a.GetState() != auditv1.AgentState_AGENT_STATE_ACTIVE ||
		a.GetVerificationStatus() != auditv1.AgentVerificationStatus_AGENT_VERIFICATION_STATUS_UNVERIFIED ||
		act.GetEventCount() != 4 || act.GetAllowCount() != 5 || act.GetDenyCount() != 2 || len(act.GetResources()) != 1 ||
		len(act.GetResources()[0].GetTools()) != 2 {
		t.Fatalf("agent from events: %v", a)
	}
	if len(got.GetUnavailableSources()) != 2 {
		t.Fatalf("unavailable sources %v, want registration and token (not configured)", got.GetUnavailableSources())
	}

	list, err := auditor.ListAgents(testCtx(t), &auditv1.ListAgentsRequest{})
	if err != nil || len(list.GetAgents()) != 1 || list.GetAgents()[0].GetClientId() != "c1" || list.GetAgents()[0].GetActivity().GetResources() != nil {
		t.Fatalf("default list (active only, basic): %v %v", list, err)
	}
	list, err = auditor.ListAgents(testCtx(t), &auditv1.ListAgentsRequest{IncludeRemoved: true, PageSize: 1})
	if err != nil || len(list.GetAgents()) != 1 || list.GetNextPageToken() == "" {
		t.Fatalf("first page: %v %v", list, err)
	}
	next, err := auditor.ListAgents(testCtx(t), &auditv1.ListAgentsRequest{IncludeRemoved: true, PageSize: 1, PageToken: list.GetNextPageToken()})
	if err != nil || len(next.GetAgents()) != 1 || next.GetAgents()[0].GetClientId() != "c2" ||
		next.GetAgents()[0].GetState() != auditv1.AgentState_AGENT_STATE_DELETED || next.GetAgents()[0].GetRemoveTime() == nil {
		t.Fatalf("second page: %v %v", next, err)
	}
	for name, c := range map[string]struct {
		req  *auditv1.ListAgentsRequest
		want int
	}{
		"resource":        {&auditv1.ListAgentsRequest{Resource: "https://MCP.example.test", IncludeRemoved: true}, 1},
		"other resource":  {&auditv1.ListAgentsRequest{Resource: "https://other.example.test"}, 0},
		"active since":    {&auditv1.ListAgentsRequest{ActiveSince: timestamppb.New(time.Now().Add(time.Hour))}, 0},
		"source":          {&auditv1.ListAgentsRequest{Sources: []auditv1.AgentSource{auditv1.AgentSource_AGENT_SOURCE_CIMD}}, 0},
		"status verified": {&auditv1.ListAgentsRequest{VerificationStatuses: []auditv1.AgentVerificationStatus{auditv1.AgentVerificationStatus_AGENT_VERIFICATION_STATUS_VERIFIED}}, 0},
	} {
		resp, err := auditor.ListAgents(testCtx(t), c.req)
		if err != nil || len(resp.GetAgents()) != c.want {
			t.Errorf("%s: %d agents (%v), want %d", name, len(resp.GetAgents()), err, c.want)
		}
	}
	_, err = auditor.GetAgent(testCtx(t), &auditv1.GetAgentRequest{ClientId: "nobody"})
	wantErr(t, "unknown agent", err, codes.NotFound, auditv1.ErrorReason_ERROR_REASON_AGENT_NOT_FOUND)
	_, err = auditor.GetAgent(testCtx(t), &auditv1.GetAgentRequest{})
	wantErr(t, "no client_id", err, codes.InvalidArgument, auditv1.ErrorReason_ERROR_REASON_INVALID_FIELD)
	_, err = auditor.ListAgents(testCtx(t), &auditv1.ListAgentsRequest{PageToken: "x"})
	wantErr(t, "bad token", err, codes.InvalidArgument, auditv1.ErrorReason_ERROR_REASON_PAGE_TOKEN_INVALID)
	_, err = auditor.ListAgents(testCtx(t), &auditv1.ListAgentsRequest{Resource: "no uri"})
	wantErr(t, "bad resource", err, codes.InvalidArgument, auditv1.ErrorReason_ERROR_REASON_INVALID_FIELD)
}

func TestInventoryEnrichedByRegistrationAndToken(t *testing.T) {
	e := newEnv(t)
	reg := &fakeRegistrationService{clients: map[string]*registrationv1.Client{
		"c1": {
			ClientId: "c1", Source: registrationv1.ClientSource_CLIENT_SOURCE_OPERATOR,
			Metadata:         &registrationv1.ClientMetadata{ClientName: "Agent One (renamed)"},
			Verification:     &registrationv1.ClientVerification{Status: registrationv1.VerificationStatus_VERIFICATION_STATUS_VERIFIED},
			AllowedResources: []*registrationv1.AllowedResource{{Resource: "https://mcp.example.test", Scopes: []string{"crm:read"}}},
		},
		"c3": {ClientId: "c3", Source: registrationv1.ClientSource_CLIENT_SOURCE_CIMD, CreateTime: timestamppb.Now()},
	}}
	used := timestamppb.Now()
	tok := &fakeTokenService{grants: []*tokenv1.Grant{
		{GrantId: "g1", ClientId: "c1", UserId: "alice", Resource: "https://mcp.example.test", Scopes: []string{"crm:read"}, LastUseTime: used},
		{GrantId: "g2", ClientId: "c1", UserId: "bob", Resource: "https://mcp.example.test", Scopes: []string{"crm:write"}},
	}}
	regAddr := e.serveFake(t, "registration", func(s *grpc.Server) { registrationv1.RegisterRegistrationServiceServer(s, reg) })
	tokAddr := e.serveFake(t, "token", func(s *grpc.Server) { tokenv1.RegisterTokenServiceServer(s, tok) })
	r := e.start(t, func(c *server.Config) { c.RegistrationAddr, c.TokenAddr = regAddr, tokAddr })
	last := inventoryEvents(t, e, r)
	auditor := e.as(t, r, e.operator(t, devca.RoleAuditor))
	waitProjected(t, auditor, "c2", last)

	got, err := auditor.GetAgent(testCtx(t), &auditv1.GetAgentRequest{ClientId: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	a := got.GetAgent()
	if len(got.GetUnavailableSources()) != 0 || a.GetClientName() != "Agent One (renamed)" ||
		a.GetVerificationStatus() != auditv1.AgentVerificationStatus_AGENT_VERIFICATION_STATUS_VERIFIED ||
		a.GetSource() != auditv1.AgentSource_AGENT_SOURCE_OPERATOR || len(a.GetClientCredentialsAllowances()) != 1 ||
		len(a.GetGrants()) != 1 || a.GetGrants()[0].GetGrantCount() != 2 || a.GetGrants()[0].GetUserCount() != 2 ||
		len(a.GetGrants()[0].GetScopes()) != 2 || !a.GetGrants()[0].GetLastUsedTime().AsTime().Equal(used.AsTime()) ||
		a.GetActivity().GetAllowCount() != 5 {
		t.Fatalf("enriched agent: %v (unavailable %v)", a, got.GetUnavailableSources())
	}
	// Registration knows c3 although the chain never named it.
	if got, err := auditor.GetAgent(testCtx(t), &auditv1.GetAgentRequest{ClientId: "c3"}); err != nil || got.GetAgent().GetSource() != auditv1.AgentSource_AGENT_SOURCE_CIMD {
		t.Fatalf("agent known to registration only: %v %v", got, err)
	}
	list, err := auditor.ListAgents(testCtx(t), &auditv1.ListAgentsRequest{
		VerificationStatuses: []auditv1.AgentVerificationStatus{auditv1.AgentVerificationStatus_AGENT_VERIFICATION_STATUS_VERIFIED}, View: auditv1.AgentView_AGENT_VIEW_FULL})
	if err != nil || len(list.GetAgents()) != 1 || len(list.GetAgents()[0].GetGrants()) != 1 || len(list.GetUnavailableSources()) != 0 {
		t.Fatalf("list verified, full: %v %v", list, err)
	}
}

// Services that do not answer degrade the answer instead of failing it.
func TestInventoryWithUnreachableServices(t *testing.T) {
	e := newEnv(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := lis.Addr().String()
	_ = lis.Close()
	r := e.start(t, func(c *server.Config) { c.RegistrationAddr, c.TokenAddr = closed, closed })
	last := inventoryEvents(t, e, r)
	auditor := e.as(t, r, e.operator(t, devca.RoleAuditor))
	waitProjected(t, auditor, "c2", last)
	got, err := auditor.GetAgent(testCtx(t), &auditv1.GetAgentRequest{ClientId: "c1"})
	if err != nil || got.GetAgent().GetClientName() != "Agent One" || len(got.GetUnavailableSources()) != 2 {
		t.Fatalf("degraded agent: %v %v", got, err)
	}
	list, err := auditor.ListAgents(testCtx(t), &auditv1.ListAgentsRequest{})
	if err != nil || len(list.GetAgents()) != 1 || len(list.GetUnavailableSources()) != 1 ||
		list.GetUnavailableSources()[0] != auditv1.AgentDataSource_AGENT_DATA_SOURCE_REGISTRATION {
		t.Fatalf("degraded list: %v %v", list, err)
	}
}
