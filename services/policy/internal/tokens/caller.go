package tokens

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mcpid/mcpid/lib/jose"
	"github.com/mcpid/mcpid/lib/principal"
)

// Claims of caller tokens that lib/principal reads.
const (
	// ClaimResource binds an `aud=urn:mcpid:policy` token to the canonical
	// resource URI of the MCP server it authenticates.
	ClaimResource = "resource"
	// ClaimRoles lists an operator's roles in an `aud=urn:mcpid:admin`
	// token.
	ClaimRoles = "roles"
)

// CallerVerifier is the principal.TokenVerifier of the policy service: it
// verifies the bearer tokens MCP servers (aud=urn:mcpid:policy) and
// operators (aud=urn:mcpid:admin) call with, exactly as access tokens are
// verified (signature, typ at+jwt, iss, time, revocation), leaving the
// audience to the principal interceptor, which accepts only those two.
type CallerVerifier struct {
	jv          *jose.Verifier
	revocations Revocations
	cache       *cache[callerEntry]
	now         func() time.Time
	skew        time.Duration
	maxAge      time.Duration
}

type callerEntry struct {
	claims principal.Claims
	token  *Token
}

var _ principal.TokenVerifier = (*CallerVerifier)(nil)

// NewCallerVerifier returns the caller verifier; revocations may be nil.
func NewCallerVerifier(cfg Config, revocations Revocations) (*CallerVerifier, error) {
	if cfg.ClockSkew == 0 {
		cfg.ClockSkew = DefaultClockSkew
	}
	if cfg.MaxCacheAge <= 0 {
		cfg.MaxCacheAge = DefaultMaxCacheAge
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Issuer == "" {
		return nil, errors.New("tokens: an issuer is required")
	}
	if revocations == nil {
		revocations = NoRevocations{}
	}
	jv, err := jose.NewVerifier(cfg.Keys, jose.AccessTokenOptions(cfg.Issuer, cfg.ClockSkew, cfg.Now))
	if err != nil {
		return nil, err
	}
	size := cfg.CacheSize
	if size == 0 {
		size = 1024 // callers are few: MCP servers and operators
	}
	c := &CallerVerifier{jv: jv, revocations: revocations, now: cfg.Now, skew: cfg.ClockSkew, maxAge: cfg.MaxCacheAge}
	if size > 0 {
		c.cache = newCache[callerEntry](size)
	}
	return c, nil
}

var errRevoked = errors.New("token revoked")

// Verify implements principal.TokenVerifier. Errors never contain the
// token or its claims.
func (c *CallerVerifier) Verify(ctx context.Context, raw string) (principal.Claims, error) {
	now := c.now()
	var h [32]byte
	if c.cache != nil {
		h = hashToken(raw)
		if e, ok := c.cache.get(h, now); ok {
			if !c.revocations.Ready() || c.revocations.Revoked(e.token) {
				return principal.Claims{}, errRevoked
			}
			return e.claims, nil
		}
	}
	var m map[string]any
	if _, err := c.jv.Verify(ctx, raw, &m); err != nil {
		return principal.Claims{}, fmt.Errorf("caller token: %w", err)
	}
	t, why := parseClaims(m)
	if t == nil {
		return principal.Claims{}, fmt.Errorf("caller token: %s", why)
	}
	// An unsynced revocation set cannot vouch for the token: fail closed.
	if !c.revocations.Ready() || c.revocations.Revoked(t) {
		return principal.Claims{}, errRevoked
	}
	claims := principal.Claims{
		Audience: t.Audience,
		Subject:  t.Subject,
		ClientID: t.ClientID,
		Scope:    joinScopes(m),
	}
	if r, ok := m[ClaimResource].(string); ok {
		claims.Resource = r
	}
	if roles, ok := m[ClaimRoles].([]any); ok {
		for _, r := range roles {
			if s, ok := r.(string); ok {
				claims.Roles = append(claims.Roles, s)
			}
		}
	}
	if c.cache != nil {
		c.cache.put(h, callerEntry{claims: claims, token: t}, minTime(t.Expiry.Add(c.skew), now.Add(c.maxAge)), now)
	}
	return claims, nil
}

func joinScopes(m map[string]any) string {
	s, _ := m["scope"].(string)
	return s
}
