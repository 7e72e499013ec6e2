package oauth

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"

	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
	"github.com/mcpid/mcpid/lib/principal"
	"github.com/mcpid/mcpid/services/token/internal/catalog"
	"github.com/mcpid/mcpid/services/token/internal/clients"
	"github.com/mcpid/mcpid/services/token/internal/store"
)

// Limits on authorization request parameters.
const (
	maxStateLen = 1024
	maxScopes   = 100
)

// s256Challenge is the shape of an S256 code challenge: base64url of a
// SHA-256 digest.
var s256Challenge = regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`)

// adminDisplayName is what the consent page calls the reserved admin
// audience.
const adminDisplayName = "mcpid administration"

// Step is where the browser goes next.
type Step struct {
	// Location, when set, ends the flow: a redirect to the client (code or
	// error).
	Location string
	// ReqID names the pending request for the Login or Consent page.
	ReqID   string
	Login   bool
	Consent bool
}

// Validated is a validated authorization request.
type Validated struct {
	Client  *registrationv1.Client
	Catalog *catalog.Catalog
	Req     *store.AuthRequest
}

// AuthorizeInput is an authorization request as received.
type AuthorizeInput struct {
	Query url.Values
	// BrowserHash is the hash of the browser's flow cookie.
	BrowserHash string
	// SessionHash is the hash of the session cookie, if any.
	SessionHash string
}

// Authorize validates an authorization request and decides the next step:
// sign-in, consent, or (a signed-in user whose consent covers the request)
// the code at once. Errors: *PageError, *RedirectError, or UNAVAILABLE.
func (s *Service) Authorize(ctx context.Context, in AuthorizeInput) (Step, error) {
	v, err := s.validate(ctx, in.Query)
	if err != nil {
		return Step{}, err
	}
	v.Req.BrowserHash = in.BrowserHash
	prompt := promptSet(v.Req.Prompt)
	var sess *store.Session
	var user *store.User
	if in.SessionHash != "" && !prompt["login"] {
		sess, user, err = s.liveSession(ctx, in.SessionHash)
		if err != nil {
			return Step{}, err
		}
	}
	redirectErr := func(code, desc string) error {
		return &RedirectError{RedirectURI: v.Req.RedirectURI, State: v.Req.State, Code: code, Description: desc}
	}
	if user == nil {
		if prompt["none"] {
			return Step{}, redirectErr("login_required", "the user is not signed in")
		}
		return s.storeRequest(ctx, v.Req, Step{Login: true})
	}
	v.Req.UserID, v.Req.AuthTime, v.Req.ConnectorID = user.ID, sess.AuthTime, sess.ConnectorID
	if err := s.checkUserAudience(v.Req, user); err != nil {
		return Step{}, err
	}
	if !prompt["consent"] {
		granted, ok, err := s.coveredByConsent(ctx, v, user.ID)
		if err != nil {
			return Step{}, err
		}
		if ok {
			loc, err := s.issueCode(ctx, "", 0, v.Req, granted, nil)
			return Step{Location: loc}, err
		}
	}
	if prompt["none"] {
		return Step{}, redirectErr("consent_required", "the user has not approved this client")
	}
	return s.storeRequest(ctx, v.Req, Step{Consent: true})
}

func promptSet(p string) map[string]bool {
	out := map[string]bool{}
	for _, v := range strings.Fields(p) {
		out[v] = true
	}
	return out
}

func (s *Service) storeRequest(ctx context.Context, req *store.AuthRequest, step Step) (Step, error) {
	id, err := RandomToken()
	if err != nil {
		return Step{}, err
	}
	csrf, err := RandomToken()
	if err != nil {
		return Step{}, err
	}
	now := s.d.Now().UTC()
	req.CSRF, req.Created, req.Expires = csrf, now, now.Add(s.cfg.AuthRequestTTL)
	if err := s.d.Store.PutAuthRequest(ctx, Hash(id), req); err != nil {
		return Step{}, storeErr(err)
	}
	step.ReqID = id
	return step, nil
}

// liveSession returns the session and its user when both are valid; a
// missing, expired or orphaned session is no session.
func (s *Service) liveSession(ctx context.Context, sessionHash string) (*store.Session, *store.User, error) {
	sess, err := s.d.Store.GetSession(ctx, sessionHash)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, storeErr(err)
	}
	u, err := s.d.Store.GetUser(ctx, sess.UserID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, storeErr(err)
	}
	if u.Disabled {
		return nil, nil, nil
	}
	return sess, u, nil
}

// validate checks the request in the order RFC 6749 section 4.1.2.1 asks:
// client and redirect URI first (failures there are error pages), then
// everything else (redirected errors).
func (s *Service) validate(ctx context.Context, q url.Values) (*Validated, error) {
	for _, p := range []string{"client_id", "redirect_uri"} {
		if len(q[p]) > 1 {
			return nil, pageErr(http.StatusBadRequest, "The request names more than one "+p+".")
		}
	}
	clientID := q.Get("client_id")
	if clientID == "" {
		return nil, pageErr(http.StatusBadRequest, "The request does not name a client (client_id is missing).")
	}
	cl, err := s.d.Clients.Resolve(ctx, clientID)
	var rej *clients.RejectedError
	switch {
	case errors.Is(err, clients.ErrUnknown):
		return nil, pageErr(http.StatusBadRequest, "The application that sent you here is not registered.")
	case errors.As(err, &rej):
		return nil, &PageError{Status: http.StatusBadRequest, Message: "The application's registration could not be used: " + rej.Message, cause: err}
	case err != nil:
		return nil, err
	}
	if clients.Suspended(cl) {
		return nil, pageErr(http.StatusForbidden, "The application that sent you here has been suspended.")
	}
	redirectURI := q.Get("redirect_uri")
	if redirectURI == "" {
		return nil, pageErr(http.StatusBadRequest, "The request does not say where to return (redirect_uri is missing).")
	}
	if !clients.MatchRedirectURI(cl, redirectURI) {
		return nil, pageErr(http.StatusBadRequest, "The return address (redirect_uri) is not registered for this application.")
	}

	// From here on, errors go back to the client.
	state := q.Get("state")
	if len(state) > maxStateLen {
		state = ""
	}
	fail := func(code, desc string) (*Validated, error) {
		return nil, &RedirectError{RedirectURI: redirectURI, State: state, Code: code, Description: desc}
	}
	if len(q.Get("state")) > maxStateLen {
		return fail("invalid_request", "state is too long")
	}
	for name, vals := range q {
		if len(vals) > 1 {
			if name == "resource" {
				return fail("invalid_target", "only one resource may be requested")
			}
			return fail("invalid_request", "parameter "+name+" is repeated")
		}
	}
	if q.Has("request") {
		return fail("request_not_supported", "request objects are not supported")
	}
	if q.Has("request_uri") {
		return fail("request_uri_not_supported", "request_uri is not supported")
	}
	if !clients.HasGrant(cl, registrationv1.GrantType_GRANT_TYPE_AUTHORIZATION_CODE) {
		return fail("unauthorized_client", "the client is not registered for the authorization_code grant")
	}
	switch rt := q.Get("response_type"); rt {
	case "code":
	case "":
		return fail("invalid_request", "response_type is required")
	default:
		return fail("unsupported_response_type", "only response_type=code is supported")
	}
	if rm := q.Get("response_mode"); rm != "" && rm != "query" {
		return fail("invalid_request", "only response_mode=query is supported")
	}
	challenge := q.Get("code_challenge")
	if challenge == "" {
		return fail("invalid_request", "code_challenge is required (PKCE with S256)")
	}
	if m := q.Get("code_challenge_method"); m != "S256" {
		return fail("invalid_request", "code_challenge_method must be S256")
	}
	if !s256Challenge.MatchString(challenge) {
		return fail("invalid_request", "code_challenge is not a base64url S256 value")
	}
	prompt := q.Get("prompt")
	ps := promptSet(prompt)
	for p := range ps {
		if p != "none" && p != "login" && p != "consent" {
			return fail("invalid_request", "unsupported prompt value "+p)
		}
	}
	if ps["none"] && len(ps) > 1 {
		return fail("invalid_request", "prompt=none cannot be combined with other values")
	}

	rawResource := q.Get("resource")
	if rawResource == "" {
		return fail("invalid_target", "resource is required (RFC 8707)")
	}
	res, err := canonicalTarget(rawResource)
	if err != nil {
		return fail("invalid_target", "resource is not a valid absolute URI")
	}
	var cat *catalog.Catalog
	admin := false
	switch {
	case principal.IsReservedAudience(res):
		if res != principal.AdminAudience || !clients.MayGetReservedAudience(cl, principal.AdminAudience) {
			return fail("invalid_target", "this resource cannot be requested by this client")
		}
		admin = true
	default:
		cat, err = s.d.Catalogs.Lookup(res)
		switch {
		case errors.Is(err, catalog.ErrUnknownResource):
			return fail("invalid_target", "unknown resource")
		case errors.Is(err, catalog.ErrNotReady):
			return fail("temporarily_unavailable", "the resource catalogue is not available yet")
		case err != nil:
			return nil, err
		}
	}
	scopes := dedupeSorted(strings.Fields(q.Get("scope")))
	if len(scopes) > maxScopes {
		return fail("invalid_scope", "too many scopes")
	}
	for _, sc := range scopes {
		switch {
		case sc == OfflineAccess:
		case principal.IsReservedScope(sc):
			return fail("invalid_scope", "scope "+sc+" is reserved")
		case admin:
			return fail("invalid_scope", "scope "+sc+" is not available for this resource")
		default:
			if _, ok := cat.Scope(sc); !ok {
				return fail("invalid_scope", "scope "+sc+" is not offered by this resource")
			}
		}
	}
	return &Validated{Client: cl, Catalog: cat, Req: &store.AuthRequest{
		ClientID: clientID, RedirectURI: redirectURI, State: state, CodeChallenge: challenge,
		Resource: res, Scopes: scopes, Prompt: prompt,
	}}, nil
}

func dedupeSorted(ss []string) []string {
	out := slices.Clone(ss)
	slices.Sort(out)
	return slices.Compact(out)
}

// checkUserAudience enforces that only users holding an operator role get
// the admin audience.
func (s *Service) checkUserAudience(req *store.AuthRequest, u *store.User) error {
	if req.Resource == principal.AdminAudience && len(s.rolesNow(u)) == 0 {
		return &RedirectError{RedirectURI: req.RedirectURI, State: req.State, Code: "access_denied",
			Description: "the user holds no operator role"}
	}
	return nil
}

// askEveryTime reports whether the client's consent is never remembered:
// public clients whose redirect URIs are all loopback or private-use (any
// program on the device can claim them).
func askEveryTime(cl *registrationv1.Client) bool {
	return clients.Public(cl) && cl.GetLocalRedirectUrisOnly()
}

// coveredByConsent reports whether the user's remembered consent covers the
// whole request, and returns the scopes granted.
func (s *Service) coveredByConsent(ctx context.Context, v *Validated, userID string) ([]string, bool, error) {
	if askEveryTime(v.Client) {
		return nil, false, nil
	}
	prev, err := s.rememberedScopes(ctx, v.Client, userID, v.Req.Resource)
	if err != nil {
		return nil, false, err
	}
	for _, sc := range v.Req.Scopes {
		if !covers(v.Catalog, prev, sc) {
			return nil, false, nil
		}
	}
	if prev == nil {
		return nil, false, nil
	}
	return v.Req.Scopes, true, nil
}

// rememberedScopes returns the scopes of the user's consent for the client
// and resource, if it is of the client's current consent epoch; nil when
// there is none.
func (s *Service) rememberedScopes(ctx context.Context, cl *registrationv1.Client, userID, res string) ([]string, error) {
	if askEveryTime(cl) {
		return nil, nil
	}
	c, err := s.d.Store.GetConsent(ctx, userID, cl.GetClientId(), res)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, storeErr(err)
	}
	if c.Epoch != cl.GetConsentEpoch() {
		// Given before a redirect URI change, or to an earlier client of the
		// same id: it does not count.
		return nil, nil
	}
	if c.Scopes == nil {
		return []string{}, nil
	}
	return c.Scopes, nil
}

func covers(cat *catalog.Catalog, granted []string, sc string) bool {
	if slices.Contains(granted, sc) {
		return true
	}
	return cat != nil && cat.Covers(granted, sc)
}

// issueCode ends the request with a code for granted scopes: the pending
// request (if stored) is deleted, the code stored, the consent (if any)
// recorded, all at once. It returns the redirect location.
func (s *Service) issueCode(ctx context.Context, reqHash string, reqRev int64, req *store.AuthRequest, granted []string, commit *consentCommit) (string, error) {
	code, err := RandomToken()
	if err != nil {
		return "", err
	}
	grantID, err := s.newGrantID()
	if err != nil {
		return "", err
	}
	now := s.d.Now().UTC()
	c := &store.CodeCommit{
		ReqHash: reqHash, ReqRev: reqRev, CodeHash: Hash(code),
		Code: &store.Code{
			ClientID: req.ClientID, RedirectURI: req.RedirectURI, CodeChallenge: req.CodeChallenge,
			Resource: req.Resource, Scopes: granted, UserID: req.UserID, AuthTime: req.AuthTime,
			ConnectorID: req.ConnectorID, GrantID: grantID, Created: now, Expires: now.Add(s.cfg.CodeTTL),
		},
	}
	if commit != nil {
		c.Consent = commit.consent
		c.Extra = commit.extra
	}
	if err := s.d.Store.IssueCode(ctx, *c); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return "", pageErr(http.StatusConflict, "This request was already answered. Return to the application and try again.")
		}
		return "", storeErr(err)
	}
	return s.codeLocation(req.RedirectURI, code, req.State), nil
}

type consentCommit struct {
	consent *store.Consent
	extra   []store.Op
}

func (s *Service) newGrantID() (string, error) {
	id, err := s.grantIDs.NewID()
	if err != nil {
		return "", err
	}
	return "grt_" + id, nil
}
