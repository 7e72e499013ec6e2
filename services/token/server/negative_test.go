package server_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/services/token/internal/web"
	"github.com/mcpid/mcpid/services/token/server"
)

// expect describes the exact answer of a negative case.
type expect struct {
	// status is the HTTP status.
	status int
	// page: an error page with this message, never a redirect.
	page string
	// redirect: an error redirect to the client with this error code and
	// description (state and iss checked too).
	redirect, redirectDesc string
	// oauth: an RFC 6749 error body with this code and description.
	oauth, oauthDesc string
	// body: the exact body.
	body string
	// bodyHas: substrings the body must contain (and bodyLacks must not).
	bodyHas, bodyLacks []string
}

// negCase is one negative case: prep builds what the case needs (codes,
// sessions, pages), act sends the bad request, and the case asserts the
// exact answer and that etcd is unchanged — or, for cases whose point is a
// revocation, exactly the expected change.
type negCase struct {
	name string
	prep func(t *testing.T, e *env) any
	act  func(t *testing.T, e *env, st any) response
	want expect
	// changed, when set, checks the etcd diff instead of "no change".
	changed func(t *testing.T, e *env, st any, diff []string)
	// after runs further checks once the case passed.
	after func(t *testing.T, e *env, st any)
	// state is the state the redirect must echo (from prep's authz).
	state func(st any) string
}

// Pages' messages.
const (
	msgUnknownClient   = "The application that sent you here is not registered."
	msgNoClientID      = "The request does not name a client (client_id is missing)."
	msgSuspended       = "The application that sent you here has been suspended."
	msgNoRedirect      = "The request does not say where to return (redirect_uri is missing)."
	msgBadRedirect     = "The return address (redirect_uri) is not registered for this application."
	msgTwoRedirects    = "The request names more than one redirect_uri."
	msgRequestGone     = "This sign-in request has expired or was already used. Return to the application and start again."
	msgBadForm         = "The form could not be verified (it may have expired, or was sent from another page). Return to the application and start again."
	msgWrongSession    = "You are not signed in as the user this request belongs to. Return to the application and start again."
	msgTooManyAttempts = "Too many sign-in attempts. Wait a few minutes and try again."
)

func authorizeWith(mod func(a *authz)) (func(*testing.T, *env) any, func(*testing.T, *env, any) response, func(any) string) {
	prep := func(*testing.T, *env) any {
		a := webAuthz("crm:read")
		mod(&a)
		return a
	}
	act := func(_ *testing.T, e *env, st any) response { return e.browser().authorize(st.(authz)) }
	return prep, act, func(st any) string { return st.(authz).state }
}

func pageCase(name string, mod func(a *authz), status int, msg string) negCase {
	prep, act, _ := authorizeWith(mod)
	return negCase{name: name, prep: prep, act: act, want: expect{status: status, page: msg}}
}

func redirectCase(name string, mod func(a *authz), code, desc string) negCase {
	prep, act, state := authorizeWith(mod)
	return negCase{name: name, prep: prep, act: act, state: state, want: expect{status: http.StatusFound, redirect: code, redirectDesc: desc}}
}

func set(q url.Values, k string, v ...string) url.Values {
	if q == nil {
		q = url.Values{}
	}
	q[k] = v
	return q
}

// codeState is a fresh code with its request.
type codeState struct {
	a    authz
	code string
	tr   tokenResp
	b    *browser
}

func freshCode(scope string, ticks ...string) func(*testing.T, *env) any {
	return func(_ *testing.T, e *env) any {
		a := webAuthz(scope)
		code, b := e.fullFlow(a, ticks...)
		return &codeState{a: a, code: code, b: b}
	}
}

func tokenForm(kv ...string) url.Values {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Add(kv[i], kv[i+1])
	}
	return v
}

// redeemed is a code already exchanged once (with offline_access).
func redeemed(t *testing.T, e *env) any {
	st := freshCode("crm:read offline_access", "crm:read", "offline_access")(t, e).(*codeState)
	st.tr = decodeToken(t, e.exchange(st.code, st.a))
	return st
}

// consentState is a browser at a consent page.
type consentState struct {
	b    *browser
	a    authz
	page response
}

func atConsent(clientID, redirect string) func(*testing.T, *env) any {
	return func(_ *testing.T, e *env) any {
		a := webAuthz("crm:read crm:write")
		a.clientID, a.redirect = clientID, redirect
		b := e.browser()
		page := b.consentPage(b.login(b.authorize(a), testUser, testPassword))
		return &consentState{b: b, a: a, page: page}
	}
}

func introspect(e *env, token string) response {
	return e.post("/oauth2/introspect", url.Values{"token": {token}}, clientMCP, secretMCP)
}

func introspectsInactive(t *testing.T, r response) {
	t.Helper()
	if r.code != http.StatusOK || r.body != `{"active":false}` {
		t.Fatalf("introspection = %d %s, want {\"active\":false}", r.code, r.body)
	}
}

// craftJWT builds an unsigned-by-us token with the given header.
func craftJWT(header map[string]any, claims map[string]any, sign func(signingInput string) string) string {
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	in := enc(header) + "." + enc(claims)
	return in + "." + sign(in)
}

func validLookingClaims(e *env) map[string]any {
	now := time.Now().Unix()
	return map[string]any{"iss": e.issuer, "sub": "machine", "aud": resCRM, "client_id": clientMachine, "scope": "crm:read",
		"jti": "forged", "iat": now, "nbf": now, "exp": now + 300}
}

// revocationChange checks that exactly one grant was revoked: its record
// and index keys deleted, a GRANT revocation and an audit event written.
func revocationChange(t *testing.T, grantID string, d []string) {
	t.Helper()
	var removed, revs, events, other []string
	for _, k := range d {
		switch {
		case strings.HasPrefix(k, "-") && strings.Contains(k, grantID):
			removed = append(removed, k)
		case strings.HasPrefix(k, "+/mcpid/token/revocations/grant/"+grantID):
			revs = append(revs, k)
		case strings.HasPrefix(k, "+/mcpid/token/outbox/"):
			events = append(events, k)
		default:
			other = append(other, k)
		}
	}
	if len(removed) != 4 || len(revs) != 1 || len(events) != 1 || len(other) != 0 {
		t.Fatalf("expected the grant %s and its 3 index keys removed, 1 revocation and 1 event; diff: %v", grantID, d)
	}
}

func grantOf(t *testing.T, tok string) string {
	_, c := claims(t, tok)
	return c["grant_id"].(string)
}

func negativeCases() []negCase {
	return []negCase{
		// --- authorization request: errors that must not redirect ---
		pageCase("authorize/missing client_id", func(a *authz) { a.clientID = "" }, http.StatusBadRequest, msgNoClientID),
		pageCase("authorize/unknown client", func(a *authz) { a.clientID = "nobody" }, http.StatusBadRequest, msgUnknownClient),
		pageCase("authorize/suspended client", func(a *authz) { a.clientID = clientSuspended }, http.StatusForbidden, msgSuspended),
		pageCase("authorize/missing redirect_uri", func(a *authz) { a.redirect = "" }, http.StatusBadRequest, msgNoRedirect),
		pageCase("open redirect/unregistered host", func(a *authz) { a.redirect = "https://evil.example/callback" }, http.StatusBadRequest, msgBadRedirect),
		pageCase("open redirect/path traversal", func(a *authz) { a.redirect = webRedirect + "/../../evil" }, http.StatusBadRequest, msgBadRedirect),
		pageCase("open redirect/extra query", func(a *authz) { a.redirect = webRedirect + "?next=https://evil.example" }, http.StatusBadRequest, msgBadRedirect),
		pageCase("open redirect/fragment", func(a *authz) { a.redirect = webRedirect + "#x" }, http.StatusBadRequest, msgBadRedirect),
		pageCase("open redirect/loopback lookalike host", func(a *authz) {
			a.clientID, a.redirect = clientNative, "http://127.0.0.1.evil.example:8000/callback"
		}, http.StatusBadRequest, msgBadRedirect),
		pageCase("open redirect/userinfo", func(a *authz) {
			a.clientID, a.redirect = clientNative, "http://127.0.0.1@evil.example/callback"
		}, http.StatusBadRequest, msgBadRedirect),
		pageCase("open redirect/https for a loopback registration", func(a *authz) {
			a.clientID, a.redirect = clientNative, "https://127.0.0.1:9000/callback"
		}, http.StatusBadRequest, msgBadRedirect),
		pageCase("open redirect/repeated redirect_uri", func(a *authz) {
			a.extra = set(a.extra, "redirect_uri", webRedirect, "https://evil.example/cb")
		}, http.StatusBadRequest, msgTwoRedirects),

		// --- authorization request: errors redirected with state and iss ---
		redirectCase("PKCE missing", func(a *authz) { a.extra = url.Values{"code_challenge": nil} },
			"invalid_request", "code_challenge is required (PKCE with S256)"),
		redirectCase("PKCE plain", func(a *authz) {
			a.extra = set(a.extra, "code_challenge_method", "plain")
			a.extra.Set("code_challenge", a.verifier)
		}, "invalid_request", "code_challenge_method must be S256"),
		redirectCase("PKCE method missing", func(a *authz) { a.extra = url.Values{"code_challenge_method": nil} },
			"invalid_request", "code_challenge_method must be S256"),
		redirectCase("PKCE challenge malformed", func(a *authz) { a.extra = set(a.extra, "code_challenge", "short") },
			"invalid_request", "code_challenge is not a base64url S256 value"),
		redirectCase("response_type token", func(a *authz) { a.extra = set(a.extra, "response_type", "token") },
			"unsupported_response_type", "only response_type=code is supported"),
		redirectCase("response_mode fragment", func(a *authz) { a.extra = set(a.extra, "response_mode", "fragment") },
			"invalid_request", "only response_mode=query is supported"),
		redirectCase("unknown resource", func(a *authz) { a.resource = "https://unknown.example/mcp" }, "invalid_target", "unknown resource"),
		redirectCase("repeated resource", func(a *authz) { a.extra = set(a.extra, "resource", resCRM, resFiles) },
			"invalid_target", "only one resource may be requested"),
		redirectCase("missing resource", func(a *authz) { a.resource = "" }, "invalid_target", "resource is required (RFC 8707)"),
		redirectCase("unknown scope", func(a *authz) { a.scope = "crm:read crm:delete" }, "invalid_scope", "scope crm:delete is not offered by this resource"),
		redirectCase("scope of another resource", func(a *authz) { a.scope = "files:read" }, "invalid_scope", "scope files:read is not offered by this resource"),
		redirectCase("reserved scope", func(a *authz) { a.scope = "mcpid:admin" }, "invalid_scope", "scope mcpid:admin is reserved"),
		redirectCase("reserved audience for an ordinary client", func(a *authz) { a.resource = "urn:mcpid:admin"; a.scope = "" },
			"invalid_target", "this resource cannot be requested by this client"),
		redirectCase("client without the authorization_code grant", func(a *authz) { a.clientID, a.redirect = clientCCRedirect, ccRedirect },
			"unauthorized_client", "the client is not registered for the authorization_code grant"),
		redirectCase("prompt=none without a session", func(a *authz) { a.extra = set(a.extra, "prompt", "none") },
			"login_required", "the user is not signed in"),

		// --- login page ---
		{
			name: "login with a bad CSRF token",
			prep: func(t *testing.T, e *env) any {
				b := e.browser()
				r := b.authorize(webAuthz("crm:read"))
				page := b.send(http.MethodGet, r.header.Get("Location"), nil)
				req, _ := form(t, page.body)
				return []any{b, req}
			},
			act: func(_ *testing.T, _ *env, st any) response {
				s := st.([]any)
				return s[0].(*browser).send(http.MethodPost, "/oauth2/login", url.Values{"req": {s[1].(string)}, "csrf": {"forged"},
					"username": {testUser}, "password": {testPassword}})
			},
			want: expect{status: http.StatusForbidden, page: msgBadForm},
		},
		{
			name: "login from another browser",
			prep: func(t *testing.T, e *env) any {
				b := e.browser()
				r := b.authorize(webAuthz("crm:read"))
				page := b.send(http.MethodGet, r.header.Get("Location"), nil)
				req, csrf := form(t, page.body)
				return url.Values{"req": {req}, "csrf": {csrf}, "username": {testUser}, "password": {testPassword}}
			},
			act: func(_ *testing.T, e *env, st any) response {
				return e.browser().send(http.MethodPost, "/oauth2/login", st.(url.Values)) // no flow cookie
			},
			want: expect{status: http.StatusBadRequest, page: msgRequestGone},
		},
		{
			name: "unknown request id",
			prep: func(_ *testing.T, e *env) any {
				b := e.browser()
				b.authorize(webAuthz("crm:read")) // a flow cookie, but not this request's
				return b
			},
			act: func(_ *testing.T, _ *env, st any) response {
				return st.(*browser).send(http.MethodGet, "/oauth2/login?req=made-up", nil)
			},
			want: expect{status: http.StatusBadRequest, page: msgRequestGone},
		},
		{
			name: "login brute force is throttled and locks the account",
			prep: func(t *testing.T, e *env) any {
				if _, err := e.grpcTok.CreateUser(context.Background(), &tokenv1.CreateUserRequest{
					User: &tokenv1.User{Username: "carol"}, Password: "carol's long password",
				}); err != nil {
					t.Fatal(err)
				}
				return nil
			},
			act: func(t *testing.T, e *env, _ any) response {
				for i := 1; i < maxLoginFailures; i++ {
					b := e.browser()
					if r := b.login(b.authorize(webAuthz("crm:read")), "carol", "wrong password "); r.code != http.StatusUnauthorized {
						t.Fatalf("failure %d: %d %s", i, r.code, r.body)
					}
				}
				b := e.browser()
				if r := b.login(b.authorize(webAuthz("crm:read")), "carol", "wrong password "); r.code != http.StatusTooManyRequests {
					t.Fatalf("failure %d should lock: %d %s", maxLoginFailures, r.code, r.body)
				}
				b = e.browser()
				return b.login(b.authorize(webAuthz("crm:read")), "carol", "carol's long password")
			},
			want: expect{status: http.StatusTooManyRequests, bodyHas: []string{msgTooManyAttempts}},
			changed: func(t *testing.T, _ *env, _ any, d []string) {
				var events, users, reqs int
				for _, k := range d {
					switch {
					case strings.HasPrefix(k, "+/mcpid/token/outbox/"):
						events++
					case strings.HasPrefix(k, "~/mcpid/token/users/"):
						users++
					case strings.HasPrefix(k, "+/mcpid/token/authreqs/"):
						reqs++
					default:
						t.Errorf("unexpected change %s", k)
					}
				}
				// One login.failed event per attempt, the user's failure
				// counter, no session.
				if events != maxLoginFailures+1 || users != 1 || reqs != maxLoginFailures+1 {
					t.Errorf("diff: %v", d)
				}
			},
			after: func(t *testing.T, e *env, _ any) {
				id, err := e.userID("carol")
				if err != nil {
					t.Fatal(err)
				}
				u, err := e.grpcTok.GetUser(context.Background(), &tokenv1.GetUserRequest{UserId: id})
				if err != nil || u.GetUser().GetLockedUntil() == nil {
					t.Fatalf("carol should be locked: %v %v", u, err)
				}
			},
		},

		// --- consent page ---
		{
			name: "consent without a valid CSRF token",
			prep: atConsent(clientWeb, webRedirect),
			act: func(t *testing.T, _ *env, st any) response {
				s := st.(*consentState)
				req, _ := form(t, s.page.body)
				return s.b.send(http.MethodPost, "/oauth2/consent", url.Values{"req": {req}, "action": {"approve"}, "scope": {"crm:read"}})
			},
			want: expect{status: http.StatusForbidden, page: msgBadForm},
		},
		{
			name: "consent from another session",
			prep: func(t *testing.T, e *env) any {
				s := atConsent(clientWeb, webRedirect)(t, e).(*consentState)
				other := e.browser()
				other.login(other.authorize(webAuthz("crm:read")), testUser2, testPassword2)
				return []any{s, other.cookies[web.SessionCookie]}
			},
			act: func(t *testing.T, _ *env, st any) response {
				s := st.([]any)[0].(*consentState)
				s.b.cookies[web.SessionCookie] = st.([]any)[1].(string)
				req, csrf := form(t, s.page.body)
				return s.b.send(http.MethodPost, "/oauth2/consent", url.Values{"req": {req}, "csrf": {csrf}, "action": {"approve"}, "scope": {"crm:read"}})
			},
			want: expect{status: http.StatusForbidden, page: msgWrongSession},
		},
		{
			name: "consent for request A applied to request B",
			prep: func(t *testing.T, e *env) any {
				s := atConsent(clientWeb, webRedirect)(t, e).(*consentState)
				// A second request in the same browser, already signed in.
				pageB := s.b.consentPage(s.b.authorize(webAuthz("crm:read crm:write")))
				return []any{s, pageB}
			},
			act: func(t *testing.T, _ *env, st any) response {
				s := st.([]any)[0].(*consentState)
				reqB, _ := form(t, st.([]any)[1].(response).body)
				_, csrfA := form(t, s.page.body)
				return s.b.send(http.MethodPost, "/oauth2/consent", url.Values{"req": {reqB}, "csrf": {csrfA}, "action": {"approve"}, "scope": {"crm:read", "crm:write"}})
			},
			want: expect{status: http.StatusForbidden, page: msgBadForm},
		},
		{
			name: "consent without a session",
			prep: atConsent(clientWeb, webRedirect),
			act: func(t *testing.T, _ *env, st any) response {
				s := st.(*consentState)
				delete(s.b.cookies, web.SessionCookie)
				req, csrf := form(t, s.page.body)
				return s.b.send(http.MethodPost, "/oauth2/consent", url.Values{"req": {req}, "csrf": {csrf}, "action": {"approve"}})
			},
			want: expect{status: http.StatusForbidden, page: msgWrongSession},
		},
		{
			name: "session fixation: a planted session is replaced at sign-in",
			prep: func(t *testing.T, e *env) any {
				attacker := e.browser()
				attacker.login(attacker.authorize(webAuthz("crm:read")), testUser2, testPassword2)
				planted := attacker.cookies[web.SessionCookie]
				victim := e.browser()
				victim.cookies[web.SessionCookie] = planted
				// The planted session is signed in (as bob): prompt=login
				// forces the victim's own sign-in.
				a := webAuthz("crm:read")
				a.extra = url.Values{"prompt": {"login"}}
				r := victim.authorize(a)
				page := victim.send(http.MethodGet, r.header.Get("Location"), nil)
				return []any{victim, planted, page}
			},
			act: func(t *testing.T, _ *env, st any) response {
				s := st.([]any)
				req, csrf := form(t, s[2].(response).body)
				return s[0].(*browser).send(http.MethodPost, "/oauth2/login", url.Values{"req": {req}, "csrf": {csrf}, "username": {testUser}, "password": {testPassword}})
			},
			want: expect{status: http.StatusSeeOther},
			changed: func(t *testing.T, _ *env, st any, d []string) {
				s := st.([]any)
				victim, planted := s[0].(*browser), s[1].(string)
				if got := victim.cookies[web.SessionCookie]; got == "" || got == planted {
					t.Fatalf("session cookie not rotated: %q", got)
				}
				var added, removed int
				for _, k := range d {
					if strings.HasPrefix(k, "+/mcpid/token/sessions/") {
						added++
					}
					if strings.HasPrefix(k, "-/mcpid/token/sessions/") {
						removed++
					}
				}
				if added != 1 || removed != 1 {
					t.Fatalf("want one new session and the planted one deleted; diff %v", d)
				}
			},
		},
		{
			name: "HTML in a client name is rendered escaped",
			prep: func(t *testing.T, e *env) any {
				a := webAuthz("crm:read")
				a.clientID, a.redirect = e.evilID, "http://127.0.0.1:5555/evil"
				b := e.browser()
				r := b.login(b.authorize(a), testUser, testPassword)
				return []any{b, r.header.Get("Location")}
			},
			act: func(_ *testing.T, _ *env, st any) response {
				return st.([]any)[0].(*browser).send(http.MethodGet, st.([]any)[1].(string), nil)
			},
			want: expect{status: http.StatusOK,
				bodyHas:   []string{`&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;b&gt;Evil&lt;/b&gt;`, `id="local-warning"`, `unverified`},
				bodyLacks: []string{"<script", "<b>Evil"}},
		},

		// --- token endpoint: authorization_code ---
		{
			name: "PKCE verifier missing at the token endpoint",
			prep: freshCode("crm:read", "crm:read"),
			act: func(_ *testing.T, e *env, st any) response {
				s := st.(*codeState)
				return e.post("/oauth2/token", tokenForm("grant_type", "authorization_code", "code", s.code, "redirect_uri", s.a.redirect), clientWeb, secretWeb)
			},
			want: expect{status: http.StatusBadRequest, oauth: "invalid_request", oauthDesc: "code_verifier is required (PKCE)"},
		},
		{
			name: "PKCE verifier malformed",
			prep: freshCode("crm:read", "crm:read"),
			act: func(_ *testing.T, e *env, st any) response {
				s := st.(*codeState)
				return e.post("/oauth2/token", tokenForm("grant_type", "authorization_code", "code", s.code, "redirect_uri", s.a.redirect, "code_verifier", "too-short"), clientWeb, secretWeb)
			},
			want: expect{status: http.StatusBadRequest, oauth: "invalid_request", oauthDesc: "code_verifier must be 43 to 128 unreserved characters"},
		},
		{
			name: "PKCE verifier wrong",
			prep: freshCode("crm:read", "crm:read"),
			act: func(_ *testing.T, e *env, st any) response {
				s := st.(*codeState)
				return e.post("/oauth2/token", tokenForm("grant_type", "authorization_code", "code", s.code, "redirect_uri", s.a.redirect, "code_verifier", newVerifier()), clientWeb, secretWeb)
			},
			want: expect{status: http.StatusBadRequest, oauth: "invalid_grant", oauthDesc: "code_verifier does not match the code_challenge"},
		},
		{
			name: "PKCE verifier equal to the challenge (plain downgrade)",
			prep: freshCode("crm:read", "crm:read"),
			act: func(_ *testing.T, e *env, st any) response {
				s := st.(*codeState)
				return e.post("/oauth2/token", tokenForm("grant_type", "authorization_code", "code", s.code, "redirect_uri", s.a.redirect, "code_verifier", challenge(s.a.verifier)), clientWeb, secretWeb)
			},
			want: expect{status: http.StatusBadRequest, oauth: "invalid_grant", oauthDesc: "code_verifier does not match the code_challenge"},
		},
		{
			name: "code replay revokes what the code produced",
			prep: redeemed,
			act: func(_ *testing.T, e *env, st any) response {
				s := st.(*codeState)
				return e.exchange(s.code, s.a)
			},
			want: expect{status: http.StatusBadRequest, oauth: "invalid_grant", oauthDesc: "the code is unknown, expired or already used"},
			changed: func(t *testing.T, _ *env, st any, d []string) {
				revocationChange(t, grantOf(t, st.(*codeState).tr.AccessToken), d)
			},
			after: func(t *testing.T, e *env, st any) {
				s := st.(*codeState)
				introspectsInactive(t, introspect(e, s.tr.AccessToken))
				r := e.post("/oauth2/token", tokenForm("grant_type", "refresh_token", "refresh_token", s.tr.RefreshToken), clientWeb, secretWeb)
				if c, _ := oauthError(t, r.body); c != "invalid_grant" {
					t.Fatalf("refresh after replay: %s", r.body)
				}
			},
		},
		{
			name: "code redeemed by another client",
			prep: freshCode("crm:read", "crm:read"),
			act: func(_ *testing.T, e *env, st any) response {
				s := st.(*codeState)
				return e.post("/oauth2/token", tokenForm("grant_type", "authorization_code", "code", s.code, "redirect_uri", s.a.redirect, "code_verifier", s.a.verifier), clientWeb2, secretWeb2)
			},
			want: expect{status: http.StatusBadRequest, oauth: "invalid_grant", oauthDesc: "the code was issued to another client"},
		},
		{
			name: "redirect_uri mismatch at the token endpoint",
			prep: freshCode("crm:read", "crm:read"),
			act: func(_ *testing.T, e *env, st any) response {
				s := st.(*codeState)
				return e.post("/oauth2/token", tokenForm("grant_type", "authorization_code", "code", s.code, "redirect_uri", "https://app.example.com/cb?x=1", "code_verifier", s.a.verifier), clientWeb, secretWeb)
			},
			want: expect{status: http.StatusBadRequest, oauth: "invalid_grant", oauthDesc: "redirect_uri does not match the authorization request"},
		},
		{
			name: "resource changed between authorize and token",
			prep: freshCode("crm:read", "crm:read"),
			act: func(_ *testing.T, e *env, st any) response {
				s := st.(*codeState)
				return e.post("/oauth2/token", tokenForm("grant_type", "authorization_code", "code", s.code, "redirect_uri", s.a.redirect, "code_verifier", s.a.verifier, "resource", resFiles), clientWeb, secretWeb)
			},
			want: expect{status: http.StatusBadRequest, oauth: "invalid_target", oauthDesc: "resource differs from the authorization request"},
		},
		{
			name: "unknown code",
			prep: func(*testing.T, *env) any { return webAuthz("crm:read") },
			act:  func(_ *testing.T, e *env, st any) response { return e.exchange("no-such-code", st.(authz)) },
			want: expect{status: http.StatusBadRequest, oauth: "invalid_grant", oauthDesc: "the code is unknown, expired or already used"},
		},
		{
			name: "expired code",
			prep: freshCode("crm:read", "crm:read"),
			act: func(_ *testing.T, e *env, st any) response {
				s := st.(*codeState)
				e.clock.advance(server.DefaultCodeTTL + time.Second)
				return e.exchange(s.code, s.a)
			},
			want: expect{status: http.StatusBadRequest, oauth: "invalid_grant", oauthDesc: "the code is unknown, expired or already used"},
		},

		// --- token endpoint: refresh_token ---
		{
			name: "scope escalation on refresh",
			prep: redeemed,
			act: func(_ *testing.T, e *env, st any) response {
				return e.post("/oauth2/token", tokenForm("grant_type", "refresh_token", "refresh_token", st.(*codeState).tr.RefreshToken, "scope", "crm:read crm:write"), clientWeb, secretWeb)
			},
			want: expect{status: http.StatusBadRequest, oauth: "invalid_scope", oauthDesc: "scope crm:write exceeds the grant"},
		},
		{
			name: "refresh with another resource",
			prep: redeemed,
			act: func(_ *testing.T, e *env, st any) response {
				return e.post("/oauth2/token", tokenForm("grant_type", "refresh_token", "refresh_token", st.(*codeState).tr.RefreshToken, "resource", resFiles), clientWeb, secretWeb)
			},
			want: expect{status: http.StatusBadRequest, oauth: "invalid_target", oauthDesc: "resource differs from the grant's"},
		},
		{
			name: "refresh by another client",
			prep: redeemed,
			act: func(_ *testing.T, e *env, st any) response {
				return e.post("/oauth2/token", tokenForm("grant_type", "refresh_token", "refresh_token", st.(*codeState).tr.RefreshToken), clientWeb2, secretWeb2)
			},
			want: expect{status: http.StatusBadRequest, oauth: "invalid_grant", oauthDesc: "the refresh token is unknown, expired or revoked"},
		},
		{
			name: "refresh token forged for a known grant",
			prep: redeemed,
			act: func(t *testing.T, e *env, st any) response {
				forged := grantOf(t, st.(*codeState).tr.AccessToken) + "." + strings.Repeat("A", 43)
				return e.post("/oauth2/token", tokenForm("grant_type", "refresh_token", "refresh_token", forged), clientWeb, secretWeb)
			},
			want: expect{status: http.StatusBadRequest, oauth: "invalid_grant", oauthDesc: "the refresh token is unknown, expired or revoked"},
		},
		{
			name: "refresh token reuse revokes the grant",
			prep: func(t *testing.T, e *env) any {
				s := redeemed(t, e).(*codeState)
				next := decodeToken(t, e.post("/oauth2/token", tokenForm("grant_type", "refresh_token", "refresh_token", s.tr.RefreshToken), clientWeb, secretWeb))
				return []any{s, next}
			},
			act: func(_ *testing.T, e *env, st any) response {
				return e.post("/oauth2/token", tokenForm("grant_type", "refresh_token", "refresh_token", st.([]any)[0].(*codeState).tr.RefreshToken), clientWeb, secretWeb)
			},
			want: expect{status: http.StatusBadRequest, oauth: "invalid_grant", oauthDesc: "the refresh token was already used; the grant is revoked"},
			changed: func(t *testing.T, _ *env, st any, d []string) {
				revocationChange(t, grantOf(t, st.([]any)[1].(tokenResp).AccessToken), d)
			},
			after: func(t *testing.T, e *env, st any) {
				next := st.([]any)[1].(tokenResp)
				r := e.post("/oauth2/token", tokenForm("grant_type", "refresh_token", "refresh_token", next.RefreshToken), clientWeb, secretWeb)
				if c, _ := oauthError(t, r.body); c != "invalid_grant" {
					t.Fatalf("the newest refresh token must be dead too: %s", r.body)
				}
				introspectsInactive(t, introspect(e, next.AccessToken))
			},
		},
		{
			name: "refresh by a client without the refresh_token grant",
			prep: func(*testing.T, *env) any { return nil },
			act: func(_ *testing.T, e *env, _ any) response {
				return e.post("/oauth2/token", tokenForm("grant_type", "refresh_token", "refresh_token", "grt_x."+strings.Repeat("A", 43), "client_id", clientMachine, "client_secret", secretMachine), "", "")
			},
			want: expect{status: http.StatusBadRequest, oauth: "unauthorized_client", oauthDesc: "the client is not registered for the refresh_token grant"},
		},

		// --- token endpoint: client authentication ---
		{
			name: "wrong client secret",
			prep: func(*testing.T, *env) any { return nil },
			act: func(_ *testing.T, e *env, _ any) response {
				return e.post("/oauth2/token", tokenForm("grant_type", "client_credentials", "resource", resCRM), clientWeb, "wrong")
			},
			want: expect{status: http.StatusUnauthorized, oauth: "invalid_client", oauthDesc: "client authentication failed"},
		},
		{
			name: "unknown client at the token endpoint",
			prep: func(*testing.T, *env) any { return nil },
			act: func(_ *testing.T, e *env, _ any) response {
				return e.post("/oauth2/token", tokenForm("grant_type", "client_credentials", "resource", resCRM, "client_id", "nobody", "client_secret", "x"), "", "")
			},
			want: expect{status: http.StatusUnauthorized, oauth: "invalid_client", oauthDesc: "client authentication failed"},
		},
		{
			name: "suspended client at the token endpoint",
			prep: func(*testing.T, *env) any { return nil },
			act: func(_ *testing.T, e *env, _ any) response {
				return e.post("/oauth2/token", tokenForm("grant_type", "client_credentials", "resource", resCRM), clientSuspended, secretSuspended)
			},
			want: expect{status: http.StatusUnauthorized, oauth: "invalid_client", oauthDesc: "the client is suspended"},
		},
		{
			name: "two client authentication methods",
			prep: func(*testing.T, *env) any { return nil },
			act: func(_ *testing.T, e *env, _ any) response {
				return e.post("/oauth2/token", tokenForm("grant_type", "client_credentials", "resource", resCRM, "client_secret", secretWeb), clientWeb, secretWeb)
			},
			want: expect{status: http.StatusBadRequest, oauth: "invalid_request", oauthDesc: "use exactly one client authentication method"},
		},
		{
			name: "no client authentication",
			prep: func(*testing.T, *env) any { return nil },
			act: func(_ *testing.T, e *env, _ any) response {
				return e.post("/oauth2/token", tokenForm("grant_type", "client_credentials", "resource", resCRM), "", "")
			},
			want: expect{status: http.StatusUnauthorized, oauth: "invalid_client", oauthDesc: "client authentication required"},
		},
		{
			name: "unsupported grant type",
			prep: func(*testing.T, *env) any { return nil },
			act: func(_ *testing.T, e *env, _ any) response {
				return e.post("/oauth2/token", tokenForm("grant_type", "password", "username", testUser, "password", testPassword), clientWeb, secretWeb)
			},
			want: expect{status: http.StatusBadRequest, oauth: "unsupported_grant_type", oauthDesc: "grant_type password is not supported"},
		},

		// --- token endpoint: client_credentials ---
		{
			name: "client_credentials by a DCR client",
			prep: func(*testing.T, *env) any { return nil },
			act: func(_ *testing.T, e *env, _ any) response {
				return e.post("/oauth2/token", tokenForm("grant_type", "client_credentials", "resource", resCRM, "client_id", e.dcrID), "", "")
			},
			want: expect{status: http.StatusBadRequest, oauth: "unauthorized_client", oauthDesc: "the client may not use the client_credentials grant"},
		},
		{
			name: "client_credentials for a resource not allowed",
			prep: func(*testing.T, *env) any { return nil },
			act: func(_ *testing.T, e *env, _ any) response {
				return e.post("/oauth2/token", tokenForm("grant_type", "client_credentials", "resource", resFiles, "client_id", clientMachine, "client_secret", secretMachine), "", "")
			},
			want: expect{status: http.StatusBadRequest, oauth: "invalid_target", oauthDesc: "the client may not obtain tokens for this resource"},
		},
		{
			name: "client_credentials scope not allowed",
			prep: func(*testing.T, *env) any { return nil },
			act: func(_ *testing.T, e *env, _ any) response {
				return e.post("/oauth2/token", tokenForm("grant_type", "client_credentials", "resource", resCRM, "scope", "crm:write", "client_id", clientMachine, "client_secret", secretMachine), "", "")
			},
			want: expect{status: http.StatusBadRequest, oauth: "invalid_scope", oauthDesc: "scope crm:write is not allowed for this client"},
		},
		{
			name: "client_credentials without resource",
			prep: func(*testing.T, *env) any { return nil },
			act: func(_ *testing.T, e *env, _ any) response {
				return e.post("/oauth2/token", tokenForm("grant_type", "client_credentials", "client_id", clientMachine, "client_secret", secretMachine), "", "")
			},
			want: expect{status: http.StatusBadRequest, oauth: "invalid_target", oauthDesc: "resource is required"},
		},
		{
			name: "client_credentials with a repeated resource",
			prep: func(*testing.T, *env) any { return nil },
			act: func(_ *testing.T, e *env, _ any) response {
				return e.post("/oauth2/token", tokenForm("grant_type", "client_credentials", "resource", resCRM, "resource", resFiles, "client_id", clientMachine, "client_secret", secretMachine), "", "")
			},
			want: expect{status: http.StatusBadRequest, oauth: "invalid_target", oauthDesc: "only one resource may be requested"},
		},
		{
			name: "client_credentials for a resource unknown to policy",
			prep: func(*testing.T, *env) any { return nil },
			act: func(_ *testing.T, e *env, _ any) response {
				return e.post("/oauth2/token", tokenForm("grant_type", "client_credentials", "resource", "https://mcp.example.com/gone", "client_id", clientMachine, "client_secret", secretMachine), "", "")
			},
			want: expect{status: http.StatusBadRequest, oauth: "invalid_target", oauthDesc: "the client may not obtain tokens for this resource"},
		},
		{
			name: "client_credentials for the admin audience",
			prep: func(*testing.T, *env) any { return nil },
			act: func(_ *testing.T, e *env, _ any) response {
				return e.post("/oauth2/token", tokenForm("grant_type", "client_credentials", "resource", "urn:mcpid:admin"), clientMCP, secretMCP)
			},
			want: expect{status: http.StatusBadRequest, oauth: "invalid_target", oauthDesc: "this resource cannot be requested with client_credentials"},
		},
		{
			name: "client_credentials for the policy audience by an ordinary client",
			prep: func(*testing.T, *env) any { return nil },
			act: func(_ *testing.T, e *env, _ any) response {
				return e.post("/oauth2/token", tokenForm("grant_type", "client_credentials", "resource", "urn:mcpid:policy", "client_id", clientMachine, "client_secret", secretMachine), "", "")
			},
			want: expect{status: http.StatusBadRequest, oauth: "invalid_target", oauthDesc: "this client may not obtain tokens for urn:mcpid:policy"},
		},
		{
			name: "client_credentials with offline_access",
			prep: func(*testing.T, *env) any { return nil },
			act: func(_ *testing.T, e *env, _ any) response {
				return e.post("/oauth2/token", tokenForm("grant_type", "client_credentials", "resource", resCRM, "scope", "crm:read offline_access", "client_id", clientMachine, "client_secret", secretMachine), "", "")
			},
			want: expect{status: http.StatusBadRequest, oauth: "invalid_scope", oauthDesc: "offline_access is not available with client_credentials"},
		},

		// --- introspection ---
		{
			name: "alg none token at introspection",
			prep: func(*testing.T, *env) any { return nil },
			act: func(_ *testing.T, e *env, _ any) response {
				tok := craftJWT(map[string]any{"alg": "none", "typ": "at+jwt"}, validLookingClaims(e), func(string) string { return "" })
				return introspect(e, tok)
			},
			want: expect{status: http.StatusOK, body: `{"active":false}`},
		},
		{
			name: "HMAC token signed with the public key at introspection",
			prep: func(*testing.T, *env) any { return nil },
			act: func(t *testing.T, e *env, _ any) response {
				_, jwks := e.get("/oauth2/jwks")
				var doc struct {
					Keys []map[string]any `json:"keys"`
				}
				if err := json.Unmarshal([]byte(jwks), &doc); err != nil || len(doc.Keys) == 0 {
					t.Fatalf("jwks: %s", jwks)
				}
				kid := doc.Keys[0]["kid"].(string)
				tok := craftJWT(map[string]any{"alg": "HS256", "typ": "at+jwt", "kid": kid}, validLookingClaims(e), func(in string) string {
					m := hmac.New(sha256.New, []byte(jwks))
					m.Write([]byte(in))
					return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
				})
				return introspect(e, tok)
			},
			want: expect{status: http.StatusOK, body: `{"active":false}`},
		},
		{
			name: "introspection without caller authentication",
			prep: func(*testing.T, *env) any { return nil },
			act: func(_ *testing.T, e *env, _ any) response {
				return e.post("/oauth2/introspect", url.Values{"token": {"x.y.z"}}, "", "")
			},
			want: expect{status: http.StatusUnauthorized, oauth: "invalid_client", oauthDesc: "caller authentication required"},
		},
		{
			name: "introspection by a client that is not an MCP server",
			prep: func(*testing.T, *env) any { return nil },
			act: func(_ *testing.T, e *env, _ any) response {
				return e.post("/oauth2/introspect", url.Values{"token": {"x.y.z"}}, clientWeb, secretWeb)
			},
			want: expect{status: http.StatusUnauthorized, oauth: "invalid_client", oauthDesc: "the caller is not an MCP server"},
		},
		{
			name: "introspection of another resource's token",
			prep: func(t *testing.T, e *env) any {
				return decodeToken(t, e.post("/oauth2/token", tokenForm("grant_type", "client_credentials", "resource", resFiles, "client_id", clientNoCode, "client_secret", secretNoCode), "", ""))
			},
			act:  func(_ *testing.T, e *env, st any) response { return introspect(e, st.(tokenResp).AccessToken) },
			want: expect{status: http.StatusOK, body: `{"active":false}`},
		},
		{
			name: "introspection of an expired token",
			prep: func(t *testing.T, e *env) any {
				return decodeToken(t, e.post("/oauth2/token", tokenForm("grant_type", "client_credentials", "resource", resCRM, "client_id", clientMachine, "client_secret", secretMachine), "", ""))
			},
			act: func(_ *testing.T, e *env, st any) response {
				e.clock.advance(server.DefaultAccessTokenTTL + time.Second)
				return introspect(e, st.(tokenResp).AccessToken)
			},
			want: expect{status: http.StatusOK, body: `{"active":false}`},
		},

		// --- revocation ---
		{
			name: "revoking another client's token",
			prep: func(t *testing.T, e *env) any {
				return decodeToken(t, e.post("/oauth2/token", tokenForm("grant_type", "client_credentials", "resource", resCRM, "client_id", clientMachine, "client_secret", secretMachine), "", ""))
			},
			act: func(_ *testing.T, e *env, st any) response {
				return e.post("/oauth2/revoke", url.Values{"token": {st.(tokenResp).AccessToken}}, clientWeb, secretWeb)
			},
			want: expect{status: http.StatusBadRequest, oauth: "unauthorized_client", oauthDesc: "the token was issued to another client"},
		},
		{
			name: "revoking an unknown token succeeds and changes nothing",
			prep: func(*testing.T, *env) any { return nil },
			act: func(_ *testing.T, e *env, _ any) response {
				return e.post("/oauth2/revoke", url.Values{"token": {"grt_nope." + strings.Repeat("A", 43)}}, clientWeb, secretWeb)
			},
			want: expect{status: http.StatusOK, body: "{}"},
		},
	}
}

// testNegativeCases runs every negative case.
func testNegativeCases(t *testing.T, e *env) {
	cases := negativeCases()
	parent := e.t
	if len(cases) < 40 {
		t.Fatalf("only %d negative cases", len(cases))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.t = t
			defer func() { e.t = parent }()
			st := c.prep(t, e)
			before := e.snapshot()
			r := c.act(t, e, st)
			checkExpect(t, e, c, st, r)
			d := diff(before, e.snapshot())
			if c.changed != nil {
				c.changed(t, e, st, d)
			} else if len(d) != 0 {
				t.Errorf("the request changed etcd: %v", d)
			}
			if c.after != nil && !t.Failed() {
				c.after(t, e, st)
			}
		})
	}
}

func checkExpect(t *testing.T, e *env, c negCase, st any, r response) {
	t.Helper()
	w := c.want
	if r.code != w.status {
		t.Fatalf("status %d, want %d; body %s; location %s", r.code, w.status, r.body, r.header.Get("Location"))
	}
	switch {
	case w.page != "":
		if r.header.Get("Location") != "" {
			t.Fatalf("an error page must not redirect (Location %s)", r.header.Get("Location"))
		}
		if !strings.Contains(r.body, `<p id="error-message" class="error">`+htmlEscape(w.page)+`</p>`) {
			t.Fatalf("page does not say %q:\n%s", w.page, r.body)
		}
		if !strings.Contains(r.header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
			t.Fatalf("page without CSP: %v", r.header)
		}
	case w.redirect != "":
		loc := r.location()
		q := loc.Query()
		if q.Get("error") != w.redirect || q.Get("error_description") != w.redirectDesc {
			t.Fatalf("redirect %s, want error=%s (%s)", loc, w.redirect, w.redirectDesc)
		}
		if q.Get("iss") != e.issuer {
			t.Fatalf("redirect without iss: %s", loc)
		}
		if c.state != nil && q.Get("state") != c.state(st) {
			t.Fatalf("redirect without state: %s", loc)
		}
		if q.Has("code") {
			t.Fatalf("error redirect carries a code: %s", loc)
		}
	case w.oauth != "":
		code, desc := oauthError(t, r.body)
		if code != w.oauth || desc != w.oauthDesc {
			t.Fatalf("error %s (%s), want %s (%s)", code, desc, w.oauth, w.oauthDesc)
		}
		if r.header.Get("Cache-Control") != "no-store" {
			t.Fatalf("error without no-store: %v", r.header)
		}
	case w.body != "":
		if r.body != w.body {
			t.Fatalf("body %q, want %q", r.body, w.body)
		}
	}
	for _, s := range w.bodyHas {
		if !strings.Contains(r.body, s) {
			t.Fatalf("body lacks %q:\n%s", s, r.body)
		}
	}
	for _, s := range w.bodyLacks {
		if strings.Contains(r.body, s) {
			t.Fatalf("body contains %q:\n%s", s, r.body)
		}
	}
}

func htmlEscape(s string) string {
	r := strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&#34;", "'", "&#39;")
	return r.Replace(s)
}
