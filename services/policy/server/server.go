// Package server wires the policy service: tool-level scope and condition checks that MCP servers call.
// It follows the shared lifecycle: Config → Complete → Run.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/grpc"

	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	"github.com/mcpid/mcpid/lib/admintoken"
	"github.com/mcpid/mcpid/lib/etcdstore"
	"github.com/mcpid/mcpid/lib/jose"
	"github.com/mcpid/mcpid/lib/revocationfeed"
	libserver "github.com/mcpid/mcpid/lib/server"
	"github.com/mcpid/mcpid/lib/service"
	"github.com/mcpid/mcpid/services/policy/internal/api"
	"github.com/mcpid/mcpid/services/policy/internal/condition"
	"github.com/mcpid/mcpid/services/policy/internal/decision"
	"github.com/mcpid/mcpid/services/policy/internal/document"
	"github.com/mcpid/mcpid/services/policy/internal/store"
	"github.com/mcpid/mcpid/services/policy/internal/tokens"
)

// Name is the service's name in health checks, logs and certificates.
const Name = "policy"

// DefaultIssuer is the issuer `mcpid dev` serves.
const DefaultIssuer = "http://127.0.0.1:8080"

// JWKSPath is where the token service publishes its JWKS under the issuer.
const JWKSPath = "/oauth2/jwks"

// Config is the policy service's configuration.
type Config struct {
	service.Flags
	// GatewayTLS is the client TLS config of the in-process REST gateway when
	// gRPC is served with TLS (no client certificate).
	GatewayTLS *tls.Config
	// LogOutput receives JSON logs; default io.Discard.
	LogOutput io.Writer

	// Issuer is the required `iss` of access tokens.
	Issuer string
	// JWKSURL is where verification keys are fetched; empty means the
	// issuer's JWKSPath.
	JWKSURL string
	// JWKSMaxAge is how often the JWKS is fetched again.
	JWKSMaxAge time.Duration
	// JWKSMaxStale is how long the last good JWKS is used while fetches
	// fail; beyond it checks answer NOT_READY.
	JWKSMaxStale time.Duration
	// ClockSkew is the leeway for exp, nbf and iat.
	ClockSkew time.Duration
	// TokenCacheSize bounds the verified-token cache.
	TokenCacheSize int
	// DecisionCacheTTL bounds the cache_ttl of decisions.
	DecisionCacheTTL time.Duration
	// CELCostLimit bounds conditions (estimated on write, actual at check).
	CELCostLimit uint64
	// AuditAllowSampleEvery sends one ALLOW decision in N to audit, with
	// sample_weight N; 0 or 1 sends every one. Denials and allows of
	// destructive tools are always sent.
	AuditAllowSampleEvery int
	// AuditStrict waits for audit to acknowledge each decision event and
	// denies an allow it did not.
	AuditStrict bool

	// TokenAddr is the token service's gRPC address: the policy service
	// follows its revocation feed and denies revoked tokens. Empty: no
	// revocation feed (revoked tokens are accepted until they expire).
	TokenAddr string
	// RevocationMaxSilence is how long the feed may stay silent before checks
	// answer NOT_READY; 0 means the follower's default (15s).
	RevocationMaxSilence time.Duration

	// KeySource, when set, replaces the JWKS fetch (tests, embedding).
	KeySource jose.KeySource
	// Revocations is the revocation set; nil means none yet (the token
	// service's feed is wired in by its own issue).
	Revocations tokens.Revocations
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// RegisterFlags defines the service's settings on fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.Flags.Register(fs, service.Defaults{GRPCAddr: "127.0.0.1:7003", HTTPAddr: "127.0.0.1:7103"})
	fs.StringVar(&c.Issuer, "issuer", DefaultIssuer, "issuer URL: the required iss of access tokens")
	fs.StringVar(&c.JWKSURL, "jwks-url", "", "JWKS URL of the token service; empty means <issuer>"+JWKSPath)
	fs.DurationVar(&c.JWKSMaxAge, "jwks-max-age", jose.DefaultMaxAge, "how often the JWKS is fetched again")
	fs.DurationVar(&c.JWKSMaxStale, "jwks-max-stale", jose.DefaultMaxStale, "how long the last good JWKS is used while fetches fail")
	fs.DurationVar(&c.ClockSkew, "clock-skew", tokens.DefaultClockSkew, "leeway for token exp, nbf and iat")
	fs.IntVar(&c.TokenCacheSize, "token-cache-size", tokens.DefaultCacheSize, "verified access tokens kept in memory (by hash, until expiry)")
	fs.DurationVar(&c.DecisionCacheTTL, "decision-cache-ttl", decision.DefaultMaxCacheTTL, "longest cache_ttl a decision carries")
	fs.Uint64Var(&c.CELCostLimit, "cel-cost-limit", condition.DefaultCostLimit, "cost limit of a condition, estimated on write and enforced at check")
	fs.IntVar(&c.AuditAllowSampleEvery, "audit-allow-sample-every", 1, "send one ALLOW decision in N to audit (weighted N); denials and destructive tools are always sent")
	fs.StringVar(&c.TokenAddr, "token-addr", "", "token service gRPC address: the revocation feed this service follows (empty: revoked tokens are accepted until they expire)")
	fs.DurationVar(&c.RevocationMaxSilence, "revocation-max-silence", revocationfeed.DefaultMaxSilence, "how long the revocation feed may stay silent before checks answer NOT_READY")
	fs.BoolVar(&c.AuditStrict, "audit-strict", false, "wait for audit to acknowledge every decision event; an unacknowledged allow becomes a denial")
}

// withDefaults fills what a Config built in code (mcpid dev, tests) leaves
// zero, and checks the settings.
func (c Config) withDefaults() (Config, error) {
	if c.Issuer == "" {
		c.Issuer = DefaultIssuer
	}
	if c.JWKSURL == "" {
		c.JWKSURL = strings.TrimRight(c.Issuer, "/") + JWKSPath
	}
	if c.JWKSMaxAge <= 0 {
		c.JWKSMaxAge = jose.DefaultMaxAge
	}
	if c.JWKSMaxStale <= 0 {
		c.JWKSMaxStale = jose.DefaultMaxStale
	}
	if c.ClockSkew == 0 {
		c.ClockSkew = tokens.DefaultClockSkew
	}
	if c.TokenCacheSize == 0 {
		c.TokenCacheSize = tokens.DefaultCacheSize
	}
	if c.DecisionCacheTTL <= 0 {
		c.DecisionCacheTTL = decision.DefaultMaxCacheTTL
	}
	if c.CELCostLimit == 0 {
		c.CELCostLimit = condition.DefaultCostLimit
	}
	if c.AuditAllowSampleEvery < 0 {
		return c, fmt.Errorf("setting audit-allow-sample-every: %d is negative", c.AuditAllowSampleEvery)
	}
	if c.AuditAllowSampleEvery == 0 {
		c.AuditAllowSampleEvery = 1
	}
	if c.ClockSkew < 0 || c.ClockSkew > 5*time.Minute {
		return c, fmt.Errorf("setting clock-skew: %v is not between 0 and 5m", c.ClockSkew)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.RevocationMaxSilence < 0 {
		return c, fmt.Errorf("setting revocation-max-silence: %v is negative", c.RevocationMaxSilence)
	}
	if c.Revocations == nil && c.TokenAddr != "" {
		c.Revocations = &tokens.FeedRevocations{}
	}
	if c.Revocations == nil {
		c.Revocations = tokens.NoRevocations{}
	}
	return c, nil
}

// Complete opens the service's dependencies and listeners.
func (c Config) Complete(ctx context.Context) (*service.Server, error) {
	c, err := c.withDefaults()
	if err != nil {
		return nil, err
	}
	keys := c.KeySource
	keysReady := func() bool { return true }
	var remote *tokens.RemoteKeys
	if keys == nil {
		remote, err = tokens.NewRemoteKeys(tokens.RemoteKeysConfig{URL: c.JWKSURL, MaxAge: c.JWKSMaxAge, MaxStale: c.JWKSMaxStale})
		if err != nil {
			return nil, err
		}
		keys, keysReady = remote, remote.Ready
	}
	tokenCfg := tokens.Config{
		Keys:      keys,
		Issuer:    c.Issuer,
		ClockSkew: c.ClockSkew,
		CacheSize: c.TokenCacheSize,
		Now:       c.Now,
	}
	callers, err := tokens.NewCallerVerifier(tokens.Config{Keys: keys, Issuer: c.Issuer, ClockSkew: c.ClockSkew, Now: c.Now}, c.Revocations)
	if err != nil {
		return nil, fmt.Errorf("setting issuer: %w", err)
	}
	// Operator tokens share the JWKS this service holds in memory.
	operators, err := admintoken.New(admintoken.Config{Issuer: c.Issuer, Keys: keys, ClockSkew: c.ClockSkew, Now: c.Now})
	if err != nil {
		return nil, err
	}
	if _, none := c.Revocations.(tokens.NoRevocations); !none {
		operators.SetRevocations(adminRevocations{c.Revocations})
	}
	return service.New(ctx, service.Spec{
		Name:       Name,
		Flags:      c.Flags,
		GatewayTLS: c.GatewayTLS,
		LogOutput:  c.LogOutput,
		Methods:    methodPolicy(),
		Verifier:   callerVerifier{operators: operators, servers: callers},
		Setup: func(ctx context.Context, b *service.Base) (*service.Setup, error) {
			return c.setup(ctx, b, tokenCfg, remote, keysReady)
		},
	})
}

// setup builds the service's domain on what service.Open opened.
func (c Config) setup(_ context.Context, b *service.Base, tokenCfg tokens.Config, remote *tokens.RemoteKeys, keysReady func() bool) (*service.Setup, error) {
	prefix, err := etcdstore.NewPrefix(Name)
	if err != nil {
		return nil, err
	}
	env, err := condition.NewEnv(c.CELCostLimit)
	if err != nil {
		return nil, err
	}
	st := store.NewEtcd(b.Etcd, prefix, b.Outbox)
	index, err := store.NewIndex(b.Etcd, st.Prefix(), env, b.Logger)
	if err != nil {
		return nil, err
	}
	verifier, err := tokens.NewVerifier(tokenCfg)
	if err != nil {
		return nil, err
	}
	engine := decision.New(decision.Config{
		Policies:    index,
		Tokens:      verifier,
		Revocations: c.Revocations,
		Clients:     decision.TokenClaims{},
		KeysReady:   keysReady,
		MaxCacheTTL: c.DecisionCacheTTL,
		Now:         c.Now,
	})
	batcher, err := b.NewBatcher(c.AuditStrict)
	if err != nil {
		return nil, fmt.Errorf("audit emitter: %w", err)
	}
	srv := api.New(api.Config{
		Store:            st,
		Index:            index,
		Engine:           engine,
		Env:              env,
		Validator:        document.NewValidator(env),
		Batcher:          batcher,
		StrictAudit:      c.AuditStrict,
		AllowSampleEvery: c.AuditAllowSampleEvery,
		Logger:           b.Logger,
		Now:              c.Now,
	})
	background := []func(context.Context) error{index.Run}
	ready := []libserver.Check{func(context.Context) error {
		if !index.Ready() {
			return errors.New("policy cache not synced")
		}
		return nil
	}}
	if feed, ok := c.Revocations.(*tokens.FeedRevocations); ok && c.TokenAddr != "" {
		// Not a readiness check: the token service follows this service's
		// scope catalogues, so readiness must not wait for it (mcpid dev
		// starts policy first). Checks answer NOT_READY until the feed is
		// current.
		run, err := c.followRevocations(b, feed)
		if err != nil {
			return nil, err
		}
		background = append(background, run)
	} else {
		b.Logger.Warn("no token-addr: revoked tokens are accepted until they expire")
	}
	if remote != nil {
		remote.SetLogger(b.Logger)
		background = append(background, remote.Run)
	}
	return &service.Setup{
		Register:   func(s *grpc.Server) { policyv1.RegisterPolicyServiceServer(s, srv) },
		Background: background,
		// Ready once every policy is in memory: before that Check could only
		// answer NOT_READY, so load balancers should send traffic elsewhere.
		Ready: ready,
		Close: func(ctx context.Context) error {
			if remote != nil {
				remote.Close()
			}
			if batcher == nil {
				return nil
			}
			return batcher.Close(ctx)
		},
	}, nil
}
