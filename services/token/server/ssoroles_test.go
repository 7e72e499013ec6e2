package server_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/oauth2-proxy/mockoidc"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
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
