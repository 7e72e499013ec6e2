package server_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/oauth2-proxy/mockoidc"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/oauth2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/lib/browsertest"
	"github.com/mcpid/mcpid/lib/config"
	"github.com/mcpid/mcpid/lib/fetch"
	"github.com/mcpid/mcpid/services/token/server"
)

// idp is a real OpenID provider (github.com/oauth2-proxy/mockoidc) on
// loopback. Its middleware lets a test make the provider misbehave the way
// a failing or hostile IdP would (one mode at a time).
type idp struct {
	m    *mockoidc.MockOIDC
	mode atomic.Value // string
}

func (p *idp) set(mode string) { p.mode.Store(mode) }

func startIDP(t *testing.T) *idp {
	t.Helper()
	m, err := mockoidc.NewServer(nil)
	if err != nil {
		t.Fatal(err)
	}
	p := &idp{m: m}
	p.set("")
	if err := m.AddMiddleware(p.middleware); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ln, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Shutdown() })
	return p
}

func (p *idp) port() uint16 {
	_, port, _ := net.SplitHostPort(p.m.Server.Addr)
	n, _ := strconv.Atoi(port)
	return uint16(n)
}

func (p *idp) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mode, _ := p.mode.Load().(string)
		authz, tok := r.URL.Path == mockoidc.AuthorizationEndpoint, r.URL.Path == mockoidc.TokenEndpoint
		switch {
		case authz && mode == "deny": // the user pressed "cancel" upstream
			q := url.Values{"error": {"access_denied"}, "state": {r.URL.Query().Get("state")}}
			http.Redirect(w, r, r.URL.Query().Get("redirect_uri")+"?"+q.Encode(), http.StatusFound)
			return
		case authz && mode == "nonce": // a code minted for another sign-in's nonce
			q := r.URL.Query()
			q.Set("nonce", "forged-nonce")
			r.URL.RawQuery = q.Encode()
		case authz && (mode == "iss" || mode == "iss-ok" || mode == "state"):
			rec := httptest.NewRecorder()
			next.ServeHTTP(rec, r)
			loc, _ := url.Parse(rec.Header().Get("Location"))
			q := loc.Query()
			switch mode {
			case "iss":
				q.Set("iss", "https://evil.example.com")
			case "iss-ok":
				q.Set("iss", p.m.Issuer())
			case "state":
				q.Set("state", "forged-state")
			}
			loc.RawQuery = q.Encode()
			http.Redirect(w, r, loc.String(), http.StatusFound)
			return
		case tok && mode == "down":
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		case tok && mode == "tamper": // the ID token's payload changed in transit
			rec := httptest.NewRecorder()
			next.ServeHTTP(rec, r)
			var body map[string]any
			_ = json.Unmarshal(rec.Body.Bytes(), &body)
			idt, _ := body["id_token"].(string)
			if idt == "" { // an error answer (client authentication retried by x/oauth2)
				w.WriteHeader(rec.Code)
				_, _ = w.Write(rec.Body.Bytes())
				return
			}
			parts := strings.Split(idt, ".")
			payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
			var claims map[string]any
			_ = json.Unmarshal(payload, &claims)
			claims["sub"] = "someone-else"
			payload, _ = json.Marshal(claims)
			parts[1] = base64.RawURLEncoding.EncodeToString(payload)
			body["id_token"] = strings.Join(parts, ".")
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(body)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// ssoEnv is the token service with two upstream IdPs: "corp" (employees,
// home realm corp.example, only corp.example emails, groups prefixed
// "corp:") and "partner" (home realm partner.example, prefix "partner:").
type ssoEnv struct {
	*env
	corp, partner *idp
}

func startSSO(t *testing.T, tweak func(*server.Config)) *ssoEnv {
	t.Helper()
	s := &ssoEnv{corp: startIDP(t), partner: startIDP(t)}
	s.env = startEnv(t, func(o *envOptions) {
		o.tweak = func(_ *env, c *server.Config) {
			// Tests reach the IdPs on loopback over http: the fetcher's
			// escape hatches, never a real host.
			c.ConnectorFetch = &fetch.Config{AllowAnyHost: true, AllowHTTP: true, AllowPrivate: true,
				AllowedPorts: []uint16{s.corp.port(), s.partner.port()}, HostRate: 1000, HostBurst: 1000, NegativeTTL: -1}
			if tweak != nil {
				tweak(c)
			}
		}
	})
	ctx := context.Background()
	for _, c := range []*tokenv1.Connector{s.connector("corp", "Corp SSO", s.corp, "corp.example", "corp:"), s.connector("partner", "Partner IdP", s.partner, "partner.example", "partner:")} {
		if _, err := s.grpcTok.CreateConnector(ctx, &tokenv1.CreateConnectorRequest{Connector: c}); err != nil {
			t.Fatalf("CreateConnector %s: %v", c.GetConnectorId(), err)
		}
	}
	return s
}

func (s *ssoEnv) connector(id, name string, p *idp, domain, prefix string) *tokenv1.Connector {
	cfg := p.m.Config()
	c := &tokenv1.Connector{
		ConnectorId: id, DisplayName: name, Enabled: true, HomeRealmDomains: []string{domain}, GroupsPrefix: prefix,
		Config: &tokenv1.Connector_Oidc{Oidc: &tokenv1.OidcConnectorConfig{
			IssuerUrl: cfg.Issuer, ClientId: cfg.ClientID,
			ClientSecretSource: &tokenv1.OidcConnectorConfig_ClientSecret{ClientSecret: cfg.ClientSecret},
			Scopes:             []string{"openid", "email", "profile", "groups"},
		}},
	}
	if id == "corp" {
		c.AllowedEmailDomains = []string{"corp.example"}
	}
	return c
}

// start runs an authorization request and posts the login page's
// connector choice (field "connector") or email (field "email").
func (s *ssoEnv) start(b *browser, a authz, field, value string) response {
	s.t.Helper()
	r := b.authorize(a)
	page := b.send(http.MethodGet, r.header.Get("Location"), nil)
	if page.code != http.StatusOK {
		s.t.Fatalf("login page: %d %s", page.code, page.body)
	}
	req, csrf := form(s.t, page.body)
	return b.send(http.MethodPost, "/oauth2/login", url.Values{"req": {req}, "csrf": {csrf}, field: {value}})
}

// upstream follows the redirect to the IdP and the IdP's redirect back to
// the connector's callback, returning the callback's answer.
func (s *ssoEnv) upstream(b *browser, r response) response {
	s.t.Helper()
	if r.code != http.StatusSeeOther {
		s.t.Fatalf("expected a redirect to the IdP, got %d %s", r.code, r.body)
	}
	up := b.send(http.MethodGet, r.header.Get("Location"), nil)
	if up.code != http.StatusFound {
		s.t.Fatalf("IdP answered %d %s", up.code, up.body)
	}
	return b.send(http.MethodGet, up.header.Get("Location"), nil)
}

// signIn runs a whole federated sign-in for clientWeb and returns the token
// response.
func (s *ssoEnv) signIn(field, value string) (tokenResp, *browser) {
	s.t.Helper()
	a := webAuthz("crm:read")
	b := s.browser()
	r := s.upstream(b, s.start(b, a, field, value))
	if strings.Contains(r.header.Get("Location"), "/oauth2/consent?") {
		r = b.approve(b.consentPage(r), "crm:read")
	}
	return decodeToken(s.t, s.exchange(s.code(r, a), a)), b
}

func (s *ssoEnv) count(prefix string) int64 {
	s.t.Helper()
	resp, err := s.cli.Get(context.Background(), "/mcpid/token/"+prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		s.t.Fatal(err)
	}
	return resp.Count
}

// loginEvents returns the login events in the outbox.
func (s *ssoEnv) loginEvents() []*auditv1.Event {
	s.t.Helper()
	resp, err := s.cli.Get(context.Background(), "/mcpid/token/outbox/", clientv3.WithPrefix())
	if err != nil {
		s.t.Fatal(err)
	}
	var out []*auditv1.Event
	for _, kv := range resp.Kvs {
		ev := &auditv1.Event{}
		if proto.Unmarshal(kv.Value, ev) == nil && ev.GetConnectorId() != "" &&
			(ev.GetType() == auditv1.EventType_EVENT_TYPE_LOGIN_FAILED || ev.GetType() == auditv1.EventType_EVENT_TYPE_LOGIN_SUCCEEDED) {
			out = append(out, ev)
		}
	}
	return out
}

func (s *ssoEnv) lastLoginEvent() *auditv1.Event {
	evs := s.loginEvents()
	if len(evs) == 0 {
		s.t.Fatal("no federated login event")
	}
	return evs[len(evs)-1]
}

// TestSSOBrowser drives the whole federated login in headless Chromium:
// the login choice, the upstream IdP, back to the callback, consent, the
// code, the token; the token carries the upstream groups (prefixed), and a
// CEL condition on them decides at the real policy service.
func TestSSOBrowser(t *testing.T) {
	s := startSSO(t, nil)
	s.corp.m.QueueUser(&mockoidc.MockUser{Subject: "emp-1", Email: "ada@corp.example", EmailVerified: true, Groups: []string{"engineering"}})
	ctx := newBrowser(t)
	cb := browsertest.NewCallback(t)
	cfg := &oauth2.Config{
		ClientID:    clientNative,
		Endpoint:    oauth2.Endpoint{AuthURL: s.issuer + "/oauth2/authorize", TokenURL: s.issuer + "/oauth2/token", AuthStyle: oauth2.AuthStyleInParams},
		RedirectURL: cb.URL, Scopes: []string{"crm:read"},
	}
	verifier := oauth2.GenerateVerifier()
	authURL := cfg.AuthCodeURL("sso-state", oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("resource", resCRM))
	if err := chromedp.Do(ctx,
		chromedp.Navigate(authURL),
		chromedp.WaitVisible(chromedp.ID("connector-corp")),
		chromedp.WaitVisible(chromedp.ID("login-form")),
	); err != nil {
		t.Fatalf("login page in Chromium: %v", err)
	}
	partnerButton, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("connector-partner")))
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.ID("connector-corp")),
		chromedp.WaitVisible(chromedp.ID("consent-form")),
	); err != nil {
		t.Fatalf("federated sign-in in Chromium: %v", err)
	}
	if err := browsertest.Approve(ctx, "#done"); err != nil {
		t.Fatalf("federated sign-in in Chromium: %v", err)
	}
	if partnerButton != "Partner IdP" {
		t.Fatalf("login page lists %q as the second connector", partnerButton)
	}
	q, err := cb.Redirect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	octx := context.WithValue(context.Background(), oauth2.HTTPClient, &http.Client{Timeout: 30 * time.Second})
	tok, err := cfg.Exchange(octx, q.Get("code"), oauth2.VerifierOption(verifier), oauth2.SetAuthURLParam("resource", resCRM))
	if err != nil {
		t.Fatalf("code exchange: %v", err)
	}
	_, cl := claims(t, tok.AccessToken)
	if g, _ := cl["groups"].([]any); len(g) != 1 || g[0] != "corp:engineering" {
		t.Fatalf("groups claim %v", cl["groups"])
	}
	if ev := s.lastLoginEvent(); ev.GetType() != auditv1.EventType_EVENT_TYPE_LOGIN_SUCCEEDED || ev.GetConnectorId() != "corp" || ev.GetLoginName().GetValue() != "emp-1" {
		t.Fatalf("login event %v", ev)
	}

	// A CEL condition on the groups claim at the real policy service.
	if _, err := s.polAdmin.PutPolicy(context.Background(), &policyv1.PutPolicyRequest{Policy: &policyv1.Policy{
		Resource: resCRM, DisplayName: "Acme CRM", Scopes: []*policyv1.Scope{
			{Name: "crm:read", Description: "Read customer records"},
			{Name: "crm:write", Description: "Change customer records", Sensitive: true, Implies: []string{"crm:read"}},
		}, Tools: []*policyv1.Tool{
			{Name: "search_customers", RequiredScopes: []string{"crm:read"}},
			{Name: "payroll", RequiredScopes: []string{"crm:read"}, Conditions: []*policyv1.Condition{{Expression: `"corp:engineering" in groups`, Message: "engineering only"}}},
		}}}); err != nil {
		t.Fatal(err)
	}
	check := func(token string) *policyv1.CheckResult {
		var res *policyv1.CheckResult
		s.waitFor("policy decision", func() bool {
			resp, err := s.polAdmin.Check(context.Background(), &policyv1.CheckRequest{AccessToken: token, Resource: resCRM, Tool: "payroll"})
			if err != nil {
				return false
			}
			res = resp.GetResult()
			return res.GetReason() != policyv1.DecisionReason_DECISION_REASON_TOOL_UNKNOWN
		})
		return res
	}
	if r := check(tok.AccessToken); r.GetDecision() != policyv1.Decision_DECISION_ALLOW {
		t.Fatalf("engineering member: %v", r)
	}
	// A partner (home-realm discovery by email domain) is not in the group.
	s.partner.m.QueueUser(&mockoidc.MockUser{Subject: "p-1", Email: "bo@partner.example", EmailVerified: true, Groups: []string{"engineering"}})
	ptok, _ := s.signIn("email", "bo@partner.example")
	_, pcl := claims(t, ptok.AccessToken)
	if g, _ := pcl["groups"].([]any); len(g) != 1 || g[0] != "partner:engineering" {
		t.Fatalf("partner groups claim %v", pcl["groups"])
	}
	if r := check(ptok.AccessToken); r.GetDecision() != policyv1.Decision_DECISION_DENY || r.GetReason() != policyv1.DecisionReason_DECISION_REASON_CONDITION_FALSE {
		t.Fatalf("partner: %v", r)
	}
}

// TestSSOHomeRealmAndLinking: the email domain picks the connector; users
// are created just in time and linked by (connector, subject): an upstream
// email change updates the user instead of creating another.
func TestSSOHomeRealmAndLinking(t *testing.T) {
	s := startSSO(t, nil)
	// An email of no home realm: the login page again, with a message.
	b := s.browser()
	r := s.start(b, webAuthz("crm:read"), "email", "x@elsewhere.example")
	if r.code != http.StatusBadRequest || !strings.Contains(r.body, "No single sign-on") {
		t.Fatalf("unknown domain: %d %s", r.code, r.body)
	}
	// corp.example goes to the corp IdP.
	r = s.start(s.browser(), webAuthz("crm:read"), "email", "ada@CORP.example")
	if loc := r.header.Get("Location"); !strings.HasPrefix(loc, s.corp.m.AuthorizationEndpoint()) || !strings.Contains(loc, "login_hint=") ||
		!strings.Contains(loc, "code_challenge_method=S256") || !strings.Contains(loc, "nonce=") {
		t.Fatalf("home realm redirect: %s", loc)
	}

	s.corp.m.QueueUser(&mockoidc.MockUser{Subject: "emp-7", Email: "ada@corp.example", EmailVerified: true, Groups: []string{"eng"}})
	tok1, _ := s.signIn("connector", "corp")
	s.corp.m.QueueUser(&mockoidc.MockUser{Subject: "emp-7", Email: "ada.lovelace@corp.example", EmailVerified: true, Groups: []string{"ops"}})
	tok2, _ := s.signIn("connector", "corp")
	_, c1 := claims(t, tok1.AccessToken)
	_, c2 := claims(t, tok2.AccessToken)
	if c1["sub"] != c2["sub"] {
		t.Fatalf("an email change created another user: %v / %v", c1["sub"], c2["sub"])
	}
	resp, err := s.grpcTok.ListUsers(context.Background(), &tokenv1.ListUsersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var fed []*tokenv1.User
	for _, u := range resp.GetUsers() {
		if len(u.GetIdentities()) > 0 {
			fed = append(fed, u)
		}
	}
	if len(fed) != 1 || fed[0].GetEmail() != "ada.lovelace@corp.example" || fed[0].GetIdentities()[0].GetSubject() != "emp-7" ||
		len(fed[0].GetGroups()) != 1 || fed[0].GetGroups()[0] != "corp:ops" {
		t.Fatalf("federated users: %v", fed)
	}
	// The same subject at another connector is another person.
	s.partner.m.QueueUser(&mockoidc.MockUser{Subject: "emp-7", Email: "x@partner.example", EmailVerified: true})
	tok3, _ := s.signIn("connector", "partner")
	if _, c3 := claims(t, tok3.AccessToken); c3["sub"] == c1["sub"] {
		t.Fatal("a subject of another connector was linked to the same user")
	}
}

// TestSSOFailures: every upstream failure ends on an error page, leaves no
// session behind, consumes the state and is audited with its reason.
func TestSSOFailures(t *testing.T) {
	s := startSSO(t, nil)
	cases := []struct {
		name, mode, reason string
		user               *mockoidc.MockUser
		status             int
		text               string
	}{
		{"user denied", "deny", "upstream_denied", nil, http.StatusForbidden, "cancelled"},
		{"issuer mix-up", "iss", "issuer_mismatch", nil, http.StatusBadRequest, "could not be verified"},
		{"bad ID token", "tamper", "id_token_invalid", nil, http.StatusBadRequest, "could not be verified"},
		{"nonce mismatch", "nonce", "nonce_mismatch", nil, http.StatusBadRequest, "could not be verified"},
		{"state mismatch", "state", "state_mismatch", nil, http.StatusBadRequest, "does not belong"},
		{"IdP down", "down", "idp_unavailable", nil, http.StatusBadGateway, "could not be reached"},
		{"disallowed domain", "", "email_domain_not_allowed", &mockoidc.MockUser{Subject: "x", Email: "x@other.example", EmailVerified: true}, http.StatusForbidden, "email domain"},
		{"unverified email", "", "email_not_verified", &mockoidc.MockUser{Subject: "y", Email: "y@corp.example"}, http.StatusForbidden, "not verified"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.user != nil {
				s.corp.m.QueueUser(tc.user)
			}
			s.corp.set(tc.mode)
			defer s.corp.set("")
			states := s.count("sso-states/")
			b := s.browser()
			r := s.upstream(b, s.start(b, webAuthz("crm:read"), "connector", "corp"))
			if r.code != tc.status || !strings.Contains(r.body, `id="error-message"`) || !strings.Contains(r.body, tc.text) {
				t.Fatalf("got %d %s", r.code, r.body)
			}
			if _, ok := b.cookies["__Host-mcpid-session"]; ok || r.header.Get("Set-Cookie") != "" {
				t.Fatal("a session cookie was set")
			}
			if n := s.count("sessions/"); n != 0 {
				t.Fatalf("%d sessions in etcd", n)
			}
			if n := s.count("sso-states/"); n > states && tc.mode != "state" {
				t.Fatalf("%d pending upstream states left", n)
			}
			if ev := s.lastLoginEvent(); ev.GetType() != auditv1.EventType_EVENT_TYPE_LOGIN_FAILED || ev.GetReason() != tc.reason || ev.GetConnectorId() != "corp" {
				t.Fatalf("event %v", ev)
			}
		})
	}
	// The iss of the right issuer is accepted; a callback replayed after
	// success is refused (the state is single use).
	s.corp.m.QueueUser(&mockoidc.MockUser{Subject: "ok", Email: "ok@corp.example", EmailVerified: true})
	s.corp.set("iss-ok")
	b := s.browser()
	a := webAuthz("crm:read")
	up := b.send(http.MethodGet, s.start(b, a, "connector", "corp").header.Get("Location"), nil)
	s.corp.set("")
	if r := b.send(http.MethodGet, up.header.Get("Location"), nil); r.code != http.StatusSeeOther {
		t.Fatalf("correct iss: %d %s", r.code, r.body)
	}
	if r := b.send(http.MethodGet, up.header.Get("Location"), nil); r.code != http.StatusBadRequest || !strings.Contains(r.body, "does not belong") {
		t.Fatalf("replayed callback: %d %s", r.code, r.body)
	}
	// Another browser cannot complete this browser's upstream sign-in.
	s.corp.m.QueueUser(&mockoidc.MockUser{Subject: "ok", Email: "ok@corp.example", EmailVerified: true})
	b1 := s.browser()
	up = b1.send(http.MethodGet, s.start(b1, webAuthz("crm:read"), "connector", "corp").header.Get("Location"), nil)
	if r := s.browser().send(http.MethodGet, up.header.Get("Location"), nil); r.code != http.StatusBadRequest {
		t.Fatalf("callback in another browser: %d %s", r.code, r.body)
	}
	// A state issued for one connector is refused at another's callback.
	b2 := s.browser()
	up = b2.send(http.MethodGet, s.start(b2, webAuthz("crm:read"), "connector", "corp").header.Get("Location"), nil)
	wrong := strings.Replace(up.header.Get("Location"), "/oauth2/callback/corp", "/oauth2/callback/partner", 1)
	if r := b2.send(http.MethodGet, wrong, nil); r.code != http.StatusBadRequest || !strings.Contains(r.body, "does not belong") {
		t.Fatalf("state at another connector: %d %s", r.code, r.body)
	}
}

// TestSSOConnectorAdmin: CRUD over the admin API, secrets sealed at rest,
// changes in effect without restart, and each error.
func TestSSOConnectorAdmin(t *testing.T) {
	s := startSSO(t, nil)
	ctx := context.Background()
	got, err := s.grpcTok.GetConnector(ctx, &tokenv1.GetConnectorRequest{ConnectorId: "corp"})
	if err != nil {
		t.Fatal(err)
	}
	o := got.GetConnector().GetOidc()
	if o.GetClientSecret() != "" || !o.GetHasClientSecret() || got.GetConnector().GetRedirectUri() != s.issuer+"/oauth2/callback/corp" {
		t.Fatalf("GetConnector: %v", got)
	}
	raw, err := s.cli.Get(ctx, "/mcpid/token/connectors/corp")
	if err != nil || len(raw.Kvs) != 1 || strings.Contains(string(raw.Kvs[0].Value), s.corp.m.ClientSecret) {
		t.Fatalf("the client secret is stored in clear (or absent): %v", err)
	}
	list, err := s.grpcTok.ListConnectors(ctx, &tokenv1.ListConnectorsRequest{})
	if err != nil || len(list.GetConnectors()) != 2 {
		t.Fatalf("ListConnectors: %v %v", list, err)
	}

	code := func(err error) (codes.Code, string) {
		st := status.Convert(err)
		for _, d := range st.Details() {
			if ei, ok := d.(interface{ GetReason() string }); ok {
				return st.Code(), ei.GetReason()
			}
		}
		return st.Code(), ""
	}
	bad := s.connector("corp", "Again", s.corp, "other.example", "")
	_, err = s.grpcTok.CreateConnector(ctx, &tokenv1.CreateConnectorRequest{Connector: bad})
	if c, r := code(err); c != codes.AlreadyExists || r != "ERROR_REASON_CONNECTOR_ALREADY_EXISTS" {
		t.Fatalf("duplicate: %v", err)
	}
	taken := s.connector("third", "Third", s.corp, "partner.example", "")
	_, err = s.grpcTok.CreateConnector(ctx, &tokenv1.CreateConnectorRequest{Connector: taken})
	if c, r := code(err); c != codes.AlreadyExists || r != "ERROR_REASON_HOME_REALM_DOMAIN_TAKEN" {
		t.Fatalf("domain taken: %v", err)
	}
	nodisc := s.connector("fourth", "Fourth", s.corp, "fourth.example", "")
	nodisc.GetOidc().IssuerUrl = s.corp.m.Issuer() + "/nothing"
	_, err = s.grpcTok.CreateConnector(ctx, &tokenv1.CreateConnectorRequest{Connector: nodisc})
	if c, r := code(err); c != codes.FailedPrecondition || r != "ERROR_REASON_CONNECTOR_DISCOVERY_FAILED" {
		t.Fatalf("discovery: %v", err)
	}
	badID := s.connector("Bad_ID", "x", s.corp, "bad.example", "")
	_, err = s.grpcTok.CreateConnector(ctx, &tokenv1.CreateConnectorRequest{Connector: badID})
	if c, r := code(err); c != codes.InvalidArgument || r != "ERROR_REASON_INVALID_FIELD" {
		t.Fatalf("bad id: %v", err)
	}
	_, err = s.grpcTok.UpdateConnector(ctx, &tokenv1.UpdateConnectorRequest{Connector: &tokenv1.Connector{ConnectorId: "corp"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"oidc.issuer_url"}}})
	if c, r := code(err); c != codes.InvalidArgument || r != "ERROR_REASON_FIELD_IMMUTABLE" {
		t.Fatalf("immutable: %v", err)
	}
	_, err = s.grpcTok.GetConnector(ctx, &tokenv1.GetConnectorRequest{ConnectorId: "nope"})
	if c, r := code(err); c != codes.NotFound || r != "ERROR_REASON_CONNECTOR_NOT_FOUND" {
		t.Fatalf("not found: %v", err)
	}

	// Disable, rename, delete: the login page follows without restart.
	loginPage := func() string {
		b := s.browser()
		r := b.authorize(webAuthz("crm:read"))
		return b.send(http.MethodGet, r.header.Get("Location"), nil).body
	}
	if _, err := s.grpcTok.UpdateConnector(ctx, &tokenv1.UpdateConnectorRequest{
		Connector: &tokenv1.Connector{ConnectorId: "partner", DisplayName: "Partners & Co"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"display_name"}},
	}); err != nil {
		t.Fatal(err)
	}
	if p := loginPage(); !strings.Contains(p, "Partners &amp; Co") {
		t.Fatalf("renamed connector not shown: %s", p)
	}
	if _, err := s.grpcTok.UpdateConnector(ctx, &tokenv1.UpdateConnectorRequest{
		Connector: &tokenv1.Connector{ConnectorId: "partner", Enabled: false}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"enabled"}},
	}); err != nil {
		t.Fatal(err)
	}
	if p := loginPage(); strings.Contains(p, "connector-partner") {
		t.Fatal("a disabled connector is still offered")
	}
	if _, err := s.grpcTok.DeleteConnector(ctx, &tokenv1.DeleteConnectorRequest{ConnectorId: "corp"}); err != nil {
		t.Fatal(err)
	}
	if p := loginPage(); strings.Contains(p, "connector-corp") {
		t.Fatal("a deleted connector is still offered")
	}
	// The auditor may read but not write.
	auditor := tokenv1.NewTokenServiceClient(s.pki.Dial(t, s.srv, server.Name, s.pki.AsOperator(t, "eve", "auditor")))
	if _, err := auditor.ListConnectors(ctx, &tokenv1.ListConnectorsRequest{}); err != nil {
		t.Fatalf("auditor read: %v", err)
	}
	if _, err := auditor.DeleteConnector(ctx, &tokenv1.DeleteConnectorRequest{ConnectorId: "partner"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("auditor write: %v", err)
	}
}

// TestSSOConnectorsFile: connectors seeded from the connectors-file setting
// (what `mcpid dev --connectors-file` uses) with the password form off.
func TestSSOConnectorsFile(t *testing.T) {
	p := startIDP(t)
	cfg := p.m.Config()
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte(cfg.ClientSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "connectors.yaml")
	doc := "connectors:\n  - connector_id: seeded\n    display_name: Seeded IdP\n    enabled: true\n    oidc:\n      issuer_url: " + cfg.Issuer +
		"\n      client_id: " + cfg.ClientID + "\n      client_secret_file: " + secret + "\n      scopes: [openid, email, groups]\n"
	if err := os.WriteFile(file, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	e := startEnv(t, func(o *envOptions) {
		o.tweak = func(_ *env, c *server.Config) {
			c.ConnectorFetch = &fetch.Config{AllowAnyHost: true, AllowHTTP: true, AllowPrivate: true, AllowedPorts: []uint16{p.port()}}
			c.ConnectorsFile = config.SecretFile{Path: file}
			c.NoPasswordLogin = true
		}
	})
	s := &ssoEnv{env: e, corp: p}
	s.waitFor("seeded connector", func() bool {
		_, err := e.grpcTok.GetConnector(context.Background(), &tokenv1.GetConnectorRequest{ConnectorId: "seeded"})
		return err == nil
	})
	b := e.browser()
	page := b.send(http.MethodGet, b.authorize(webAuthz("crm:read")).header.Get("Location"), nil)
	if strings.Contains(page.body, `id="login-form"`) || !strings.Contains(page.body, "connector-seeded") {
		t.Fatalf("login page: %s", page.body)
	}
	// The password form is refused even when posted by hand.
	req, csrf := form(t, page.body)
	if r := b.send(http.MethodPost, "/oauth2/login", url.Values{"req": {req}, "csrf": {csrf}, "username": {testUser}, "password": {testPassword}}); r.code != http.StatusForbidden {
		t.Fatalf("password sign-in with the form off: %d", r.code)
	}
	p.m.QueueUser(&mockoidc.MockUser{Subject: "s-1", Email: "s@seeded.example", EmailVerified: true})
	tok, _ := s.signIn("connector", "seeded")
	if tok.AccessToken == "" {
		t.Fatal("no token")
	}
}
