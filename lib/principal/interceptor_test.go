package principal

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/mcpid/mcpid/lib/apierr"
	"github.com/mcpid/mcpid/lib/devca"
)

// A tiny hand-registered service stands in for the mcpid services, whose
// generated code does not exist yet. Every method answers with the
// principal its handler saw, as JSON.
const testService = "mcpid.test.v1.TestService"

func method(name string) string { return "/" + testService + "/" + name }

var unaryMethods = []string{"AuthenticateClient", "AppendEvents", "ListGrants", "RevokeGrant", "Check", "Token", "Unlisted"}

func testPolicy() Policy {
	return Policy{
		method("AuthenticateClient"): {Services: []string{devca.ServiceToken}},
		method("AppendEvents"):       {Services: []string{devca.ServiceRegistration, devca.ServiceToken, devca.ServicePolicy}},
		method("ListGrants"):         {Operators: OperatorRead},
		method("RevokeGrant"):        {Operators: OperatorWrite},
		method("Check"):              {MCPServers: true},
		method("Token"):              {Public: true},
		method("Tail"):               {Operators: OperatorRead},
		// Unlisted is registered but deliberately not in the policy.
	}
}

func testServiceDesc(calls *atomic.Int64) *grpc.ServiceDesc {
	reply := func(ctx context.Context) (*wrapperspb.StringValue, error) {
		calls.Add(1)
		p, ok := FromContext(ctx)
		if !ok {
			return nil, status.Error(codes.Internal, "handler reached without a principal")
		}
		b, err := json.Marshal(p)
		if err != nil {
			return nil, err
		}
		return wrapperspb.String(string(b)), nil
	}
	desc := &grpc.ServiceDesc{
		ServiceName: testService,
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{{
			StreamName:    "Tail",
			ServerStreams: true,
			Handler: func(_ any, ss grpc.ServerStream) error {
				if err := ss.RecvMsg(new(wrapperspb.StringValue)); err != nil {
					return err
				}
				out, err := reply(ss.Context())
				if err != nil {
					return err
				}
				return ss.SendMsg(out)
			},
		}},
	}
	for _, name := range unaryMethods {
		full := method(name)
		desc.Methods = append(desc.Methods, grpc.MethodDesc{
			MethodName: name,
			Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
				in := new(wrapperspb.StringValue)
				if err := dec(in); err != nil {
					return nil, err
				}
				h := func(ctx context.Context, _ any) (any, error) { return reply(ctx) }
				if interceptor == nil {
					return h(ctx, in)
				}
				return interceptor(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: full}, h)
			},
		})
	}
	return desc
}

// syncBuffer is a log sink the test can read while server goroutines write.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// fakeTokenVerifier is a test fake for lib/jose's verifier: it knows a
// fixed set of tokens and their (already verified) claims.
type fakeTokenVerifier map[string]Claims

func (f fakeTokenVerifier) Verify(_ context.Context, token string) (Claims, error) {
	c, ok := f[token]
	if !ok {
		return Claims{}, errors.New("fake verifier: signature invalid")
	}
	return c, nil
}

type env struct {
	ca    *devca.CA
	addr  string
	logs  *syncBuffer
	calls atomic.Int64
}

// newEnv starts a real gRPC server with TLS on 127.0.0.1, presenting the
// policy service's certificate and trusting ca plus extraRoots for clients.
func newEnv(t *testing.T, cfg Config, extraRoots ...*x509.Certificate) *env {
	t.Helper()
	ca, err := devca.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return newEnvWithCA(t, ca, cfg, extraRoots...)
}

func newEnvWithCA(t *testing.T, ca *devca.CA, cfg Config, extraRoots ...*x509.Certificate) *env {
	t.Helper()
	e := &env{ca: ca, logs: &syncBuffer{}}
	if cfg.Policy == nil {
		cfg.Policy = testPolicy()
	}
	cfg.Logger = slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	authz, err := NewAuthorizer(cfg)
	if err != nil {
		t.Fatalf("NewAuthorizer: %v", err)
	}
	srvLeaf, err := ca.IssueService(devca.ServicePolicy)
	if err != nil {
		t.Fatal(err)
	}
	pool := ca.Pool()
	for _, r := range extraRoots {
		pool.AddCert(r)
	}
	srv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(devca.ServerTLSConfig(pool, srvLeaf.TLSCertificate()))),
		grpc.ChainUnaryInterceptor(authz.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(authz.StreamServerInterceptor()),
	)
	srv.RegisterService(testServiceDesc(&e.calls), nil)
	grpc_health_v1.RegisterHealthServer(srv, health.NewServer())
	reflection.Register(srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = ln.Addr().String()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return e
}

// dial connects over TLS, trusting roots (the env's CA if nil) and
// presenting cert if not nil.
func (e *env) dial(t *testing.T, cert *tls.Certificate, roots *x509.CertPool) *grpc.ClientConn {
	t.Helper()
	if roots == nil {
		roots = e.ca.Pool()
	}
	cc, err := grpc.NewClient("passthrough:///"+e.addr,
		grpc.WithTransportCredentials(credentials.NewTLS(devca.ClientTLSConfig(roots, cert, "policy"))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

func (e *env) cert(t *testing.T, issue func(*devca.CA) (*devca.Leaf, error)) *tls.Certificate {
	t.Helper()
	leaf, err := issue(e.ca)
	if err != nil {
		t.Fatal(err)
	}
	c := leaf.TLSCertificate()
	return &c
}

func serviceCert(name string) func(*devca.CA) (*devca.Leaf, error) {
	return func(ca *devca.CA) (*devca.Leaf, error) { return ca.IssueService(name) }
}

func operatorCert(name, role string) func(*devca.CA) (*devca.Leaf, error) {
	return func(ca *devca.CA) (*devca.Leaf, error) { return ca.IssueOperator(name, role) }
}

func mcpServerCert(res string) func(*devca.CA) (*devca.Leaf, error) {
	return func(ca *devca.CA) (*devca.Leaf, error) { return ca.IssueMCPServer(res) }
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// call invokes a unary test method with optional outgoing metadata pairs
// and returns the principal the handler saw.
func call(t *testing.T, cc *grpc.ClientConn, name string, md ...string) (Principal, error) {
	t.Helper()
	ctx := testCtx(t)
	if len(md) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, md...)
	}
	out := new(wrapperspb.StringValue)
	if err := cc.Invoke(ctx, method(name), wrapperspb.String("hi"), out); err != nil {
		return Principal{}, err
	}
	var p Principal
	if err := json.Unmarshal([]byte(out.GetValue()), &p); err != nil {
		t.Fatalf("decode principal: %v", err)
	}
	return p, nil
}

func tail(t *testing.T, cc *grpc.ClientConn, md ...string) (Principal, error) {
	t.Helper()
	ctx := testCtx(t)
	if len(md) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, md...)
	}
	st, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, method("Tail"))
	if err != nil {
		return Principal{}, err
	}
	if err := st.SendMsg(wrapperspb.String("hi")); err != nil {
		return Principal{}, err
	}
	if err := st.CloseSend(); err != nil {
		return Principal{}, err
	}
	out := new(wrapperspb.StringValue)
	if err := st.RecvMsg(out); err != nil {
		return Principal{}, err
	}
	var p Principal
	if err := json.Unmarshal([]byte(out.GetValue()), &p); err != nil {
		t.Fatalf("decode principal: %v", err)
	}
	return p, nil
}

func wantOK(t *testing.T, got Principal, err error, want Principal) {
	t.Helper()
	if err != nil {
		t.Fatalf("call failed: %v", err)
	}
	if d := cmp.Diff(want, got, cmpopts.EquateEmpty()); d != "" {
		t.Errorf("principal mismatch (-want +got):\n%s", d)
	}
}

// wantRefused checks the status code and its ErrorInfo.
func wantRefused(t *testing.T, err error, code codes.Code, fullMethod string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("error = %v, want code %v", err, code)
	}
	reason := apierr.ReasonNotAllowed
	if code == codes.Unauthenticated {
		reason = apierr.ReasonUnauthenticated
	}
	info := apierr.Info(err)
	if info == nil {
		t.Fatalf("status %v carries no ErrorInfo", err)
	}
	if info.GetDomain() != apierr.DomainMCPID || info.GetReason() != reason || info.GetMetadata()["method"] != fullMethod {
		t.Errorf("ErrorInfo = %v, want domain %s reason %s method %s", info, apierr.DomainMCPID, reason, fullMethod)
	}
}

func TestServiceCertificates(t *testing.T) {
	e := newEnv(t, Config{})
	token := e.dial(t, e.cert(t, serviceCert(devca.ServiceToken)), nil)
	policy := e.dial(t, e.cert(t, serviceCert(devca.ServicePolicy)), nil)
	audit := e.dial(t, e.cert(t, serviceCert(devca.ServiceAudit)), nil)

	p, err := call(t, token, "AuthenticateClient")
	wantOK(t, p, err, Principal{Kind: KindService, ID: devca.ServiceToken, Via: ViaMTLS})

	// Only token may call AuthenticateClient.
	_, err = call(t, policy, "AuthenticateClient")
	wantRefused(t, err, codes.PermissionDenied, method("AuthenticateClient"))

	p, err = call(t, policy, "AppendEvents")
	wantOK(t, p, err, Principal{Kind: KindService, ID: devca.ServicePolicy, Via: ViaMTLS})
	_, err = call(t, audit, "AppendEvents")
	wantRefused(t, err, codes.PermissionDenied, method("AppendEvents"))

	// A service is not an operator.
	_, err = call(t, token, "ListGrants")
	wantRefused(t, err, codes.PermissionDenied, method("ListGrants"))
}

func TestOperatorCertificates(t *testing.T) {
	e := newEnv(t, Config{})
	auditor := e.dial(t, e.cert(t, operatorCert("bob", devca.RoleAuditor)), nil)
	admin := e.dial(t, e.cert(t, operatorCert("alice", devca.RoleAdmin)), nil)

	wantAuditor := Principal{Kind: KindOperator, ID: "bob", Roles: []Role{RoleAuditor}, Via: ViaMTLS}
	wantAdmin := Principal{Kind: KindOperator, ID: "alice", Roles: []Role{RoleAdmin}, Via: ViaMTLS}

	p, err := call(t, auditor, "ListGrants")
	wantOK(t, p, err, wantAuditor)
	_, err = call(t, auditor, "RevokeGrant")
	wantRefused(t, err, codes.PermissionDenied, method("RevokeGrant"))

	p, err = call(t, admin, "ListGrants")
	wantOK(t, p, err, wantAdmin)
	p, err = call(t, admin, "RevokeGrant")
	wantOK(t, p, err, wantAdmin)

	// Streams get the same treatment.
	p, err = tail(t, auditor)
	wantOK(t, p, err, wantAuditor)
	_, err = call(t, admin, "AuthenticateClient")
	wantRefused(t, err, codes.PermissionDenied, method("AuthenticateClient"))
}

func TestMCPServerCertificate(t *testing.T) {
	e := newEnv(t, Config{})
	const res = "https://crm.example.com/mcp"
	cc := e.dial(t, e.cert(t, mcpServerCert(res)), nil)
	id, err := devca.MCPServerID(res)
	if err != nil {
		t.Fatal(err)
	}
	p, err := call(t, cc, "Check")
	wantOK(t, p, err, Principal{Kind: KindMCPServer, ID: id.String(), Resource: res, Via: ViaMTLS})
	_, err = call(t, cc, "ListGrants")
	wantRefused(t, err, codes.PermissionDenied, method("ListGrants"))
	_, err = tail(t, cc)
	wantRefused(t, err, codes.PermissionDenied, method("Tail"))
}

func TestAnonymous(t *testing.T) {
	e := newEnv(t, Config{Verifier: fakeTokenVerifier{}})
	cc := e.dial(t, nil, nil)
	for _, m := range []string{"AuthenticateClient", "ListGrants", "RevokeGrant", "Check"} {
		_, err := call(t, cc, m)
		wantRefused(t, err, codes.Unauthenticated, method(m))
	}
	_, err := tail(t, cc)
	wantRefused(t, err, codes.Unauthenticated, method("Tail"))

	// A public method runs for anonymous callers, and its authorization
	// header (here a client's Basic credentials) is left to the handler.
	p, err := call(t, cc, "Token")
	wantOK(t, p, err, Principal{})
	p, err = call(t, cc, "Token", "authorization", "Basic Y2xpZW50OnNlY3JldA==")
	wantOK(t, p, err, Principal{})
	// A non-Bearer scheme on a protected method is no credential at all.
	_, err = call(t, cc, "ListGrants", "authorization", "Basic Y2xpZW50OnNlY3JldA==")
	wantRefused(t, err, codes.Unauthenticated, method("ListGrants"))

	// A public method still records a verified certificate.
	svc := e.dial(t, e.cert(t, serviceCert(devca.ServiceRegistration)), nil)
	p, err = call(t, svc, "Token")
	wantOK(t, p, err, Principal{Kind: KindService, ID: devca.ServiceRegistration, Via: ViaMTLS})
}

func TestUnlistedMethodDenied(t *testing.T) {
	e := newEnv(t, Config{})
	for _, cert := range []*tls.Certificate{
		nil,
		e.cert(t, operatorCert("alice", devca.RoleAdmin)),
		e.cert(t, serviceCert(devca.ServiceToken)),
	} {
		_, err := call(t, e.dial(t, cert, nil), "Unlisted")
		wantRefused(t, err, codes.PermissionDenied, method("Unlisted"))
	}
	if n := e.calls.Load(); n != 0 {
		t.Errorf("handlers ran %d times for an unlisted method", n)
	}
	// Health is unlisted too unless made public.
	_, err := grpc_health_v1.NewHealthClient(e.dial(t, nil, nil)).Check(testCtx(t), &grpc_health_v1.HealthCheckRequest{})
	wantRefused(t, err, codes.PermissionDenied, grpc_health_v1.Health_Check_FullMethodName)
}

func TestForeignCertificates(t *testing.T) {
	e := newEnv(t, Config{})
	other, err := devca.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.IssueService(devca.ServiceToken)
	if err != nil {
		t.Fatal(err)
	}
	fc := foreign.TLSCertificate()

	// A client certificate from another CA fails the handshake: the
	// handler never runs.
	_, err = call(t, e.dial(t, &fc, nil), "AuthenticateClient")
	if status.Code(err) != codes.Unavailable {
		t.Errorf("foreign client certificate: error = %v, want Unavailable (handshake failure)", err)
	}
	// A public method does not help: the handshake already failed.
	_, err = call(t, e.dial(t, &fc, nil), "Token")
	if status.Code(err) != codes.Unavailable {
		t.Errorf("foreign client certificate on public method: error = %v, want Unavailable", err)
	}
	// Nor does a client trust a server from another CA.
	_, err = call(t, e.dial(t, e.cert(t, serviceCert(devca.ServiceToken)), other.Pool()), "AuthenticateClient")
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("foreign server certificate: error = %v, want Unavailable certificate error", err)
	}
	if n := e.calls.Load(); n != 0 {
		t.Errorf("handlers ran %d times", n)
	}
}

func TestTrustedCertificateWithoutMCPIDIdentity(t *testing.T) {
	rootCert, leaf := rawCA(t)
	e := newEnv(t, Config{}, rootCert)
	cc := e.dial(t, &leaf, nil)
	_, err := call(t, cc, "AuthenticateClient")
	wantRefused(t, err, codes.Unauthenticated, method("AuthenticateClient"))
	// On a public method it is ignored rather than trusted.
	p, err := call(t, cc, "Token")
	wantOK(t, p, err, Principal{})
	if !strings.Contains(e.logs.String(), "does not name an mcpid principal") {
		t.Errorf("refusal not logged; logs:\n%s", e.logs)
	}
}

// Tokens look like secrets so the test can check they leak nowhere.
const (
	adminToken      = "eyJhbGciOiJFUzI1NiJ9.admin-secret-payload.sig"
	auditorToken    = "eyJhbGciOiJFUzI1NiJ9.auditor-secret-payload.sig"
	noRoleToken     = "eyJhbGciOiJFUzI1NiJ9.norole-secret-payload.sig"
	policyToken     = "eyJhbGciOiJFUzI1NiJ9.policy-secret-payload.sig"
	resourceToken   = "eyJhbGciOiJFUzI1NiJ9.resource-secret-payload.sig"
	twoAudToken     = "eyJhbGciOiJFUzI1NiJ9.twoaud-secret-payload.sig"
	upperAudToken   = "eyJhbGciOiJFUzI1NiJ9.upperaud-secret-payload.sig"
	noResToken      = "eyJhbGciOiJFUzI1NiJ9.nores-secret-payload.sig"
	nonCanonToken   = "eyJhbGciOiJFUzI1NiJ9.noncanon-secret-payload.sig"
	noSubToken      = "eyJhbGciOiJFUzI1NiJ9.nosub-secret-payload.sig"
	forgedToken     = "eyJhbGciOiJFUzI1NiJ9.forged-secret-payload.sig"
	crmResource     = "https://crm.example.com/mcp"
	cliClientID     = "mcpid"
	mcpServerClient = "crm-mcp"
)

var allTokens = []string{adminToken, auditorToken, noRoleToken, policyToken, resourceToken, twoAudToken,
	upperAudToken, noResToken, nonCanonToken, noSubToken, forgedToken}

func testVerifier() fakeTokenVerifier {
	return fakeTokenVerifier{
		adminToken:    {Audience: []string{AdminAudience}, Subject: "alice", ClientID: cliClientID, Scope: "openid", Roles: []string{"admin", "superuser"}},
		auditorToken:  {Audience: []string{AdminAudience}, Subject: "bob", ClientID: cliClientID, Roles: []string{"auditor"}},
		noRoleToken:   {Audience: []string{AdminAudience}, Subject: "carol", ClientID: cliClientID},
		policyToken:   {Audience: []string{PolicyAudience}, Subject: mcpServerClient, ClientID: mcpServerClient, Scope: "mcpid:policy.check", Resource: crmResource},
		resourceToken: {Audience: []string{crmResource}, Subject: "alice", ClientID: "agent", Scope: "crm:read", Roles: []string{"admin"}},
		twoAudToken:   {Audience: []string{AdminAudience, crmResource}, Subject: "alice", ClientID: cliClientID, Roles: []string{"admin"}},
		upperAudToken: {Audience: []string{"URN:MCPID:ADMIN"}, Subject: "alice", ClientID: cliClientID, Roles: []string{"admin"}},
		noResToken:    {Audience: []string{PolicyAudience}, Subject: mcpServerClient, ClientID: mcpServerClient},
		nonCanonToken: {Audience: []string{PolicyAudience}, Subject: mcpServerClient, ClientID: mcpServerClient, Resource: "https://CRM.example.com/mcp/"},
		noSubToken:    {Audience: []string{AdminAudience}, ClientID: cliClientID, Roles: []string{"admin"}},
	}
}

func bearer(tok string) []string { return []string{"authorization", "Bearer " + tok} }

func TestBearerTokens(t *testing.T) {
	e := newEnv(t, Config{Verifier: testVerifier()})
	cc := e.dial(t, nil, nil)

	wantAdmin := Principal{Kind: KindOperator, ID: "alice", ClientID: cliClientID, Roles: []Role{RoleAdmin}, Scopes: []string{"openid"}, Via: ViaBearer}
	p, err := call(t, cc, "RevokeGrant", bearer(adminToken)...)
	wantOK(t, p, err, wantAdmin)
	p, err = tail(t, cc, bearer(adminToken)...)
	wantOK(t, p, err, wantAdmin)
	// The scheme name is case-insensitive (RFC 7235).
	p, err = call(t, cc, "ListGrants", "authorization", "bearer "+adminToken)
	wantOK(t, p, err, wantAdmin)

	p, err = call(t, cc, "ListGrants", bearer(auditorToken)...)
	wantOK(t, p, err, Principal{Kind: KindOperator, ID: "bob", ClientID: cliClientID, Roles: []Role{RoleAuditor}, Via: ViaBearer})
	_, err = call(t, cc, "RevokeGrant", bearer(auditorToken)...)
	wantRefused(t, err, codes.PermissionDenied, method("RevokeGrant"))
	// An operator token without a role is authenticated but allowed nothing.
	_, err = call(t, cc, "ListGrants", bearer(noRoleToken)...)
	wantRefused(t, err, codes.PermissionDenied, method("ListGrants"))

	p, err = call(t, cc, "Check", bearer(policyToken)...)
	wantOK(t, p, err, Principal{Kind: KindMCPServer, ID: mcpServerClient, ClientID: mcpServerClient,
		Resource: crmResource, Scopes: []string{"mcpid:policy.check"}, Via: ViaBearer})
	_, err = call(t, cc, "ListGrants", bearer(policyToken)...)
	wantRefused(t, err, codes.PermissionDenied, method("ListGrants"))
	// Admin tokens are not MCP-server tokens.
	_, err = call(t, cc, "Check", bearer(adminToken)...)
	wantRefused(t, err, codes.PermissionDenied, method("Check"))

	refused := map[string][]string{
		"resource audience":           bearer(resourceToken),
		"two audiences":               bearer(twoAudToken),
		"differently cased audience":  bearer(upperAudToken),
		"policy token lacks resource": bearer(noResToken),
		"non-canonical resource":      bearer(nonCanonToken),
		"admin token lacks subject":   bearer(noSubToken),
		"verification fails":          bearer(forgedToken),
		"empty bearer":                {"authorization", "Bearer "},
		"bearer without token":        {"authorization", "Bearer"},
		"token with inner space":      {"authorization", "Bearer " + adminToken + " x"},
		"two authorization entries":   append(bearer(adminToken), bearer(adminToken)...),
	}
	for name, md := range refused {
		for _, m := range []string{"ListGrants", "Check"} {
			_, err := call(t, cc, m, md...)
			if status.Code(err) != codes.Unauthenticated {
				t.Errorf("%s on %s: error = %v, want Unauthenticated", name, m, err)
				continue
			}
			wantRefused(t, err, codes.Unauthenticated, method(m))
			for _, tok := range allTokens {
				if strings.Contains(err.Error(), tok) {
					t.Errorf("%s: error %q contains a token", name, err)
				}
			}
		}
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "fake verifier: signature invalid") {
		t.Errorf("verification failure not logged; logs:\n%s", logs)
	}
	for _, tok := range allTokens {
		// Check a distinctive part too, in case a log line shortened it.
		part := strings.Split(tok, ".")[1]
		if strings.Contains(logs, part) {
			t.Errorf("logs contain token %s:\n%s", part, logs)
		}
	}
}

func TestCertificateWinsOverBearer(t *testing.T) {
	e := newEnv(t, Config{Verifier: testVerifier()})
	cc := e.dial(t, e.cert(t, serviceCert(devca.ServiceToken)), nil)
	// The connection is the token service; an admin token sent along does
	// not turn it into an operator.
	_, err := call(t, cc, "RevokeGrant", bearer(adminToken)...)
	wantRefused(t, err, codes.PermissionDenied, method("RevokeGrant"))
	p, err := call(t, cc, "AuthenticateClient", bearer(adminToken)...)
	wantOK(t, p, err, Principal{Kind: KindService, ID: devca.ServiceToken, Via: ViaMTLS})
}

func TestBearerWithoutVerifier(t *testing.T) {
	e := newEnv(t, Config{})
	_, err := call(t, e.dial(t, nil, nil), "ListGrants", bearer(adminToken)...)
	wantRefused(t, err, codes.Unauthenticated, method("ListGrants"))
}

func TestPublicHealthAndReflection(t *testing.T) {
	e := newEnv(t, Config{PublicHealth: true, PublicReflection: true})
	cc := e.dial(t, nil, nil)
	resp, err := grpc_health_v1.NewHealthClient(cc).Check(testCtx(t), &grpc_health_v1.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != grpc_health_v1.HealthCheckResponse_SERVING {
		t.Fatalf("anonymous health check: %v, %v", resp, err)
	}
	st, err := grpc_reflection_v1.NewServerReflectionClient(cc).ServerReflectionInfo(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&grpc_reflection_v1.ServerReflectionRequest{
		MessageRequest: &grpc_reflection_v1.ServerReflectionRequest_ListServices{},
	}); err != nil {
		t.Fatal(err)
	}
	r, err := st.Recv()
	if err != nil {
		t.Fatalf("anonymous reflection: %v", err)
	}
	var names []string
	for _, s := range r.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	if !strings.Contains(strings.Join(names, " "), testService) {
		t.Errorf("reflection lists %v, want %s among them", names, testService)
	}
	_ = st.CloseSend()
	// Other methods stay protected.
	_, err = call(t, cc, "ListGrants")
	wantRefused(t, err, codes.Unauthenticated, method("ListGrants"))
}

// rawCA returns a root that is not devca's and a client certificate it
// issued with no URI SAN: trusted by the TLS layer, yet naming no
// principal.
func rawCA(t *testing.T) (*x509.Certificate, tls.Certificate) {
	t.Helper()
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rootTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "other root"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	root, err := x509.ParseCertificate(rootDER)
	if err != nil {
		t.Fatal(err)
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "token"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{"token"},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, root, &leafKey.PublicKey, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	return root, tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: leafKey}
}
