package mcpguard_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	"github.com/mcpid/mcpid/lib/devca"
	"github.com/mcpid/mcpid/lib/etcdtest"
	"github.com/mcpid/mcpid/lib/jose"
	"github.com/mcpid/mcpid/lib/service/servicetest"
	"github.com/mcpid/mcpid/sdk/mcpguard"
	policyserver "github.com/mcpid/mcpid/services/policy/server"
)

const issuer = "http://127.0.0.1:9"

// fakeRevocations is a TEST STAND-IN for lib/revocationfeed's Follower (the
// token service's revocation feed), which the guard takes through the
// Revocations interface: here the test says what is revoked.
type fakeRevocations struct {
	notReady atomic.Bool
	mu       sync.Mutex
	grants   map[string]bool
}

func (f *fakeRevocations) Ready() bool { return !f.notReady.Load() }
func (f *fakeRevocations) Revoked(t mcpguard.TokenRef) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.grants[t.GrantID]
}
func (f *fakeRevocations) revoke(grant string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.grants == nil {
		f.grants = map[string]bool{}
	}
	f.grants[grant] = true
}

// env is a real policy service on real etcd, a guard authenticated to it
// with a real MCP-server mTLS identity, and the protected CRM-like MCP
// server on loopback.
type env struct {
	t        testing.TB
	keys     *jose.SigningKey
	resource string
	url      string // the MCP endpoint
	origin   string
	guard    *mcpguard.Guard
	polAdmin policyv1.PolicyServiceClient
	revs     *fakeRevocations
	calls    atomic.Int64 // policy RPCs the guard made
	now      atomic.Int64 // clock offset for the guard
	lastCall atomic.Pointer[mcpguard.Caller]
	ranMu    sync.Mutex
	ran      []ranCall // what the tool handlers ran, in order
}

// ranCall is one run of a tool handler: the tool and the arguments it got.
type ranCall struct {
	tool string
	args map[string]any
}

// runs returns the tool calls the handlers ran so far.
func (e *env) runs() []ranCall {
	e.ranMu.Lock()
	defer e.ranMu.Unlock()
	return append([]ranCall(nil), e.ran...)
}

type envOpts struct {
	policyAddr string // when set, dial this instead (an unreachable policy service)
	timeout    time.Duration
	noCache    bool
	// tokenAddr, when set, is the token service the guard follows the
	// revocation feed of (Config.Token); the guard then runs the feed only
	// when the test calls Run. keepRevs keeps Config.Revocations (the
	// fake) as an override.
	tokenAddr string
	keepRevs  bool
}

func startEnv(t testing.TB, opts ...func(*envOpts)) *env {
	t.Helper()
	var o envOpts
	for _, f := range opts {
		f(&o)
	}
	key, err := jose.GenerateKey(jose.ES256, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, keys: key, revs: &fakeRevocations{}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.origin = "http://" + lis.Addr().String()
	e.resource = e.origin + "/mcp"
	e.url = e.resource

	pki := servicetest.NewPKI(t)
	policyAddr := o.policyAddr
	if policyAddr == "" {
		etcd := etcdtest.Start(t)
		pol, err := policyserver.Config{
			Flags:      pki.ServeTLS(t, policyserver.Name, servicetest.Flags(etcd.Endpoints())),
			GatewayTLS: pki.GatewayTLS(policyserver.Name),
			Issuer:     issuer,
			KeySource:  jose.NewKeySet(key),
		}.Complete(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		servicetest.Run(t, pol)
		servicetest.WaitReady(t, pol, policyserver.Name)
		e.polAdmin = policyv1.NewPolicyServiceClient(pki.Dial(t, pol, policyserver.Name, pki.AsOperator(t, "root", "admin")))
		policyAddr = pol.GRPCAddr().String()
	}
	count := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		e.calls.Add(1)
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	conn, err := grpc.NewClient(policyAddr,
		grpc.WithTransportCredentials(credentials.NewTLS(devca.ClientTLSConfig(pki.CA.Pool(), pki.AsMCPServer(t, e.resource), policyserver.Name))),
		grpc.WithUnaryInterceptor(count))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })

	cfg := crmConfig(e, conn, o.timeout)
	if o.noCache {
		cfg.MaxCacheTTL = -1
	}
	follows := false
	if o.tokenAddr != "" {
		tconn, err := grpc.NewClient(o.tokenAddr,
			grpc.WithTransportCredentials(credentials.NewTLS(devca.ClientTLSConfig(pki.CA.Pool(), pki.AsMCPServer(t, e.resource), "token"))))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tconn.Close() })
		cfg.Token = tconn
		if !o.keepRevs {
			cfg.Revocations = nil
			follows = true
		}
	}
	g, err := mcpguard.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	e.guard = g
	if e.polAdmin != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if !follows {
			if err := g.Run(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := e.polAdmin.PutPolicy(ctx, &policyv1.PutPolicyRequest{Policy: &policyv1.Policy{Resource: e.resource, DisplayName: "Test CRM"}}); err != nil {
			t.Fatal(err)
		}
	}

	srv := &http.Server{Handler: g.Handler(e.mcpServer(), &mcp.StreamableHTTPOptions{JSONResponse: true}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { _ = srv.Close() })
	return e
}

func crmConfig(e *env, conn grpc.ClientConnInterface, timeout time.Duration) mcpguard.Config {
	return mcpguard.Config{
		Resource:      e.resource,
		Issuer:        issuer,
		KeySource:     jose.NewKeySet(e.keys),
		Policy:        conn,
		Revocations:   e.revs,
		DisplayName:   "Test CRM",
		ServerVersion: "1.0.0",
		PolicyTimeout: timeout,
		Scopes: []mcpguard.Scope{
			{Name: "crm:contacts.read", Description: "Read your contacts"},
			{Name: "crm:deals.write", Description: "Change your deals"},
			{Name: "crm:contacts.export", Description: "Export your contacts", Sensitive: true},
		},
		Tools: []mcpguard.Tool{
			{Name: "list_contacts", Scopes: []string{"crm:contacts.read"},
				Conditions: []mcpguard.Condition{{Expression: `!has(arguments.limit) || arguments.limit <= 10.0`, Message: "at most 10 contacts"}}},
			{Name: "update_deal", Scopes: []string{"crm:deals.write"}, Destructive: true},
			{Name: "export_contacts", Scopes: []string{"crm:contacts.export"}, RequireVerifiedClient: true},
		},
		Now: func() time.Time { return time.Now().Add(time.Duration(e.now.Load())) },
	}
}

// mcpServer is the protected server; its tools record who called them, and
// which tool ran with which arguments.
func (e *env) mcpServer() *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "test-crm", Version: "1.0.0"}, nil)
	type none struct{}
	for _, name := range []string{"list_contacts", "update_deal", "export_contacts"} {
		mcp.AddTool(s, &mcp.Tool{Name: name}, func(_ context.Context, req *mcp.CallToolRequest, args map[string]any) (*mcp.CallToolResult, none, error) {
			c, ok := mcpguard.CallerFromRequest(req)
			if !ok {
				return nil, none{}, io.ErrUnexpectedEOF
			}
			e.lastCall.Store(c)
			e.ranMu.Lock()
			e.ran = append(e.ran, ranCall{tool: name, args: args})
			e.ranMu.Unlock()
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: name + " ok for " + c.Subject}}}, none{}, nil
		})
	}
	return s
}

// token signs an access token for the resource with scope; mod changes
// claims.
func (e *env) token(scope string, mod ...func(map[string]any)) string {
	e.t.Helper()
	now := time.Now()
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	c := map[string]any{
		"iss": issuer, "sub": "user-1", "aud": e.resource, "client_id": "https://agent.example/client.json",
		"scope": scope, "jti": base64.RawURLEncoding.EncodeToString(b), "grant_id": "grant-1",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(10 * time.Minute).Unix(),
	}
	for _, m := range mod {
		m(c)
	}
	tok, err := jose.Sign(e.keys, c, "at+jwt")
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

type response struct {
	code   int
	header http.Header
	body   string
}

// rpc posts one JSON-RPC request with the given headers.
func (e *env) rpc(token, method string, params any, hdr ...string) response {
	e.t.Helper()
	p, _ := json.Marshal(params)
	body := `{"jsonrpc":"2.0","id":7,"method":"` + method + `","params":` + string(p) + `}`
	return e.post(e.url, token, body, hdr...)
}

func (e *env) post(url, token, body string, hdr ...string) response {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	return do(e.t, req)
}

func do(t testing.TB, req *http.Request) response {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{code: resp.StatusCode, header: resp.Header, body: string(b)}
}

func call(tool string, args map[string]any) map[string]any {
	m := map[string]any{"name": tool}
	if args != nil {
		m["arguments"] = args
	}
	return m
}

// rpcErr decodes a JSON-RPC error response.
func rpcErr(t testing.TB, body string) (code int, msg string, data map[string]any) {
	t.Helper()
	var r struct {
		Error *struct {
			Code    int            `json:"code"`
			Message string         `json:"message"`
			Data    map[string]any `json:"data"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &r); err != nil || r.Error == nil {
		t.Fatalf("not a JSON-RPC error: %s (%v)", body, err)
	}
	return r.Error.Code, r.Error.Message, r.Error.Data
}
