package server_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
)

const (
	authNone   = registrationv1.TokenEndpointAuthMethod_TOKEN_ENDPOINT_AUTH_METHOD_NONE
	authBasic  = registrationv1.TokenEndpointAuthMethod_TOKEN_ENDPOINT_AUTH_METHOD_CLIENT_SECRET_BASIC
	authPost   = registrationv1.TokenEndpointAuthMethod_TOKEN_ENDPOINT_AUTH_METHOD_CLIENT_SECRET_POST
	authJWT    = registrationv1.TokenEndpointAuthMethod_TOKEN_ENDPOINT_AUTH_METHOD_PRIVATE_KEY_JWT
	grantCode  = registrationv1.GrantType_GRANT_TYPE_AUTHORIZATION_CODE
	grantCC    = registrationv1.GrantType_GRANT_TYPE_CLIENT_CREDENTIALS
	verified   = registrationv1.VerificationStatus_VERIFICATION_STATUS_VERIFIED
	unverified = registrationv1.VerificationStatus_VERIFICATION_STATUS_UNVERIFIED
	suspended  = registrationv1.VerificationStatus_VERIFICATION_STATUS_SUSPENDED
)

func webApp(uris ...string) *registrationv1.ClientMetadata {
	return &registrationv1.ClientMetadata{RedirectUris: uris, TokenEndpointAuthMethod: authBasic, ClientName: "Web app"}
}

func TestOperatorClients(t *testing.T) {
	clk := &clock{}
	e := newEnv(t, withClock(clk))
	ctx := tctx(t)

	t.Run("pre-registered mcpid CLI client", func(t *testing.T) {
		c, err := e.auditor.GetClient(ctx, &registrationv1.GetClientRequest{ClientId: "mcpid"})
		if err != nil {
			t.Fatal(err)
		}
		cl := c.GetClient()
		if cl.GetSource() != registrationv1.ClientSource_CLIENT_SOURCE_PRE_REGISTERED || !slices.Equal(cl.GetReservedAudiences(), []string{"urn:mcpid:admin"}) ||
			cl.GetVerification().GetMethod() != registrationv1.VerificationMethod_VERIFICATION_METHOD_CONFIGURATION ||
			cl.GetMetadata().GetTokenEndpointAuthMethod() != authNone || cl.GetExpireTime() != nil {
			t.Fatalf("mcpid client: %v", cl)
		}
		_, err = e.admin.UpdateClient(ctx, &registrationv1.UpdateClientRequest{Client: &registrationv1.Client{ClientId: "mcpid", Metadata: &registrationv1.ClientMetadata{ClientName: "x"}}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"metadata.client_name"}}})
		wantStatus(t, err, codes.FailedPrecondition, "ERROR_REASON_CLIENT_MANAGED_BY_CONFIG")
		_, err = e.admin.DeleteClient(ctx, &registrationv1.DeleteClientRequest{ClientId: "mcpid"})
		wantStatus(t, err, codes.FailedPrecondition, "ERROR_REASON_CLIENT_MANAGED_BY_CONFIG")
		_, err = e.admin.SetClientVerification(ctx, &registrationv1.SetClientVerificationRequest{ClientId: "mcpid", Status: suspended, Reason: "x"})
		wantStatus(t, err, codes.FailedPrecondition, "ERROR_REASON_CLIENT_MANAGED_BY_CONFIG")
	})

	t.Run("create a machine client and an MCP server identity", func(t *testing.T) {
		r, err := e.admin.CreateClient(ctx, &registrationv1.CreateClientRequest{
			ClientId:         "crm-sync",
			Metadata:         &registrationv1.ClientMetadata{TokenEndpointAuthMethod: authPost, GrantTypes: []registrationv1.GrantType{grantCC}, ClientName: "CRM sync"},
			AllowedResources: []*registrationv1.AllowedResource{{Resource: "https://crm.example.com/mcp", Scopes: []string{"crm:read", "crm:write"}}},
			ResourceServer:   "https://crm.example.com/mcp",
			SecretLifetime:   durationpb.New(48 * time.Hour),
		})
		if err != nil {
			t.Fatal(err)
		}
		cl := r.GetClient()
		if len(r.GetClientSecret()) < 43 || cl.GetVerification().GetStatus() != verified || cl.GetVerification().GetMethod() != registrationv1.VerificationMethod_VERIFICATION_METHOD_OPERATOR ||
			cl.GetVerification().GetUpdatedBy() != "operator:alice" || cl.GetCreatedBy() != "operator:alice" ||
			!slices.Equal(cl.GetReservedAudiences(), []string{"urn:mcpid:policy"}) || cl.GetSecret().GetExpireTime() == nil {
			t.Fatalf("created: %v", cl)
		}
		evs := e.eventsFor(t, "crm-sync", auditv1.EventType_EVENT_TYPE_CLIENT_REGISTERED)
		if len(evs) != 1 || evs[0].GetActor().GetKind() != auditv1.ActorKind_ACTOR_KIND_OPERATOR || evs[0].GetActor().GetId() != "alice" {
			t.Fatalf("event: %v", evs)
		}
		_, err = e.admin.CreateClient(ctx, &registrationv1.CreateClientRequest{ClientId: "crm-sync", Metadata: webApp("https://a.example/cb")})
		wantStatus(t, err, codes.AlreadyExists, "ERROR_REASON_CLIENT_ALREADY_EXISTS")
	})

	t.Run("create refuses bad input", func(t *testing.T) {
		for name, c := range map[string]struct {
			req    *registrationv1.CreateClientRequest
			code   codes.Code
			reason string
		}{
			"client id":           {&registrationv1.CreateClientRequest{ClientId: "a/b", Metadata: webApp("https://a.example/cb")}, codes.InvalidArgument, "ERROR_REASON_INVALID_FIELD"},
			"no metadata":         {&registrationv1.CreateClientRequest{}, codes.InvalidArgument, "ERROR_REASON_INVALID_FIELD"},
			"no method":           {&registrationv1.CreateClientRequest{Metadata: &registrationv1.ClientMetadata{RedirectUris: []string{"https://a.example/cb"}}}, codes.InvalidArgument, "ERROR_REASON_INVALID_CLIENT_METADATA"},
			"redirect":            {&registrationv1.CreateClientRequest{Metadata: webApp("https://a.example/cb#x")}, codes.InvalidArgument, "ERROR_REASON_INVALID_REDIRECT_URI"},
			"reserved scope":      {&registrationv1.CreateClientRequest{Metadata: &registrationv1.ClientMetadata{RedirectUris: []string{"https://a.example/cb"}, TokenEndpointAuthMethod: authNone, Scope: "mcpid:admin"}}, codes.InvalidArgument, "ERROR_REASON_RESERVED_SCOPE"},
			"reserved audience":   {ccClient(&registrationv1.AllowedResource{Resource: "urn:mcpid:admin"}), codes.InvalidArgument, "ERROR_REASON_RESERVED_AUDIENCE"},
			"allowed scope":       {ccClient(&registrationv1.AllowedResource{Resource: "https://crm.example.com", Scopes: []string{"mcpid:x"}}), codes.InvalidArgument, "ERROR_REASON_RESERVED_SCOPE"},
			"non-canonical":       {ccClient(&registrationv1.AllowedResource{Resource: "https://CRM.example.com/"}), codes.InvalidArgument, "ERROR_REASON_INVALID_RESOURCE"},
			"cc on public client": {&registrationv1.CreateClientRequest{Metadata: &registrationv1.ClientMetadata{TokenEndpointAuthMethod: authNone, GrantTypes: []registrationv1.GrantType{grantCC}}}, codes.FailedPrecondition, "ERROR_REASON_CLIENT_CREDENTIALS_NOT_PERMITTED"},
			"allow-list w/o cc":   {&registrationv1.CreateClientRequest{Metadata: webApp("https://a.example/cb"), AllowedResources: []*registrationv1.AllowedResource{{Resource: "https://crm.example.com"}}}, codes.FailedPrecondition, "ERROR_REASON_CLIENT_CREDENTIALS_NOT_PERMITTED"},
			"expire in the past":  {&registrationv1.CreateClientRequest{Metadata: webApp("https://a.example/cb"), ExpireTime: timestamppb.New(time.Now().Add(-time.Hour))}, codes.InvalidArgument, "ERROR_REASON_INVALID_FIELD"},
			"expire too far":      {&registrationv1.CreateClientRequest{Metadata: webApp("https://a.example/cb"), ExpireTime: timestamppb.New(time.Now().Add(200 * 365 * 24 * time.Hour))}, codes.InvalidArgument, "ERROR_REASON_INVALID_FIELD"},
			"secret lifetime":     {&registrationv1.CreateClientRequest{Metadata: webApp("https://a.example/cb"), SecretLifetime: durationpb.New(time.Minute)}, codes.InvalidArgument, "ERROR_REASON_INVALID_FIELD"},
		} {
			_, err := e.admin.CreateClient(ctx, c.req)
			if err == nil {
				t.Errorf("%s: created", name)
				continue
			}
			wantStatus(t, err, c.code, c.reason)
		}
	})

	t.Run("list with filters and pages", func(t *testing.T) {
		for _, id := range []string{"list-a", "list-b", "list-c"} {
			if _, err := e.admin.CreateClient(ctx, &registrationv1.CreateClientRequest{ClientId: id, Metadata: webApp("https://a.example/" + id)}); err != nil {
				t.Fatal(err)
			}
		}
		e.register(t, `{"redirect_uris":["https://a.example/dcr"]}`)
		var ids []string
		req := &registrationv1.ListClientsRequest{PageSize: 2, Source: registrationv1.ClientSource_CLIENT_SOURCE_OPERATOR}
		for range 10 {
			r, err := e.auditor.ListClients(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range r.GetClients() {
				if c.GetSource() != registrationv1.ClientSource_CLIENT_SOURCE_OPERATOR {
					t.Fatalf("filter let through %v", c)
				}
				ids = append(ids, c.GetClientId())
			}
			if r.GetNextPageToken() == "" {
				break
			}
			req.PageToken = r.GetNextPageToken()
		}
		if !slices.IsSorted(ids) || !slices.Contains(ids, "list-a") || !slices.Contains(ids, "list-c") || !slices.Contains(ids, "crm-sync") {
			t.Fatalf("listed %v", ids)
		}
		// A token is bound to its filters.
		r, _ := e.auditor.ListClients(ctx, &registrationv1.ListClientsRequest{PageSize: 1})
		_, err := e.auditor.ListClients(ctx, &registrationv1.ListClientsRequest{PageSize: 1, PageToken: r.GetNextPageToken(), Source: registrationv1.ClientSource_CLIENT_SOURCE_DCR})
		wantStatus(t, err, codes.InvalidArgument, "ERROR_REASON_PAGE_TOKEN_INVALID")
		_, err = e.auditor.ListClients(ctx, &registrationv1.ListClientsRequest{PageToken: "garbage"})
		wantStatus(t, err, codes.InvalidArgument, "ERROR_REASON_PAGE_TOKEN_INVALID")
		_, err = e.auditor.ListClients(ctx, &registrationv1.ListClientsRequest{PageSize: -1})
		wantStatus(t, err, codes.InvalidArgument, "ERROR_REASON_INVALID_FIELD")
		st, _ := e.audit.ListClients(ctx, &registrationv1.ListClientsRequest{VerificationStatus: verified, PageSize: 1000})
		for _, c := range st.GetClients() {
			if c.GetVerification().GetStatus() != verified {
				t.Fatalf("status filter let through %v", c)
			}
		}
		_, err = e.auditor.GetClient(ctx, &registrationv1.GetClientRequest{ClientId: "nope"})
		wantStatus(t, err, codes.NotFound, "ERROR_REASON_CLIENT_NOT_FOUND")
	})

	t.Run("update", func(t *testing.T) {
		r, err := e.admin.CreateClient(ctx, &registrationv1.CreateClientRequest{ClientId: "upd", Metadata: &registrationv1.ClientMetadata{RedirectUris: []string{"https://a.example/cb"}, TokenEndpointAuthMethod: authNone, ClientName: "Before"}})
		if err != nil {
			t.Fatal(err)
		}
		orig := r.GetClient()
		mask := func(p ...string) *fieldmaskpb.FieldMask { return &fieldmaskpb.FieldMask{Paths: p} }
		_, err = e.admin.UpdateClient(ctx, &registrationv1.UpdateClientRequest{Client: &registrationv1.Client{ClientId: "upd"}})
		wantStatus(t, err, codes.InvalidArgument, "ERROR_REASON_INVALID_FIELD_MASK")
		_, err = e.admin.UpdateClient(ctx, &registrationv1.UpdateClientRequest{Client: &registrationv1.Client{ClientId: "upd"}, UpdateMask: mask("verification")})
		wantStatus(t, err, codes.InvalidArgument, "ERROR_REASON_INVALID_FIELD_MASK")
		_, err = e.admin.UpdateClient(ctx, &registrationv1.UpdateClientRequest{Client: &registrationv1.Client{ClientId: "upd", Etag: "1", Metadata: &registrationv1.ClientMetadata{ClientName: "x"}}, UpdateMask: mask("metadata.client_name")})
		wantStatus(t, err, codes.Aborted, "ERROR_REASON_ETAG_MISMATCH")
		_, err = e.admin.UpdateClient(ctx, &registrationv1.UpdateClientRequest{Client: &registrationv1.Client{ClientId: "nope", Metadata: &registrationv1.ClientMetadata{ClientName: "x"}}, UpdateMask: mask("metadata.client_name")})
		wantStatus(t, err, codes.NotFound, "ERROR_REASON_CLIENT_NOT_FOUND")

		u, err := e.admin.UpdateClient(ctx, &registrationv1.UpdateClientRequest{Client: &registrationv1.Client{ClientId: "upd", Etag: orig.GetEtag(), Metadata: &registrationv1.ClientMetadata{ClientName: "After"}}, UpdateMask: mask("metadata.client_name")})
		if err != nil {
			t.Fatal(err)
		}
		if u.GetClient().GetMetadata().GetClientName() != "After" || u.GetClient().GetConsentEpoch() != orig.GetConsentEpoch() ||
			u.GetClient().GetVerification().GetStatus() != verified || u.GetClient().GetMetadata().GetRedirectUris()[0] != "https://a.example/cb" {
			t.Fatalf("renamed: %v", u.GetClient())
		}
		// New redirect URIs: a new consent epoch, and an operator must verify again.
		u, err = e.admin.UpdateClient(ctx, &registrationv1.UpdateClientRequest{Client: &registrationv1.Client{ClientId: "upd", Metadata: &registrationv1.ClientMetadata{RedirectUris: []string{"https://b.example/cb"}}}, UpdateMask: mask("metadata.redirect_uris")})
		if err != nil {
			t.Fatal(err)
		}
		if u.GetClient().GetConsentEpoch() <= orig.GetConsentEpoch() || u.GetClient().GetVerification().GetStatus() != unverified {
			t.Fatalf("after redirect change: %v", u.GetClient())
		}
		// To a secret method: a secret, once.
		u, err = e.admin.UpdateClient(ctx, &registrationv1.UpdateClientRequest{Client: &registrationv1.Client{ClientId: "upd", Metadata: &registrationv1.ClientMetadata{TokenEndpointAuthMethod: authPost}}, UpdateMask: mask("metadata.token_endpoint_auth_method")})
		if err != nil || len(u.GetClientSecret()) < 43 || !u.GetClient().GetSecret().GetHashPresent() {
			t.Fatalf("switch to secret: %v %v", u, err)
		}
		// expire_time on an operator client, then cleared.
		exp := timestamppb.New(clk.Now().Add(time.Hour))
		u, err = e.admin.UpdateClient(ctx, &registrationv1.UpdateClientRequest{Client: &registrationv1.Client{ClientId: "upd", ExpireTime: exp}, UpdateMask: mask("expire_time")})
		if err != nil || !u.GetClient().GetExpireTime().AsTime().Equal(exp.AsTime()) || len(e.keys(t, "/expiry/upd")) != 1 {
			t.Fatalf("set expire_time: %v %v", u.GetClient().GetExpireTime(), err)
		}
		u, err = e.admin.UpdateClient(ctx, &registrationv1.UpdateClientRequest{Client: &registrationv1.Client{ClientId: "upd"}, UpdateMask: mask("expire_time")})
		if err != nil || u.GetClient().GetExpireTime() != nil || len(e.keys(t, "/expiry/upd")) != 0 {
			t.Fatalf("clear expire_time: %v %v", u.GetClient().GetExpireTime(), err)
		}
		// expire_time is for operator clients only; so is resource_server.
		m := e.register(t, `{"redirect_uris":["https://a.example/cb"]}`)
		_, err = e.admin.UpdateClient(ctx, &registrationv1.UpdateClientRequest{Client: &registrationv1.Client{ClientId: str(m, "client_id"), ExpireTime: exp}, UpdateMask: mask("expire_time")})
		wantStatus(t, err, codes.InvalidArgument, "ERROR_REASON_INVALID_FIELD_MASK")
		_, err = e.admin.UpdateClient(ctx, &registrationv1.UpdateClientRequest{Client: &registrationv1.Client{ClientId: str(m, "client_id"), ResourceServer: "https://crm.example.com"}, UpdateMask: mask("resource_server")})
		wantStatus(t, err, codes.FailedPrecondition, "ERROR_REASON_CLIENT_CREDENTIALS_NOT_PERMITTED")
		// A DCR client not allowed client_credentials at registration cannot get it.
		_, err = e.admin.UpdateClient(ctx, &registrationv1.UpdateClientRequest{Client: &registrationv1.Client{ClientId: str(m, "client_id"), Metadata: &registrationv1.ClientMetadata{GrantTypes: []registrationv1.GrantType{grantCode, grantCC}}}, UpdateMask: mask("metadata.grant_types")})
		wantStatus(t, err, codes.FailedPrecondition, "ERROR_REASON_CLIENT_CREDENTIALS_NOT_PERMITTED")
		if evs := e.eventsFor(t, "upd", auditv1.EventType_EVENT_TYPE_CLIENT_UPDATED); len(evs) != 5 {
			t.Fatalf("%d client.updated events, want 5", len(evs))
		}
	})

	t.Run("verification", func(t *testing.T) {
		m := e.register(t, `{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"none"}`)
		id := str(m, "client_id")
		set := func(s registrationv1.VerificationStatus, reason string) (*registrationv1.SetClientVerificationResponse, error) {
			return e.admin.SetClientVerification(ctx, &registrationv1.SetClientVerificationRequest{ClientId: id, Status: s, Reason: reason})
		}
		_, err := set(verified, "")
		wantStatus(t, err, codes.InvalidArgument, "ERROR_REASON_VERIFICATION_REASON_REQUIRED")
		_, err = set(registrationv1.VerificationStatus_VERIFICATION_STATUS_UNSPECIFIED, "x")
		wantStatus(t, err, codes.InvalidArgument, "ERROR_REASON_INVALID_FIELD")
		r, err := set(verified, "reviewed the app")
		if err != nil || r.GetClient().GetVerification().GetMethod() != registrationv1.VerificationMethod_VERIFICATION_METHOD_OPERATOR || r.GetClient().GetVerification().GetReason() != "reviewed the app" {
			t.Fatalf("verify: %v %v", r, err)
		}
		before := len(e.keys(t, "/revocations/"))
		if _, err := set(suspended, "abuse report 42"); err != nil {
			t.Fatal(err)
		}
		if len(e.keys(t, "/revocations/")) != before+1 {
			t.Fatal("suspension recorded no grant revocation")
		}
		_, err = e.token.AuthenticateClient(ctx, &registrationv1.AuthenticateClientRequest{ClientId: id, AuthMethod: authNone})
		wantStatus(t, err, codes.Unauthenticated, "ERROR_REASON_CLIENT_SUSPENDED")
		rc, err := e.token.ResolveClient(ctx, &registrationv1.ResolveClientRequest{ClientId: id})
		if err != nil || rc.GetClient().GetVerification().GetStatus() != suspended {
			t.Fatalf("resolve suspended: %v %v", rc, err)
		}
		if len(e.eventsFor(t, id, auditv1.EventType_EVENT_TYPE_CLIENT_SUSPENDED)) != 1 || len(e.eventsFor(t, id, auditv1.EventType_EVENT_TYPE_CLIENT_VERIFIED)) != 1 {
			t.Fatal("verification events missing")
		}
	})

	t.Run("rotate secret", func(t *testing.T) {
		r, err := e.admin.CreateClient(ctx, &registrationv1.CreateClientRequest{ClientId: "rot", Metadata: webApp("https://a.example/cb")})
		if err != nil {
			t.Fatal(err)
		}
		first := r.GetClientSecret()
		auth := func(sec string) (*registrationv1.AuthenticateClientResponse, error) {
			return e.token.AuthenticateClient(ctx, &registrationv1.AuthenticateClientRequest{ClientId: "rot", AuthMethod: authBasic, ClientSecret: sec})
		}
		rot, err := e.admin.RotateClientSecret(ctx, &registrationv1.RotateClientSecretRequest{ClientId: "rot", PreviousSecretGrace: durationpb.New(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		second := rot.GetClientSecret()
		if a, err := auth(first); err != nil || !a.GetPreviousSecretUsed() {
			t.Fatalf("previous secret in grace: %v %v", a, err)
		}
		if a, err := auth(second); err != nil || a.GetPreviousSecretUsed() {
			t.Fatalf("new secret: %v %v", a, err)
		}
		clk.Advance(2 * time.Hour)
		_, err = auth(first)
		wantStatus(t, err, codes.Unauthenticated, "ERROR_REASON_INVALID_CLIENT_SECRET")
		clk.Advance(-2 * time.Hour)
		// Without grace the previous one stops at once.
		if _, err := e.admin.RotateClientSecret(ctx, &registrationv1.RotateClientSecretRequest{ClientId: "rot"}); err != nil {
			t.Fatal(err)
		}
		_, err = auth(second)
		wantStatus(t, err, codes.Unauthenticated, "ERROR_REASON_INVALID_CLIENT_SECRET")
		if len(e.eventsFor(t, "rot", auditv1.EventType_EVENT_TYPE_CLIENT_SECRET_ROTATED)) != 2 {
			t.Fatal("client.secret_rotated events missing")
		}
		_, err = e.admin.RotateClientSecret(ctx, &registrationv1.RotateClientSecretRequest{ClientId: "rot", PreviousSecretGrace: durationpb.New(31 * 24 * time.Hour)})
		wantStatus(t, err, codes.InvalidArgument, "ERROR_REASON_INVALID_FIELD")
		_, err = e.admin.RotateClientSecret(ctx, &registrationv1.RotateClientSecretRequest{ClientId: "upd-none-does-not-exist"})
		wantStatus(t, err, codes.NotFound, "ERROR_REASON_CLIENT_NOT_FOUND")
		pub, _ := e.admin.CreateClient(ctx, &registrationv1.CreateClientRequest{Metadata: &registrationv1.ClientMetadata{RedirectUris: []string{"https://a.example/cb"}, TokenEndpointAuthMethod: authNone}})
		_, err = e.admin.RotateClientSecret(ctx, &registrationv1.RotateClientSecretRequest{ClientId: pub.GetClient().GetClientId()})
		wantStatus(t, err, codes.FailedPrecondition, "ERROR_REASON_CLIENT_HAS_NO_SECRET")
	})

	t.Run("delete", func(t *testing.T) {
		r, err := e.admin.CreateClient(ctx, &registrationv1.CreateClientRequest{ClientId: "del", Metadata: webApp("https://a.example/cb")})
		if err != nil {
			t.Fatal(err)
		}
		_, err = e.admin.DeleteClient(ctx, &registrationv1.DeleteClientRequest{ClientId: "del", Etag: "12345"})
		wantStatus(t, err, codes.Aborted, "ERROR_REASON_ETAG_MISMATCH")
		if _, err := e.admin.DeleteClient(ctx, &registrationv1.DeleteClientRequest{ClientId: "del", Etag: r.GetClient().GetEtag()}); err != nil {
			t.Fatal(err)
		}
		_, err = e.admin.DeleteClient(ctx, &registrationv1.DeleteClientRequest{ClientId: "del"})
		wantStatus(t, err, codes.NotFound, "ERROR_REASON_CLIENT_NOT_FOUND")
		if len(e.eventsFor(t, "del", auditv1.EventType_EVENT_TYPE_CLIENT_DELETED)) != 1 {
			t.Fatal("no client.deleted")
		}
	})
}

func ccClient(ar *registrationv1.AllowedResource) *registrationv1.CreateClientRequest {
	return &registrationv1.CreateClientRequest{
		Metadata:         &registrationv1.ClientMetadata{TokenEndpointAuthMethod: authPost, GrantTypes: []registrationv1.GrantType{grantCC}},
		AllowedResources: []*registrationv1.AllowedResource{ar},
	}
}

func TestInitialAccessTokenAdmin(t *testing.T) {
	e := newEnv(t, nil)
	ctx := tctx(t)
	var ids, values []string
	for i := range 3 {
		r, err := e.admin.CreateInitialAccessToken(ctx, &registrationv1.CreateInitialAccessTokenRequest{Note: "batch", MaxUses: int32(i + 1), Ttl: durationpb.New(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.GetToken()) < 43 || r.GetInitialAccessToken().GetState() != registrationv1.InitialAccessTokenState_INITIAL_ACCESS_TOKEN_STATE_ACTIVE || r.GetInitialAccessToken().GetCreatedBy() != "operator:alice" {
			t.Fatalf("created: %v", r)
		}
		ids = append(ids, r.GetInitialAccessToken().GetId())
		values = append(values, r.GetToken())
	}
	for _, v := range values {
		resp, err := e.cli.Get(ctx, "/mcpid/registration/", clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range resp.Kvs {
			if strings.Contains(string(kv.Key), v) || strings.Contains(string(kv.Value), v) {
				t.Fatalf("an initial access token is stored in clear at %s", kv.Key)
			}
		}
	}
	l, err := e.auditor.ListInitialAccessTokens(ctx, &registrationv1.ListInitialAccessTokensRequest{PageSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.GetInitialAccessTokens()) != 2 || l.GetInitialAccessTokens()[0].GetId() != ids[2] || l.GetNextPageToken() == "" {
		t.Fatalf("newest first: %v", l)
	}
	if _, err := e.admin.RevokeInitialAccessToken(ctx, &registrationv1.RevokeInitialAccessTokenRequest{Id: ids[0]}); err != nil {
		t.Fatal(err)
	}
	again, err := e.admin.RevokeInitialAccessToken(ctx, &registrationv1.RevokeInitialAccessTokenRequest{Id: ids[0]})
	if err != nil || again.GetInitialAccessToken().GetState() != registrationv1.InitialAccessTokenState_INITIAL_ACCESS_TOKEN_STATE_REVOKED || again.GetInitialAccessToken().GetRevokedBy() != "operator:alice" {
		t.Fatalf("revoke again: %v %v", again, err)
	}
	_, err = e.admin.RevokeInitialAccessToken(ctx, &registrationv1.RevokeInitialAccessTokenRequest{Id: "01J00000000000000000000000"})
	wantStatus(t, err, codes.NotFound, "ERROR_REASON_INITIAL_ACCESS_TOKEN_NOT_FOUND")
	for name, req := range map[string]*registrationv1.CreateInitialAccessTokenRequest{
		"no uses":    {},
		"too many":   {MaxUses: 1_000_001},
		"short ttl":  {MaxUses: 1, Ttl: durationpb.New(time.Second)},
		"long note":  {MaxUses: 1, Note: string(make([]byte, 300))},
		"reserved":   {MaxUses: 1, ClientCredentialsResources: []*registrationv1.AllowedResource{{Resource: "urn:mcpid:policy"}}},
		"non-canon.": {MaxUses: 1, ClientCredentialsResources: []*registrationv1.AllowedResource{{Resource: "https://crm.example.com/"}}},
	} {
		if _, err := e.admin.CreateInitialAccessToken(ctx, req); err == nil {
			t.Errorf("%s: created", name)
		}
	}
	// Changes are audited (admin.action), and no event carries a token value.
	n := 0
	for _, ev := range e.events(t) {
		if ev.GetType() == auditv1.EventType_EVENT_TYPE_ADMIN_ACTION {
			n++
		}
	}
	if n != 4 {
		t.Fatalf("%d admin.action events, want 4 (3 created, 1 revoked)", n)
	}
}
