package server_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oauth2-proxy/mockoidc"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/services/token/internal/store"
	"github.com/mcpid/mcpid/services/token/server"
)

// k1GrantOf returns the grant_id claim of an access token.
func k1GrantOf(t testing.TB, tok string) string {
	t.Helper()
	_, c := claims(t, tok)
	return c["grant_id"].(string)
}

// TestK1ClientCredentialsGrantRevocation: revoking a client_credentials
// grant by grant_id kills the tokens issued before it at a real policy
// replica while the tokens the client obtains afterwards work; the
// inventory shows the grant the client is using, with its last use moving
// at most once a minute.
func TestK1ClientCredentialsGrantRevocation(t *testing.T) {
	e := startEnv(t)
	ctx := context.Background()
	pol := e.startPolicy(t, e.srv.GRPCAddr().String(), 0)

	old := e.ccToken(t, clientMachine, secretMachine, resCRM)
	pol.waitAllow(t, old)
	gid := k1GrantOf(t, old)
	g, err := e.grpcTok.GetGrant(ctx, &tokenv1.GetGrantRequest{GrantId: gid})
	if err != nil || g.GetGrant().GetLastUseTime() == nil {
		t.Fatalf("GetGrant = %v, %v", g, err)
	}
	firstUse := g.GetGrant().GetLastUseTime().AsTime()

	// Last use: not written again within the minute, written after it.
	e.ccToken(t, clientMachine, secretMachine, resCRM)
	e.clock.advance(61 * time.Second)
	e.ccToken(t, clientMachine, secretMachine, resCRM)
	g, err = e.grpcTok.GetGrant(ctx, &tokenv1.GetGrantRequest{GrantId: gid})
	if err != nil || !g.GetGrant().GetLastUseTime().AsTime().After(firstUse.Add(time.Minute)) {
		t.Fatalf("last use not moved after a minute: %v (first %v), %v", g.GetGrant().GetLastUseTime().AsTime(), firstUse, err)
	}
	e.ccToken(t, clientMachine, secretMachine, resCRM)
	g2, err := e.grpcTok.GetGrant(ctx, &tokenv1.GetGrantRequest{GrantId: gid})
	if err != nil || !g2.GetGrant().GetLastUseTime().AsTime().Equal(g.GetGrant().GetLastUseTime().AsTime()) {
		t.Fatalf("last use written twice within a minute: %v vs %v", g2.GetGrant().GetLastUseTime(), g.GetGrant().GetLastUseTime())
	}
	// Back to the policy replica's time.
	e.clock.advance(-61 * time.Second)
	again := e.ccToken(t, clientMachine, secretMachine, resCRM)
	pol.waitAllow(t, again)

	start := time.Now()
	resp, err := e.grpcTok.RevokeGrants(ctx, &tokenv1.RevokeGrantsRequest{Selector: &tokenv1.RevokeGrantsRequest_GrantId{GrantId: gid}, Reason: "test"})
	if err != nil || resp.GetRevokedGrantCount() != 1 {
		t.Fatalf("RevokeGrants = %v, %v", resp, err)
	}
	pol.waitRevoked(t, old, start, time.Second)
	pol.waitRevoked(t, again, start, time.Second)

	// Issued after the revocation: a new grant id, accepted.
	fresh := e.ccToken(t, clientMachine, secretMachine, resCRM)
	if k1GrantOf(t, fresh) == gid {
		t.Fatal("a token issued after the revocation carries the revoked grant id")
	}
	pol.waitAllow(t, fresh)
	list, err := e.grpcTok.ListGrants(ctx, &tokenv1.ListGrantsRequest{ClientId: clientMachine, GrantType: tokenv1.GrantType_GRANT_TYPE_CLIENT_CREDENTIALS})
	if err != nil || !slices.ContainsFunc(list.GetGrants(), func(g *tokenv1.Grant) bool { return g.GetGrantId() == k1GrantOf(t, fresh) }) {
		t.Fatalf("the grant in use is not in the inventory: %v, %v", list, err)
	}

	// Revoked again: the next generation, and the first one is not reused
	// while its revocation is live.
	gid2 := k1GrantOf(t, fresh)
	if _, err := e.grpcTok.RevokeGrants(ctx, &tokenv1.RevokeGrantsRequest{Selector: &tokenv1.RevokeGrantsRequest_GrantId{GrantId: gid2}}); err != nil {
		t.Fatal(err)
	}
	third := e.ccToken(t, clientMachine, secretMachine, resCRM)
	if id := k1GrantOf(t, third); id == gid || id == gid2 {
		t.Fatalf("third generation reuses a revoked id %s", id)
	}
	pol.waitAllow(t, third)

	// A client-wide revocation deletes the record; the next issuance on
	// this replica records it again despite the per-replica cache.
	cr, err := e.grpcTok.RevokeGrants(ctx, &tokenv1.RevokeGrantsRequest{Selector: &tokenv1.RevokeGrantsRequest_ClientId{ClientId: clientMachine}})
	if err != nil {
		t.Fatal(err)
	}
	e.afterWatermark(t, cr.GetIssuedBefore().AsTime())
	after := e.ccToken(t, clientMachine, secretMachine, resCRM)
	if _, err := e.grpcTok.GetGrant(ctx, &tokenv1.GetGrantRequest{GrantId: k1GrantOf(t, after)}); err != nil {
		t.Fatalf("grant not recorded again after a client revocation: %v", err)
	}
}

// TestK1CodesAndRefreshesDieWithRevocations: an authorization code issued
// before a user revocation or a consent revocation cannot be redeemed; a
// refresh that commits inside a revocation (its watermark written, its
// grant listing not yet done) undoes itself; the watermark covers a token
// minted by a replica whose clock runs ahead by less than the skew margin.
func TestK1CodesAndRefreshesDieWithRevocations(t *testing.T) {
	e := startEnv(t, func(o *envOptions) {
		o.tweak = func(_ *env, c *server.Config) { c.RevocationClockSkew = 5 * time.Second }
	})
	ctx := context.Background()
	uid, err := e.userID(testUser)
	if err != nil {
		t.Fatal(err)
	}
	refuses := func(what string, r response) {
		t.Helper()
		if c, _ := oauthError(t, r.body); r.code != http.StatusBadRequest || c != "invalid_grant" {
			t.Fatalf("%s: %d %s, want invalid_grant", what, r.code, r.body)
		}
	}

	t.Run("user revocation kills an unredeemed code", func(t *testing.T) {
		a := webAuthz("crm:read offline_access")
		code, _ := e.fullFlow(a, "crm:read", "offline_access")
		if _, err := e.grpcTok.RevokeGrants(ctx, &tokenv1.RevokeGrantsRequest{Selector: &tokenv1.RevokeGrantsRequest_UserId{UserId: uid}}); err != nil {
			t.Fatal(err)
		}
		refuses("code after user revocation", e.exchange(code, a))
		list, err := e.grpcTok.ListGrants(ctx, &tokenv1.ListGrantsRequest{UserId: uid})
		if err != nil || len(list.GetGrants()) != 0 {
			t.Fatalf("grants left: %v, %v", list, err)
		}
	})

	t.Run("consent revocation kills an unredeemed code", func(t *testing.T) {
		a := webAuthz("crm:read")
		code, _ := e.fullFlow(a, "crm:read")
		if _, err := e.grpcTok.RevokeConsents(ctx, &tokenv1.RevokeConsentsRequest{Selector: &tokenv1.RevokeConsentsRequest_Consent{
			Consent: &tokenv1.ConsentKey{UserId: uid, ClientId: clientWeb, Resource: resCRM},
		}}); err != nil {
			t.Fatal(err)
		}
		refuses("code after consent revocation", e.exchange(code, a))
		// A code issued after the revocation works.
		a = webAuthz("crm:read")
		code, _ = e.fullFlow(a, "crm:read")
		if r := e.exchange(code, a); r.code != http.StatusOK {
			t.Fatalf("fresh code: %d %s", r.code, r.body)
		}
	})

	t.Run("refresh racing a revocation", func(t *testing.T) {
		a := webAuthz("crm:read offline_access")
		code, _ := e.fullFlow(a, "crm:read", "offline_access")
		tr := decodeToken(t, e.exchange(code, a))
		// The revoker's first step only: the USER watermark is written, its
		// grant listing has not run yet.
		db, err := store.New(e.cli, server.Name, nil)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		if _, err := db.PutRevocation(ctx, &store.Revocation{Kind: store.RevokeUser, ID: uid, IssuedBefore: now.Add(time.Second), Expires: now.Add(10 * time.Minute)}); err != nil {
			t.Fatal(err)
		}
		refuses("refresh inside a revocation", e.post("/oauth2/token", tokenForm("grant_type", "refresh_token", "refresh_token", tr.RefreshToken), clientWeb, secretWeb))
		if _, err := e.grpcTok.GetGrant(ctx, &tokenv1.GetGrantRequest{GrantId: k1GrantOf(t, tr.AccessToken)}); err == nil {
			t.Fatal("the raced grant survived")
		}
	})

	t.Run("watermark covers a clock ahead by the margin", func(t *testing.T) {
		// A replica 3 s ahead mints; the revoking replica's clock is right.
		e.clock.advance(3 * time.Second)
		tok := e.ccToken(t, clientMachine, secretMachine, resCRM)
		e.clock.advance(-3 * time.Second)
		_, c := claims(t, tok)
		iat := time.Unix(int64(c["iat"].(float64)), 0)
		resp, err := e.grpcTok.RevokeGrants(ctx, &tokenv1.RevokeGrantsRequest{Selector: &tokenv1.RevokeGrantsRequest_ClientId{ClientId: clientMachine}})
		if err != nil {
			t.Fatal(err)
		}
		if !iat.Before(resp.GetIssuedBefore().AsTime()) {
			t.Fatalf("iat %v not covered by issued_before %v", iat, resp.GetIssuedBefore().AsTime())
		}
		r := e.post("/oauth2/introspect", tokenForm("token", tok), clientMCP, secretMCP)
		if r.code != http.StatusOK || r.body != `{"active":false}` {
			t.Fatalf("introspection of the covered token: %d %s", r.code, r.body)
		}
	})
}

// TestK1FederatedRefreshAfterConnectorDisabled: the refresh token of a user
// who signed in through a connector fails with invalid_grant once the
// connector is disabled, and still once it is deleted.
func TestK1FederatedRefreshAfterConnectorDisabled(t *testing.T) {
	s := startSSO(t, nil)
	ctx := context.Background()
	s.corp.m.QueueUser(&mockoidc.MockUser{Subject: "emp-9", Email: "kim@corp.example", EmailVerified: true})
	a := webAuthz("crm:read offline_access")
	b := s.browser()
	r := s.upstream(b, s.start(b, a, "connector", "corp"))
	r = b.approve(b.consentPage(r), "crm:read", "offline_access")
	tr := decodeToken(t, s.exchange(s.code(r, a), a))
	refresh := func(rt string) response {
		return s.post("/oauth2/token", tokenForm("grant_type", "refresh_token", "refresh_token", rt), clientWeb, secretWeb)
	}
	r = refresh(tr.RefreshToken)
	if r.code != http.StatusOK {
		t.Fatalf("refresh with the connector enabled: %d %s", r.code, r.body)
	}
	rt := decodeToken(t, r).RefreshToken
	if _, err := s.grpcTok.UpdateConnector(ctx, &tokenv1.UpdateConnectorRequest{
		Connector: &tokenv1.Connector{ConnectorId: "corp", Enabled: false}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"enabled"}},
	}); err != nil {
		t.Fatal(err)
	}
	s.waitFor("connector disabled", func() bool {
		b := s.browser()
		r := b.authorize(webAuthz("crm:read"))
		return !strings.Contains(b.send(http.MethodGet, r.header.Get("Location"), nil).body, "connector-corp")
	})
	if c, _ := oauthError(t, refresh(rt).body); c != "invalid_grant" {
		t.Fatal("refresh after the connector was disabled")
	}
	if _, err := s.grpcTok.DeleteConnector(ctx, &tokenv1.DeleteConnectorRequest{ConnectorId: "corp"}); err != nil {
		t.Fatal(err)
	}
	if c, _ := oauthError(t, refresh(rt).body); c != "invalid_grant" {
		t.Fatal("refresh after the connector was deleted")
	}
}
