// Package admintoken verifies operator bearer tokens — the RFC 9068 access
// tokens `mcpid login` obtains with aud=urn:mcpid:admin — for the services
// other than the token service (which verifies them against its own key
// ring). It is a principal.TokenVerifier: lib/jose against the issuer's
// JWKS (ES256 and EdDSA only, so "none" and HMAC confusion are refused),
// typ at+jwt, iss, exp/nbf/iat with a clock skew, exactly one audience
// urn:mcpid:admin, the roles claim, and revocation through the token
// service's feed (lib/revocationfeed). Verified tokens are cached by hash
// for a short while; a cached token is still checked for expiry and
// revocation on every call.
package admintoken

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/mcpid/mcpid/lib/fetch"
	"github.com/mcpid/mcpid/lib/jose"
	"github.com/mcpid/mcpid/lib/principal"
	"github.com/mcpid/mcpid/lib/revocationfeed"
)

// JWKSPath is where the token service publishes its JWKS under the issuer.
const JWKSPath = "/oauth2/jwks"

// AccessTokenType is the JWT "typ" of RFC 9068 access tokens.
const AccessTokenType = jose.AccessTokenType

// Defaults.
const (
	DefaultClockSkew = 30 * time.Second
	// DefaultCacheSize bounds the verified-token cache: operators are few.
	DefaultCacheSize = 256
	// DefaultCacheAge is how long a verified token is trusted without
	// checking its signature again, so a key withdrawn from the JWKS stops
	// working within it.
	DefaultCacheAge = time.Minute
	// DefaultJWKSMinRefresh spaces JWKS fetches (unknown kids, failures).
	DefaultJWKSMinRefresh = 5 * time.Second
)

// Errors. None of them carries the token or its claims.
var (
	// ErrNotAdmin: the token verified, but its audience is not exactly
	// urn:mcpid:admin. A service that also accepts other reserved audiences
	// (policy) tries its own verifier on it.
	ErrNotAdmin = errors.New("admintoken: audience is not exactly " + principal.AdminAudience)
	// ErrRevoked: the token is revoked, or the revocation set is not current
	// (fail closed).
	ErrRevoked = errors.New("admintoken: token revoked or revocation set not current")
	// ErrClaims: a claim an operator token needs is missing or malformed.
	ErrClaims = errors.New("admintoken: malformed claims")
)

// Revocations is the token service's revocation set as this replica knows
// it; *revocationfeed.Follower satisfies it.
type Revocations interface {
	// Ready reports whether the set is current; tokens are refused while it
	// is not.
	Ready() bool
	// Revoked reports whether t is revoked.
	Revoked(t revocationfeed.Token) bool
}

// Config configures a Verifier.
type Config struct {
	// Issuer is the required iss. Required.
	Issuer string
	// Keys are the verification keys. Nil means the JWKS at JWKSURL.
	Keys jose.KeySource
	// JWKSURL is where the keys are fetched; empty means <Issuer>/oauth2/jwks.
	// It is an operator's setting, so its host and port are trusted,
	// loopback and private addresses included, and plain http only when the
	// URL says so (as the policy service does).
	JWKSURL string
	// JWKSMaxAge and JWKSMaxStale tune the JWKS cache (jose defaults).
	JWKSMaxAge, JWKSMaxStale time.Duration
	// ClockSkew is the leeway for exp, nbf and iat; 0 means DefaultClockSkew.
	ClockSkew time.Duration
	// CacheSize bounds the verified-token cache: 0 means DefaultCacheSize,
	// negative disables it.
	CacheSize int
	// CacheAge bounds how long a verified token is cached; 0 means
	// DefaultCacheAge.
	CacheAge time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Verifier verifies operator tokens. Safe for concurrent use.
type Verifier struct {
	jv       *jose.Verifier
	closer   func()
	skew     time.Duration
	cacheAge time.Duration
	now      func() time.Time

	mu    sync.Mutex
	revs  Revocations // nil: none configured
	cache map[[32]byte]entry
	size  int
}

type entry struct {
	claims  principal.Claims
	token   revocationfeed.Token
	expires time.Time // exp + skew
	until   time.Time // cache deadline
}

var _ principal.TokenVerifier = (*Verifier)(nil)

// New returns a Verifier. Errors name the setting at fault.
func New(cfg Config) (*Verifier, error) {
	if cfg.Issuer == "" {
		return nil, errors.New("setting issuer: required to verify operator tokens")
	}
	if cfg.ClockSkew == 0 {
		cfg.ClockSkew = DefaultClockSkew
	}
	if cfg.ClockSkew < 0 || cfg.ClockSkew > 5*time.Minute {
		return nil, fmt.Errorf("setting clock-skew: %v is not between 0 and 5m", cfg.ClockSkew)
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = DefaultCacheSize
	}
	if cfg.CacheAge <= 0 {
		cfg.CacheAge = DefaultCacheAge
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	v := &Verifier{skew: cfg.ClockSkew, cacheAge: cfg.CacheAge, now: cfg.Now, size: max(cfg.CacheSize, 0)}
	keys := cfg.Keys
	if keys == nil {
		u := cfg.JWKSURL
		if u == "" {
			u = strings.TrimRight(cfg.Issuer, "/") + JWKSPath
		}
		f, err := fetch.NewPinned(u)
		if err != nil {
			return nil, fmt.Errorf("setting jwks-url: %w", err)
		}
		v.closer = f.Close
		keys = jose.NewKeySetCache(f, u, jose.CacheOptions{
			MaxAge: cfg.JWKSMaxAge, MaxStale: cfg.JWKSMaxStale, MinRefreshInterval: DefaultJWKSMinRefresh, Now: cfg.Now,
		})
	}
	jv, err := jose.NewVerifier(keys, jose.AccessTokenOptions(cfg.Issuer, cfg.ClockSkew, cfg.Now))
	if err != nil {
		return nil, err
	}
	v.jv = jv
	if v.size > 0 {
		v.cache = make(map[[32]byte]entry)
	}
	return v, nil
}

// SetRevocations installs the revocation set, typically once the service has
// dialled the token service. From then on tokens are refused while it is not
// Ready. Without it, a revoked token works until it expires.
func (v *Verifier) SetRevocations(r Revocations) {
	v.mu.Lock()
	v.revs = r
	v.mu.Unlock()
}

// Follow follows the token service's revocation feed restricted to
// urn:mcpid:admin (src is a tokenv1.TokenServiceClient over the service's
// token connection), installs it with SetRevocations and returns the task
// that keeps it current (a Setup background task). A revoked operator login
// is then refused within a second; while the feed is not current, every
// operator token is (fail closed).
func (v *Verifier) Follow(src revocationfeed.Source, log *slog.Logger, now func() time.Time) (func(context.Context) error, error) {
	f, err := revocationfeed.New(revocationfeed.Config{Source: src, Resource: principal.AdminAudience, Logger: log, Now: now})
	if err != nil {
		return nil, err
	}
	v.SetRevocations(f)
	return f.Run, nil
}

// Close releases the JWKS fetcher's idle connections.
func (v *Verifier) Close() {
	if v.closer != nil {
		v.closer()
	}
}

// claims is the payload of an operator token, as far as it is read here.
type claims struct {
	jose.RegisteredClaims
	ClientID string   `json:"client_id"`
	Scope    string   `json:"scope"`
	GrantID  string   `json:"grant_id"`
	Roles    []string `json:"roles"`
}

// Verify implements principal.TokenVerifier. It returns ErrNotAdmin
// (wrapped) for a valid token of another audience.
func (v *Verifier) Verify(ctx context.Context, raw string) (principal.Claims, error) {
	now := v.now()
	h := sha256.Sum256([]byte(raw))
	if e, ok := v.cached(h, now); ok {
		if err := v.checkRevoked(e.token); err != nil {
			return principal.Claims{}, err
		}
		return e.claims, nil
	}
	var c claims
	if _, err := v.jv.Verify(ctx, raw, &c); err != nil {
		return principal.Claims{}, fmt.Errorf("operator token: %w", err)
	}
	if len(c.Audience) != 1 || c.Audience[0] != principal.AdminAudience {
		return principal.Claims{}, ErrNotAdmin
	}
	if c.Subject == "" || c.ID == "" || c.IssuedAt == nil || c.Expiry == nil {
		return principal.Claims{}, fmt.Errorf("%w: sub, jti, iat and exp are required", ErrClaims)
	}
	tok := revocationfeed.Token{
		JTI: c.ID, GrantID: c.GrantID, Subject: c.Subject, ClientID: c.ClientID,
		Audience: []string{principal.AdminAudience}, IssuedAt: c.IssuedAt.Time(),
	}
	if err := v.checkRevoked(tok); err != nil {
		return principal.Claims{}, err
	}
	out := principal.Claims{
		Audience: []string{principal.AdminAudience}, Subject: c.Subject, ClientID: c.ClientID,
		Scope: c.Scope, Roles: append([]string(nil), c.Roles...),
	}
	v.store(h, entry{claims: out, token: tok, expires: c.Expiry.Time().Add(v.skew), until: now.Add(v.cacheAge)}, now)
	return out, nil
}

func (v *Verifier) checkRevoked(t revocationfeed.Token) error {
	v.mu.Lock()
	r := v.revs
	v.mu.Unlock()
	if r == nil {
		return nil
	}
	// An unsynced or silent set cannot vouch for the token: fail closed.
	if !r.Ready() || r.Revoked(t) {
		return ErrRevoked
	}
	return nil
}

func (v *Verifier) cached(h [32]byte, now time.Time) (entry, bool) {
	if v.size == 0 {
		return entry{}, false
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	e, ok := v.cache[h]
	if !ok {
		return entry{}, false
	}
	if !now.Before(e.expires) || !now.Before(e.until) {
		delete(v.cache, h)
		return entry{}, false
	}
	return e, true
}

func (v *Verifier) store(h [32]byte, e entry, now time.Time) {
	if v.size == 0 {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.cache) >= v.size {
		// Drop what has expired; if that frees nothing, start over — the
		// cache only saves signature checks, and operators are few.
		for k, old := range v.cache {
			if !now.Before(old.expires) || !now.Before(old.until) {
				delete(v.cache, k)
			}
		}
		if len(v.cache) >= v.size {
			clear(v.cache)
		}
	}
	v.cache[h] = e
}

// ClaimsAdminAudience reports whether raw's payload, NOT verified, names
// exactly the audience urn:mcpid:admin. A service that accepts several
// reserved audiences routes a token to the one verifier that can accept it
// with it, so a token's signature is checked once; the chosen verifier
// still checks everything, the audience included.
func ClaimsAdminAudience(raw string) bool {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 || len(parts[1]) > jose.DefaultMaxTokenSize {
		return false
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return false
	}
	var p struct {
		Aud jose.Audience `json:"aud"`
	}
	if json.Unmarshal(b, &p) != nil {
		return false
	}
	return len(p.Aud) == 1 && p.Aud[0] == principal.AdminAudience
}
