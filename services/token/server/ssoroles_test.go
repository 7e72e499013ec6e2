package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oauth2-proxy/mockoidc"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/lib/devca"
	"github.com/mcpid/mcpid/services/token/server"
)

// adminSignIn runs a federated sign-in through corp for the mcpid CLI
// client and the urn:mcpid:admin audience; it returns the token's roles
// claim, or nil with ok=false when the sign-in ended in access_denied.
func (s *ssoEnv) adminSignIn(t *testing.T) ([]string, bool) {
	t.Helper()
	a := authz{clientID: clientCLI, redirect: "http://127.0.0.1:7777/callback", resource: "urn:mcpid:admin", state: "adm", verifier: newVerifier()}
	b := s.browser()
	r := s.upstream(b, s.start(b, a, "connector", "corp"))
	if q := r.location().Query(); q.Get("error") == "access_denied" {
		return nil, false
	}
	if strings.Contains(r.header.Get("Location"), "/oauth2/consent?") {
		r = b.approve(b.consentPage(r))
	}
	code := s.code(r, a)
	tr := decodeToken(t, s.post("/oauth2/token", tokenForm("grant_type", "authorization_code", "code", code, "redirect_uri", a.redirect,
		"code_verifier", a.verifier, "client_id", clientCLI), "", ""))
	_, c := claims(t, tr.AccessToken)
	var roles []string
	for _, r := range c["roles"].([]any) {
		roles = append(roles, r.(string))
	}
	return roles, true
}

// TestSSORoleMapping: a connector's role mappings give operator roles at
// every federated sign-in (just-in-time and linked users); the upstream's
// current groups replace what the connector gave before, and roles an
// operator assigned are never dropped by a sign-in.
func TestSSORoleMapping(t *testing.T) {
	s := startSSO(t, nil)
	ctx := context.Background()
	if _, err := s.grpcTok.UpdateConnector(ctx, &tokenv1.UpdateConnectorRequest{
		Connector: &tokenv1.Connector{ConnectorId: "corp", RoleMappings: []*tokenv1.GroupRoleMapping{
			{Group: "admins", Role: tokenv1.OperatorRole_OPERATOR_ROLE_ADMIN},
			{Group: "audit", Role: tokenv1.OperatorRole_OPERATOR_ROLE_AUDITOR},
		}}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"role_mappings"}},
	}); err != nil {
		t.Fatal(err)
	}
	user := func(groups ...string) {
		s.corp.m.QueueUser(&mockoidc.MockUser{Subject: "emp-9", Email: "grace@corp.example", EmailVerified: true, Groups: groups})
	}

	// Just in time: the first sign-in already carries the mapped role.
	user("admins", "eng")
	roles, ok := s.adminSignIn(t)
	if !ok || !slices.Equal(roles, []string{"admin"}) {
		t.Fatalf("JIT user in admins: roles %v, allowed %v", roles, ok)
	}
	// Linked user, upstream groups changed: the connector's roles replace
	// the previous ones.
	user("audit")
	if roles, ok := s.adminSignIn(t); !ok || !slices.Equal(roles, []string{"auditor"}) {
		t.Fatalf("linked user now in audit: roles %v, allowed %v", roles, ok)
	}
	// No mapped group any more: no operator role, the admin audience is
	// refused.
	user("eng")
	if roles, ok := s.adminSignIn(t); ok {
		t.Fatalf("user without mapped groups got an admin token with %v", roles)
	}

	// An operator-assigned role survives sign-ins that map nothing, and is
	// not duplicated by one that maps the same role.
	var uid string
	list, err := s.grpcTok.ListUsers(ctx, &tokenv1.ListUsersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range list.GetUsers() {
		if u.GetEmail() == "grace@corp.example" {
			uid = u.GetUserId()
			if len(u.GetRoles()) != 0 {
				t.Fatalf("connector roles leaked into operator roles: %v", u.GetRoles())
			}
		}
	}
	if _, err := s.grpcTok.UpdateUser(ctx, &tokenv1.UpdateUserRequest{User: &tokenv1.User{UserId: uid, Roles: []tokenv1.OperatorRole{tokenv1.OperatorRole_OPERATOR_ROLE_AUDITOR}},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"roles"}}}); err != nil {
		t.Fatal(err)
	}
	user("eng")
	if roles, ok := s.adminSignIn(t); !ok || !slices.Equal(roles, []string{"auditor"}) {
		t.Fatalf("operator role after a sign-in mapping nothing: %v, allowed %v", roles, ok)
	}
	user("audit", "admins")
	if roles, ok := s.adminSignIn(t); !ok || !slices.Equal(roles, []string{"admin", "auditor"}) {
		t.Fatalf("operator and connector roles: %v, allowed %v", roles, ok)
	}
	user()
	if roles, ok := s.adminSignIn(t); !ok || !slices.Equal(roles, []string{"auditor"}) {
		t.Fatalf("after the upstream dropped every group: %v, allowed %v", roles, ok)
	}
	got, err := s.grpcTok.GetUser(ctx, &tokenv1.GetUserRequest{UserId: uid})
	if err != nil || len(got.GetUser().GetRoles()) != 1 || got.GetUser().GetRoles()[0] != tokenv1.OperatorRole_OPERATOR_ROLE_AUDITOR {
		t.Fatalf("operator roles after sign-ins: %v %v", got, err)
	}
}

// adminLogin signs subject in through corp (upstream groups as given) for
// the mcpid CLI client, the admin audience and offline_access; it returns
// the token response.
func (s *ssoEnv) adminLogin(t *testing.T, subject string, groups ...string) tokenResp {
	t.Helper()
	tr, _ := s.adminLoginBrowser(t, subject, groups...)
	return tr
}

// adminAuthz is the mcpid CLI's admin sign-in request.
func adminAuthz() authz {
	return authz{clientID: clientCLI, redirect: "http://127.0.0.1:7777/callback", resource: "urn:mcpid:admin", scope: "offline_access",
		state: "adm", verifier: newVerifier()}
}

// adminLoginBrowser is adminLogin that also returns the signed-in browser.
func (s *ssoEnv) adminLoginBrowser(t *testing.T, subject string, groups ...string) (tokenResp, *browser) {
	t.Helper()
	s.corp.m.QueueUser(&mockoidc.MockUser{Subject: subject, Email: subject + "@corp.example", EmailVerified: true, Groups: groups})
	a := adminAuthz()
	b := s.browser()
	r := s.upstream(b, s.start(b, a, "connector", "corp"))
	if strings.Contains(r.header.Get("Location"), "/oauth2/consent?") {
		r = b.approve(b.consentPage(r), "offline_access")
	}
	tr := decodeToken(t, s.redeem(s.code(r, a), a))
	if tr.RefreshToken == "" {
		t.Fatalf("admin sign-in of %s: no refresh token", subject)
	}
	return tr, b
}

// redeem exchanges a code of the mcpid CLI client.
func (s *ssoEnv) redeem(code string, a authz) response {
	return s.post("/oauth2/token", tokenForm("grant_type", "authorization_code", "code", code, "redirect_uri", a.redirect,
		"code_verifier", a.verifier, "client_id", clientCLI), "", "")
}

// refresh redeems a refresh token of the mcpid CLI client.
func (s *ssoEnv) refresh(refreshToken string) response {
	return s.post("/oauth2/token", tokenForm("grant_type", "refresh_token", "refresh_token", refreshToken, "client_id", clientCLI), "", "")
}

// bearerAdmin calls the token service's own ListUsers with an access token.
func (s *ssoEnv) bearerAdmin(t *testing.T, accessToken string) error {
	t.Helper()
	conn, err := grpc.NewClient(s.srv.GRPCAddr().String(),
		grpc.WithTransportCredentials(credentials.NewTLS(devca.ClientTLSConfig(s.pki.CA.Pool(), nil, server.Name))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+accessToken)
	_, err = tokenv1.NewTokenServiceClient(conn).ListUsers(ctx, &tokenv1.ListUsersRequest{})
	return err
}

// refusedWithinASecond polls until the admin RPC refuses the token, and
// fails the test if it does not within a second.
func (s *ssoEnv) refusedWithinASecond(t *testing.T, what, accessToken string) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for {
		err := s.bearerAdmin(t, accessToken)
		if status.Code(err) == codes.Unauthenticated {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the admin token is still accepted a second later (%v)", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *ssoEnv) setCorp(t *testing.T, c *tokenv1.Connector, paths ...string) {
	t.Helper()
	c.ConnectorId = "corp"
	if _, err := s.grpcTok.UpdateConnector(context.Background(), &tokenv1.UpdateConnectorRequest{
		Connector: c, UpdateMask: &fieldmaskpb.FieldMask{Paths: paths}}); err != nil {
		t.Fatalf("UpdateConnector %v: %v", paths, err)
	}
}

func mapping(group string, role tokenv1.OperatorRole) []*tokenv1.GroupRoleMapping {
	return []*tokenv1.GroupRoleMapping{{Group: group, Role: role}}
}

// userByEmail returns the user with the email (fails the test if none).
func (s *ssoEnv) userByEmail(t *testing.T, email string) *tokenv1.User {
	t.Helper()
	list, err := s.grpcTok.ListUsers(context.Background(), &tokenv1.ListUsersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range list.GetUsers() {
		if u.GetEmail() == email {
			return u
		}
	}
	t.Fatalf("no user %s", email)
	return nil
}

// rolesRevokedEvents counts the GRANT_REVOKED events for userID's admin
// grants with reason roles_changed by the operator API.
func (s *ssoEnv) rolesRevokedEvents(t *testing.T, userID string) int {
	t.Helper()
	resp, err := s.cli.Get(context.Background(), "/mcpid/token/outbox/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, kv := range resp.Kvs {
		ev := &auditv1.Event{}
		if proto.Unmarshal(kv.Value, ev) == nil && ev.GetType() == auditv1.EventType_EVENT_TYPE_GRANT_REVOKED &&
			ev.GetUserId() == userID && ev.GetReason() == "roles_changed" && ev.GetResource() == "urn:mcpid:admin" {
			n++
		}
	}
	return n
}

// TestSSORoleMappingChanges: a connector's roles count only as its current
// mappings give them. Removing the mapping, narrowing admin to auditor and
// disabling the connector each revoke the users' admin grants at once (the
// refresh gets invalid_grant, the admin token is refused by the token
// service's own admin RPCs within a second, a GRANT_REVOKED event says
// so); a role an operator assigned survives all three.
func TestSSORoleMappingChanges(t *testing.T) {
	s := startSSO(t, nil)
	admin, auditor := tokenv1.OperatorRole_OPERATOR_ROLE_ADMIN, tokenv1.OperatorRole_OPERATOR_ROLE_AUDITOR
	i := 0
	run := func(name string, apply func(t *testing.T), connectorGone bool) {
		i++
		t.Run(name, func(t *testing.T) {
			s.setCorp(t, &tokenv1.Connector{Enabled: true, RoleMappings: mapping("admins", admin)}, "enabled", "role_mappings")
			// mapped: the role comes only from the connector; kept: the
			// same role is also operator-assigned.
			mapped, kept := fmt.Sprintf("mapped-%d", i), fmt.Sprintf("kept-%d", i)
			keptTok := s.adminLogin(t, kept, "admins")
			keptUser := s.userByEmail(t, kept+"@corp.example")
			if _, err := s.grpcTok.UpdateUser(context.Background(), &tokenv1.UpdateUserRequest{
				User:       &tokenv1.User{UserId: keptUser.GetUserId(), Roles: []tokenv1.OperatorRole{admin}},
				UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"roles"}}}); err != nil {
				t.Fatal(err)
			}
			keptTok = s.adminLogin(t, kept, "admins") // the operator's role change revoked the first grant
			tok := s.adminLogin(t, mapped, "admins")
			if _, c := claims(t, tok.AccessToken); fmt.Sprint(c["roles"]) != "[admin]" {
				t.Fatalf("roles before the change: %v", c["roles"])
			}
			if err := s.bearerAdmin(t, tok.AccessToken); err != nil {
				t.Fatalf("admin token before the change: %v", err)
			}
			uid := s.userByEmail(t, mapped+"@corp.example").GetUserId()
			before := s.rolesRevokedEvents(t, uid)

			apply(t)

			s.refusedWithinASecond(t, mapped, tok.AccessToken)
			if code, _ := oauthError(t, s.refresh(tok.RefreshToken).body); code != "invalid_grant" {
				t.Fatalf("refresh after the change: %s", code)
			}
			if got := s.rolesRevokedEvents(t, uid); got != before+1 {
				t.Fatalf("GRANT_REVOKED roles_changed events: %d, want %d", got, before+1)
			}
			// The operator-assigned role survives: its token still works
			// and GetUser still shows it.
			if err := s.bearerAdmin(t, keptTok.AccessToken); err != nil {
				t.Fatalf("operator-assigned admin refused after the change: %v", err)
			}
			got, err := s.grpcTok.GetUser(context.Background(), &tokenv1.GetUserRequest{UserId: keptUser.GetUserId()})
			if err != nil || !slices.Equal(got.GetUser().GetRoles(), []tokenv1.OperatorRole{admin}) {
				t.Fatalf("operator roles after the change: %v %v", got, err)
			}
			r := s.refresh(keptTok.RefreshToken)
			if connectorGone {
				// Its grant came through the disabled or deleted
				// connector: refresh ends with the connector, not with
				// the role.
				if code, _ := oauthError(t, r.body); code != "invalid_grant" {
					t.Fatalf("refresh through a disabled connector: %s", code)
				}
				return
			}
			nt := decodeToken(t, r)
			if _, c := claims(t, nt.AccessToken); fmt.Sprint(c["roles"]) != "[admin]" {
				t.Fatalf("operator-assigned user's refreshed roles: %v", c["roles"])
			}
		})
	}
	run("mapping removed", func(t *testing.T) { s.setCorp(t, &tokenv1.Connector{}, "role_mappings") }, false)
	run("narrowed to auditor", func(t *testing.T) {
		s.setCorp(t, &tokenv1.Connector{RoleMappings: mapping("admins", auditor)}, "role_mappings")
	}, false)
	// After narrowing, a fresh sign-in gets what the mapping gives now.
	tok := s.adminLogin(t, "mapped-2", "admins")
	if _, c := claims(t, tok.AccessToken); fmt.Sprint(c["roles"]) != "[auditor]" {
		t.Fatalf("roles at the next sign-in: %v", c["roles"])
	}
	run("connector disabled", func(t *testing.T) { s.setCorp(t, &tokenv1.Connector{Enabled: false}, "enabled") }, true)
	run("connector deleted", func(t *testing.T) {
		if _, err := s.grpcTok.DeleteConnector(context.Background(), &tokenv1.DeleteConnectorRequest{ConnectorId: "corp"}); err != nil {
			t.Fatal(err)
		}
	}, true)
}

// TestSSORoleMappingChangedWithoutSweep: a mapping change this replica's
// admin API did not make (another replica's, whose sweep of the linked
// users has not run yet) is already honoured by authorize, code redemption
// and refresh: an identity's roles count only as far as its live
// connector's current mappings give them.
func TestSSORoleMappingChangedWithoutSweep(t *testing.T) {
	s := startSSO(t, nil)
	ctx := context.Background()
	s.setCorp(t, &tokenv1.Connector{RoleMappings: mapping("admins", tokenv1.OperatorRole_OPERATOR_ROLE_ADMIN)}, "role_mappings")
	tok, b := s.adminLoginBrowser(t, "unswept", "admins")
	// A code issued while the mapping still gave admin, not yet redeemed.
	a := adminAuthz()
	code := s.code(b.approve(b.consentPage(b.authorize(a)), "offline_access"), a)

	// The mapping goes away in etcd, behind the admin API's back.
	key := "/mcpid/token/connectors/corp"
	resp, err := s.cli.Get(ctx, key)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("connector record: %v", err)
	}
	var rec map[string]any
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		t.Fatal(err)
	}
	delete(rec, "role_mappings")
	raw, _ := json.Marshal(rec)
	if _, err := s.cli.Put(ctx, key, string(raw)); err != nil {
		t.Fatal(err)
	}

	// Refresh: refused as soon as the registry follows (polled, within a
	// second); each successful refresh rotates the token.
	refresh, deadline := tok.RefreshToken, time.Now().Add(time.Second)
	for {
		r := s.refresh(refresh)
		if r.code == http.StatusOK {
			refresh = decodeToken(t, r).RefreshToken
			if time.Now().After(deadline) {
				t.Fatal("refresh still succeeds a second after the mapping went away")
			}
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if c, _ := oauthError(t, r.body); c != "invalid_grant" {
			t.Fatalf("refresh: %d %s", r.code, r.body)
		}
		break
	}
	// Code redemption: refused.
	if c, _ := oauthError(t, s.redeem(code, a).body); c != "invalid_grant" {
		t.Fatalf("code redemption after the mapping went away: %s", c)
	}
	// Authorize with the live session: access_denied.
	if q := b.authorize(adminAuthz()).location().Query(); q.Get("error") != "access_denied" {
		t.Fatalf("authorize after the mapping went away: %v", q)
	}
}
