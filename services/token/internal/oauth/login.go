package oauth

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/lib/principal"
	"github.com/mcpid/mcpid/services/token/internal/catalog"
	"github.com/mcpid/mcpid/services/token/internal/clients"
	"github.com/mcpid/mcpid/services/token/internal/connector"
	"github.com/mcpid/mcpid/services/token/internal/directory"
	"github.com/mcpid/mcpid/services/token/internal/events"
	"github.com/mcpid/mcpid/services/token/internal/store"
)

// Messages of the error pages the flow can end on.
const (
	msgRequestGone  = "This sign-in request has expired or was already used. Return to the application and start again."
	msgBadForm      = "The form could not be verified (it may have expired, or was sent from another page). Return to the application and start again."
	msgWrongSession = "You are not signed in as the user this request belongs to. Return to the application and start again."
)

// Pending is a pending request loaded for a page.
type Pending struct {
	ID  string
	Rev int64
	Req *store.AuthRequest
	Cl  *Validated
}

// load returns the pending request id presented by this browser, or a
// PageError that reveals nothing about why (absent, expired, or another
// browser's).
func (s *Service) load(ctx context.Context, reqID, browserHash string) (*Pending, error) {
	if reqID == "" || browserHash == "" {
		return nil, pageErr(http.StatusBadRequest, msgRequestGone)
	}
	v, err := s.d.Store.GetAuthRequest(ctx, Hash(reqID))
	if errors.Is(err, store.ErrNotFound) {
		return nil, pageErr(http.StatusBadRequest, msgRequestGone)
	}
	if err != nil {
		return nil, storeErr(err)
	}
	if !equalSecret(v.Value.BrowserHash, browserHash) {
		return nil, pageErr(http.StatusBadRequest, msgRequestGone)
	}
	return &Pending{ID: reqID, Rev: v.ModRevision, Req: v.Value}, nil
}

// resolve re-reads the client and catalogue of a pending request: either may
// have changed (suspension, resource removed) since it was validated.
func (s *Service) resolve(ctx context.Context, p *Pending) error {
	cl, err := s.d.Clients.Resolve(ctx, p.Req.ClientID)
	switch {
	case errors.Is(err, clients.ErrUnknown):
		return pageErr(http.StatusBadRequest, "The application that sent you here is no longer registered.")
	case err != nil:
		var rej *clients.RejectedError
		if errors.As(err, &rej) {
			return pageErr(http.StatusBadRequest, "The application's registration could not be used: "+rej.Message)
		}
		return err
	}
	if clients.Suspended(cl) {
		return pageErr(http.StatusForbidden, "The application that sent you here has been suspended.")
	}
	var cat *catalog.Catalog
	if p.Req.Resource != principal.AdminAudience {
		cat, err = s.d.Catalogs.Lookup(p.Req.Resource)
		switch {
		case errors.Is(err, catalog.ErrUnknownResource):
			return &RedirectError{RedirectURI: p.Req.RedirectURI, State: p.Req.State, Code: "invalid_target", Description: "unknown resource"}
		case err != nil:
			return unavailable("the resource catalogue", err)
		}
	}
	p.Cl = &Validated{Client: cl, Catalog: cat, Req: p.Req}
	return nil
}

// LoginView is what the login page shows.
type LoginView struct {
	ReqID string
	// RedirectURI is where a sign-in may end (a remembered consent sends
	// the browser straight to the client).
	RedirectURI string
	CSRF        string
	ClientName  string
	Connectors  []connector.Connector
	// PasswordLogin shows the built-in directory's form; HomeRealms the
	// email field of home-realm discovery.
	PasswordLogin bool
	HomeRealms    bool
	// FormTargets are the upstream origins the login forms may lead to
	// (Content-Security-Policy form-action).
	FormTargets []string
}

// LoginPage loads a pending request for the login page.
func (s *Service) LoginPage(ctx context.Context, reqID, browserHash string) (*LoginView, error) {
	p, err := s.load(ctx, reqID, browserHash)
	if err != nil {
		return nil, err
	}
	if err := s.resolve(ctx, p); err != nil {
		return nil, err
	}
	v := &LoginView{ReqID: reqID, RedirectURI: p.Req.RedirectURI, CSRF: p.Req.CSRF, ClientName: clientName(p.Cl.Client.GetMetadata().GetClientName(), p.Req.ClientID),
		Connectors: s.d.Connectors.Enabled(), PasswordLogin: s.d.Connectors.PasswordLogin()}
	for _, c := range v.Connectors {
		v.FormTargets = append(v.FormTargets, c.FormTargets(ctx)...)
		if hr, ok := c.(interface{ HasHomeRealms() bool }); ok && hr.HasHomeRealms() {
			v.HomeRealms = true
		}
	}
	return v, nil
}

func clientName(name, id string) string {
	if name != "" {
		return name
	}
	return id
}

// LoginInput is a posted login form.
type LoginInput struct {
	ReqID          string
	BrowserHash    string
	CSRF           string
	Username       string
	Password       string
	OldSessionHash string
	Source         string
	Request        events.Request
}

// LoginFailure re-shows the login form with a message and an HTTP status
// (401 wrong credentials, 429 throttled or locked).
type LoginFailure struct {
	Status  int
	Message string
}

func (e *LoginFailure) Error() string { return "oauth: login failed: " + e.Message }

// LoginResult is a successful sign-in.
type LoginResult struct {
	// SessionID is the new session cookie value (rotated at every sign-in).
	SessionID      string
	SessionExpires time.Time
	Step           Step
}

// Login checks a posted login form and signs the user in for the request.
// Errors: *PageError, *LoginFailure, *RedirectError, UNAVAILABLE.
func (s *Service) Login(ctx context.Context, in LoginInput) (*LoginResult, error) {
	p, err := s.load(ctx, in.ReqID, in.BrowserHash)
	if err != nil {
		return nil, err
	}
	if !equalSecret(p.Req.CSRF, in.CSRF) {
		return nil, pageErr(http.StatusForbidden, msgBadForm)
	}
	in.Request.ClientID = p.Req.ClientID
	if err := s.resolve(ctx, p); err != nil {
		return nil, err
	}
	if !s.d.Connectors.PasswordLogin() {
		return nil, pageErr(http.StatusForbidden, "Sign-in with a password is turned off here. Use one of the sign-in options on the previous page.")
	}
	u, err := s.d.Users.Verify(ctx, directory.Login{Username: in.Username, Password: in.Password, Source: in.Source, Request: in.Request})
	switch {
	case errors.Is(err, directory.ErrInvalidCredentials):
		return nil, &LoginFailure{Status: http.StatusUnauthorized, Message: "Invalid username or password."}
	case errors.Is(err, directory.ErrLocked), errors.Is(err, directory.ErrRateLimited):
		return nil, &LoginFailure{Status: http.StatusTooManyRequests, Message: "Too many sign-in attempts. Wait a few minutes and try again."}
	case errors.Is(err, directory.ErrBusy):
		return nil, unavailable("sign-in", err)
	case err != nil:
		return nil, storeErr(err)
	}
	return s.completeLogin(ctx, p, u, "", in.OldSessionHash, in.Request)
}

// completeLogin rotates the session, binds the request to the user and
// decides the next step. It is shared by password and connector sign-ins.
func (s *Service) completeLogin(ctx context.Context, p *Pending, u *store.User, connectorID, oldSessionHash string, r events.Request) (*LoginResult, error) {
	return s.completeLoginWith(ctx, p, u, connectorID, oldSessionHash, s.d.Users.ResetFailures, events.LoginSucceeded(u.ID, u.Email, connectorID, r))
}

// completeLoginWith is completeLogin with the user update and the event of
// the sign-in (a federated sign-in refreshes the profile and records the
// upstream subject).
func (s *Service) completeLoginWith(ctx context.Context, p *Pending, u *store.User, connectorID, oldSessionHash string, userFn func(*store.User) error, ev *auditv1.Event) (*LoginResult, error) {
	sessionID, err := RandomToken()
	if err != nil {
		return nil, err
	}
	csrf, err := RandomToken()
	if err != nil {
		return nil, err
	}
	now := s.d.Now().UTC()
	req := *p.Req
	req.UserID, req.AuthTime, req.ConnectorID, req.CSRF = u.ID, now, connectorID, csrf
	sess := &store.Session{UserID: u.ID, AuthTime: now, ConnectorID: connectorID, Created: now, Expires: now.Add(s.cfg.SessionTTL)}
	op, err := s.d.Events.Op(ctx, ev)
	if err != nil {
		return nil, err
	}
	err = s.d.Store.CompleteLogin(ctx, store.LoginCommit{
		SessionHash: Hash(sessionID), Session: sess, OldSessionHash: oldSessionHash,
		ReqHash: Hash(p.ID), ReqRev: p.Rev, Req: &req, UserID: u.ID,
		UserFn: userFn, Extra: []store.Op{op},
	})
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrConflict):
		return nil, pageErr(http.StatusConflict, msgRequestGone)
	case errors.Is(err, directory.ErrInvalidCredentials):
		return nil, &LoginFailure{Status: http.StatusUnauthorized, Message: "Invalid username or password."}
	case err != nil:
		return nil, storeErr(err)
	}
	res := &LoginResult{SessionID: sessionID, SessionExpires: sess.Expires}
	p.Req, p.Rev = &req, 0
	// Continue: the request changed (CSRF, user), so read it back for its
	// revision.
	np, err := s.load(ctx, p.ID, req.BrowserHash)
	if err != nil {
		return nil, err
	}
	np.Cl = p.Cl
	np.Cl.Req = np.Req
	if err := s.checkUserAudience(np.Req, u); err != nil {
		_ = s.d.Store.DeleteAuthRequest(ctx, Hash(np.ID), np.Rev)
		return nil, err
	}
	if !promptSet(np.Req.Prompt)["consent"] {
		granted, ok, err := s.coveredByConsent(ctx, np.Cl, u.ID)
		if err != nil {
			return nil, err
		}
		if ok {
			loc, err := s.issueCode(ctx, Hash(np.ID), np.Rev, np.Req, granted, nil)
			if err != nil {
				return nil, err
			}
			res.Step = Step{Location: loc}
			return res, nil
		}
	}
	res.Step = Step{Consent: true, ReqID: np.ID}
	return res, nil
}

// ScopeItem is one line of the consent page.
type ScopeItem struct {
	Name        string
	Description string
	Sensitive   bool
}

// ConsentView is what the consent page shows.
type ConsentView struct {
	ReqID       string
	CSRF        string
	ClientID    string
	ClientName  string
	Verified    bool
	RedirectURI string
	// RedirectHost is the host the user returns to; LocalOnly warns that it
	// is this device (any program on it could claim it).
	RedirectHost string
	LocalOnly    bool
	// ResourceName and Resource name the MCP server.
	ResourceName string
	Resource     string
	// Scopes are the scopes to approve now (not yet remembered).
	Scopes []ScopeItem
	// Remembered are scopes approved before, granted without asking.
	Remembered []string
	// Offline asks for a refresh token (offline_access).
	Offline bool
	// UserName is the signed-in user.
	UserName string
}

// consentContext loads and checks a pending request for the consent page:
// same browser, signed in as the request's user.
func (s *Service) consentContext(ctx context.Context, reqID, browserHash, sessionHash string) (*Pending, *store.User, error) {
	p, err := s.load(ctx, reqID, browserHash)
	if err != nil {
		return nil, nil, err
	}
	if p.Req.UserID == "" {
		return nil, nil, pageErr(http.StatusForbidden, msgWrongSession)
	}
	_, u, err := s.liveSession(ctx, sessionHash)
	if err != nil {
		return nil, nil, err
	}
	if u == nil || u.ID != p.Req.UserID {
		return nil, nil, pageErr(http.StatusForbidden, msgWrongSession)
	}
	if err := s.resolve(ctx, p); err != nil {
		return nil, nil, err
	}
	if err := s.checkUserAudience(p.Req, u); err != nil {
		return nil, nil, err
	}
	return p, u, nil
}

// ConsentPage returns what the consent page shows.
func (s *Service) ConsentPage(ctx context.Context, reqID, browserHash, sessionHash string) (*ConsentView, error) {
	p, u, err := s.consentContext(ctx, reqID, browserHash, sessionHash)
	if err != nil {
		return nil, err
	}
	prev, err := s.rememberedScopes(ctx, p.Cl.Client, u.ID, p.Req.Resource)
	if err != nil {
		return nil, err
	}
	cl := p.Cl.Client
	v := &ConsentView{
		ReqID: reqID, CSRF: p.Req.CSRF, ClientID: cl.GetClientId(),
		ClientName: clientName(cl.GetMetadata().GetClientName(), cl.GetClientId()),
		Verified:   clients.Verified(cl), RedirectURI: p.Req.RedirectURI,
		LocalOnly: cl.GetLocalRedirectUrisOnly() || clients.IsLocalRedirect(p.Req.RedirectURI),
		Resource:  p.Req.Resource, UserName: u.DisplayName,
	}
	if v.UserName == "" {
		v.UserName = u.Username
	}
	if ru, err := url.Parse(p.Req.RedirectURI); err == nil {
		v.RedirectHost = ru.Host
		if v.RedirectHost == "" {
			v.RedirectHost = ru.Scheme + ":"
		}
	}
	if p.Cl.Catalog != nil {
		v.ResourceName = p.Cl.Catalog.DisplayName
	} else {
		v.ResourceName = adminDisplayName
	}
	for _, sc := range p.Req.Scopes {
		if covers(p.Cl.Catalog, prev, sc) {
			v.Remembered = append(v.Remembered, sc)
			continue
		}
		if sc == OfflineAccess {
			v.Offline = true
			continue
		}
		item := ScopeItem{Name: sc}
		if p.Cl.Catalog != nil {
			if cs, ok := p.Cl.Catalog.Scope(sc); ok {
				item.Description, item.Sensitive = cs.GetDescription(), cs.GetSensitive()
			}
		}
		v.Scopes = append(v.Scopes, item)
	}
	return v, nil
}

// ConsentInput is a posted consent form.
type ConsentInput struct {
	ReqID       string
	BrowserHash string
	SessionHash string
	CSRF        string
	Approve     bool
	// Scopes are the ticked scopes (offline_access included when ticked).
	Scopes []string
}

// Consent applies the user's decision and returns the redirect to the
// client: a code, or access_denied. Errors: *PageError, *RedirectError,
// UNAVAILABLE.
func (s *Service) Consent(ctx context.Context, in ConsentInput) (string, error) {
	p, u, err := s.consentContext(ctx, in.ReqID, in.BrowserHash, in.SessionHash)
	if err != nil {
		return "", err
	}
	if !equalSecret(p.Req.CSRF, in.CSRF) {
		return "", pageErr(http.StatusForbidden, msgBadForm)
	}
	reqHash := Hash(p.ID)
	if !in.Approve {
		op, err := s.d.Events.Op(ctx, events.ConsentDenied(u.ID, p.Req.ClientID, p.Req.Resource, p.Req.Scopes))
		if err != nil {
			return "", err
		}
		if err := s.d.Store.DeleteAuthRequest(ctx, reqHash, p.Rev, op); err != nil {
			if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrConflict) {
				return "", pageErr(http.StatusConflict, msgRequestGone)
			}
			return "", storeErr(err)
		}
		return s.errorLocation(&RedirectError{RedirectURI: p.Req.RedirectURI, State: p.Req.State,
			Code: "access_denied", Description: "the user denied the request"}), nil
	}
	prev, err := s.rememberedScopes(ctx, p.Cl.Client, u.ID, p.Req.Resource)
	if err != nil {
		return "", err
	}
	// Granted: what was remembered (not asked again) plus what the user
	// ticked now, both limited to what this request asked for. A ticked
	// scope outside the request is ignored (forms of another request do
	// not apply here; their CSRF token would not either).
	var granted, approvedNow []string
	for _, sc := range p.Req.Scopes {
		switch {
		case covers(p.Cl.Catalog, prev, sc):
			granted = append(granted, sc)
		case slices.Contains(in.Scopes, sc):
			granted = append(granted, sc)
			approvedNow = append(approvedNow, sc)
		}
	}
	now := s.d.Now().UTC()
	commit := &consentCommit{}
	remember := !askEveryTime(p.Cl.Client)
	if remember {
		c := &store.Consent{UserID: u.ID, ClientID: p.Req.ClientID, Resource: p.Req.Resource, Epoch: p.Cl.Client.GetConsentEpoch(), Created: now, Updated: now}
		if old, err := s.d.Store.GetConsent(ctx, u.ID, p.Req.ClientID, p.Req.Resource); err == nil && old.Epoch == c.Epoch {
			c.Created = old.Created
			c.Scopes = old.Scopes
		} else if err != nil && !errors.Is(err, store.ErrNotFound) {
			return "", storeErr(err)
		}
		c.Scopes = dedupeSorted(append(slices.Clone(c.Scopes), approvedNow...))
		commit.consent = c
	}
	op, err := s.d.Events.Op(ctx, events.ConsentGranted(u.ID, p.Req.ClientID, p.Req.Resource, granted, p.Req.Scopes, remember))
	if err != nil {
		return "", err
	}
	commit.extra = []store.Op{op}
	return s.issueCode(ctx, reqHash, p.Rev, p.Req, granted, commit)
}

// --- federated sign-in (identity connectors) ---

// FederatedStartInput is a posted login form choosing a connector, or
// typing an email for home-realm discovery.
type FederatedStartInput struct {
	ReqID       string
	BrowserHash string
	CSRF        string
	ConnectorID string
	Email       string
	Request     events.Request
}

// FederatedStart sends the browser to the chosen (or the email's)
// connector. It returns the upstream URL. Errors: *PageError, *LoginFailure
// (no connector for that email: the login form again), *RedirectError,
// UNAVAILABLE.
func (s *Service) FederatedStart(ctx context.Context, in FederatedStartInput) (string, error) {
	p, err := s.load(ctx, in.ReqID, in.BrowserHash)
	if err != nil {
		return "", err
	}
	if !equalSecret(p.Req.CSRF, in.CSRF) {
		return "", pageErr(http.StatusForbidden, msgBadForm)
	}
	in.Request.ClientID = p.Req.ClientID
	if err := s.resolve(ctx, p); err != nil {
		return "", err
	}
	var c connector.Connector
	var ok bool
	hint := ""
	if in.ConnectorID != "" {
		if c, ok = s.d.Connectors.Get(in.ConnectorID); !ok {
			return "", pageErr(http.StatusBadRequest, "That sign-in option is not available any more. Return to the application and start again.")
		}
	} else {
		hint = strings.TrimSpace(in.Email)
		if c, ok = s.d.Connectors.ForEmail(hint); !ok {
			return "", &LoginFailure{Status: http.StatusBadRequest, Message: "No single sign-on is set up for that email address. Choose a sign-in option below."}
		}
	}
	loc, err := c.Begin(ctx, connector.Flow{RequestID: p.ID, BrowserHash: in.BrowserHash, LoginHint: hint})
	if f, ok := connector.AsFailure(err); ok {
		s.federatedFailure(ctx, c.ID(), "", f, in.Request)
		return "", &PageError{Status: http.StatusBadGateway, Message: f.Message, cause: f}
	}
	if err != nil {
		return "", storeErr(err)
	}
	return loc, nil
}

// federatedFailure records a failed federated sign-in (best effort: the
// error page is shown whatever happens to the event).
func (s *Service) federatedFailure(ctx context.Context, connectorID, userID string, f *connector.Failure, r events.Request) {
	s.d.Logger.InfoContext(ctx, "federated sign-in failed", "connector", connectorID, "reason", f.Reason, "error", f.Error())
	op, err := s.d.Events.Op(ctx, events.FederatedLoginFailed(userID, connectorID, f.Subject, f.Reason, r))
	if err == nil {
		err = s.d.Store.AppendEvents(ctx, op)
	}
	if err != nil {
		s.d.Logger.WarnContext(ctx, "recording a failed federated sign-in", "error", err.Error())
	}
}

// FederatedCallbackInput is the upstream's redirect to a connector's
// callback path.
type FederatedCallbackInput struct {
	ConnectorID    string
	HTTP           *http.Request
	BrowserHash    string
	OldSessionHash string
	Request        events.Request
}

// FederatedCallback completes an upstream sign-in: the connector checks the
// state (bound to it, the pending request and this browser), the RFC 9207
// iss, the code exchange and the ID token; the identity is linked to a user
// (created just in time) and the flow continues from the stored request
// exactly as after a password sign-in. Every failure is an error page and
// leaves no session. Errors: *PageError, *RedirectError, UNAVAILABLE.
func (s *Service) FederatedCallback(ctx context.Context, in FederatedCallbackInput) (*LoginResult, error) {
	c, ok := s.d.Connectors.Get(in.ConnectorID)
	if !ok {
		s.federatedFailure(ctx, in.ConnectorID, "", &connector.Failure{Reason: connector.ReasonUnknown}, in.Request)
		return nil, pageErr(http.StatusNotFound, "This sign-in option is not available any more. Return to the application and start again.")
	}
	flow, id, err := c.Complete(ctx, in.HTTP)
	if f, ok := connector.AsFailure(err); ok {
		// A failure after the state was taken still knows the request:
		// record its client (best effort; never from URL parameters).
		in.Request.ClientID = s.pendingClient(ctx, flow, in.BrowserHash)
		s.federatedFailure(ctx, c.ID(), "", f, in.Request)
		status := http.StatusBadRequest
		switch f.Reason {
		case connector.ReasonUnavailable:
			status = http.StatusBadGateway
		case connector.ReasonDomainNotAllow, connector.ReasonGroupNotAllowed, connector.ReasonEmailUnverified, connector.ReasonUpstreamDenied:
			status = http.StatusForbidden
		}
		return nil, &PageError{Status: status, Message: f.Message, cause: f}
	}
	if err != nil {
		return nil, storeErr(err)
	}
	// The request id comes from the stored state, never from the URL; the
	// request must belong to this browser.
	p, err := s.load(ctx, flow.RequestID, in.BrowserHash)
	if err != nil {
		s.federatedFailure(ctx, c.ID(), "", &connector.Failure{Reason: connector.ReasonStateMismatch, Subject: id.Subject}, in.Request)
		return nil, err
	}
	in.Request.ClientID = p.Req.ClientID
	if err := s.resolve(ctx, p); err != nil {
		return nil, err
	}
	u, created, err := s.d.Users.Federated(ctx, s.links(), id, in.Request)
	if errors.Is(err, directory.ErrDisabled) {
		s.federatedFailure(ctx, c.ID(), u.ID, &connector.Failure{Reason: connector.ReasonUserDisabled, Subject: id.Subject}, in.Request)
		return nil, pageErr(http.StatusForbidden, "Your account is disabled here. Contact your administrator.")
	}
	if err != nil {
		return nil, storeErr(err)
	}
	now := s.d.Now().UTC()
	userFn := func(cur *store.User) error {
		if err := s.d.Users.ResetFailures(cur); err != nil {
			return err
		}
		directory.ApplyIdentity(cur, id, now)
		return nil
	}
	// The audience check after sign-in reads u: give it what the commit
	// writes (roles from the connector's mappings included).
	rolesBefore := u.EffectiveRoles()
	directory.ApplyIdentity(u, id, now)
	res, err := s.completeLoginWith(ctx, p, u, c.ID(), in.OldSessionHash, userFn,
		events.FederatedLoginSucceeded(u.ID, id.Email, c.ID(), id.Subject, created, in.Request))
	if lf := (*LoginFailure)(nil); errors.As(err, &lf) {
		// The user was disabled between the lookup and the commit.
		return nil, pageErr(http.StatusForbidden, "Your account is disabled here. Contact your administrator.")
	}
	if err == nil && directory.RolesRemoved(rolesBefore, u.EffectiveRoles()) {
		// The upstream no longer grants a role: admin-audience tokens
		// carrying it stop now, as after an operator's role change.
		if rerr := s.revokeUserGrants(ctx, events.SystemActor("connector:"+c.ID()), u.ID, "roles_changed",
			func(g *store.Grant) bool { return g.Resource == principal.AdminAudience }); rerr != nil {
			return nil, rerr
		}
	}
	return res, err
}

// pendingClient is the client_id of the pending request a connector flow
// belongs to, "" when the flow carries none or the request is gone (or is
// another browser's).
func (s *Service) pendingClient(ctx context.Context, flow connector.Flow, browserHash string) string {
	if flow.RequestID == "" {
		return ""
	}
	p, err := s.load(ctx, flow.RequestID, browserHash)
	if err != nil {
		return ""
	}
	return p.Req.ClientID
}

// links returns the identity link store if the registry provides one.
func (s *Service) links() directory.IdentityLinks {
	if l, ok := s.d.Connectors.(interface {
		Links() directory.IdentityLinks
	}); ok {
		return l.Links()
	}
	return nil
}
