package server_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
	"github.com/mcpid/mcpid/services/registration/server"
)

// TestHardenedRegistration runs DCR the way a security team would set it
// up: only from the VPN (behind a trusted proxy), only with an initial
// access token, redirect hosts allowlisted, identical re-registrations and
// the number of clients bounded.
func TestHardenedRegistration(t *testing.T) {
	clk := &clock{}
	e := newEnv(t, func(c *server.Config) {
		c.DCRAllowedCIDRs = []string{"10.0.0.0/8"}
		c.TrustedProxies = []string{"127.0.0.1/32"}
		c.InitialAccessTokens = "required"
		c.RedirectHostAllowlist = []string{"app.example.com", "*.corp.example", "127.0.0.1"}
		c.DuplicateLimit = 2
		c.MaxClients = 9 // the pre-registered mcpid client counts too
		c.Now = clk.Now
	})
	ctx := tctx(t)
	vpn := []string{"X-Forwarded-For", "10.1.2.3"}
	newIAT := func(t *testing.T, uses int32, resources ...*registrationv1.AllowedResource) (string, string) {
		t.Helper()
		r, err := e.admin.CreateInitialAccessToken(ctx, &registrationv1.CreateInitialAccessTokenRequest{Note: "ci", MaxUses: uses, ClientCredentialsResources: resources})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetToken(), r.GetInitialAccessToken().GetId()
	}
	token, tokenID := newIAT(t, 100)

	t.Run("source address", func(t *testing.T) {
		body := `{"redirect_uris":["https://app.example.com/cb"],"client_name":"src"}`
		// From 127.0.0.1 itself (the proxy), not from the VPN.
		wantOAuthError(t, e.do(t, http.MethodPost, "/oauth2/register", token, body), http.StatusForbidden, "access_denied")
		// A forged entry left of an untrusted hop does not count.
		wantOAuthError(t, e.do(t, http.MethodPost, "/oauth2/register", token, body, "X-Forwarded-For", "10.9.9.9, 198.51.100.7"), http.StatusForbidden, "access_denied")
		m := e.register(t, body, "Authorization", "Bearer "+token, vpn[0], vpn[1])
		c, _ := e.admin.GetClient(ctx, &registrationv1.GetClientRequest{ClientId: str(m, "client_id")})
		if c.GetClient().GetRegistrationSourceAddress() != "10.1.2.3" || c.GetClient().GetInitialAccessTokenId() != tokenID {
			t.Fatalf("client: %v", c.GetClient())
		}
	})

	t.Run("initial access token required", func(t *testing.T) {
		body := `{"redirect_uris":["https://app.example.com/cb"],"client_name":"iat"}`
		r := e.do(t, http.MethodPost, "/oauth2/register", "", body, vpn...)
		wantOAuthError(t, r, http.StatusUnauthorized, "invalid_token")
		if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), `Bearer error="invalid_token"`) {
			t.Fatalf("WWW-Authenticate %q", r.header.Get("WWW-Authenticate"))
		}
		wantOAuthError(t, e.do(t, http.MethodPost, "/oauth2/register", "nope", body, vpn...), http.StatusUnauthorized, "invalid_token")

		// Used up after max_uses.
		two, twoID := newIAT(t, 2)
		for i := range 2 {
			e.register(t, strings.Replace(body, "iat", "iat"+string(rune('a'+i)), 1), "Authorization", "Bearer "+two, vpn[0], vpn[1])
		}
		wantOAuthError(t, e.do(t, http.MethodPost, "/oauth2/register", two, body, vpn...), http.StatusUnauthorized, "invalid_token")
		l, err := e.auditor.ListInitialAccessTokens(ctx, &registrationv1.ListInitialAccessTokensRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range l.GetInitialAccessTokens() {
			if it.GetId() == twoID && (it.GetUseCount() != 2 || it.GetState() != registrationv1.InitialAccessTokenState_INITIAL_ACCESS_TOKEN_STATE_EXHAUSTED) {
				t.Fatalf("exhausted token: %v", it)
			}
		}
		// Revoked.
		rev, revID := newIAT(t, 5)
		if _, err := e.admin.RevokeInitialAccessToken(ctx, &registrationv1.RevokeInitialAccessTokenRequest{Id: revID}); err != nil {
			t.Fatal(err)
		}
		wantOAuthError(t, e.do(t, http.MethodPost, "/oauth2/register", rev, body, vpn...), http.StatusUnauthorized, "invalid_token")
		// Expired (its value says so even before etcd drops it).
		old, _ := newIAT(t, 5)
		clk.Advance(25 * time.Hour)
		wantOAuthError(t, e.do(t, http.MethodPost, "/oauth2/register", old, body, vpn...), http.StatusUnauthorized, "invalid_token")
		clk.Advance(-25 * time.Hour)
	})

	t.Run("client_credentials only with a token that allows it", func(t *testing.T) {
		body := `{"grant_types":["client_credentials"],"token_endpoint_auth_method":"client_secret_post","client_name":"machine"}`
		wantOAuthError(t, e.do(t, http.MethodPost, "/oauth2/register", token, body, vpn...), 400, "invalid_client_metadata")
		cc, _ := newIAT(t, 1, &registrationv1.AllowedResource{Resource: "https://crm.example.com/mcp", Scopes: []string{"crm:read"}})
		m := e.register(t, body, "Authorization", "Bearer "+cc, vpn[0], vpn[1])
		c, _ := e.admin.GetClient(ctx, &registrationv1.GetClientRequest{ClientId: str(m, "client_id")})
		ar := c.GetClient().GetAllowedResources()
		if len(ar) != 1 || ar[0].GetResource() != "https://crm.example.com/mcp" || ar[0].GetScopes()[0] != "crm:read" {
			t.Fatalf("allowed resources: %v", ar)
		}
	})

	t.Run("redirect host allowlist", func(t *testing.T) {
		for _, uri := range []string{"https://evil.example/cb", "https://app.example.com.evil/cb", "http://[::1]/cb", "https://corp.example/cb"} {
			r := e.do(t, http.MethodPost, "/oauth2/register", token, `{"redirect_uris":["`+uri+`"],"application_type":"native"}`, vpn...)
			wantOAuthError(t, r, 400, "invalid_redirect_uri")
		}
		e.register(t, `{"redirect_uris":["https://x.corp.example/cb","http://127.0.0.1:9999/cb"],"application_type":"native"}`, "Authorization", "Bearer "+token, vpn[0], vpn[1])
	})

	t.Run("identical re-registrations are bounded", func(t *testing.T) {
		body := `{"redirect_uris":["https://app.example.com/dup"],"client_name":"dup"}`
		a := e.register(t, body, "Authorization", "Bearer "+token, vpn[0], vpn[1])
		b := e.register(t, body, "Authorization", "Bearer "+token, vpn[0], vpn[1])
		if str(a, "client_id") == str(b, "client_id") || str(a, "registration_access_token") == str(b, "registration_access_token") {
			t.Fatal("a repeated registration got an earlier client or token")
		}
		r := e.do(t, http.MethodPost, "/oauth2/register", token, body, vpn...)
		if r.code != http.StatusTooManyRequests {
			t.Fatalf("third identical registration = %d %s", r.code, r.body)
		}
		// Another source with the same body is not affected.
		e.register(t, body, "Authorization", "Bearer "+token, "X-Forwarded-For", "10.7.7.7")
	})

	t.Run("cap on clients", func(t *testing.T) {
		for i := 0; ; i++ {
			r := e.do(t, http.MethodPost, "/oauth2/register", token, `{"redirect_uris":["https://app.example.com/cap`+string(rune('a'+i))+`"]}`, vpn...)
			if r.code == http.StatusTooManyRequests {
				break
			}
			if r.code != http.StatusCreated || i > 10 {
				t.Fatalf("registration %d = %d %s", i, r.code, r.body)
			}
		}
		n := len(e.keys(t, "/clients/"))
		if n != 9 {
			t.Fatalf("%d clients stored, cap 9", n)
		}
		_, err := e.admin.CreateClient(ctx, &registrationv1.CreateClientRequest{Metadata: &registrationv1.ClientMetadata{
			RedirectUris: []string{"https://app.example.com/op"}, TokenEndpointAuthMethod: registrationv1.TokenEndpointAuthMethod_TOKEN_ENDPOINT_AUTH_METHOD_NONE}})
		wantStatus(t, err, codes.ResourceExhausted, "ERROR_REASON_CLIENT_LIMIT_REACHED")
	})
}

func TestRateLimitPerSource(t *testing.T) {
	e := newEnv(t, func(c *server.Config) {
		c.DCRRatePerMinute = 1
		c.DCRRateBurst = 2
		c.TrustedProxies = []string{"127.0.0.1"}
		c.InitialAccessTokens = "off"
	})
	// With initial access tokens off, an Authorization header is ignored.
	e.register(t, `{"redirect_uris":["https://a.example/a"]}`, "Authorization", "Bearer whatever")
	e.register(t, `{"redirect_uris":["https://a.example/b"]}`)
	r := e.do(t, http.MethodPost, "/oauth2/register", "", `{"redirect_uris":["https://a.example/c"]}`)
	if r.code != http.StatusTooManyRequests {
		t.Fatalf("third registration = %d %s", r.code, r.body)
	}
	// Another source has its own bucket.
	e.register(t, `{"redirect_uris":["https://a.example/d"]}`, "X-Forwarded-For", "198.51.100.20")
}

func TestRegistrationDisabled(t *testing.T) {
	e := newEnv(t, func(c *server.Config) {
		c.DisableDCR = true
		c.DisableCIMD = true
	})
	wantOAuthError(t, e.do(t, http.MethodPost, "/oauth2/register", "", `{"redirect_uris":["https://a.example/cb"]}`), http.StatusForbidden, "access_denied")
	// With CIMD off, a URL client_id is simply unknown.
	_, err := e.token.ResolveClient(tctx(t), &registrationv1.ResolveClientRequest{ClientId: "https://agent.example.test/client.json"})
	wantStatus(t, err, codes.NotFound, "ERROR_REASON_CLIENT_NOT_FOUND")
}
