package mcpguard

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mcpid/mcpid/lib/fetch"
	"github.com/mcpid/mcpid/lib/jose"
)

// Caller is who is calling a tool: what the verified access token says.
type Caller struct {
	// Subject is the token's `sub`: the user id, or the client id for a
	// client_credentials token.
	Subject string
	// ClientID is the agent (OAuth client) the token was issued to.
	ClientID string
	// Scopes are the granted scopes (the `scope` claim), sorted.
	Scopes []string
	// Groups are the user's groups (the `groups` claim), if any.
	Groups []string
	// GrantID is the grant the token belongs to.
	GrantID string
	// TokenID is the token's `jti`.
	TokenID string
	// Expiry is the token's `exp`.
	Expiry time.Time

	token string // the raw token, for the policy service only
}

// HasScope reports whether the token was granted scope s (directly; the
// policy service also applies implications when it decides tool calls).
func (c *Caller) HasScope(s string) bool { return slices.Contains(c.Scopes, s) }

// accessClaims are the RFC 9068 claims mcpid's access tokens carry.
type accessClaims struct {
	jose.RegisteredClaims
	ClientID string   `json:"client_id"`
	Scope    string   `json:"scope"`
	GrantID  string   `json:"grant_id"`
	Groups   []string `json:"groups"`
}

// Errors of local verification. errUnavailable is not the token's fault.
var (
	errTokenInvalid = errors.New("mcpguard: access token invalid")
	errTokenRevoked = errors.New("mcpguard: access token revoked")
	errUnavailable  = errors.New("mcpguard: cannot verify tokens now")
)

// tokenVerifier verifies access tokens locally.
type tokenVerifier struct {
	jose        *jose.Verifier
	resource    string
	revocations Revocations
	closer      func()
}

func newTokenVerifier(c Config) (*tokenVerifier, error) {
	keys := c.KeySource
	var closer func()
	if keys == nil {
		// JWKSURL is the operator's setting, not something a caller chose:
		// the fetcher trusts exactly its host and port.
		f, err := fetch.NewPinned(c.JWKSURL)
		if err != nil {
			return nil, fmt.Errorf("mcpguard: JWKSURL: %w", err)
		}
		closer = f.Close
		keys = jose.NewKeySetCache(f, c.JWKSURL, jose.CacheOptions{MinRefreshInterval: 5 * time.Second, Now: c.Now})
	}
	v, err := jose.NewVerifier(keys, jose.VerifierOptions{
		Type:      jose.AccessTokenType,
		Issuer:    c.Issuer,
		Audience:  c.Resource,
		ClockSkew: c.ClockSkew,
		Now:       c.Now,
	})
	if err != nil {
		return nil, fmt.Errorf("mcpguard: %w", err)
	}
	return &tokenVerifier{jose: v, resource: c.Resource, revocations: c.Revocations, closer: closer}, nil
}

// verify checks token and returns its caller.
func (v *tokenVerifier) verify(ctx context.Context, token string) (*Caller, error) {
	if v.revocations != nil && !v.revocations.Ready() {
		return nil, fmt.Errorf("%w: revocation feed not ready", errUnavailable)
	}
	var cl accessClaims
	if _, err := v.jose.Verify(ctx, token, &cl); err != nil {
		if errors.Is(err, jose.ErrKeySetUnavailable) {
			return nil, fmt.Errorf("%w: %w", errUnavailable, err)
		}
		return nil, fmt.Errorf("%w: %w", errTokenInvalid, err)
	}
	// Strict audience binding (RFC 8707): exactly this resource.
	if len(cl.Audience) != 1 || cl.Audience[0] != v.resource {
		return nil, fmt.Errorf("%w: audience %v", errTokenInvalid, []string(cl.Audience))
	}
	if cl.Subject == "" || cl.ClientID == "" || cl.Expiry == nil {
		return nil, fmt.Errorf("%w: sub, client_id or exp missing", errTokenInvalid)
	}
	c := &Caller{
		Subject:  cl.Subject,
		ClientID: cl.ClientID,
		Scopes:   strings.Fields(cl.Scope),
		Groups:   cl.Groups,
		GrantID:  cl.GrantID,
		TokenID:  cl.ID,
		Expiry:   cl.Expiry.Time(),
		token:    token,
	}
	slices.Sort(c.Scopes)
	if v.revocations != nil {
		ref := TokenRef{JTI: cl.ID, GrantID: cl.GrantID, Subject: cl.Subject, ClientID: cl.ClientID, Audience: cl.Audience}
		if cl.IssuedAt != nil {
			ref.IssuedAt = cl.IssuedAt.Time()
		}
		if v.revocations.Revoked(ref) {
			return nil, errTokenRevoked
		}
	}
	return c, nil
}

func (v *tokenVerifier) close() {
	if v.closer != nil {
		v.closer()
	}
}
