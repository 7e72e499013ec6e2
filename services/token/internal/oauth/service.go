// Package oauth is the token service's OAuth 2.1 domain: the authorization
// request (validation, sign-in, consent, code), the token endpoint
// (authorization_code with PKCE, refresh_token with rotation and reuse
// detection, client_credentials), revocation (RFC 7009), introspection (RFC
// 7662) and the metadata document (RFC 8414). The gRPC handlers and the
// browser pages are thin layers over it.
//
// Caller-visible failures are *apierr.Error values (domain "oauth2" with the
// RFC error code, or "mcpid.dev"), *PageError (the authorization request
// cannot be answered to the client: an error page) and *RedirectError (an
// RFC 6749 section 4.1.2.1 error answered to the validated redirect URI);
// anything else is internal.
package oauth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"google.golang.org/grpc/codes"

	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/lib/apierr"
	"github.com/mcpid/mcpid/lib/auditemit"
	"github.com/mcpid/mcpid/services/token/internal/accesstoken"
	"github.com/mcpid/mcpid/services/token/internal/catalog"
	"github.com/mcpid/mcpid/services/token/internal/clients"
	"github.com/mcpid/mcpid/services/token/internal/connector"
	"github.com/mcpid/mcpid/services/token/internal/directory"
	"github.com/mcpid/mcpid/services/token/internal/events"
	"github.com/mcpid/mcpid/services/token/internal/revocation"
	"github.com/mcpid/mcpid/services/token/internal/store"
)

// OfflineAccess is the authorization-server scope that asks for a refresh
// token. It is never part of an access token.
const OfflineAccess = "offline_access"

// Refresh token issuance policies.
const (
	// RefreshOfflineAccess issues a refresh token when the user consented
	// to offline_access (and the client registered the refresh_token
	// grant).
	RefreshOfflineAccess = "offline_access"
	// RefreshRegistered issues one whenever the client registered the
	// refresh_token grant.
	RefreshRegistered = "registered"
)

// Config are the OAuth settings.
type Config struct {
	// Issuer is the issuer URL exactly as configured.
	Issuer string
	// AccessTokenTTL is the default access token lifetime; ResourceTTL
	// overrides it per canonical resource.
	AccessTokenTTL time.Duration
	ResourceTTL    map[string]time.Duration
	// CodeTTL is the authorization code lifetime.
	CodeTTL time.Duration
	// AuthRequestTTL bounds how long a user has to sign in and consent.
	AuthRequestTTL time.Duration
	// SessionTTL is the browser session lifetime.
	SessionTTL time.Duration
	// GrantLifetime is the absolute lifetime of a refresh token family.
	GrantLifetime time.Duration
	// RefreshGrace accepts the immediately previous refresh token this long
	// after a rotation (0: never).
	RefreshGrace time.Duration
	// RefreshIssuance is RefreshOfflineAccess or RefreshRegistered.
	RefreshIssuance string
	// RegistrationEndpoint is advertised in the metadata unless empty.
	AdvertiseRegistration bool
	// ServiceDocumentation is advertised when set.
	ServiceDocumentation string
	// RevocationSkew is the clock difference between replicas a watermark
	// tolerates: it covers tokens with iat up to the revoking replica's now
	// plus this margin (a token minted on a replica whose clock runs ahead
	// is still covered). Tokens issued within the margin after a
	// revocation are rejected too.
	RevocationSkew time.Duration
}

// Deps are the collaborators.
type Deps struct {
	Store       store.Store
	Clients     *clients.Directory
	Catalogs    catalog.Catalogs
	Minter      *accesstoken.Minter
	Verifier    *accesstoken.Verifier
	Revocations *revocation.Set
	Events      *events.Emitter
	Users       *directory.Directory
	Connectors  connector.Registry
	Logger      *slog.Logger
	Now         func() time.Time
}

// Service is the OAuth domain.
type Service struct {
	cfg       Config
	d         Deps
	issuer    string // without trailing slash, for building URLs
	grantIDs  *auditemit.IDGenerator
	ccGrants  *seenSet
	maxTokTTL time.Duration
}

// New returns the service.
func New(cfg Config, d Deps) (*Service, error) {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Connectors == nil {
		d.Connectors = connector.Static(nil)
	}
	if cfg.RefreshIssuance != RefreshOfflineAccess && cfg.RefreshIssuance != RefreshRegistered {
		return nil, fmt.Errorf("oauth: refresh issuance %q is not %s or %s", cfg.RefreshIssuance, RefreshOfflineAccess, RefreshRegistered)
	}
	maxTTL := cfg.AccessTokenTTL
	for _, d := range cfg.ResourceTTL {
		maxTTL = max(maxTTL, d)
	}
	return &Service{
		cfg: cfg, d: d,
		issuer:    strings.TrimRight(cfg.Issuer, "/"),
		grantIDs:  auditemit.NewIDGenerator(d.Now, nil),
		ccGrants:  newSeenSet(time.Minute, d.Now),
		maxTokTTL: maxTTL,
	}, nil
}

// Issuer returns the configured issuer.
func (s *Service) Issuer() string { return s.cfg.Issuer }

// URL returns the absolute URL of path on the issuer origin.
func (s *Service) URL(path string) string { return s.issuer + path }

// MaxAccessTokenTTL is the longest access token lifetime configured.
func (s *Service) MaxAccessTokenTTL() time.Duration { return s.maxTokTTL }

func (s *Service) accessTTL(resource string) time.Duration {
	if d, ok := s.cfg.ResourceTTL[resource]; ok {
		return d
	}
	return s.cfg.AccessTokenTTL
}

// Hash is how secrets (codes, refresh tokens, session and request ids,
// cookies) are stored: base64url(SHA-256).
func Hash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// RandomToken returns 256 random bits, base64url.
func RandomToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("oauth: random: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func equalSecret(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// oauthErr is a shorthand for an RFC error.
func oauthErr(code, format string, args ...any) *apierr.Error {
	return apierr.OAuth(code, fmt.Sprintf(format, args...))
}

func unavailable(what string, cause error) error {
	return apierr.New(codes.Unavailable, tokenv1.ErrorReason_ERROR_REASON_STORE_UNAVAILABLE.String(),
		"%s is temporarily unavailable", what).WithCause(cause)
}

// storeErr maps a storage failure: outages become UNAVAILABLE, the rest
// stays internal.
func storeErr(err error) error {
	if store.IsUnavailable(err) {
		return unavailable("the store", err)
	}
	return err
}

// PageError means the authorization request cannot be answered to the client
// (unknown client, unregistered redirect URI, expired request, CSRF
// failure): the browser gets an error page and is never redirected.
type PageError struct {
	Status  int
	Message string
	cause   error
}

func (e *PageError) Error() string {
	if e.cause != nil {
		return "oauth: " + e.Message + ": " + e.cause.Error()
	}
	return "oauth: " + e.Message
}

func (e *PageError) Unwrap() error { return e.cause }

func pageErr(status int, msg string) *PageError { return &PageError{Status: status, Message: msg} }

// RedirectError is an error answered to the client's validated redirect
// URI (RFC 6749 section 4.1.2.1, with RFC 9207 iss).
type RedirectError struct {
	RedirectURI string
	State       string
	Code        string
	Description string
}

func (e *RedirectError) Error() string { return "oauth: " + e.Code + ": " + e.Description }

// Location is the redirect target.
func (s *Service) errorLocation(e *RedirectError) string {
	v := url.Values{}
	v.Set("error", e.Code)
	if e.Description != "" {
		v.Set("error_description", e.Description)
	}
	if e.State != "" {
		v.Set("state", e.State)
	}
	v.Set("iss", s.cfg.Issuer)
	return appendQuery(e.RedirectURI, v)
}

// ErrorLocation returns where a RedirectError sends the browser.
func (s *Service) ErrorLocation(e *RedirectError) string { return s.errorLocation(e) }

func (s *Service) codeLocation(redirectURI, code, state string) string {
	v := url.Values{}
	v.Set("code", code)
	if state != "" {
		v.Set("state", state)
	}
	v.Set("iss", s.cfg.Issuer)
	return appendQuery(redirectURI, v)
}

// appendQuery adds v to uri's query, keeping what it already has as it is
// (exact redirect URIs may carry a query).
func appendQuery(uri string, v url.Values) string {
	sep := "?"
	if strings.Contains(uri, "?") {
		sep = "&"
		if strings.HasSuffix(uri, "?") || strings.HasSuffix(uri, "&") {
			sep = ""
		}
	}
	return uri + sep + v.Encode()
}

// seenSet remembers keys for a while (client_credentials grants recorded by
// this replica), so that repeated issuance writes nothing.
type seenSet struct {
	ttl time.Duration
	now func() time.Time
	m   syncMap
}

func newSeenSet(ttl time.Duration, now func() time.Time) *seenSet {
	return &seenSet{ttl: ttl, now: now}
}

// since returns when key was added, if it is fresh.
func (s *seenSet) since(key string) (time.Time, bool) {
	v, ok := s.m.Load(key)
	if !ok || !s.now().Before(v) {
		return time.Time{}, false
	}
	return v.Add(-s.ttl), true
}

func (s *seenSet) add(key string) {
	if s.m.Len() > 100_000 {
		s.m.Clear()
	}
	s.m.Store(key, s.now().Add(s.ttl))
}

// revocationWait bounds how long a revocation waits for this replica's
// revocation set to contain it.
const revocationWait = 2 * time.Second

// awaitRevocation waits until the local revocation set reflects revision
// rev, so that this replica's introspection and bearer checks see a
// revocation as soon as the call that made it returns. Other replicas follow
// through their watch within moments; the wait is bounded and best effort.
func (s *Service) awaitRevocation(ctx context.Context, rev int64) {
	if rev == 0 {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, revocationWait)
	defer cancel()
	if err := s.d.Revocations.WaitForRevision(wctx, rev); err != nil {
		s.d.Logger.WarnContext(ctx, "revocation not yet visible locally", "revision", rev, "error", err.Error())
	}
}

// IsPageError reports whether err is a *PageError.
func IsPageError(err error) (*PageError, bool) {
	var pe *PageError
	ok := errors.As(err, &pe)
	return pe, ok
}

// IsRedirectError reports whether err is a *RedirectError.
func IsRedirectError(err error) (*RedirectError, bool) {
	var re *RedirectError
	ok := errors.As(err, &re)
	return re, ok
}
