package mcpguard

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"

	"github.com/mcpid/mcpid/lib/jose"
	"github.com/mcpid/mcpid/lib/resource"
)

// Defaults for Config.
const (
	DefaultPolicyTimeout   = 2 * time.Second
	DefaultMaxCacheTTL     = 30 * time.Second
	DefaultCacheSize       = 10000
	DefaultMaxBodyBytes    = 4 << 20
	DefaultPublishInterval = 2 * time.Second
	// JWKSPath is where mcpid's token service publishes its JWKS under the
	// issuer.
	JWKSPath = "/oauth2/jwks"
	// offlineAccess is an authorization-server scope: it never appears in
	// resource metadata or challenges.
	offlineAccess = "offline_access"
)

// Scope is one scope the server's tools use, as shown on the consent page.
type Scope struct {
	// Name, for example "crm:contacts.read". Never "offline_access" and
	// never an "mcpid:" scope.
	Name string
	// Description shown to the user on the consent page (required).
	Description string
	// Sensitive marks the scope on the consent page.
	Sensitive bool
	// Implies lists scopes granted along with this one.
	Implies []string
}

// Condition is a CEL condition of a tool (see the policy service's
// Condition: variables token, scopes, groups, client, tool, arguments, now).
type Condition struct {
	Expression string
	// Message is returned to the agent when the condition is false.
	Message string
}

// Tool is the rule for one MCP tool, published in the manifest.
type Tool struct {
	// Name exactly as registered with the MCP server.
	Name        string
	Description string
	// Scopes the token must hold (directly or by implication).
	Scopes []string
	// Conditions that must all hold.
	Conditions []Condition
	// Destructive marks tools that change or delete data.
	Destructive bool
	// RequireVerifiedClient allows only clients whose verification status is
	// VERIFIED.
	RequireVerifiedClient bool
}

// Revocations is what the guard needs from the token service's revocation
// feed. Config.Token gives the guard its own (lib/revocationfeed's Follower
// of this resource); implement it only to replace that.
type Revocations interface {
	// Ready reports whether the feed is synced and not silent too long;
	// while it is false every request is refused with 503 (fail closed).
	Ready() bool
	// Revoked reports whether the token has been revoked.
	Revoked(t TokenRef) bool
}

// TokenRef identifies an access token to the revocation feed. Its fields
// are those of lib/revocationfeed.Token, in the same order, so that one
// converts to the other.
type TokenRef struct {
	JTI, GrantID, Subject, ClientID string
	Audience                        []string
	IssuedAt                        time.Time
}

// Config configures a Guard.
type Config struct {
	// Resource is the canonical URL of the MCP endpoint (the token
	// audience), for example https://crm.example.com/mcp. Required.
	Resource string
	// Issuer is the mcpid issuer URL (the authorization server). Required.
	Issuer string
	// JWKSURL is where verification keys are fetched; default
	// Issuer + JWKSPath.
	JWKSURL string
	// KeySource replaces the JWKS fetch (tests, embedding).
	KeySource jose.KeySource
	// Policy is a connection to the policy service authenticated as this
	// resource (mTLS MCP-server certificate, or per-RPC credentials carrying
	// a client_credentials token with aud=urn:mcpid:policy). One connection
	// is shared by every request. Required.
	Policy grpc.ClientConnInterface
	// Token is a connection to the token service authenticated as this
	// resource (the same mTLS MCP-server certificate as Policy). When set,
	// Run follows the token service's revocation feed for Resource, and a
	// token whose grant, jti, user, client or resource was revoked is
	// refused with 401 invalid_token on every request, within the feed's
	// propagation delay. Until the feed is listed (before Run, or while it
	// is silent longer than revocationfeed.DefaultMaxSilence) every request
	// is refused with 503 (fail closed).
	Token grpc.ClientConnInterface
	// Revocations overrides the feed Token would give (embedding, tests).
	// With neither, revocation is left to the policy service, which checks
	// it on tools/call only — and a cached ALLOW lives up to MaxCacheTTL.
	Revocations Revocations

	// DisplayName and ServerVersion go into the manifest.
	DisplayName   string
	ServerVersion string
	// Scopes and Tools are the manifest, declared in code.
	Scopes []Scope
	Tools  []Tool
	// ChallengeScopes are the scopes a 401 challenge asks for (what a client
	// needs for a first session). Default: every non-sensitive scope of the
	// manifest.
	ChallengeScopes []string

	// PolicyTimeout bounds one policy call; default DefaultPolicyTimeout.
	// When the policy service does not answer in time the call is refused.
	PolicyTimeout time.Duration
	// MaxCacheTTL caps how long a decision is reused (the policy service's
	// cache_ttl is honoured up to this); default DefaultMaxCacheTTL. A
	// negative value disables the cache.
	MaxCacheTTL time.Duration
	// CacheSize bounds the number of cached decisions; default
	// DefaultCacheSize.
	CacheSize int
	// MaxBodyBytes bounds a request body; default DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// ClockSkew tolerated on exp/nbf/iat; default lib/jose's.
	ClockSkew time.Duration

	Logger *slog.Logger
	Now    func() time.Time
}

func (c Config) withDefaults() (Config, error) {
	var errs []error
	canon, err := resource.Canonicalize(c.Resource)
	if err != nil {
		errs = append(errs, fmt.Errorf("mcpguard: Resource: %w", err))
	} else if canon != c.Resource {
		errs = append(errs, fmt.Errorf("mcpguard: Resource %q is not canonical (want %q)", c.Resource, canon))
	}
	if c.Issuer == "" {
		errs = append(errs, errors.New("mcpguard: Issuer is required"))
	}
	if c.Policy == nil {
		errs = append(errs, errors.New("mcpguard: Policy (a connection to the policy service) is required"))
	}
	for _, s := range c.Scopes {
		if s.Name == offlineAccess || strings.HasPrefix(s.Name, "mcpid:") {
			errs = append(errs, fmt.Errorf("mcpguard: scope %q is reserved", s.Name))
		}
	}
	if len(errs) > 0 {
		return c, errors.Join(errs...)
	}
	if c.JWKSURL == "" {
		c.JWKSURL = strings.TrimRight(c.Issuer, "/") + JWKSPath
	}
	if c.PolicyTimeout <= 0 {
		c.PolicyTimeout = DefaultPolicyTimeout
	}
	if c.MaxCacheTTL == 0 {
		c.MaxCacheTTL = DefaultMaxCacheTTL
	}
	if c.CacheSize <= 0 {
		c.CacheSize = DefaultCacheSize
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.ChallengeScopes == nil {
		for _, s := range c.Scopes {
			if !s.Sensitive {
				c.ChallengeScopes = append(c.ChallengeScopes, s.Name)
			}
		}
	}
	c.ChallengeScopes = slices.DeleteFunc(slices.Clone(c.ChallengeScopes), func(s string) bool { return s == offlineAccess })
	return c, nil
}

// scopesSupported is the RFC 9728 scopes_supported list: the manifest's
// scopes, sorted, never offline_access.
func (c Config) scopesSupported() []string {
	out := make([]string, 0, len(c.Scopes))
	for _, s := range c.Scopes {
		out = append(out, s.Name)
	}
	slices.Sort(out)
	return slices.Compact(out)
}
