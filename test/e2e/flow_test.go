package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpid/mcpid/lib/service/servicetest"

	"github.com/chromedp/chromedp"
	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
	"golang.org/x/oauth2"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/lib/browsertest"
)

// exchange is one HTTP exchange the MCP client made.
type exchange struct {
	method, url string
	status      int
	challenge   string
}

// recorder is the client's transport: it records every exchange so the test
// can assert the sequence of the MCP authorization dance.
type recorder struct {
	t   *testing.T
	mu  sync.Mutex
	log []exchange
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.t.Logf("client: %s %s -> %d %s", req.Method, req.URL, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	r.log = append(r.log, exchange{req.Method, req.URL.String(), resp.StatusCode, resp.Header.Get("WWW-Authenticate")})
	r.mu.Unlock()
	return resp, nil
}

func (r *recorder) take() []exchange {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.log
	r.log = nil
	return l
}

// refreshable is the client's token source: the test can make it refresh.
type refreshable struct {
	mu  sync.Mutex
	cfg *oauth2.Config
	ctx context.Context
	ts  oauth2.TokenSource
	cur *oauth2.Token
}

func (r *refreshable) Token() (*oauth2.Token, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, err := r.ts.Token()
	if err == nil {
		r.cur = t
	}
	return t, err
}

// forceRefresh makes the next Token use the refresh token.
func (r *refreshable) forceRefresh() {
	r.mu.Lock()
	defer r.mu.Unlock()
	expired := *r.cur
	expired.Expiry = time.Now().Add(-time.Minute)
	r.ts = r.cfg.TokenSource(r.ctx, &expired)
}

func (r *refreshable) access() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur.AccessToken
}

// browserFetcher signs in (when asked) and approves the consent page in
// headless Chromium, and returns what reached the callback.
func browserFetcher(t *testing.T, bctx context.Context, cb *browsertest.Callback, resource string) auth.AuthorizationCodeFetcher {
	return func(ctx context.Context, args *auth.AuthorizationArgs) (*auth.AuthorizationResult, error) {
		// One sign-in and consent takes well under a second; a page that
		// never shows what the test waits for fails the step, not the run.
		bctx, cancel := context.WithTimeout(bctx, 30*time.Second)
		defer cancel()
		t.Logf("browser: %s", args.URL)
		// Authorization code with PKCE (S256), bound to the CRM (RFC 8707).
		au, err := url.Parse(args.URL)
		if err != nil {
			return nil, err
		}
		if q := au.Query(); q.Get("response_type") != "code" || q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" ||
			q.Get("resource") != resource || q.Get("state") == "" {
			return nil, fmt.Errorf("authorization request without PKCE, state or resource: %s", args.URL)
		}
		if err := chromedp.Do(bctx, chromedp.Navigate(args.URL), chromedp.WaitVisible(chromedp.CSS("#login-form, #consent-form, #error-message"))); err != nil {
			return nil, fmt.Errorf("authorize page: %w", err)
		}
		if msg, _ := chromedp.Run(bctx, chromedp.Evaluate[string](`(document.getElementById("error-message")||{}).innerText || ""`)); msg != "" {
			return nil, fmt.Errorf("authorize page shows an error: %s", msg)
		}
		login, err := chromedp.Run(bctx, chromedp.Evaluate[bool](`document.getElementById("login-form") !== null`))
		if err != nil {
			return nil, err
		}
		if login {
			if err := browsertest.SignIn(bctx, user, password, "#consent-form"); err != nil {
				return nil, fmt.Errorf("sign-in: %w", err)
			}
		}
		if err := browsertest.Approve(bctx, "#done"); err != nil {
			return nil, fmt.Errorf("consent: %w", err)
		}
		q, err := cb.Redirect(bctx)
		if err != nil {
			return nil, err
		}
		return &auth.AuthorizationResult{Code: q.Get("code"), State: q.Get("state"), Iss: q.Get("iss")}, nil
	}
}

// TestMCPClientEndToEnd runs the official MCP Go SDK client, with its OAuth
// handler, from nothing to allowed tool calls, once per way of registering.
func TestMCPClientEndToEnd(t *testing.T) {
	s := startSystem(t)
	for _, mode := range []string{"cimd", "dcr", "preregistered"} {
		t.Run(mode, func(t *testing.T) { runClient(t, s, mode) })
	}
}

func runClient(t *testing.T, s *system, mode string) {
	ctx := t.Context()
	bctx := browsertest.Start(t)
	cb := browsertest.NewCallback(t)
	redirect := cb.URL
	rec := &recorder{t: t}
	httpClient := &http.Client{Transport: rec, Timeout: 30 * time.Second}
	var ts *refreshable
	cfg := &auth.AuthorizationCodeHandlerConfig{
		RedirectURL:              redirect,
		AuthorizationCodeFetcher: browserFetcher(t, bctx, cb, s.crmURL),
		RequestRefreshToken:      true,
		Client:                   httpClient,
		NewTokenSource: func(ctx context.Context, c *oauth2.Config, tok *oauth2.Token) (oauth2.TokenSource, error) {
			ts = &refreshable{cfg: c, ctx: ctx, ts: c.TokenSource(ctx, tok), cur: tok}
			return ts, nil
		},
	}
	switch mode {
	case "cimd":
		path := "/agents/e2e.json"
		u := "https://" + cimdHost + ":" + s.cimd.URL[strings.LastIndex(s.cimd.URL, ":")+1:] + path
		s.setCIMD(path, `{"client_id":"`+u+`","client_name":"E2E CIMD agent","redirect_uris":["`+redirect+`"],`+
			`"grant_types":["authorization_code","refresh_token"],"response_types":["code"],"token_endpoint_auth_method":"none"}`)
		cfg.ClientIDMetadataDocumentConfig = &auth.ClientIDMetadataDocumentConfig{URL: u}
	case "dcr":
		cfg.DynamicClientRegistrationConfig = &auth.DynamicClientRegistrationConfig{Metadata: &oauthex.ClientRegistrationMetadata{
			ClientName: "E2E DCR agent", RedirectURIs: []string{redirect}, TokenEndpointAuthMethod: "none",
			GrantTypes: []string{"authorization_code", "refresh_token"},
		}}
	case "preregistered":
		id := "e2e-preregistered"
		if _, err := s.regAdmin.CreateClient(ctx, &registrationv1.CreateClientRequest{ClientId: id, Metadata: &registrationv1.ClientMetadata{
			RedirectUris: []string{redirect}, ClientName: "E2E pre-registered agent",
			TokenEndpointAuthMethod: registrationv1.TokenEndpointAuthMethod_TOKEN_ENDPOINT_AUTH_METHOD_NONE,
			GrantTypes:              []registrationv1.GrantType{registrationv1.GrantType_GRANT_TYPE_AUTHORIZATION_CODE, registrationv1.GrantType_GRANT_TYPE_REFRESH_TOKEN},
		}}); err != nil {
			t.Fatal(err)
		}
		cfg.PreregisteredClient = &oauthex.ClientCredentials{ClientID: id}
	}
	handler, err := auth.NewAuthorizationCodeHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	client := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, nil)
	sess, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: s.crmURL, OAuthHandler: handler, HTTPClient: httpClient}, nil)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer sess.Close()

	// list_contacts: the first request is refused 401, the client discovers,
	// registers, authorizes with PKCE (sign-in and consent in Chromium),
	// gets a token and retries.
	res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "list_contacts"})
	if err != nil || res.IsError {
		t.Fatalf("list_contacts: %v %v", err, res)
	}
	discovery := []step{
		{http.MethodPost, s.crmURL, http.StatusUnauthorized, `resource_metadata="` + s.crmMetadataURL() + `", scope="crm:contacts.read"`},
		{http.MethodGet, s.crmMetadataURL(), http.StatusOK, ""},
		{http.MethodGet, s.issuer + "/.well-known/oauth-authorization-server", http.StatusOK, ""},
	}
	if mode == "dcr" {
		discovery = append(discovery, step{http.MethodPost, s.issuer + "/oauth2/register", http.StatusCreated, ""})
	}
	expectSequence(t, rec.take(), append(discovery,
		step{http.MethodPost, s.issuer + "/oauth2/token", http.StatusOK, ""},
		step{http.MethodPost, s.crmURL, http.StatusOK, ""},
	))
	if mode == "cimd" && s.cimdFetches.Load() == 0 {
		t.Fatal("the registration service never fetched the CIMD document")
	}
	if aud := servicetest.JWTClaims(t, ts.access())["aud"]; aud != s.crmURL && !slices.Equal(anyStrings(aud), []string{s.crmURL}) {
		t.Fatalf("token audience %v, want %s", aud, s.crmURL)
	}
	firstClient, _ := servicetest.JWTClaims(t, ts.access())["client_id"].(string)
	if mode != "dcr" && firstClient != cfgClientID(cfg) {
		t.Fatalf("token client_id %q, want %q", firstClient, cfgClientID(cfg))
	}
	// tools/list shows only what the token may call.
	tools, err := sess.ListTools(ctx, nil)
	if err != nil {
		t.Fatalf("tools/list: %v", err)
	}
	var names []string
	for _, tl := range tools.Tools {
		names = append(names, tl.Name)
	}
	if !slices.Contains(names, "list_contacts") || slices.Contains(names, "update_deal") || slices.Contains(names, "export_contacts") {
		t.Fatalf("tools/list with crm:contacts.read: %v", names)
	}
	rec.take()
	if sc := servicetest.JWTClaims(t, ts.access())["scope"]; sc != "crm:contacts.read" {
		t.Fatalf("first token scope %v", sc)
	}

	// update_deal: 403 insufficient_scope, the client steps up, then the
	// call is allowed.
	res, err = sess.CallTool(ctx, &mcp.CallToolParams{Name: "update_deal", Arguments: map[string]any{"id": "d1", "stage": "won"}})
	if err != nil || res.IsError {
		t.Fatalf("update_deal after step-up: %v %v", err, res)
	}
	stepUp := []step{{http.MethodPost, s.crmURL, http.StatusForbidden,
		`error="insufficient_scope", scope="crm:deals.write", resource_metadata="` + s.crmMetadataURL() + `"`}}
	if mode == "dcr" {
		// The SDK registers again for the new authorization.
		stepUp = append(stepUp, step{http.MethodPost, s.issuer + "/oauth2/register", http.StatusCreated, ""})
	}
	expectSequence(t, rec.take(), append(stepUp,
		step{http.MethodPost, s.issuer + "/oauth2/token", http.StatusOK, ""},
		step{http.MethodPost, s.crmURL, http.StatusOK, ""},
	))
	if sc, _ := servicetest.JWTClaims(t, ts.access())["scope"].(string); sc != "crm:contacts.read crm:deals.write" {
		t.Fatalf("stepped-up token scope %q", sc)
	}

	// Refresh: a new access token from the refresh token, still allowed.
	before := ts.access()
	ts.forceRefresh()
	if res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "list_contacts"}); err != nil || res.IsError {
		t.Fatalf("after refresh: %v %v", err, res)
	}
	after := ts.access()
	if after == before {
		t.Fatal("the token was not refreshed")
	}
	expectSequence(t, rec.take(), []step{
		{http.MethodPost, s.issuer + "/oauth2/token", http.StatusOK, ""},
		{http.MethodPost, s.crmURL, http.StatusOK, ""},
	})
	if sc, _ := servicetest.JWTClaims(t, after)["scope"].(string); sc != "crm:contacts.read crm:deals.write" {
		t.Fatalf("refreshed token scope %q", sc)
	}

	// An operator revokes the grant: within a second the next call is
	// refused.
	grant, _ := servicetest.JWTClaims(t, after)["grant_id"].(string)
	if _, err := s.tokAdmin.RevokeGrants(ctx, &tokenv1.RevokeGrantsRequest{Selector: &tokenv1.RevokeGrantsRequest_GrantId{GrantId: grant}, Reason: "e2e"}); err != nil {
		t.Fatalf("RevokeGrants: %v", err)
	}
	revoked := time.Now()
	plain := &http.Client{Timeout: 5 * time.Second}
	for {
		req, _ := http.NewRequest(http.MethodPost, s.crmURL, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_contacts"}}`))
		req.Header.Set("Authorization", "Bearer "+after)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		resp, err := plain.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		// Refused by the CRM itself, from its revocation feed (the policy
		// service's refusal would carry its own description).
		if resp.StatusCode == http.StatusUnauthorized &&
			strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_token", error_description="the access token was revoked"`) {
			break
		}
		if time.Since(revoked) > time.Second {
			t.Fatalf("a revoked grant's token still gets %d after a second", resp.StatusCode)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The refresh token died with the grant.
	ts.forceRefresh()
	if _, err := ts.Token(); err == nil || !strings.Contains(err.Error(), "invalid_grant") {
		t.Fatalf("refresh after revocation: %v", err)
	}

	lastClient, _ := servicetest.JWTClaims(t, after)["client_id"].(string)
	want := []auditStep{
		{typ: auditv1.EventType_EVENT_TYPE_CLIENT_REGISTERED},
		{typ: auditv1.EventType_EVENT_TYPE_LOGIN_SUCCEEDED},
		{typ: auditv1.EventType_EVENT_TYPE_CONSENT_GRANTED},
		{typ: auditv1.EventType_EVENT_TYPE_TOKEN_ISSUED},
		{typ: auditv1.EventType_EVENT_TYPE_POLICY_DECISION, tool: "list_contacts", decision: auditv1.Decision_DECISION_ALLOW},
		{typ: auditv1.EventType_EVENT_TYPE_POLICY_DECISION, tool: "update_deal", decision: auditv1.Decision_DECISION_DENY},
	}
	if mode == "dcr" {
		want = append(want, auditStep{typ: auditv1.EventType_EVENT_TYPE_CLIENT_REGISTERED})
	}
	want = append(want,
		auditStep{typ: auditv1.EventType_EVENT_TYPE_CONSENT_GRANTED},
		auditStep{typ: auditv1.EventType_EVENT_TYPE_TOKEN_ISSUED},
		auditStep{typ: auditv1.EventType_EVENT_TYPE_POLICY_DECISION, tool: "update_deal", decision: auditv1.Decision_DECISION_ALLOW},
		auditStep{typ: auditv1.EventType_EVENT_TYPE_TOKEN_REFRESHED},
		auditStep{typ: auditv1.EventType_EVENT_TYPE_POLICY_DECISION, tool: "list_contacts", decision: auditv1.Decision_DECISION_ALLOW},
		auditStep{typ: auditv1.EventType_EVENT_TYPE_GRANT_REVOKED},
	)
	userID, _ := servicetest.JWTClaims(t, after)["sub"].(string)
	checkAudit(t, s, userID, slices.Compact([]string{firstClient, lastClient}), want)
}

// cfgClientID is the client id the handler was configured with (CIMD URL
// or pre-registered id).
func cfgClientID(cfg *auth.AuthorizationCodeHandlerConfig) string {
	switch {
	case cfg.ClientIDMetadataDocumentConfig != nil:
		return cfg.ClientIDMetadataDocumentConfig.URL
	case cfg.PreregisteredClient != nil:
		return cfg.PreregisteredClient.ClientID
	}
	return ""
}

type step struct {
	method, url string
	status      int
	challenge   string
}

// expectSequence checks that want occurs in got in order (other exchanges
// may come between).
func expectSequence(t *testing.T, got []exchange, want []step) {
	t.Helper()
	i := 0
	for _, g := range got {
		if i == len(want) {
			break
		}
		w := want[i]
		if g.method == w.method && strings.Contains(g.url, w.url) && g.status == w.status && strings.Contains(g.challenge, w.challenge) {
			i++
		}
	}
	if i < len(want) {
		t.Fatalf("exchange %+v not found in order in %+v", want[i], got)
	}
}

// auditStep is one expected event of the session's audit trail.
type auditStep struct {
	typ      auditv1.EventType
	tool     string
	decision auditv1.Decision
}

func (a auditStep) matches(e *auditv1.Event) bool {
	return e.GetType() == a.typ && (a.tool == "" || e.GetTool() == a.tool) &&
		(a.decision == auditv1.Decision_DECISION_UNSPECIFIED || e.GetDecision() == a.decision)
}

func (a auditStep) String() string {
	s := strings.TrimPrefix(a.typ.String(), "EVENT_TYPE_")
	if a.tool != "" {
		s += " " + a.tool + " " + strings.TrimPrefix(a.decision.String(), "DECISION_")
	}
	return s
}

// checkAudit checks that the trail of the session's clients holds every
// step of the dance in the order it happened (by the producers' event time:
// read-path events such as policy decisions are batched, so the chain's
// order across services may differ by a batch), and that the chain
// verifies.
func checkAudit(t *testing.T, s *system, userID string, clientIDs []string, want []auditStep) {
	t.Helper()
	ctx := t.Context()
	var got []*auditv1.Event
	matched := 0
	ok := poll(func() bool {
		// The clients' events, and the user's events that name no client
		// (sign-in).
		byClient, err := queryAll(ctx, s, &auditv1.EventFilter{ClientIds: clientIDs})
		if err != nil {
			t.Logf("QueryEvents: %v", err)
			return false
		}
		byUser, err := queryAll(ctx, s, &auditv1.EventFilter{UserIds: []string{userID}})
		if err != nil {
			t.Logf("QueryEvents: %v", err)
			return false
		}
		got = append(byClient, slices.DeleteFunc(byUser, func(e *auditv1.Event) bool { return e.GetClientId() != "" })...)
		slices.SortStableFunc(got, func(a, b *auditv1.Event) int { return a.GetTime().AsTime().Compare(b.GetTime().AsTime()) })
		matched = 0
		for _, e := range got {
			if matched < len(want) && want[matched].matches(e) {
				matched++
			}
		}
		return matched == len(want)
	}, 15*time.Second)
	if !ok {
		var lines []string
		for _, e := range got {
			lines = append(lines, fmt.Sprintf("%s %s tool=%s decision=%s reason=%s user=%s client=%s",
				e.GetTime().AsTime().Format("15:04:05.000000"), e.GetType(), e.GetTool(), e.GetDecision(), e.GetReason(), e.GetUserId(), e.GetClientId()))
		}
		t.Fatalf("audit trail lacks step %d (%v) of %v; trail:\n%s", matched, want[matched], want, strings.Join(lines, "\n"))
	}
	v, err := s.audit.VerifyChain(ctx, &auditv1.VerifyChainRequest{})
	if err != nil || !v.GetIntact() {
		t.Fatalf("VerifyChain: %v %v", v, err)
	}
}

// queryAll reads every event matching filter, oldest first.
func queryAll(ctx context.Context, s *system, filter *auditv1.EventFilter) ([]*auditv1.Event, error) {
	var out []*auditv1.Event
	token := ""
	for range 100 {
		resp, err := s.audit.QueryEvents(ctx, &auditv1.QueryEventsRequest{
			Filter: filter, Order: auditv1.EventOrder_EVENT_ORDER_OLDEST_FIRST, PageSize: 1000, PageToken: token,
		})
		if err != nil {
			return nil, err
		}
		out = append(out, resp.GetEvents()...)
		if token = resp.GetNextPageToken(); token == "" {
			return out, nil
		}
	}
	return nil, errors.New("more than 100 pages of events")
}

// anyStrings converts a decoded JSON array of strings.
func anyStrings(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, e := range l {
		s, _ := e.(string)
		out = append(out, s)
	}
	return out
}
