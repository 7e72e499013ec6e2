package server_test

import (
	"context"
	"net/http"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
	"github.com/mcpid/mcpid/lib/etcdtest"
	"github.com/mcpid/mcpid/lib/service/servicetest"
	"github.com/mcpid/mcpid/services/registration/server"
)

// TestServesWithDefaults runs the service exactly as `mcpid dev` builds it
// (a Config with only the common settings): every other setting takes its
// default.
func TestServesWithDefaults(t *testing.T) {
	etcd := etcdtest.Start(t)
	srv, err := server.Config{Flags: servicetest.Flags(etcd.Endpoints())}.Complete(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	servicetest.Run(t, srv)
	servicetest.WaitReady(t, srv, server.Name)

	base := "http://" + srv.HTTPAddr().String()
	code, body := servicetest.HTTP(t, http.MethodPost, base+"/oauth2/register", "application/json", `{"redirect_uris":["http://127.0.0.1/cb"],"token_endpoint_auth_method":"none"}`)
	if code != http.StatusCreated {
		t.Fatalf("POST /oauth2/register = %d %q", code, body)
	}
	// RFC 7591 requires JSON: the edge refuses a form before any handler runs.
	code, body = servicetest.HTTP(t, http.MethodPost, base+"/oauth2/register", "application/x-www-form-urlencoded", "client_name=x")
	if code != http.StatusBadRequest || body != `{"error":"invalid_request","error_description":"Content-Type must be application/json"}`+"\n" {
		t.Fatalf("form POST /oauth2/register = %d %q", code, body)
	}
	// Only the token service may authenticate clients.
	_, err = registrationv1.NewRegistrationServiceClient(servicetest.Dial(t, srv)).AuthenticateClient(context.Background(), &registrationv1.AuthenticateClientRequest{})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("anonymous AuthenticateClient: %v, want Unauthenticated", err)
	}
}

func TestSettingsAreValidated(t *testing.T) {
	flags := servicetest.Flags([]string{"http://127.0.0.1:1"})
	for name, cfg := range map[string]server.Config{
		"issuer":          {Issuer: "not a url"},
		"issuer query":    {Issuer: "https://a.example/?x=1"},
		"cidrs":           {DCRAllowedCIDRs: []string{"10.0.0.0/99"}},
		"proxies":         {TrustedProxies: []string{"proxy.example"}},
		"iat mode":        {InitialAccessTokens: "sometimes"},
		"iat ttl":         {InitialAccessTokenTTL: 100 * 24 * 60 * 60 * 1e9},
		"allowlist":       {RedirectHostAllowlist: []string{"*"}},
		"idle vs used":    {ClientIdleLifetime: 1e9, LastUsedInterval: 1e9},
		"ports":           {FetchAllowedPorts: []string{"70000"}},
		"statement trust": {SoftwareStatementIssuers: []string{"https://p.example=/does/not/exist.json"}},
		"cimd domains":    {CIMDTrustedDomains: []string{"bad domain"}},
		"cimd cache":      {CIMDMinCache: 2e9, CIMDMaxCache: 1e9},
	} {
		cfg.Flags = flags
		if _, err := cfg.Complete(context.Background()); err == nil {
			t.Errorf("%s: Complete accepted a bad setting", name)
		}
	}
}

// TestAllowlist checks who may call what, over real mTLS identities.
func TestAllowlist(t *testing.T) {
	e := newEnv(t, nil)
	ctx := tctx(t)
	type call func(registrationv1.RegistrationServiceClient) error
	get := func(c registrationv1.RegistrationServiceClient) error {
		_, err := c.GetClient(ctx, &registrationv1.GetClientRequest{ClientId: "mcpid"})
		return err
	}
	list := func(c registrationv1.RegistrationServiceClient) error {
		_, err := c.ListClients(ctx, &registrationv1.ListClientsRequest{})
		return err
	}
	listIATs := func(c registrationv1.RegistrationServiceClient) error {
		_, err := c.ListInitialAccessTokens(ctx, &registrationv1.ListInitialAccessTokensRequest{})
		return err
	}
	create := func(c registrationv1.RegistrationServiceClient) error {
		_, err := c.CreateClient(ctx, &registrationv1.CreateClientRequest{})
		return err
	}
	verify := func(c registrationv1.RegistrationServiceClient) error {
		_, err := c.SetClientVerification(ctx, &registrationv1.SetClientVerificationRequest{})
		return err
	}
	createIAT := func(c registrationv1.RegistrationServiceClient) error {
		_, err := c.CreateInitialAccessToken(ctx, &registrationv1.CreateInitialAccessTokenRequest{})
		return err
	}
	authn := func(c registrationv1.RegistrationServiceClient) error {
		_, err := c.AuthenticateClient(ctx, &registrationv1.AuthenticateClientRequest{ClientId: "mcpid", AuthMethod: registrationv1.TokenEndpointAuthMethod_TOKEN_ENDPOINT_AUTH_METHOD_NONE})
		return err
	}
	resolve := func(c registrationv1.RegistrationServiceClient) error {
		_, err := c.ResolveClient(ctx, &registrationv1.ResolveClientRequest{ClientId: "mcpid"})
		return err
	}
	denied := func(err error) bool { return status.Code(err) == codes.PermissionDenied }
	allowed := func(err error) bool {
		c := status.Code(err)
		return c != codes.PermissionDenied && c != codes.Unauthenticated
	}
	cases := []struct {
		who  string
		c    registrationv1.RegistrationServiceClient
		call call
		ok   func(error) bool
	}{
		{"auditor", e.auditor, get, allowed}, {"auditor", e.auditor, list, allowed}, {"auditor", e.auditor, listIATs, allowed},
		{"auditor", e.auditor, create, denied}, {"auditor", e.auditor, verify, denied}, {"auditor", e.auditor, createIAT, denied},
		{"auditor", e.auditor, authn, denied},
		{"admin", e.admin, create, allowed}, {"admin", e.admin, authn, denied}, {"admin", e.admin, resolve, denied},
		{"token", e.token, authn, allowed}, {"token", e.token, resolve, allowed}, {"token", e.token, create, denied}, {"token", e.token, get, denied},
		{"audit", e.audit, get, allowed}, {"audit", e.audit, list, allowed}, {"audit", e.audit, authn, denied}, {"audit", e.audit, listIATs, denied},
		{"policy", e.policy, get, denied}, {"policy", e.policy, authn, denied},
		{"anonymous", e.anon, get, func(err error) bool { return status.Code(err) == codes.Unauthenticated }},
	}
	for _, c := range cases {
		if err := c.call(c.c); !c.ok(err) {
			t.Errorf("%s: unexpected answer %v", c.who, err)
		}
	}
	// The RFC 7591/7592 methods are public but served over HTTP only: a
	// direct gRPC call (which would bypass the source address rules) is
	// refused.
	_, err := e.anon.RegisterClient(ctx, &registrationv1.RegisterClientRequest{Registration: &registrationv1.ClientRegistration{RedirectUris: []string{"https://a.example/cb"}}})
	wantStatus(t, err, codes.PermissionDenied, "ERROR_REASON_CALLER_NOT_ALLOWED")
	_, err = e.anon.GetClientRegistration(ctx, &registrationv1.GetClientRegistrationRequest{ClientId: "x"})
	wantStatus(t, err, codes.PermissionDenied, "")
}
