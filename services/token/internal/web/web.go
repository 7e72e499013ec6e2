// Package web serves the browser side of the authorization server: the
// authorization endpoint (/oauth2/authorize) and the login and consent
// pages, as plain net/http handlers over the same OAuth domain as the gRPC
// methods.
//
// Pages are rendered with html/template (contextual escaping: a client
// name is text, never markup), with a Content-Security-Policy that allows
// no script at all and no framing, one stylesheet from this origin, and
// forms only to this origin and the request's redirect URI. State lives
// server-side: the flow continues by the pending request's id, which only
// the browser that started it can use (the __Host-mcpid-flow cookie), and
// every form carries the request's CSRF token. Signing in rotates the
// __Host-mcpid-session cookie.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mcpid/mcpid/lib/apierr"
	"github.com/mcpid/mcpid/lib/srcaddr"
	"github.com/mcpid/mcpid/services/token/internal/events"
	"github.com/mcpid/mcpid/services/token/internal/oauth"
)

// Cookie names. The __Host- prefix makes the browser refuse them unless
// Secure, Path=/ and without Domain, so no sibling host can plant or
// overwrite them (RFC 6265bis section 4.1.3.2).
const (
	SessionCookie = "__Host-mcpid-session"
	FlowCookie    = "__Host-mcpid-flow"
)

// Paths of the pages.
const (
	PathLogin   = "/oauth2/login"
	PathConsent = "/oauth2/consent"
	PathStatic  = "/oauth2/static/"
)

// maxFormBytes bounds posted forms.
const maxFormBytes = 16 << 10

//go:embed assets/*.html assets/*.css
var assets embed.FS

// Pages are the browser handlers.
type Pages struct {
	svc     *oauth.Service
	sources *srcaddr.Resolver
	log     *slog.Logger
	tmpl    *template.Template
	css     []byte
	cssETag string
}

// New returns the pages.
func New(svc *oauth.Service, sources *srcaddr.Resolver, log *slog.Logger) (*Pages, error) {
	tmpl, err := template.ParseFS(assets, "assets/*.html")
	if err != nil {
		return nil, err
	}
	css, err := assets.ReadFile("assets/mcpid.css")
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(css)
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Pages{svc: svc, sources: sources, log: log, tmpl: tmpl, css: css, cssETag: `"` + hex.EncodeToString(sum[:8]) + `"`}, nil
}

// Handlers returns the handlers by mux pattern.
func (p *Pages) Handlers() map[string]http.Handler {
	return map[string]http.Handler{
		"GET " + oauth.PathAuthorize:          http.HandlerFunc(p.authorize),
		"GET " + PathLogin:                    http.HandlerFunc(p.loginPage),
		"POST " + PathLogin:                   http.HandlerFunc(p.loginPost),
		"GET " + PathConsent:                  http.HandlerFunc(p.consentPage),
		"POST " + PathConsent:                 http.HandlerFunc(p.consentPost),
		"GET " + PathMyAgents:                 http.HandlerFunc(p.myAgentsPage),
		"POST " + PathMyAgents:                http.HandlerFunc(p.myAgentsPost),
		"GET " + PathStatic + "mcpid.css":     http.HandlerFunc(p.static),
		"GET " + PathCallback + "{connector}": http.HandlerFunc(p.federatedCallback),
	}
}

// securityHeaders are sent with every page. formTarget is the redirect URI
// the page's form may end up at (allowed in form-action, which some
// browsers apply to the redirect after a form post).
func securityHeaders(w http.ResponseWriter, formTargets ...string) {
	formAction := "'self'"
	for _, t := range formTargets {
		if o := origin(t); o != "" {
			formAction += " " + o
		}
	}
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action "+formAction+
		"; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
}

// origin returns the CSP source of a redirect URI: scheme://host[:port]
// for http(s), scheme: for private-use schemes.
func origin(uri string) string {
	if uri == "" {
		return ""
	}
	u, err := url.Parse(uri)
	if err != nil || u.Scheme == "" || strings.ContainsAny(uri, " ;,'\"") {
		return ""
	}
	if u.Scheme == "http" || u.Scheme == "https" {
		return u.Scheme + "://" + u.Host
	}
	return u.Scheme + ":"
}

type pageData struct {
	Title      string
	StaticBase string
	Action     string
	Message    string
	Username   string
	View       any
}

func (p *Pages) render(w http.ResponseWriter, status int, name string, d pageData, formTargets ...string) {
	d.StaticBase = p.svc.URL(strings.TrimSuffix(PathStatic, "/"))
	var buf bytes.Buffer
	if err := p.tmpl.ExecuteTemplate(&buf, name, d); err != nil {
		p.log.Error("rendering page", "page", name, "error", err.Error())
		status, buf = http.StatusInternalServerError, bytes.Buffer{}
		buf.WriteString("internal error\n")
	}
	securityHeaders(w, formTargets...)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func (p *Pages) errorPage(w http.ResponseWriter, status int, msg string) {
	p.render(w, status, "error", pageData{Title: "Error", Message: msg}, "")
}

// fail answers an error of the domain: a redirect to the client for a
// RedirectError, an error page otherwise.
func (p *Pages) fail(w http.ResponseWriter, r *http.Request, err error, redirectCode int) {
	if re, ok := oauth.IsRedirectError(err); ok {
		p.redirect(w, r, p.svc.ErrorLocation(re), redirectCode)
		return
	}
	if pe, ok := oauth.IsPageError(err); ok {
		p.errorPage(w, pe.Status, pe.Message)
		return
	}
	var ae *apierr.Error
	if errors.As(err, &ae) && ae.Code == codes.Unavailable {
		p.log.WarnContext(r.Context(), "page unavailable", "path", r.URL.Path, "error", err.Error())
		p.errorPage(w, http.StatusServiceUnavailable, "The service is temporarily unavailable. Try again in a moment.")
		return
	}
	if status.Code(err) == codes.Canceled || r.Context().Err() != nil {
		return
	}
	p.log.ErrorContext(r.Context(), "page failed", "path", r.URL.Path, "error", err.Error())
	p.errorPage(w, http.StatusInternalServerError, "An internal error occurred.")
}

func (p *Pages) redirect(w http.ResponseWriter, _ *http.Request, location string, code int) {
	securityHeaders(w, "")
	w.Header().Set("Location", location)
	w.WriteHeader(code)
}

func cookieValue(r *http.Request, name string) string {
	// With several cookies of the name (a planted one), trust none.
	n, v := 0, ""
	for _, c := range r.Cookies() {
		if c.Name == name {
			n++
			v = c.Value
		}
	}
	if n != 1 {
		return ""
	}
	return v
}

func setCookie(w http.ResponseWriter, name, value string, maxAge time.Duration) {
	c := &http.Cookie{Name: name, Value: value, Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode}
	if maxAge > 0 {
		c.MaxAge = int(maxAge / time.Second)
	}
	http.SetCookie(w, c)
}

func hashOrEmpty(v string) string {
	if v == "" {
		return ""
	}
	return oauth.Hash(v)
}

func (p *Pages) requestInfo(r *http.Request) (string, events.Request) {
	src := ""
	if a := p.sources.FromHTTP(r.RemoteAddr, r.Header.Values("X-Forwarded-For")); a.IsValid() {
		src = a.String()
	}
	return src, events.Request{SourceAddress: src, UserAgent: r.UserAgent()}
}

// authorize is GET /oauth2/authorize.
func (p *Pages) authorize(w http.ResponseWriter, r *http.Request) {
	flow := cookieValue(r, FlowCookie)
	if flow == "" {
		var err error
		if flow, err = oauth.RandomToken(); err != nil {
			p.fail(w, r, err, http.StatusFound)
			return
		}
		setCookie(w, FlowCookie, flow, 0)
	}
	step, err := p.svc.Authorize(r.Context(), oauth.AuthorizeInput{
		Query: r.URL.Query(), BrowserHash: oauth.Hash(flow), SessionHash: hashOrEmpty(cookieValue(r, SessionCookie)),
	})
	if err != nil {
		p.fail(w, r, err, http.StatusFound)
		return
	}
	p.next(w, r, step, http.StatusFound)
}

// next sends the browser to the step's page or the client.
func (p *Pages) next(w http.ResponseWriter, r *http.Request, step oauth.Step, code int) {
	switch {
	case step.Location != "":
		p.redirect(w, r, step.Location, code)
	case step.Login:
		p.redirect(w, r, p.svc.URL(PathLogin)+"?req="+url.QueryEscape(step.ReqID), http.StatusSeeOther)
	default:
		p.redirect(w, r, p.svc.URL(PathConsent)+"?req="+url.QueryEscape(step.ReqID), http.StatusSeeOther)
	}
}

func (p *Pages) loginPage(w http.ResponseWriter, r *http.Request) {
	v, err := p.svc.LoginPage(r.Context(), r.URL.Query().Get("req"), hashOrEmpty(cookieValue(r, FlowCookie)))
	if err != nil {
		p.fail(w, r, err, http.StatusSeeOther)
		return
	}
	p.render(w, http.StatusOK, "login", pageData{Title: "Sign in", Action: p.svc.URL(PathLogin), View: v}, append([]string{v.RedirectURI}, v.FormTargets...)...)
}

// parseForm reads a posted form body, refusing repeated fields (except
// "scope") and parameters in the URL.
func parseForm(w http.ResponseWriter, r *http.Request) (url.Values, bool) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil || r.URL.RawQuery != "" {
		return nil, false
	}
	for k, v := range r.PostForm {
		if len(v) > 1 && k != "scope" {
			return nil, false
		}
	}
	return r.PostForm, true
}

func (p *Pages) loginPost(w http.ResponseWriter, r *http.Request) {
	form, ok := parseForm(w, r)
	if !ok {
		p.errorPage(w, http.StatusBadRequest, "The form could not be read.")
		return
	}
	if form.Has("connector") || form.Has("email") {
		p.federatedStart(w, r, form)
		return
	}
	src, info := p.requestInfo(r)
	flowHash := hashOrEmpty(cookieValue(r, FlowCookie))
	res, err := p.svc.Login(r.Context(), oauth.LoginInput{
		ReqID: form.Get("req"), BrowserHash: flowHash, CSRF: form.Get("csrf"),
		Username: form.Get("username"), Password: form.Get("password"),
		OldSessionHash: hashOrEmpty(cookieValue(r, SessionCookie)), Source: src, Request: info,
	})
	var lf *oauth.LoginFailure
	if errors.As(err, &lf) {
		v, verr := p.svc.LoginPage(r.Context(), form.Get("req"), flowHash)
		if verr != nil {
			p.fail(w, r, verr, http.StatusSeeOther)
			return
		}
		p.render(w, lf.Status, "login", pageData{Title: "Sign in", Action: p.svc.URL(PathLogin), View: v,
			Message: lf.Message, Username: form.Get("username")}, append([]string{v.RedirectURI}, v.FormTargets...)...)
		return
	}
	if err != nil {
		p.fail(w, r, err, http.StatusSeeOther)
		return
	}
	setCookie(w, SessionCookie, res.SessionID, time.Until(res.SessionExpires))
	p.next(w, r, res.Step, http.StatusSeeOther)
}

func (p *Pages) consentPage(w http.ResponseWriter, r *http.Request) {
	v, err := p.svc.ConsentPage(r.Context(), r.URL.Query().Get("req"), hashOrEmpty(cookieValue(r, FlowCookie)), hashOrEmpty(cookieValue(r, SessionCookie)))
	if err != nil {
		p.fail(w, r, err, http.StatusSeeOther)
		return
	}
	p.render(w, http.StatusOK, "consent", pageData{Title: "Allow access", Action: p.svc.URL(PathConsent), View: v}, v.RedirectURI)
}

func (p *Pages) consentPost(w http.ResponseWriter, r *http.Request) {
	form, ok := parseForm(w, r)
	if !ok {
		p.errorPage(w, http.StatusBadRequest, "The form could not be read.")
		return
	}
	var approve bool
	switch form.Get("action") {
	case "approve":
		approve = true
	case "deny":
	default:
		p.errorPage(w, http.StatusBadRequest, "The form could not be read.")
		return
	}
	loc, err := p.svc.Consent(r.Context(), oauth.ConsentInput{
		ReqID: form.Get("req"), BrowserHash: hashOrEmpty(cookieValue(r, FlowCookie)),
		SessionHash: hashOrEmpty(cookieValue(r, SessionCookie)), CSRF: form.Get("csrf"),
		Approve: approve, Scopes: form["scope"],
	})
	if err != nil {
		p.fail(w, r, err, http.StatusSeeOther)
		return
	}
	p.redirect(w, r, loc, http.StatusSeeOther)
}

func (p *Pages) static(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/css; charset=utf-8")
	h.Set("Cache-Control", "public, max-age=3600")
	h.Del("Pragma")
	h.Set("ETag", p.cssETag)
	h.Set("X-Content-Type-Options", "nosniff")
	if r.Header.Get("If-None-Match") == p.cssETag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	_, _ = w.Write(p.css)
}

// --- federated sign-in (identity connectors) ---

// PathCallback is the prefix of the connectors' callback paths
// (/oauth2/callback/<connector id>).
const PathCallback = "/oauth2/callback/"

// federatedStart answers a login form that chose a connector (or typed an
// email for home-realm discovery): 303 to the upstream IdP.
func (p *Pages) federatedStart(w http.ResponseWriter, r *http.Request, form url.Values) {
	_, info := p.requestInfo(r)
	flowHash := hashOrEmpty(cookieValue(r, FlowCookie))
	loc, err := p.svc.FederatedStart(r.Context(), oauth.FederatedStartInput{
		ReqID: form.Get("req"), BrowserHash: flowHash, CSRF: form.Get("csrf"),
		ConnectorID: form.Get("connector"), Email: form.Get("email"), Request: info,
	})
	var lf *oauth.LoginFailure
	if errors.As(err, &lf) {
		v, verr := p.svc.LoginPage(r.Context(), form.Get("req"), flowHash)
		if verr != nil {
			p.fail(w, r, verr, http.StatusSeeOther)
			return
		}
		p.render(w, lf.Status, "login", pageData{Title: "Sign in", Action: p.svc.URL(PathLogin), View: v,
			Message: lf.Message}, append([]string{v.RedirectURI}, v.FormTargets...)...)
		return
	}
	if err != nil {
		p.fail(w, r, err, http.StatusSeeOther)
		return
	}
	p.redirect(w, r, loc, http.StatusSeeOther)
}

// federatedCallback is GET /oauth2/callback/{connector}: the upstream's
// authorization response. Success rotates the session like a password
// sign-in; any failure is an error page and sets no cookie.
func (p *Pages) federatedCallback(w http.ResponseWriter, r *http.Request) {
	_, info := p.requestInfo(r)
	res, err := p.svc.FederatedCallback(r.Context(), oauth.FederatedCallbackInput{
		ConnectorID: r.PathValue("connector"), HTTP: r,
		BrowserHash: hashOrEmpty(cookieValue(r, FlowCookie)), OldSessionHash: hashOrEmpty(cookieValue(r, SessionCookie)),
		Request: info,
	})
	if err != nil {
		p.fail(w, r, err, http.StatusSeeOther)
		return
	}
	setCookie(w, SessionCookie, res.SessionID, time.Until(res.SessionExpires))
	p.next(w, r, res.Step, http.StatusSeeOther)
}
