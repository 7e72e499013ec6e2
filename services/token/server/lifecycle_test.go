package server_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/lib/apierr"
	"github.com/mcpid/mcpid/lib/service/servicetest"
	policyserver "github.com/mcpid/mcpid/services/policy/server"
	registrationserver "github.com/mcpid/mcpid/services/registration/server"
	"github.com/mcpid/mcpid/services/token/server"
)

// policyReplica is a policy service that follows this token service's
// revocation feed, and a client of it as the CRM MCP server.
type policyReplica struct {
	srv   servicetest.Runnable
	check policyv1.PolicyServiceClient
}

// startPolicy starts a policy replica whose token-addr is tokenAddr (the
// token service, or a proxy in front of it).
func (e *env) startPolicy(t testing.TB, tokenAddr string, jwksMaxAge time.Duration) *policyReplica {
	t.Helper()
	f := e.pki.ServeTLS(t, policyserver.Name, servicetest.Flags(e.etcd.Endpoints()))
	f.ShutdownTimeout = 15 * time.Second
	pol, err := policyserver.Config{Flags: f, GatewayTLS: e.pki.GatewayTLS(policyserver.Name), Issuer: e.issuer,
		TokenAddr: tokenAddr, JWKSMaxAge: jwksMaxAge}.Complete(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	servicetest.Run(t, pol)
	servicetest.WaitReady(t, pol, policyserver.Name)
	return &policyReplica{srv: pol, check: policyv1.NewPolicyServiceClient(e.pki.Dial(t, pol, policyserver.Name, e.pki.AsMCPServer(t, resCRM)))}
}

// decide asks the replica whether tok may call search_customers on CRM.
func (p *policyReplica) decide(t testing.TB, tok string) *policyv1.CheckResult {
	t.Helper()
	resp, err := p.check.Check(context.Background(), &policyv1.CheckRequest{AccessToken: tok, Resource: resCRM, Tool: "search_customers"})
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return resp.GetResult()
}

func (p *policyReplica) waitAllow(t testing.TB, tok string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := p.decide(t, tok)
		if r.GetDecision() == policyv1.Decision_DECISION_ALLOW {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("token never allowed: %v", r)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitRevoked polls until the replica denies tok as revoked; the bound is a
// correctness bound counted from since (the revoke call), not a speed
// assertion.
func (p *policyReplica) waitRevoked(t testing.TB, tok string, since time.Time, bound time.Duration) {
	t.Helper()
	for {
		r := p.decide(t, tok)
		if r.GetDecision() == policyv1.Decision_DECISION_DENY && r.GetReason() == policyv1.DecisionReason_DECISION_REASON_TOKEN_REVOKED {
			return
		}
		if time.Since(since) > bound {
			t.Fatalf("token still %v/%v %v after the revocation", r.GetDecision(), r.GetReason(), time.Since(since))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ccToken obtains a client_credentials token.
func (e *env) ccToken(t testing.TB, clientID, secret, res string) string {
	t.Helper()
	r := e.post("/oauth2/token", tokenForm("grant_type", "client_credentials", "resource", res, "client_id", clientID, "client_secret", secret), "", "")
	return decodeToken(t, r).AccessToken
}

// userToken runs the authorization code flow for clientWeb as alice.
func (e *env) userToken(t testing.TB, scope string) tokenResp {
	t.Helper()
	a := webAuthz(scope)
	code, _ := e.fullFlow(a, scope)
	return decodeToken(t, e.exchange(code, a))
}

// afterWatermark waits until tokens issued now are no longer covered by a
// watermark (iat has second precision).
func (e *env) afterWatermark(t testing.TB, before time.Time) {
	t.Helper()
	for e.clock.now().Before(before) {
		time.Sleep(20 * time.Millisecond)
	}
}

func reasonIs(t testing.TB, err error, code codes.Code, reason string) {
	t.Helper()
	info := apierr.Info(err)
	if status.Code(err) != code || info == nil || info.GetReason() != reason {
		t.Fatalf("error = %v, want %v / %s", err, code, reason)
	}
}

// TestRevocationsReachPolicy: revoking by grant, user, client and resource
// each makes a real policy replica (following the feed over mTLS) deny the
// revoked tokens within one second, while tokens issued after a watermark
// work again. It also covers the grant inventory reads.
func TestRevocationsReachPolicy(t *testing.T) {
	e := startEnv(t)
	ctx := context.Background()
	pol := e.startPolicy(t, e.srv.GRPCAddr().String(), 0)
	const bound = time.Second

	t.Run("grant", func(t *testing.T) {
		tr := e.userToken(t, "crm:read")
		pol.waitAllow(t, tr.AccessToken)
		_, c := claims(t, tr.AccessToken)
		gid := c["grant_id"].(string)
		g, err := e.grpcTok.GetGrant(ctx, &tokenv1.GetGrantRequest{GrantId: gid})
		if err != nil || g.GetGrant().GetClientId() != clientWeb || g.GetGrant().GetResource() != resCRM ||
			g.GetGrant().GetGrantType() != tokenv1.GrantType_GRANT_TYPE_AUTHORIZATION_CODE || g.GetGrant().GetCreateTime() == nil {
			t.Fatalf("GetGrant = %v, %v", g, err)
		}
		uid, _ := e.userID(testUser)
		list, err := e.grpcTok.ListGrants(ctx, &tokenv1.ListGrantsRequest{UserId: uid, ClientId: clientWeb, Resource: resCRM + "/"})
		if err != nil || !slices.ContainsFunc(list.GetGrants(), func(g *tokenv1.Grant) bool { return g.GetGrantId() == gid }) {
			t.Fatalf("ListGrants by user = %v, %v", list, err)
		}
		start := time.Now()
		resp, err := e.grpcTok.RevokeGrants(ctx, &tokenv1.RevokeGrantsRequest{Selector: &tokenv1.RevokeGrantsRequest_GrantId{GrantId: gid}, Reason: "test"})
		if err != nil || resp.GetRevokedGrantCount() != 1 || resp.GetRevision() == 0 || resp.GetIssuedBefore() != nil {
			t.Fatalf("RevokeGrants = %v, %v", resp, err)
		}
		pol.waitRevoked(t, tr.AccessToken, start, bound)
		_, err = e.grpcTok.GetGrant(ctx, &tokenv1.GetGrantRequest{GrantId: gid})
		reasonIs(t, err, codes.NotFound, tokenv1.ErrorReason_ERROR_REASON_GRANT_NOT_FOUND.String())
		_, err = e.grpcTok.RevokeGrants(ctx, &tokenv1.RevokeGrantsRequest{Selector: &tokenv1.RevokeGrantsRequest_GrantId{GrantId: gid}})
		reasonIs(t, err, codes.NotFound, tokenv1.ErrorReason_ERROR_REASON_GRANT_NOT_FOUND.String())
		// The refresh token of the revoked grant is dead too.
		r := e.post("/oauth2/token", tokenForm("grant_type", "refresh_token", "refresh_token", tr.RefreshToken), clientWeb, secretWeb)
		if tr.RefreshToken != "" && r.code != http.StatusBadRequest {
			t.Fatalf("refresh after revocation: %d %s", r.code, r.body)
		}
	})

	t.Run("client", func(t *testing.T) {
		tok := e.ccToken(t, clientMachine, secretMachine, resCRM)
		pol.waitAllow(t, tok)
		list, err := e.grpcTok.ListGrants(ctx, &tokenv1.ListGrantsRequest{ClientId: clientMachine, GrantType: tokenv1.GrantType_GRANT_TYPE_CLIENT_CREDENTIALS})
		if err != nil || len(list.GetGrants()) != 1 {
			t.Fatalf("ListGrants by client = %v, %v", list, err)
		}
		start := time.Now()
		resp, err := e.grpcTok.RevokeGrants(ctx, &tokenv1.RevokeGrantsRequest{Selector: &tokenv1.RevokeGrantsRequest_ClientId{ClientId: clientMachine}})
		if err != nil || resp.GetRevokedGrantCount() != 1 || resp.GetIssuedBefore() == nil {
			t.Fatalf("RevokeGrants = %v, %v", resp, err)
		}
		pol.waitRevoked(t, tok, start, bound)
		// A token issued after the watermark is accepted: the client may
		// obtain new ones (registration decides whether it still exists).
		e.afterWatermark(t, resp.GetIssuedBefore().AsTime())
		pol.waitAllow(t, e.ccToken(t, clientMachine, secretMachine, resCRM))
	})

	t.Run("resource", func(t *testing.T) {
		tok := e.ccToken(t, clientMachine, secretMachine, resCRM)
		pol.waitAllow(t, tok)
		start := time.Now()
		resp, err := e.grpcTok.RevokeGrants(ctx, &tokenv1.RevokeGrantsRequest{Selector: &tokenv1.RevokeGrantsRequest_Resource{Resource: "HTTPS://MCP.example.com/crm/"}})
		if err != nil || resp.GetIssuedBefore() == nil {
			t.Fatalf("RevokeGrants = %v, %v", resp, err)
		}
		pol.waitRevoked(t, tok, start, bound)
		list, err := e.grpcTok.ListGrants(ctx, &tokenv1.ListGrantsRequest{Resource: resCRM})
		if err != nil || len(list.GetGrants()) != 0 {
			t.Fatalf("grants left for the resource: %v, %v", list, err)
		}
		e.afterWatermark(t, resp.GetIssuedBefore().AsTime())
	})

	t.Run("user", func(t *testing.T) {
		tr := e.userToken(t, "crm:read")
		pol.waitAllow(t, tr.AccessToken)
		uid, _ := e.userID(testUser)
		start := time.Now()
		resp, err := e.grpcTok.RevokeGrants(ctx, &tokenv1.RevokeGrantsRequest{Selector: &tokenv1.RevokeGrantsRequest_UserId{UserId: uid}, Reason: "left"})
		if err != nil || resp.GetRevokedGrantCount() < 1 || resp.GetIssuedBefore() == nil {
			t.Fatalf("RevokeGrants = %v, %v", resp, err)
		}
		pol.waitRevoked(t, tr.AccessToken, start, bound)
		_, err = e.grpcTok.RevokeGrants(ctx, &tokenv1.RevokeGrantsRequest{Selector: &tokenv1.RevokeGrantsRequest_UserId{UserId: "usr_nobody"}})
		reasonIs(t, err, codes.NotFound, tokenv1.ErrorReason_ERROR_REASON_USER_NOT_FOUND.String())
	})

	t.Run("bad requests", func(t *testing.T) {
		_, err := e.grpcTok.RevokeGrants(ctx, &tokenv1.RevokeGrantsRequest{})
		reasonIs(t, err, codes.InvalidArgument, apierr.ReasonInvalidField)
		_, err = e.grpcTok.RevokeGrants(ctx, &tokenv1.RevokeGrantsRequest{Selector: &tokenv1.RevokeGrantsRequest_Resource{Resource: "not a uri"}})
		reasonIs(t, err, codes.InvalidArgument, apierr.ReasonInvalidField)
		_, err = e.grpcTok.ListGrants(ctx, &tokenv1.ListGrantsRequest{PageToken: "garbage"})
		reasonIs(t, err, codes.InvalidArgument, apierr.ReasonPageTokenInvalid)
		// An auditor may read but not revoke.
		auditor := tokenv1.NewTokenServiceClient(e.pki.Dial(t, e.srv, server.Name, e.pki.AsOperator(t, "eve", "auditor")))
		if _, err := auditor.ListGrants(ctx, &tokenv1.ListGrantsRequest{}); err != nil {
			t.Fatalf("auditor ListGrants: %v", err)
		}
		_, err = auditor.RevokeGrants(ctx, &tokenv1.RevokeGrantsRequest{Selector: &tokenv1.RevokeGrantsRequest_ClientId{ClientId: clientWeb}})
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("auditor RevokeGrants = %v", err)
		}
		// The registration service may revoke by client only.
		reg := tokenv1.NewTokenServiceClient(e.pki.Dial(t, e.srv, server.Name, e.pki.AsService(t, "registration")))
		_, err = reg.RevokeGrants(ctx, &tokenv1.RevokeGrantsRequest{Selector: &tokenv1.RevokeGrantsRequest_Resource{Resource: resCRM}})
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("registration RevokeGrants by resource = %v", err)
		}
	})
}

// TestRevocationFeedRules: an MCP server reads only its own resource's
// entries; list-then-watch is consistent; bad revisions are OUT_OF_RANGE.
func TestRevocationFeedRules(t *testing.T) {
	e := startEnv(t)
	ctx := context.Background()
	mcp := tokenv1.NewTokenServiceClient(e.pki.Dial(t, e.srv, server.Name, e.pki.AsMCPServer(t, resCRM)))
	_, err := mcp.ListRevocations(ctx, &tokenv1.ListRevocationsRequest{})
	reasonIs(t, err, codes.PermissionDenied, tokenv1.ErrorReason_ERROR_REASON_CALLER_RESOURCE_MISMATCH.String())
	_, err = mcp.ListRevocations(ctx, &tokenv1.ListRevocationsRequest{Resource: resFiles})
	reasonIs(t, err, codes.PermissionDenied, tokenv1.ErrorReason_ERROR_REASON_CALLER_RESOURCE_MISMATCH.String())
	stream, err := mcp.WatchRevocations(ctx, &tokenv1.WatchRevocationsRequest{Resource: resFiles})
	if err == nil {
		_, err = stream.Recv()
	}
	reasonIs(t, err, codes.PermissionDenied, tokenv1.ErrorReason_ERROR_REASON_CALLER_RESOURCE_MISMATCH.String())
	anon := tokenv1.NewTokenServiceClient(e.pki.Dial(t, e.srv, server.Name, nil))
	if _, err := anon.ListRevocations(ctx, &tokenv1.ListRevocationsRequest{}); status.Code(err) != codes.Unauthenticated && status.Code(err) != codes.PermissionDenied {
		t.Fatalf("anonymous ListRevocations = %v", err)
	}

	list, err := mcp.ListRevocations(ctx, &tokenv1.ListRevocationsRequest{Resource: resCRM})
	if err != nil || list.GetRevision() == 0 {
		t.Fatalf("ListRevocations = %v, %v", list, err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err = mcp.WatchRevocations(wctx, &tokenv1.WatchRevocationsRequest{Resource: resCRM, StartRevision: list.GetRevision() + 1})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil || len(first.GetRevocations()) != 0 || first.GetRevision() != list.GetRevision() {
		t.Fatalf("first message = %v, %v (want progress at %d)", first, err, list.GetRevision())
	}
	// A Files revocation is not sent to the CRM server; a CRM one is.
	if _, err := e.grpcTok.RevokeGrants(ctx, &tokenv1.RevokeGrantsRequest{Selector: &tokenv1.RevokeGrantsRequest_Resource{Resource: resFiles}}); err != nil {
		t.Fatal(err)
	}
	crm, err := e.grpcTok.RevokeGrants(ctx, &tokenv1.RevokeGrantsRequest{Selector: &tokenv1.RevokeGrantsRequest_Resource{Resource: resCRM}})
	if err != nil {
		t.Fatal(err)
	}
	var got []*tokenv1.Revocation
	for i := 0; i < 20 && len(got) == 0; i++ {
		msg, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, msg.GetRevocations()...)
		if len(got) > 0 && msg.GetRevision() != crm.GetRevision() {
			t.Fatalf("entry at revision %d, revoke said %d", msg.GetRevision(), crm.GetRevision())
		}
	}
	if len(got) != 1 || got[0].GetKind() != tokenv1.RevocationKind_REVOCATION_KIND_RESOURCE || got[0].GetId() != resCRM ||
		!got[0].GetIssuedBefore().AsTime().Equal(crm.GetIssuedBefore().AsTime()) {
		t.Fatalf("streamed %v", got)
	}

	ahead, err := e.grpcTok.WatchRevocations(ctx, &tokenv1.WatchRevocationsRequest{StartRevision: crm.GetRevision() + 1000})
	if err == nil {
		_, err = ahead.Recv()
	}
	reasonIs(t, err, codes.OutOfRange, tokenv1.ErrorReason_ERROR_REASON_REVISION_AHEAD.String())
	if _, err := e.cli.Compact(ctx, crm.GetRevision()); err != nil {
		t.Fatal(err)
	}
	old, err := e.grpcTok.WatchRevocations(ctx, &tokenv1.WatchRevocationsRequest{StartRevision: 2})
	if err == nil {
		_, err = old.Recv()
		for err == nil {
			_, err = old.Recv()
		}
	}
	reasonIs(t, err, codes.OutOfRange, tokenv1.ErrorReason_ERROR_REASON_REVISION_COMPACTED.String())
}

// cutProxy forwards TCP connections to target until cut; while cut it
// refuses new ones and has closed the open ones (a network partition).
type cutProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  []net.Conn
}

func newCutProxy(t testing.TB, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target}
	t.Cleanup(func() { _ = ln.Close(); p.setCut(true) })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.cut {
				p.mu.Unlock()
				_ = c.Close()
				continue
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				p.mu.Unlock()
				_ = c.Close()
				continue
			}
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); _ = up.Close() }()
			go func() { _, _ = io.Copy(c, up); _ = c.Close() }()
		}
	}()
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.conns = nil
	}
}

// TestPolicyReplicaMissesNothingAcrossAGap: a policy replica's connection
// to the token service is cut; revocations made during the gap are all
// enforced once it reconnects (it resumes from the last revision it saw).
func TestPolicyReplicaMissesNothingAcrossAGap(t *testing.T) {
	e := startEnv(t)
	ctx := context.Background()
	proxy := newCutProxy(t, e.srv.GRPCAddr().String())
	pol := e.startPolicy(t, proxy.addr(), 0)
	var toks []string
	var gids []string
	for range 3 {
		tr := e.userToken(t, "crm:read")
		pol.waitAllow(t, tr.AccessToken)
		_, c := claims(t, tr.AccessToken)
		toks, gids = append(toks, tr.AccessToken), append(gids, c["grant_id"].(string))
	}
	machine := e.ccToken(t, clientMachine, secretMachine, resCRM)
	pol.waitAllow(t, machine)

	proxy.setCut(true)
	for _, gid := range gids {
		if _, err := e.grpcTok.RevokeGrants(ctx, &tokenv1.RevokeGrantsRequest{Selector: &tokenv1.RevokeGrantsRequest_GrantId{GrantId: gid}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.grpcTok.RevokeGrants(ctx, &tokenv1.RevokeGrantsRequest{Selector: &tokenv1.RevokeGrantsRequest_ClientId{ClientId: clientMachine}}); err != nil {
		t.Fatal(err)
	}
	// Meanwhile the replica still answers from what it has (within its
	// silence bound).
	time.Sleep(200 * time.Millisecond)
	proxy.setCut(false)
	since := time.Now()
	for _, tok := range append(toks, machine) {
		pol.waitRevoked(t, tok, since, 30*time.Second)
	}
}

// TestRegistrationRevokesSuspendedClient: a registration replica with
// token-addr delivers a suspension to the token service over mTLS
// (RevokeGrants + RevokeConsents by client_id); the client's tokens then
// fail at the policy service and its grants are gone.
func TestRegistrationRevokesSuspendedClient(t *testing.T) {
	e := startEnv(t)
	ctx := context.Background()
	pol := e.startPolicy(t, e.srv.GRPCAddr().String(), 0)
	f := e.pki.ServeTLS(t, registrationserver.Name, servicetest.Flags(e.etcd.Endpoints()))
	f.ShutdownTimeout = 15 * time.Second
	reg, err := registrationserver.Config{Flags: f, GatewayTLS: e.pki.GatewayTLS(registrationserver.Name), Issuer: e.issuer,
		TokenAddr: e.srv.GRPCAddr().String()}.Complete(ctx)
	if err != nil {
		t.Fatal(err)
	}
	servicetest.Run(t, reg)
	servicetest.WaitReady(t, reg, registrationserver.Name)

	tok := e.ccToken(t, clientMachine, secretMachine, resCRM)
	pol.waitAllow(t, tok)
	start := time.Now()
	if _, err := e.regAdmin.SetClientVerification(ctx, &registrationv1.SetClientVerificationRequest{ClientId: clientMachine,
		Status: registrationv1.VerificationStatus_VERIFICATION_STATUS_SUSPENDED, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	pol.waitRevoked(t, tok, start, 30*time.Second)
	list, err := e.grpcTok.ListGrants(ctx, &tokenv1.ListGrantsRequest{ClientId: clientMachine})
	if err != nil || len(list.GetGrants()) != 0 {
		t.Fatalf("grants of the suspended client: %v, %v", list, err)
	}
}
