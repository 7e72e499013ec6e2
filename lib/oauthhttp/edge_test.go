package oauthhttp_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/lib/apierr"
	"github.com/mcpid/mcpid/lib/oauthhttp"
	"github.com/mcpid/mcpid/lib/server"
)

// tokenService is a test implementation of the token contract: it answers
// from what it received, so the tests see exactly what the edge decoded.
type tokenService struct {
	tokenv1.UnimplementedTokenServiceServer
	mu    sync.Mutex
	calls int
	last  *tokenv1.TokenRequest
	md    metadata.MD
}

func (s *tokenService) Token(ctx context.Context, req *tokenv1.TokenRequest) (*tokenv1.TokenResponse, error) {
	s.mu.Lock()
	s.calls++
	s.last = proto.Clone(req).(*tokenv1.TokenRequest)
	s.md, _ = metadata.FromIncomingContext(ctx)
	s.mu.Unlock()
	// Leaked-metadata probe: this must never reach the HTTP response.
	_ = grpc.SetHeader(ctx, metadata.Pairs("x-internal-detail", "etcd-key=/mcpid/token/grants/1"))
	if code, ok := strings.CutPrefix(req.GetGrantType(), "fail:"); ok {
		return nil, apierr.OAuth(code, "the "+code+" description")
	}
	if req.GetGrantType() == "ratelimited" {
		_ = grpc.SetHeader(ctx, metadata.Pairs(oauthhttp.HeaderRetryAfter, "30"))
		return nil, apierr.New(codes.ResourceExhausted, "ERROR_REASON_RATE_LIMITED", "too many requests from this address")
	}
	if req.GetGrantType() == "crash" {
		return nil, errors.New("etcd: /mcpid/token/codes/abc: connection refused")
	}
	return &tokenv1.TokenResponse{
		AccessToken: "at-for-" + req.GetCode(),
		TokenType:   "Bearer",
		ExpiresIn:   300,
		Scope:       proto.String(req.GetScope()),
	}, nil
}

func (s *tokenService) IntrospectToken(context.Context, *tokenv1.IntrospectTokenRequest) (*tokenv1.IntrospectTokenResponse, error) {
	return &tokenv1.IntrospectTokenResponse{Active: proto.Bool(false)}, nil
}

func (s *tokenService) RevokeToken(ctx context.Context, _ *tokenv1.RevokeTokenRequest) (*tokenv1.RevokeTokenResponse, error) {
	return &tokenv1.RevokeTokenResponse{}, nil
}

func (s *tokenService) GetJwks(ctx context.Context, _ *tokenv1.GetJwksRequest) (*tokenv1.GetJwksResponse, error) {
	_ = oauthhttp.SetCacheControl(ctx, "public, max-age=300")
	return &tokenv1.GetJwksResponse{Keys: []*tokenv1.JsonWebKey{{Kty: "OKP", Crv: "Ed25519", X: "abc", Kid: "k1", Use: "sig", Alg: "EdDSA"}}}, nil
}

func (s *tokenService) GetAuthorizationServerMetadata(ctx context.Context, req *tokenv1.GetAuthorizationServerMetadataRequest) (*tokenv1.GetAuthorizationServerMetadataResponse, error) {
	if req.GetIssuerPath() == "moved" {
		// Exercises redirects through the gateway.
		_ = oauthhttp.Redirect(ctx, http.StatusSeeOther, "http://127.0.0.1:9/.well-known/oauth-authorization-server")
		return &tokenv1.GetAuthorizationServerMetadataResponse{}, nil
	}
	return &tokenv1.GetAuthorizationServerMetadataResponse{Issuer: "https://issuer.example"}, nil
}

type registrationService struct {
	registrationv1.UnimplementedRegistrationServiceServer
}

func (registrationService) RegisterClient(ctx context.Context, req *registrationv1.RegisterClientRequest) (*registrationv1.RegisterClientResponse, error) {
	if req.GetRegistration().GetClientName() == "needs-iat" {
		return nil, apierr.OAuth("invalid_token", "initial access token required")
	}
	_ = oauthhttp.SetHTTPStatus(ctx, http.StatusCreated)
	reg := proto.Clone(req.GetRegistration()).(*registrationv1.ClientRegistration)
	reg.ClientId = "c1"
	reg.ClientSecret = "s1"
	reg.ClientIdIssuedAt = proto.Uint32(1700000000)
	reg.ClientSecretExpiresAt = proto.Uint32(0)
	return &registrationv1.RegisterClientResponse{Registration: reg}, nil
}

func (registrationService) DeleteClientRegistration(ctx context.Context, _ *registrationv1.DeleteClientRegistrationRequest) (*registrationv1.DeleteClientRegistrationResponse, error) {
	_ = oauthhttp.SetHTTPStatus(ctx, http.StatusNoContent)
	return &registrationv1.DeleteClientRegistrationResponse{}, nil
}

func startEdge(t *testing.T) (string, *tokenService) {
	t.Helper()
	tok := &tokenService{}
	edge := oauthhttp.DefaultEdge()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := server.Config{
		Name:     "edge-test",
		HTTPAddr: "127.0.0.1:0",
		Logger:   logger,
		ServerOptions: []grpc.ServerOption{
			grpc.ChainUnaryInterceptor(apierr.UnaryServerInterceptor(logger)),
		},
		RegisterGRPC: func(s *grpc.Server) {
			tokenv1.RegisterTokenServiceServer(s, tok)
			registrationv1.RegisterRegistrationServiceServer(s, registrationService{})
		},
		GatewayOptions: edge.GatewayOptions(),
		Gateway: func(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error {
			if err := tokenv1.RegisterTokenServiceHandler(ctx, mux, conn); err != nil {
				return err
			}
			return registrationv1.RegisterRegistrationServiceHandler(ctx, mux, conn)
		},
		HTTPHandlers: map[string]http.Handler{
			"GET /oauth2/authorize": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "page") }),
		},
		WrapHTTP: edge.Wrap,
	}.Complete(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return "http://" + srv.HTTPAddr().String(), tok
}

type result struct {
	status int
	header http.Header
	body   string
}

func do(t *testing.T, method, url, contentType, body string, hdr ...string) result {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	// Never follow redirects: a test only inspects them.
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return result{resp.StatusCode, resp.Header, string(b)}
}

// expect checks status, exact body and the given headers ("" = absent).
func (r result) expect(t *testing.T, name string, status int, body string, headers ...string) {
	t.Helper()
	if r.status != status {
		t.Errorf("%s: status %d, want %d (body %s)", name, r.status, status, r.body)
	}
	if got := strings.TrimRight(r.body, "\n"); got != body {
		t.Errorf("%s: body\n got %s\nwant %s", name, got, body)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if got := r.header.Get(headers[i]); got != headers[i+1] {
			t.Errorf("%s: header %s = %q, want %q", name, headers[i], got, headers[i+1])
		}
	}
	for k := range r.header {
		if strings.HasPrefix(strings.ToLower(k), "grpc-") || strings.EqualFold(k, "X-Internal-Detail") {
			t.Errorf("%s: gRPC metadata leaked as header %s", name, k)
		}
	}
}

const form = oauthhttp.MIMEForm

func TestTokenFormGolden(t *testing.T) {
	base, tok := startEdge(t)
	body := url.Values{
		"grant_type":    {"authorization_code"},
		"code":          {"c0de"},
		"code_verifier": {"v3rifier"},
		"scope":         {"crm:read crm:write"},
		"unknown_param": {"ignored"},
	}.Encode()
	r := do(t, http.MethodPost, base+"/oauth2/token", form+"; charset=UTF-8", body,
		"Authorization", "Basic Y2xpZW50OnNlY3JldA==",
		"Grpc-Metadata-X-Forwarded-For", "10.9.9.9")
	r.expect(t, "token", 200,
		`{"access_token":"at-for-c0de","token_type":"Bearer","expires_in":300,"scope":"crm:read crm:write"}`,
		"Content-Type", "application/json",
		"Cache-Control", "no-store",
		"Pragma", "no-cache",
		"Access-Control-Allow-Origin", "*")

	tok.mu.Lock()
	defer tok.mu.Unlock()
	if tok.last.GetCodeVerifier() != "v3rifier" || tok.last.GetGrantType() != "authorization_code" {
		t.Errorf("decoded request: %v", tok.last)
	}
	if got := tok.md.Get("authorization"); len(got) != 1 || got[0] != "Basic Y2xpZW50OnNlY3JldA==" {
		t.Errorf("authorization metadata = %v", got)
	}
	// Forged gRPC metadata from the internet is not forwarded: the only
	// x-forwarded-for is the one the gateway derives from the peer.
	if got := tok.md.Get("x-forwarded-for"); len(got) != 1 || strings.Contains(got[0], "10.9.9.9") {
		t.Errorf("x-forwarded-for = %v: forged metadata was forwarded", got)
	}
}

func TestFormRejections(t *testing.T) {
	base, tok := startEdge(t)
	cases := []struct {
		name, path, ctype, body, query string
		status                         int
		want                           string
	}{
		{"repeated parameter", "/oauth2/token", form, "grant_type=a&code=1&code=2", "", 400,
			`{"error":"invalid_request","error_description":"parameter 'code' included more than once"}`},
		{"repeated resource", "/oauth2/token", form, "grant_type=a&resource=https://a&resource=https://b", "", 400,
			`{"error":"invalid_target","error_description":"only one resource may be requested"}`},
		{"json content type", "/oauth2/token", "application/json", `{"grant_type":"a"}`, "", 400,
			`{"error":"invalid_request","error_description":"Content-Type must be application/x-www-form-urlencoded"}`},
		{"missing content type", "/oauth2/revoke", "", "token=x", "", 400,
			`{"error":"invalid_request","error_description":"Content-Type must be application/x-www-form-urlencoded"}`},
		{"oversized body", "/oauth2/token", form, "grant_type=a&code=" + strings.Repeat("x", 70<<10), "", 413,
			`{"error":"invalid_request","error_description":"request body too large"}`},
		{"secret in URL", "/oauth2/token", form, "grant_type=a", "client_secret=s", 400,
			`{"error":"invalid_request","error_description":"parameters must be sent in the request body, not the URL"}`},
		{"malformed form", "/oauth2/introspect", form, "token=%zz", "", 400,
			`{"error":"invalid_request","error_description":"malformed form body: invalid URL escape '%zz'"}`},
	}
	for _, c := range cases {
		u := base + c.path
		if c.query != "" {
			u += "?" + c.query
		}
		r := do(t, http.MethodPost, u, c.ctype, c.body)
		r.expect(t, c.name, c.status, c.want, "Content-Type", "application/json", "Cache-Control", "no-store", "Pragma", "no-cache")
	}
	tok.mu.Lock()
	defer tok.mu.Unlock()
	if tok.calls != 0 {
		t.Fatalf("rejected requests reached the handler %d times", tok.calls)
	}
}

func TestOAuthErrorsGolden(t *testing.T) {
	base, _ := startEdge(t)
	cases := []struct {
		code, basic string
		status      int
		authn       string
	}{
		{"invalid_request", "", 400, ""},
		{"invalid_client", "", 401, ""},
		{"invalid_client", "Basic Y2xpZW50OnNlY3JldA==", 401, `Basic realm="mcpid", charset="UTF-8"`},
		{"invalid_grant", "", 400, ""},
		{"unauthorized_client", "", 400, ""},
		{"unsupported_grant_type", "", 400, ""},
		{"invalid_scope", "", 400, ""},
		{"invalid_target", "", 400, ""},
		{"temporarily_unavailable", "", 503, ""},
	}
	for _, c := range cases {
		hdr := []string{}
		if c.basic != "" {
			hdr = append(hdr, "Authorization", c.basic)
		}
		r := do(t, http.MethodPost, base+"/oauth2/token", form, "grant_type=fail:"+c.code, hdr...)
		r.expect(t, c.code, c.status,
			`{"error":"`+c.code+`","error_description":"the `+c.code+` description"}`,
			"Content-Type", "application/json", "Cache-Control", "no-store", "Pragma", "no-cache",
			"WWW-Authenticate", c.authn)
	}

	// A rate limit is 429 with Retry-After (not the device flow's slow_down).
	do(t, http.MethodPost, base+"/oauth2/token", form, "grant_type=ratelimited").
		expect(t, "rate limited", 429, `{"error":"temporarily_unavailable","error_description":"too many requests from this address"}`,
			"Retry-After", "30", "Cache-Control", "no-store")

	// An unexpected error is server_error with a fixed text: nothing internal leaks.
	r := do(t, http.MethodPost, base+"/oauth2/token", form, "grant_type=crash")
	r.expect(t, "internal", 500, `{"error":"server_error","error_description":"internal error"}`, "Cache-Control", "no-store")
}

func TestResponsesGolden(t *testing.T) {
	base, _ := startEdge(t)

	// RFC 6749 5.1 scope is always written, even for an empty scope set.
	do(t, http.MethodPost, base+"/oauth2/token", form, "grant_type=client_credentials").
		expect(t, "token without scopes", 200, `{"access_token":"at-for-","token_type":"Bearer","expires_in":300,"scope":""}`)

	do(t, http.MethodPost, base+"/oauth2/introspect", form, "token=x").
		expect(t, "introspect inactive", 200, `{"active":false}`, "Cache-Control", "no-store")

	do(t, http.MethodPost, base+"/oauth2/revoke", form, "token=x").
		expect(t, "revoke", 200, `{}`, "Cache-Control", "no-store")

	do(t, http.MethodGet, base+"/oauth2/jwks", "", "").
		expect(t, "jwks", 200, `{"keys":[{"kty":"OKP","use":"sig","alg":"EdDSA","kid":"k1","crv":"Ed25519","x":"abc"}]}`,
			"Cache-Control", "public, max-age=300", "Pragma", "", "Access-Control-Allow-Origin", "*")

	do(t, http.MethodGet, base+"/.well-known/oauth-authorization-server/moved", "", "").
		expect(t, "redirect", 303, ``, "Location", "http://127.0.0.1:9/.well-known/oauth-authorization-server", "Content-Type", "")

	do(t, http.MethodPost, base+"/oauth2/register", "application/json",
		`{"redirect_uris":["http://127.0.0.1/cb"],"client_name":"Agent","token_endpoint_auth_method":"client_secret_basic","future_field":1}`).
		expect(t, "register", 201,
			`{"client_id":"c1","client_secret":"s1","client_id_issued_at":1700000000,"client_secret_expires_at":0,"redirect_uris":["http://127.0.0.1/cb"],"token_endpoint_auth_method":"client_secret_basic","client_name":"Agent"}`,
			"Cache-Control", "no-store", "Content-Type", "application/json")

	do(t, http.MethodPost, base+"/oauth2/register", "application/json", `{"client_name":"needs-iat"}`).
		expect(t, "register unauthenticated", 401,
			`{"error":"invalid_token","error_description":"initial access token required"}`,
			"WWW-Authenticate", `Bearer error="invalid_token", error_description="initial access token required"`)

	do(t, http.MethodPost, base+"/oauth2/register", form, `client_name=x`).
		expect(t, "register form", 400, `{"error":"invalid_request","error_description":"Content-Type must be application/json"}`)

	do(t, http.MethodDelete, base+"/oauth2/register/c1", "", "").
		expect(t, "delete", 204, ``, "Content-Type", "")
}

func TestRoutingAndOverride(t *testing.T) {
	base, _ := startEdge(t)
	// A form POST to a GET-only path must not fall through to the GET.
	do(t, http.MethodPost, base+"/oauth2/jwks", form, "a=b").
		expect(t, "post to GET path", 405, `{"error":"invalid_request","error_description":"method not allowed"}`)
	// Method override is off.
	do(t, http.MethodPost, base+"/oauth2/jwks", form, "", "X-HTTP-Method-Override", "GET").
		expect(t, "method override", 405, `{"error":"invalid_request","error_description":"method not allowed"}`)
	do(t, http.MethodGet, base+"/oauth2/nowhere", "", "").
		expect(t, "unknown", 404, `{"error":"invalid_request","error_description":"no such endpoint"}`)
}

func TestCORS(t *testing.T) {
	base, _ := startEdge(t)
	r := do(t, http.MethodOptions, base+"/oauth2/token", "", "",
		"Origin", "http://localhost:6274", "Access-Control-Request-Method", "POST")
	r.expect(t, "preflight", 204, ``, "Access-Control-Allow-Origin", "*", "Access-Control-Allow-Credentials", "")
	if !strings.Contains(r.header.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Errorf("preflight does not allow Authorization: %v", r.header)
	}
	do(t, http.MethodGet, base+"/.well-known/oauth-authorization-server", "", "", "Origin", "http://localhost:6274").
		expect(t, "metadata CORS", 200, `{"issuer":"https://issuer.example"}`, "Access-Control-Allow-Origin", "*")
	// Never on the pages.
	do(t, http.MethodGet, base+"/oauth2/authorize", "", "", "Origin", "https://evil.example").
		expect(t, "page without CORS", 200, `page`, "Access-Control-Allow-Origin", "", "Cache-Control", "no-store")
	// Introspection is for servers, not browsers.
	do(t, http.MethodOptions, base+"/oauth2/introspect", "", "", "Origin", "https://evil.example", "Access-Control-Request-Method", "POST").
		expect(t, "introspect preflight", 405, `{"error":"invalid_request","error_description":"method not allowed"}`, "Access-Control-Allow-Origin", "")
}
