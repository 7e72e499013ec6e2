package sso

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/mcpid/mcpid/lib/fetch"
	"github.com/mcpid/mcpid/services/token/internal/connector"
	"github.com/mcpid/mcpid/services/token/internal/kek"
)

// Env is what every OIDC connector of a replica shares.
type Env struct {
	// Issuer is this authorization server's issuer (callback URLs).
	Issuer string
	// Fetcher fetches discovery documents and key sets.
	Fetcher *fetch.Fetcher
	// TokenClient posts to upstream token endpoints.
	TokenClient *http.Client
	// AllowHTTP accepts http upstream endpoints (tests, development).
	AllowHTTP bool
	Store     *Store
	KEK       *kek.Ring
	// SecretFiles decides which client_secret_file paths are read.
	SecretFiles *SecretFiles
	// StateTTL bounds an upstream round trip (the authorization request's
	// lifetime).
	StateTTL time.Duration
	Now      func() time.Time
	Logger   *slog.Logger
}

// retryDiscoveryAfter is how long a failed discovery is remembered before
// the next sign-in tries again (the fetcher's negative cache does the rest).
const retryDiscoveryAfter = 5 * time.Second

// OIDC is an upstream OpenID Connect provider (connector.Connector).
type OIDC struct {
	rec *Record
	env *Env

	mu       sync.Mutex
	provider *oidc.Provider
	verifier *oidc.IDTokenVerifier
	failedAt time.Time
	lastErr  error
}

var _ connector.Connector = (*OIDC)(nil)

// NewOIDC returns the connector of rec. Discovery happens at first use.
func NewOIDC(rec *Record, env *Env) *OIDC { return &OIDC{rec: rec, env: env} }

// ID implements connector.Connector.
func (c *OIDC) ID() string { return c.rec.ID }

// DisplayName implements connector.Connector.
func (c *OIDC) DisplayName() string { return c.rec.DisplayName }

// Record returns the connector's settings.
func (c *OIDC) Record() *Record { return c.rec }

// discover returns the provider, fetching its discovery document through the
// fetcher once (go-oidc checks that its issuer is exactly the configured
// one). Its key set follows key rotation: a kid it lacks makes it fetch the
// jwks_uri again.
func (c *OIDC) discover(ctx context.Context) (*oidc.Provider, *oidc.IDTokenVerifier, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.provider != nil {
		return c.provider, c.verifier, nil
	}
	if c.lastErr != nil && c.env.Now().Sub(c.failedAt) < retryDiscoveryAfter {
		return nil, nil, c.lastErr
	}
	p, err := Discover(ctx, c.env, c.rec.Issuer)
	if err != nil {
		c.lastErr, c.failedAt = err, c.env.Now()
		return nil, nil, err
	}
	c.provider, c.lastErr = p, nil
	c.verifier = p.Verifier(&oidc.Config{ClientID: c.rec.ClientID, Now: c.env.Now})
	return c.provider, c.verifier, nil
}

// Discover fetches and checks issuer's discovery document.
func Discover(ctx context.Context, env *Env, issuer string) (*oidc.Provider, error) {
	hc := &http.Client{Transport: fetchTransport{f: env.Fetcher}}
	p, err := oidc.NewProvider(oidc.ClientContext(detached(ctx), hc), issuer)
	if err != nil {
		return nil, fmt.Errorf("sso: discovery of %s: %w", issuer, err)
	}
	ep := p.Endpoint()
	for name, u := range map[string]string{"authorization_endpoint": ep.AuthURL, "token_endpoint": ep.TokenURL} {
		pu, err := url.Parse(u)
		if err != nil || pu.Host == "" || (pu.Scheme != "https" && (pu.Scheme != "http" || !env.AllowHTTP)) {
			return nil, fmt.Errorf("sso: discovery of %s: %s %q is not an https URL", issuer, name, u)
		}
	}
	return p, nil
}

// FormTargets implements connector.Connector.
func (c *OIDC) FormTargets(ctx context.Context) []string {
	p, _, err := c.discover(ctx)
	if err != nil {
		return nil
	}
	u, err := url.Parse(p.Endpoint().AuthURL)
	if err != nil {
		return nil
	}
	return []string{u.Scheme + "://" + u.Host}
}

func (c *OIDC) secret() (string, error) {
	switch {
	case c.rec.Secret != nil:
		b, err := c.env.KEK.Open(secretPurpose, c.rec.ID, *c.rec.Secret)
		if err != nil {
			return "", fmt.Errorf("sso: open client secret of %s: %w", c.rec.ID, err)
		}
		return string(b), nil
	case c.rec.SecretFile != "":
		// Only the connectors file's path or one inside the secrets
		// directory, and only a small regular file (see SecretFiles).
		return c.env.SecretFiles.Read(c.rec)
	}
	return "", nil
}

func (c *OIDC) oauth2Config(p *oidc.Provider, secret string) *oauth2.Config {
	return &oauth2.Config{
		ClientID: c.rec.ClientID, ClientSecret: secret, Endpoint: p.Endpoint(),
		RedirectURL: CallbackURL(c.env.Issuer, c.rec.ID), Scopes: c.rec.scopes(),
	}
}

func randomToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func hashState(state string) string {
	sum := sha256.Sum256([]byte(state))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func fail(reason, msg string, err error) *connector.Failure {
	return &connector.Failure{Reason: reason, Message: msg, Err: err}
}

const (
	msgUnavailable = "The identity provider could not be reached. Try again in a moment."
	msgFailed      = "The identity provider did not complete the sign-in. Return to the application and start again."
	msgState       = "This sign-in response does not belong to a sign-in started in this browser, or it was already used. Return to the application and start again."
	msgDenied      = "The sign-in was cancelled at the identity provider. Return to the application and start again."
	msgToken       = "The identity provider's answer could not be verified, so you were not signed in. Return to the application and start again."
)

// Begin implements connector.Connector: a new state, nonce and PKCE
// verifier, stored (sealed) under the state's hash, bound to this connector,
// the pending request and the browser.
func (c *OIDC) Begin(ctx context.Context, flow connector.Flow) (string, error) {
	p, _, err := c.discover(ctx)
	if err != nil {
		return "", fail(connector.ReasonUnavailable, msgUnavailable, err)
	}
	state, err := randomToken()
	if err != nil {
		return "", err
	}
	nonce, err := randomToken()
	if err != nil {
		return "", err
	}
	verifier := oauth2.GenerateVerifier()
	stateHash := hashState(state)
	plain, err := json.Marshal(stateSecrets{RequestID: flow.RequestID, Verifier: verifier, Nonce: nonce})
	if err != nil {
		return "", err
	}
	sealed, err := c.env.KEK.Seal(statePurpose, stateHash, plain)
	if err != nil {
		return "", err
	}
	st := &State{ConnectorID: c.rec.ID, BrowserHash: flow.BrowserHash, Sealed: sealed, Expires: c.env.Now().Add(c.env.StateTTL)}
	if err := c.env.Store.PutState(ctx, stateHash, st, c.env.StateTTL); err != nil {
		return "", err
	}
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(verifier), oidc.Nonce(nonce)}
	if flow.LoginHint != "" {
		opts = append(opts, oauth2.SetAuthURLParam("login_hint", flow.LoginHint))
	}
	return c.oauth2Config(p, "").AuthCodeURL(state, opts...), nil
}

// statePurpose binds sealed state secrets (KEK additional data).
const statePurpose = "sso-state"

// Complete implements connector.Connector.
func (c *OIDC) Complete(ctx context.Context, r *http.Request) (connector.Flow, connector.Identity, error) {
	q := r.URL.Query()
	for _, k := range []string{"state", "code", "iss", "error"} {
		if len(q[k]) > 1 {
			return connector.Flow{}, connector.Identity{}, fail(connector.ReasonStateMismatch, msgState, fmt.Errorf("repeated %s", k))
		}
	}
	state := q.Get("state")
	if state == "" {
		return connector.Flow{}, connector.Identity{}, fail(connector.ReasonStateMismatch, msgState, errors.New("no state"))
	}
	stateHash := hashState(state)
	st, err := c.env.Store.TakeState(ctx, stateHash, c.env.Now())
	if isAbsent(err) {
		return connector.Flow{}, connector.Identity{}, fail(connector.ReasonStateMismatch, msgState, errors.New("unknown or used state"))
	}
	if err != nil {
		return connector.Flow{}, connector.Identity{}, err
	}
	if st.ConnectorID != c.rec.ID {
		// A state issued for another connector arriving here: a mix-up.
		return connector.Flow{}, connector.Identity{}, fail(connector.ReasonStateMismatch, msgState,
			fmt.Errorf("state of connector %q at connector %q", st.ConnectorID, c.rec.ID))
	}
	plain, err := c.env.KEK.Open(statePurpose, stateHash, st.Sealed)
	if err != nil {
		return connector.Flow{}, connector.Identity{}, err
	}
	var sec stateSecrets
	if err := json.Unmarshal(plain, &sec); err != nil {
		return connector.Flow{}, connector.Identity{}, err
	}
	flow := connector.Flow{RequestID: sec.RequestID, BrowserHash: st.BrowserHash}
	id, err := c.complete(ctx, q, sec)
	return flow, id, err
}

func (c *OIDC) complete(ctx context.Context, q url.Values, sec stateSecrets) (connector.Identity, error) {
	// RFC 9207: an authorization response's iss, when sent, must be this
	// connector's issuer; otherwise the browser is carrying another IdP's
	// response (mix-up), error responses included.
	if iss, ok := q["iss"]; ok && iss[0] != c.rec.Issuer {
		return connector.Identity{}, fail(connector.ReasonIssuerMismatch, msgToken, fmt.Errorf("iss %q, want %q", iss[0], c.rec.Issuer))
	}
	if e := q.Get("error"); e != "" {
		reason := connector.ReasonUpstreamError
		msg := msgFailed
		if e == "access_denied" {
			reason, msg = connector.ReasonUpstreamDenied, msgDenied
		}
		return connector.Identity{}, fail(reason, msg, fmt.Errorf("upstream error %q", truncate(e, 64)))
	}
	code := q.Get("code")
	if code == "" {
		return connector.Identity{}, fail(connector.ReasonUpstreamError, msgFailed, errors.New("no code"))
	}
	p, verifier, err := c.discover(ctx)
	if err != nil {
		return connector.Identity{}, fail(connector.ReasonUnavailable, msgUnavailable, err)
	}
	secret, err := c.secret()
	if err != nil {
		return connector.Identity{}, err
	}
	tctx := context.WithValue(ctx, oauth2.HTTPClient, c.env.TokenClient)
	tok, err := c.oauth2Config(p, secret).Exchange(tctx, code, oauth2.VerifierOption(sec.Verifier))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode < 500 {
			return connector.Identity{}, fail(connector.ReasonUpstreamError, msgFailed, err)
		}
		return connector.Identity{}, fail(connector.ReasonUnavailable, msgUnavailable, err)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return connector.Identity{}, fail(connector.ReasonIDTokenInvalid, msgToken, errors.New("no id_token in the token response"))
	}
	// Signature (keys from the jwks_uri, refetched for an unknown kid),
	// issuer, audience (and azp), expiry.
	idt, err := verifier.Verify(ctx, raw)
	if err != nil {
		return connector.Identity{}, fail(connector.ReasonIDTokenInvalid, msgToken, err)
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(sec.Nonce)) != 1 {
		return connector.Identity{}, fail(connector.ReasonNonceMismatch, msgToken, errors.New("nonce mismatch"))
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return connector.Identity{}, fail(connector.ReasonIDTokenInvalid, msgToken, err)
	}
	return c.identity(claims)
}

// identity maps the claims and applies the connector's admission rules.
func (c *OIDC) identity(claims map[string]any) (connector.Identity, error) {
	m := c.rec.Claims
	sub, _ := claims[claimOr(m.Subject, "sub")].(string)
	if sub == "" || len(sub) > 255 {
		return connector.Identity{}, fail(connector.ReasonIDTokenInvalid, msgToken, errors.New("no usable subject claim"))
	}
	email, _ := claims[claimOr(m.Email, "email")].(string)
	name, _ := claims[claimOr(m.Name, "name")].(string)
	verified := false
	switch v := claims["email_verified"].(type) {
	case bool:
		verified = v
	case string:
		verified = v == "true"
	}
	var upstream []string
	switch v := claims[claimOr(m.Groups, "groups")].(type) {
	case []any:
		for _, g := range v {
			if s, ok := g.(string); ok && s != "" {
				upstream = append(upstream, s)
			}
		}
	case string:
		upstream = []string{v}
	}
	id := connector.Identity{ConnectorID: c.rec.ID, Subject: sub, Email: truncate(email, 254), EmailVerified: verified, Name: truncate(name, 128)}
	reject := func(reason, msg string, err error) (connector.Identity, error) {
		f := fail(reason, msg, err)
		f.Subject = sub
		return connector.Identity{}, f
	}
	if len(c.rec.AllowedDomains) > 0 {
		if !verified && !c.rec.SkipEmailVerified {
			return reject(connector.ReasonEmailUnverified, "Your email address at the identity provider is not verified, so it cannot be used to sign in here.", errors.New("email not verified"))
		}
		if !slices.Contains(c.rec.AllowedDomains, EmailDomain(email)) {
			return reject(connector.ReasonDomainNotAllow, "Accounts of your email domain may not sign in through "+c.rec.DisplayName+".", fmt.Errorf("domain %q not allowed", EmailDomain(email)))
		}
	}
	if len(c.rec.AllowedGroups) > 0 && !slices.ContainsFunc(upstream, func(g string) bool { return slices.Contains(c.rec.AllowedGroups, g) }) {
		return reject(connector.ReasonGroupNotAllowed, "Your account is not in a group allowed to sign in through "+c.rec.DisplayName+".", errors.New("no allowed group"))
	}
	for _, g := range upstream {
		id.Groups = append(id.Groups, c.rec.GroupsPrefix+g)
	}
	slices.Sort(id.Groups)
	id.Groups = slices.Compact(id.Groups)
	slices.Sort(upstream)
	id.UpstreamGroups = slices.Compact(upstream)
	id.Roles = c.rec.RolesFor(upstream)
	return id, nil
}

// RolesFor implements connector.RoleMapper with the mappings this
// connector was built from (the registry rebuilds it at every change).
func (c *OIDC) RolesFor(upstreamGroups []string) []string { return c.rec.RolesFor(upstreamGroups) }

// EmailDomain is the lowercase domain of an email ("" if none).
func EmailDomain(email string) string {
	i := strings.LastIndexByte(email, '@')
	if i < 0 {
		return ""
	}
	return strings.ToLower(email[i+1:])
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}
