package server_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/lib/devca"
	"github.com/mcpid/mcpid/services/token/internal/web"
	"github.com/mcpid/mcpid/services/token/server"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// outboxTypes returns the types of the events in the token outbox.
func (e *env) outboxTypes() []auditv1.EventType {
	e.t.Helper()
	resp, err := e.cli.Get(context.Background(), "/mcpid/token/outbox/", clientv3.WithPrefix())
	if err != nil {
		e.t.Fatal(err)
	}
	var out []auditv1.EventType
	for _, kv := range resp.Kvs {
		var ev auditv1.Event
		if err := proto.Unmarshal(kv.Value, &ev); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, ev.GetType())
	}
	return out
}

func countType(ts []auditv1.EventType, t auditv1.EventType) int {
	n := 0
	for _, x := range ts {
		if x == t {
			n++
		}
	}
	return n
}

func testConsentRememberedAndOnlyNewScopesAsked(t *testing.T, e *env) {
	before := e.outboxTypes()
	// other-app: a confidential web client nobody has approved yet.
	otherAuthz := func(scope string) authz {
		a := webAuthz(scope)
		a.clientID, a.redirect = clientWeb2, "https://other.example.com/cb"
		return a
	}
	exchange := func(code string, a authz) response {
		return e.post("/oauth2/token", url.Values{"grant_type": {"authorization_code"}, "code": {code},
			"redirect_uri": {a.redirect}, "code_verifier": {a.verifier}}, clientWeb2, secretWeb2)
	}
	// First time: consent page, approve crm:read only.
	a := otherAuthz("crm:read")
	code, b := e.fullFlow(a, "crm:read")
	decodeToken(t, exchange(code, a))

	// Same scope again, same browser (signed in): no page, a code at once.
	a2 := otherAuthz("crm:read")
	e.code(b.authorize(a2), a2)

	// A new scope: the page asks only for it and mentions the remembered one.
	a3 := otherAuthz("crm:read crm:write")
	page := b.consentPage(b.authorize(a3))
	if !strings.Contains(page.body, `value="crm:write"`) || strings.Contains(page.body, `value="crm:read"`) ||
		!strings.Contains(page.body, "Already allowed: crm:read") || !strings.Contains(page.body, `badge sensitive`) {
		t.Fatalf("consent page should ask only for crm:write (sensitive):\n%s", page.body)
	}
	tr := decodeToken(t, exchange(e.code(b.approve(page, "crm:write"), a3), a3))
	if tr.Scope != "crm:read crm:write" {
		t.Fatalf("scope %q", tr.Scope)
	}
	// crm:write implies crm:read in the catalogue: a consent to crm:write
	// covers a later request for crm:read alone.
	a4 := otherAuthz("crm:write")
	e.code(b.authorize(a4), a4)

	// prompt=consent asks again; prompt=none answers at once.
	a5 := otherAuthz("crm:read")
	a5.extra = url.Values{"prompt": {"consent"}}
	b.consentPage(b.authorize(a5))
	a6 := otherAuthz("crm:read")
	a6.extra = url.Values{"prompt": {"none"}}
	e.code(b.authorize(a6), a6)

	// A redirect URI change (new consent epoch at registration) invalidates
	// the consent.
	if _, err := e.regAdmin.UpdateClient(context.Background(), &registrationv1.UpdateClientRequest{
		Client: &registrationv1.Client{ClientId: clientWeb2, Metadata: &registrationv1.ClientMetadata{
			RedirectUris: []string{"https://other.example.com/cb", "https://other.example.com/cb2"}}},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"metadata.redirect_uris"}},
	}); err != nil {
		t.Fatal(err)
	}
	a7 := otherAuthz("crm:read")
	a7.extra = url.Values{"prompt": {"none"}}
	var r response
	// The token service reuses a resolved client for a few seconds.
	e.waitFor("the new consent epoch", func() bool {
		r = b.authorize(a7)
		return r.location().Query().Get("error") != ""
	})
	if r.location().Query().Get("error") != "consent_required" {
		t.Fatalf("after a consent epoch change: %s", r.header.Get("Location"))
	}
	types := e.outboxTypes()
	delta := func(et auditv1.EventType) int { return countType(types, et) - countType(before, et) }
	if delta(auditv1.EventType_EVENT_TYPE_CONSENT_GRANTED) != 2 || delta(auditv1.EventType_EVENT_TYPE_LOGIN_SUCCEEDED) != 1 ||
		delta(auditv1.EventType_EVENT_TYPE_TOKEN_ISSUED) != 2 {
		t.Fatalf("outbox events: %v", types)
	}
}

func testLoopbackPublicClientAskedEveryTime(t *testing.T, e *env) {
	a := authz{clientID: clientNative, redirect: "http://127.0.0.1:49152/callback", scope: "crm:read", resource: resCRM, state: "s1", verifier: newVerifier()}
	b := e.browser()
	page := b.consentPage(b.login(b.authorize(a), testUser, testPassword))
	e.code(b.approve(page, "crm:read"), a)
	// Signed in, same scopes: asked again; prompt=none cannot skip it.
	a.state = "s2"
	b.consentPage(b.authorize(a))
	a.extra = url.Values{"prompt": {"none"}}
	r := b.authorize(a)
	if r.location().Query().Get("error") != "consent_required" {
		t.Fatalf("prompt=none for a loopback public client: %s", r.header.Get("Location"))
	}
	// Nothing was remembered for this client.
	resp, err := e.cli.Get(context.Background(), "/mcpid/token/consents/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		if strings.Contains(string(kv.Key), "/"+clientNative+"/") {
			t.Fatalf("consent stored for a loopback public client: %s", kv.Key)
		}
	}
}

func testConsentDenied(t *testing.T, e *env) {
	a := webAuthz("crm:read")
	a.extra = url.Values{"prompt": {"consent"}} // ask even if remembered
	b := e.browser()
	page := b.consentPage(b.login(b.authorize(a), testUser, testPassword))
	req, csrf := form(t, page.body)
	r := b.send(http.MethodPost, "/oauth2/consent", url.Values{"req": {req}, "csrf": {csrf}, "action": {"deny"}})
	q := r.location().Query()
	if r.code != http.StatusSeeOther || q.Get("error") != "access_denied" || q.Get("state") != a.state || q.Get("iss") != e.issuer ||
		!strings.HasPrefix(r.header.Get("Location"), webRedirect+"?") {
		t.Fatalf("deny: %d %s", r.code, r.header.Get("Location"))
	}
	// The request is gone: posting again is an error page.
	r = b.send(http.MethodPost, "/oauth2/consent", url.Values{"req": {req}, "csrf": {csrf}, "action": {"approve"}})
	if r.code != http.StatusBadRequest || !strings.Contains(r.body, msgRequestGone) {
		t.Fatalf("second post: %d %s", r.code, r.body)
	}
	if countType(e.outboxTypes(), auditv1.EventType_EVENT_TYPE_CONSENT_DENIED) < 1 {
		t.Fatal("no consent.denied event")
	}
}

func testPagesSecurityHeadersAndCookies(t *testing.T, e *env) {
	b := e.browser()
	r := b.authorize(authz{clientID: clientNative, redirect: "http://127.0.0.1:4000/callback", scope: "crm:read", resource: resCRM, state: "s", verifier: newVerifier()})
	var flow *http.Cookie
	for _, c := range (&http.Response{Header: r.header}).Cookies() {
		if c.Name == web.FlowCookie {
			flow = c
		}
	}
	if flow == nil || !flow.Secure || !flow.HttpOnly || flow.SameSite != http.SameSiteLaxMode || flow.Path != "/" || flow.Domain != "" {
		t.Fatalf("flow cookie: %+v", flow)
	}
	r = b.login(r, testUser, testPassword)
	var sess *http.Cookie
	for _, c := range (&http.Response{Header: r.header}).Cookies() {
		if c.Name == web.SessionCookie {
			sess = c
		}
	}
	if sess == nil || !sess.Secure || !sess.HttpOnly || sess.SameSite != http.SameSiteLaxMode || sess.MaxAge <= 0 {
		t.Fatalf("session cookie: %+v", sess)
	}
	page := b.consentPage(r)
	csp := page.header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "frame-ancestors 'none'", "form-action 'self' http://127.0.0.1:4000", "style-src 'self'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-inline") || strings.Contains(page.body, "<script") || strings.Contains(page.body, "style=") {
		t.Error("pages must not use inline script or style")
	}
	for h, want := range map[string]string{"X-Frame-Options": "DENY", "Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
		"X-Content-Type-Options": "nosniff"} {
		if got := page.header.Get(h); got != want {
			t.Errorf("%s = %q, want %q", h, got, want)
		}
	}
	if page.header.Get("Access-Control-Allow-Origin") != "" {
		t.Error("pages must not allow CORS")
	}
	css := b.send(http.MethodGet, "/oauth2/static/mcpid.css", nil)
	if css.code != http.StatusOK || css.header.Get("Content-Type") != "text/css; charset=utf-8" {
		t.Errorf("stylesheet: %d %v", css.code, css.header)
	}
}

func TestLoginThrottledPerSource(t *testing.T) {
	e := startEnv(t, func(o *envOptions) {
		o.tweak = func(_ *env, c *server.Config) { c.LoginRatePerMinute, c.LoginRateBurst = 1, 3 }
	})
	// Three failures for three different (unknown) accounts from one
	// source, then even a correct sign-in from that source is throttled.
	for i, name := range []string{"x1", "x2", "x3"} {
		b := e.browser()
		if r := b.login(b.authorize(webAuthz("crm:read")), name, "whatever password"); r.code != http.StatusUnauthorized {
			t.Fatalf("attempt %d: %d", i, r.code)
		}
	}
	b := e.browser()
	r := b.login(b.authorize(webAuthz("crm:read")), testUser, testPassword)
	if r.code != http.StatusTooManyRequests || !strings.Contains(r.body, msgTooManyAttempts) {
		t.Fatalf("throttled source: %d %s", r.code, r.body)
	}
	// Another source (X-Forwarded-For through the trusted edge) is not.
	b2 := e.browser()
	first := b2.authorize(webAuthz("crm:read"))
	page := b2.send(http.MethodGet, first.header.Get("Location"), nil)
	req, csrf := form(t, page.body)
	hreq, _ := http.NewRequest(http.MethodPost, e.issuer+"/oauth2/login", strings.NewReader(url.Values{"req": {req}, "csrf": {csrf},
		"username": {testUser}, "password": {testPassword}}.Encode()))
	hreq.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	hreq.Header.Set("X-Forwarded-For", "198.51.100.7")
	hreq.AddCookie(&http.Cookie{Name: web.FlowCookie, Value: b2.cookies[web.FlowCookie]})
	// The test edge appends its peer (127.0.0.1, a trusted proxy here) to
	// X-Forwarded-For, so the service walks the chain from the right past
	// trusted hops and sees 198.51.100.7.
	if r := e.do(hreq); r.code != http.StatusSeeOther {
		t.Fatalf("other source: %d %s", r.code, r.body)
	}
}

func testAdminAudienceForOperatorsOnly(t *testing.T, e *env) {
	a := authz{clientID: clientCLI, redirect: "http://127.0.0.1:7777/callback", resource: "urn:mcpid:admin", state: "adm", verifier: newVerifier()}

	// bob holds no operator role: access_denied after sign-in.
	b := e.browser()
	r := b.login(b.authorize(a), testUser2, testPassword2)
	if q := r.location().Query(); q.Get("error") != "access_denied" || q.Get("state") != "adm" {
		t.Fatalf("bob: %d %s", r.code, r.header.Get("Location"))
	}

	// alice (admin) gets an admin token carrying her roles.
	b = e.browser()
	page := b.consentPage(b.login(b.authorize(a), testUser, testPassword))
	if !strings.Contains(page.body, "mcpid administration") {
		t.Fatalf("consent page: %s", page.body)
	}
	code := e.code(b.approve(page), a)
	r = e.post("/oauth2/token", tokenForm("grant_type", "authorization_code", "code", code, "redirect_uri", a.redirect,
		"code_verifier", a.verifier, "client_id", clientCLI), "", "")
	tr := decodeToken(t, r)
	_, c := claims(t, tr.AccessToken)
	if c["aud"] != "urn:mcpid:admin" || c["roles"] == nil {
		t.Fatalf("admin token claims: %v", c)
	}

	// The token works as a bearer credential on the operator API.
	conn, err := grpc.NewClient(e.srv.GRPCAddr().String(),
		grpc.WithTransportCredentials(credentials.NewTLS(devca.ClientTLSConfig(e.pki.CA.Pool(), nil, server.Name))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tr.AccessToken)
	if _, err := tokenv1.NewTokenServiceClient(conn).ListUsers(ctx, &tokenv1.ListUsersRequest{}); err != nil {
		t.Fatalf("ListUsers with the admin token: %v", err)
	}
	// An operator token introspects any token, refresh tokens included.
	a2 := webAuthz("crm:read offline_access")
	code2, _ := e.fullFlow(a2, "crm:read", "offline_access")
	user := decodeToken(t, e.exchange(code2, a2))
	ireq, _ := http.NewRequest(http.MethodPost, e.issuer+"/oauth2/introspect", strings.NewReader(url.Values{"token": {user.RefreshToken}}.Encode()))
	ireq.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	ireq.Header.Set("Authorization", "Bearer "+tr.AccessToken)
	if ir := e.do(ireq); ir.code != http.StatusOK || !strings.Contains(ir.body, `"active":true`) || !strings.Contains(ir.body, `"token_use":"refresh_token"`) {
		t.Fatalf("operator introspection of a refresh token: %d %s", ir.code, ir.body)
	}
	// An MCP server never sees refresh tokens as active.
	introspectsInactiveAs(t, e, mcpParams(), user.RefreshToken)

	// A resource token is refused there.
	mt := decodeToken(t, e.post("/oauth2/token", tokenForm("grant_type", "client_credentials", "resource", resCRM,
		"client_id", clientMachine, "client_secret", secretMachine), "", ""))
	ctx = metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+mt.AccessToken)
	if _, err := tokenv1.NewTokenServiceClient(conn).ListUsers(ctx, &tokenv1.ListUsersRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("ListUsers with a resource token: %v", err)
	}
}

func testRevocationEndpoint(t *testing.T, e *env) {
	revokedBefore := countType(e.outboxTypes(), auditv1.EventType_EVENT_TYPE_TOKEN_REVOKED)
	// Access token: revoked by jti.
	mt := decodeToken(t, e.post("/oauth2/token", tokenForm("grant_type", "client_credentials", "resource", resCRM,
		"client_id", clientMachine, "client_secret", secretMachine), "", ""))
	if m := introspectAs(t, e, mcpParams(), mt.AccessToken); m["active"] != true {
		t.Fatalf("fresh token inactive: %v", m)
	}
	r := e.post("/oauth2/revoke", url.Values{"token": {mt.AccessToken}, "token_type_hint": {"refresh_token"},
		"client_id": {clientMachine}, "client_secret": {secretMachine}}, "", "")
	if r.code != http.StatusOK {
		t.Fatalf("revoke: %d %s", r.code, r.body)
	}
	introspectsInactiveAs(t, e, mcpParams(), mt.AccessToken)
	// Another token of the same grant is unaffected.
	mt2 := decodeToken(t, e.post("/oauth2/token", tokenForm("grant_type", "client_credentials", "resource", resCRM,
		"client_id", clientMachine, "client_secret", secretMachine), "", ""))
	if m := introspectAs(t, e, mcpParams(), mt2.AccessToken); m["active"] != true {
		t.Fatalf("sibling token: %v", m)
	}

	// Refresh token: revokes the whole grant.
	a := webAuthz("crm:read offline_access")
	code, _ := e.fullFlow(a, "crm:read", "offline_access")
	tr := decodeToken(t, e.exchange(code, a))
	if r := e.post("/oauth2/revoke", url.Values{"token": {tr.RefreshToken}}, clientWeb, secretWeb); r.code != http.StatusOK {
		t.Fatalf("revoke refresh: %d %s", r.code, r.body)
	}
	introspectsInactiveAs(t, e, mcpParams(), tr.AccessToken)
	r = e.post("/oauth2/token", tokenForm("grant_type", "refresh_token", "refresh_token", tr.RefreshToken), clientWeb, secretWeb)
	if c, _ := oauthError(t, r.body); c != "invalid_grant" {
		t.Fatalf("refresh after revocation: %s", r.body)
	}
	if countType(e.outboxTypes(), auditv1.EventType_EVENT_TYPE_TOKEN_REVOKED)-revokedBefore != 2 {
		t.Fatal("want two token.revoked events")
	}
}

func mcpParams() e2eParams { return e2eParams{mcpID: clientMCP, mcpKey: secretMCP, resource: resCRM} }

func TestRefreshGraceForThePreviousTokenOnly(t *testing.T) {
	e := startEnv(t, func(o *envOptions) {
		o.tweak = func(_ *env, c *server.Config) { c.RefreshGrace = 30_000_000_000 } // 30s
	})
	a := webAuthz("crm:read offline_access")
	code, _ := e.fullFlow(a, "crm:read", "offline_access")
	rt1 := decodeToken(t, e.exchange(code, a)).RefreshToken
	refresh := func(rt string) response {
		return e.post("/oauth2/token", tokenForm("grant_type", "refresh_token", "refresh_token", rt), clientWeb, secretWeb)
	}
	rt2 := decodeToken(t, refresh(rt1)).RefreshToken
	// The response with rt2 was "lost": rt1 still works once within grace.
	rt3 := decodeToken(t, refresh(rt1)).RefreshToken
	rt4 := decodeToken(t, refresh(rt3)).RefreshToken
	// rt2 was superseded (never the immediately previous one now): reuse.
	if c, _ := oauthError(t, refresh(rt2).body); c != "invalid_grant" {
		t.Fatal("an older token must not get grace")
	}
	if c, _ := oauthError(t, refresh(rt4).body); c != "invalid_grant" {
		t.Fatal("reuse must have revoked the grant")
	}
}

func testUserAdministration(t *testing.T, e *env) {
	ctx := context.Background()
	// Password policy and username rules.
	for _, c := range []struct {
		req    *tokenv1.CreateUserRequest
		reason string
	}{
		{&tokenv1.CreateUserRequest{User: &tokenv1.User{Username: "dave"}, Password: "short"}, "ERROR_REASON_PASSWORD_POLICY_VIOLATION"},
		{&tokenv1.CreateUserRequest{User: &tokenv1.User{Username: "dave@example.com"}, Password: "dave@example.com"}, "ERROR_REASON_PASSWORD_POLICY_VIOLATION"},
		{&tokenv1.CreateUserRequest{User: &tokenv1.User{Username: "Dave Smith"}}, "ERROR_REASON_INVALID_FIELD"},
		{&tokenv1.CreateUserRequest{User: &tokenv1.User{Username: testUser}}, "ERROR_REASON_USERNAME_TAKEN"},
		{&tokenv1.CreateUserRequest{User: &tokenv1.User{Username: "erin", Roles: []tokenv1.OperatorRole{0}}}, "ERROR_REASON_INVALID_FIELD"},
	} {
		_, err := e.grpcTok.CreateUser(ctx, c.req)
		if got := reasonOf(err); got != c.reason {
			t.Errorf("CreateUser(%v): %v, want %s", c.req, err, c.reason)
		}
	}
	aliceID, _ := e.userID(testUser)
	bobID, _ := e.userID(testUser2)

	// The last admin cannot be disabled, demoted or deleted.
	if _, err := e.grpcTok.DeleteUser(ctx, &tokenv1.DeleteUserRequest{UserId: aliceID}); reasonOf(err) != "ERROR_REASON_LAST_ADMIN" {
		t.Fatalf("delete last admin: %v", err)
	}
	if _, err := e.grpcTok.UpdateUser(ctx, &tokenv1.UpdateUserRequest{User: &tokenv1.User{UserId: aliceID},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"roles"}}}); reasonOf(err) != "ERROR_REASON_LAST_ADMIN" {
		t.Fatalf("demote last admin: %v", err)
	}
	if _, err := e.grpcTok.UpdateUser(ctx, &tokenv1.UpdateUserRequest{User: &tokenv1.User{UserId: bobID, Username: "x"},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"username"}}}); reasonOf(err) != "ERROR_REASON_FIELD_IMMUTABLE" {
		t.Fatalf("rename: %v", err)
	}

	// Disabling bob revokes his grants and tokens.
	a := webAuthz("crm:read offline_access")
	b := e.browser()
	r := b.login(b.authorize(a), testUser2, testPassword2)
	tr := decodeToken(t, e.exchange(e.code(b.approve(b.consentPage(r), "crm:read", "offline_access"), a), a))
	if _, err := e.grpcTok.UpdateUser(ctx, &tokenv1.UpdateUserRequest{User: &tokenv1.User{UserId: bobID, Disabled: true},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"disabled"}}}); err != nil {
		t.Fatal(err)
	}
	introspectsInactiveAs(t, e, mcpParams(), tr.AccessToken)
	r = e.post("/oauth2/token", tokenForm("grant_type", "refresh_token", "refresh_token", tr.RefreshToken), clientWeb, secretWeb)
	if c, _ := oauthError(t, r.body); c != "invalid_grant" {
		t.Fatalf("refresh of a disabled user's grant: %s", r.body)
	}
	// A disabled user cannot sign in (and gets no hint why).
	b = e.browser()
	if r := b.login(b.authorize(webAuthz("crm:read")), testUser2, testPassword2); r.code != http.StatusUnauthorized {
		t.Fatalf("disabled sign-in: %d", r.code)
	}

	// SetUserPassword resets; DeleteUser removes.
	if _, err := e.grpcTok.SetUserPassword(ctx, &tokenv1.SetUserPasswordRequest{UserId: bobID, Password: "a brand new passphrase"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.grpcTok.DeleteUser(ctx, &tokenv1.DeleteUserRequest{UserId: bobID}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.grpcTok.GetUser(ctx, &tokenv1.GetUserRequest{UserId: bobID}); reasonOf(err) != "ERROR_REASON_USER_NOT_FOUND" {
		t.Fatalf("get deleted: %v", err)
	}

	// An auditor may read but not write; an MCP server may do neither.
	auditor := tokenv1.NewTokenServiceClient(e.pki.Dial(t, e.srv, server.Name, e.pki.AsOperator(t, "eve", "auditor")))
	if _, err := auditor.ListUsers(ctx, &tokenv1.ListUsersRequest{}); err != nil {
		t.Fatalf("auditor read: %v", err)
	}
	if _, err := auditor.CreateUser(ctx, &tokenv1.CreateUserRequest{User: &tokenv1.User{Username: "zed"}}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("auditor write: %v", err)
	}
	mcp := tokenv1.NewTokenServiceClient(e.pki.Dial(t, e.srv, server.Name, e.pki.AsMCPServer(t, resCRM)))
	if _, err := mcp.ListUsers(ctx, &tokenv1.ListUsersRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("MCP server read: %v", err)
	}
	// An MCP server over mTLS introspects its own resource's tokens.
	mt := decodeToken(t, e.post("/oauth2/token", tokenForm("grant_type", "client_credentials", "resource", resCRM,
		"client_id", clientMachine, "client_secret", secretMachine), "", ""))
	resp, err := mcp.IntrospectToken(ctx, &tokenv1.IntrospectTokenRequest{Token: mt.AccessToken})
	if err != nil || !resp.GetActive() || resp.GetClientId() != clientMachine {
		t.Fatalf("mTLS introspection: %v %v", resp, err)
	}
}

func reasonOf(err error) string {
	st, ok := status.FromError(err)
	if !ok || err == nil {
		return ""
	}
	for _, d := range st.Details() {
		if info, ok := d.(interface{ GetReason() string }); ok {
			return info.GetReason()
		}
	}
	return ""
}

// TestService runs the behaviour tests against one set of services (they
// take seconds to start): the negative cases first (they assert that etcd
// is unchanged, so nothing else may run beside them), the flows after, the
// user administration (which disables and deletes bob) last.
func TestService(t *testing.T) {
	e := startEnv(t, func(o *envOptions) {
		o.tweak = func(_ *env, c *server.Config) {
			// Generous source limits: every request comes from 127.0.0.1
			// (TestLoginThrottledPerSource covers the source limit).
			c.LoginRatePerMinute, c.LoginRateBurst = 6000, 1000
		}
	})
	for _, s := range []struct {
		name string
		fn   func(*testing.T, *env)
	}{
		{"negative cases", testNegativeCases},
		{"golden metadata", testGoldenMetadata},
		{"golden token responses", testGoldenTokenResponses},
		{"consent denied", testConsentDenied},
		{"loopback public client asked every time", testLoopbackPublicClientAskedEveryTime},
		{"pages: security headers and cookies", testPagesSecurityHeadersAndCookies},
		{"admin audience for operators only", testAdminAudienceForOperatorsOnly},
		{"revocation endpoint", testRevocationEndpoint},
		{"consent remembered, only new scopes asked", testConsentRememberedAndOnlyNewScopesAsked},
		{"user administration", testUserAdministration},
	} {
		t.Run(s.name, func(t *testing.T) {
			e.t = t
			s.fn(t, e)
		})
	}
}
