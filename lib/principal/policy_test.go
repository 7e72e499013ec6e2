package principal

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"slices"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/mcpid/mcpid/lib/devca"
)

func TestNewAuthorizerRejectsBadPolicies(t *testing.T) {
	m := method("ListGrants")
	bad := map[string]Config{
		"empty rule":                  {Policy: Policy{m: {}}},
		"public and services":         {Policy: Policy{m: {Public: true, Services: []string{"token"}}}},
		"public and operators":        {Policy: Policy{m: {Public: true, Operators: OperatorRead}}},
		"public and MCP servers":      {Policy: Policy{m: {Public: true, MCPServers: true}}},
		"unknown service":             {Policy: Policy{m: {Services: []string{"gateway"}}}},
		"unknown operator access":     {Policy: Policy{m: {Operators: OperatorAccess(7)}}},
		"method without slash":        {Policy: Policy{"mcpid.token.v1.TokenService/ListGrants": {Operators: OperatorRead}}},
		"method without service":      {Policy: Policy{"/ListGrants": {Operators: OperatorRead}}},
		"method with extra segment":   {Policy: Policy{"/a.B/C/D": {Operators: OperatorRead}}},
		"method with empty method":    {Policy: Policy{"/a.B/": {Operators: OperatorRead}}},
		"health listed and flag set":  {Policy: Policy{grpc_health_v1.Health_Check_FullMethodName: {Services: []string{"token"}}}, PublicHealth: true},
		"reflection listed and flag":  {Policy: Policy{ReflectionMethods()[0]: {Public: true}}, PublicReflection: true},
		"wildcard is not a method":    {Policy: Policy{"/mcpid.token.v1.TokenService/*x*/y": {Public: true}}},
		"service name with uppercase": {Policy: Policy{m: {Services: []string{"Token"}}}},
	}
	for name, cfg := range bad {
		if _, err := NewAuthorizer(cfg); !errors.Is(err, ErrInvalidPolicy) {
			t.Errorf("%s: error = %v, want ErrInvalidPolicy", name, err)
		}
	}
	if _, err := NewAuthorizer(Config{Policy: testPolicy(), PublicHealth: true, PublicReflection: true}); err != nil {
		t.Errorf("valid policy refused: %v", err)
	}
}

func TestPolicyIsCopied(t *testing.T) {
	services := []string{devca.ServiceToken}
	p := Policy{method("AuthenticateClient"): {Services: services}}
	a, err := NewAuthorizer(Config{Policy: p})
	if err != nil {
		t.Fatal(err)
	}
	// Changing the caller's policy afterwards must not widen the Authorizer's.
	services[0] = devca.ServicePolicy
	p[method("Unlisted")] = Rule{Public: true}
	ctx := peerContext(t, serviceLeaf(t, devca.ServicePolicy))
	if _, err := a.authorize(ctx, method("AuthenticateClient")); status.Code(err) != codes.PermissionDenied {
		t.Errorf("policy service after caller edited its slice: %v, want PermissionDenied", err)
	}
	if _, err := a.authorize(ctx, method("Unlisted")); status.Code(err) != codes.PermissionDenied {
		t.Errorf("method added to caller's map after construction: %v, want PermissionDenied", err)
	}
}

func TestMissing(t *testing.T) {
	srv := grpc.NewServer()
	var calls atomic.Int64
	srv.RegisterService(testServiceDesc(&calls), nil)
	grpc_health_v1.RegisterHealthServer(srv, health.NewServer())

	a, err := NewAuthorizer(Config{Policy: testPolicy()})
	if err != nil {
		t.Fatal(err)
	}
	want := append([]string{method("Unlisted")}, HealthMethods()...)
	slices.Sort(want)
	if got := a.Missing(srv.GetServiceInfo()); !slices.Equal(got, want) {
		t.Errorf("Missing = %v, want %v", got, want)
	}

	a, err = NewAuthorizer(Config{Policy: testPolicy(), PublicHealth: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := a.Missing(srv.GetServiceInfo()); !slices.Equal(got, []string{method("Unlisted")}) {
		t.Errorf("Missing with public health = %v, want only Unlisted", got)
	}
}

// TestUnverifiedPeerCertificate checks that only verified chains count: a
// certificate the TLS layer saw but did not verify (as with
// RequestClientCert) identifies nobody.
func TestUnverifiedPeerCertificate(t *testing.T) {
	a, err := NewAuthorizer(Config{Policy: testPolicy()})
	if err != nil {
		t.Fatal(err)
	}
	leaf := serviceLeaf(t, devca.ServiceToken)
	ctx := peer.NewContext(t.Context(), &peer.Peer{AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{
		PeerCertificates: []*x509.Certificate{leaf},
	}}})
	if _, err := a.authorize(ctx, method("AuthenticateClient")); status.Code(err) != codes.Unauthenticated {
		t.Errorf("unverified certificate: %v, want Unauthenticated", err)
	}
	// The same certificate in a verified chain is the token service.
	got, err := a.authorize(peerContext(t, leaf), method("AuthenticateClient"))
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := FromContext(got); !p.IsService(devca.ServiceToken) {
		t.Errorf("principal = %v, want service:token", p)
	}
}

func TestPrincipalContext(t *testing.T) {
	p, ok := FromContext(context.Background())
	if ok || p.Kind != KindAnonymous || p.ID != "" {
		t.Errorf("empty context: %+v, %v; want anonymous, false", p, ok)
	}
	want := Principal{Kind: KindOperator, ID: "alice", Roles: []Role{RoleAdmin}, Via: ViaMTLS}
	p, ok = FromContext(NewContext(context.Background(), want))
	if !ok || !p.HasRole(RoleAdmin) || p.HasRole(RoleAuditor) || p.String() != "operator:alice" {
		t.Errorf("round trip: %+v, %v", p, ok)
	}
	// Roles only mean something on operators; service names only on services.
	if (Principal{Kind: KindService, ID: "token", Roles: []Role{RoleAdmin}}).HasRole(RoleAdmin) {
		t.Error("a service with a stray role counts as admin")
	}
	if (Principal{Kind: KindOperator, ID: "token"}).IsService("token") {
		t.Error("an operator named token counts as the token service")
	}
	if s := (Principal{}).String(); s != "anonymous" {
		t.Errorf("anonymous String() = %q", s)
	}
}

func TestReserved(t *testing.T) {
	for s, want := range map[string]bool{
		"mcpid:admin":  true,
		"mcpid:":       true,
		"MCPID:admin":  true,
		"Mcpid:policy": true,
		"mcpid":        false,
		"mcpidx:read":  false,
		"crm:read":     false,
		"openid":       false,
		"":             false,
		" mcpid:admin": false, // not a single scope token; scopes are split on spaces first
	} {
		if got := IsReservedScope(s); got != want {
			t.Errorf("IsReservedScope(%q) = %v, want %v", s, got, want)
		}
	}
	for a, want := range map[string]bool{
		AdminAudience:             true,
		PolicyAudience:            true,
		"urn:mcpid:anything":      true,
		"URN:MCPID:admin":         true,
		"urn:Mcpid:admin":         true,
		"urn:mcpid":               false,
		"urn:mcpidx:admin":        false,
		"urn:other:mcpid:admin":   false,
		"https://mcpid.dev":       false,
		"https://crm.example.com": false,
		"":                        false,
	} {
		if got := IsReservedAudience(a); got != want {
			t.Errorf("IsReservedAudience(%q) = %v, want %v", a, got, want)
		}
	}
}

func BenchmarkAuthorizeMTLS(b *testing.B) {
	a, err := NewAuthorizer(Config{Policy: testPolicy()})
	if err != nil {
		b.Fatal(err)
	}
	ctx := peerContext(b, serviceLeaf(b, devca.ServiceToken))
	interceptor := a.UnaryServerInterceptor()
	info := &grpc.UnaryServerInfo{FullMethod: method("AuthenticateClient")}
	noop := func(context.Context, any) (any, error) { return nil, nil }
	b.ReportAllocs()
	for b.Loop() {
		if _, err := interceptor(ctx, nil, info, noop); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAuthorizeBearer(b *testing.B) {
	a, err := NewAuthorizer(Config{Policy: testPolicy(), Verifier: testVerifier()})
	if err != nil {
		b.Fatal(err)
	}
	ctx := peer.NewContext(b.Context(), &peer.Peer{AuthInfo: credentials.TLSInfo{}})
	ctx = metadataContext(ctx, "authorization", "Bearer "+policyToken)
	interceptor := a.UnaryServerInterceptor()
	info := &grpc.UnaryServerInfo{FullMethod: method("Check")}
	noop := func(context.Context, any) (any, error) { return nil, nil }
	b.ReportAllocs()
	for b.Loop() {
		if _, err := interceptor(ctx, nil, info, noop); err != nil {
			b.Fatal(err)
		}
	}
}

func serviceLeaf(tb testing.TB, name string) *x509.Certificate {
	tb.Helper()
	ca, err := devca.New(nil)
	if err != nil {
		tb.Fatal(err)
	}
	leaf, err := ca.IssueService(name)
	if err != nil {
		tb.Fatal(err)
	}
	return leaf.Certificate
}

// peerContext is the context gRPC gives a handler whose peer presented leaf
// and the TLS layer verified it.
func peerContext(tb testing.TB, leaf *x509.Certificate) context.Context {
	return peer.NewContext(tb.Context(), &peer.Peer{AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{
		PeerCertificates: []*x509.Certificate{leaf},
		VerifiedChains:   [][]*x509.Certificate{{leaf}},
	}}})
}

func metadataContext(ctx context.Context, kv ...string) context.Context {
	return metadata.NewIncomingContext(ctx, metadata.Pairs(kv...))
}
