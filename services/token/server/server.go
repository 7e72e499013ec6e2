// Package server wires the token service: the OAuth 2.1 authorization server: metadata, authorize, token, revocation, introspection, consent and grants.
// It follows the shared lifecycle: Config → Complete → Run.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/lib/config"
	"github.com/mcpid/mcpid/lib/fetch"
	"github.com/mcpid/mcpid/lib/jose"
	"github.com/mcpid/mcpid/lib/principal"
	"github.com/mcpid/mcpid/lib/resource"
	libserver "github.com/mcpid/mcpid/lib/server"
	"github.com/mcpid/mcpid/lib/service"
	"github.com/mcpid/mcpid/lib/srcaddr"
	"github.com/mcpid/mcpid/services/token/internal/accesstoken"
	"github.com/mcpid/mcpid/services/token/internal/catalog"
	"github.com/mcpid/mcpid/services/token/internal/clients"
	"github.com/mcpid/mcpid/services/token/internal/directory"
	"github.com/mcpid/mcpid/services/token/internal/events"
	"github.com/mcpid/mcpid/services/token/internal/grpcapi"
	"github.com/mcpid/mcpid/services/token/internal/kek"
	"github.com/mcpid/mcpid/services/token/internal/keyring"
	"github.com/mcpid/mcpid/services/token/internal/oauth"
	"github.com/mcpid/mcpid/services/token/internal/revocation"
	"github.com/mcpid/mcpid/services/token/internal/sso"
	"github.com/mcpid/mcpid/services/token/internal/store"
	"github.com/mcpid/mcpid/services/token/internal/web"
)

// Name is the service's name in health checks, logs and certificates.
const Name = "token"

// Defaults of the service's own settings. A zero field in Config means its
// default, so a Config built in code (as `mcpid dev` does) gets these.
const (
	DefaultIssuer               = "http://127.0.0.1:8080"
	DefaultSigningAlg           = jose.ES256
	DefaultAccessTokenTTL       = 5 * time.Minute
	DefaultCodeTTL              = 60 * time.Second
	DefaultRevocationClockSkew  = 2 * time.Second
	DefaultAuthRequestTTL       = 10 * time.Minute
	DefaultSessionTTL           = 12 * time.Hour
	DefaultGrantLifetime        = 30 * 24 * time.Hour
	DefaultJWKSMaxAge           = 5 * time.Minute
	DefaultLockoutThreshold     = 5
	DefaultLockoutDuration      = 15 * time.Minute
	DefaultLoginRatePerMinute   = 30
	DefaultLoginRateBurst       = 10
	DefaultAccountRatePerMinute = 10
	DefaultAccountRateBurst     = 5
	DefaultRefreshTokenIssuance = oauth.RefreshOfflineAccess
	maxAccessTokenTTL           = 24 * time.Hour
	seedRetryMaxBackoff         = 5 * time.Second
)

// Config is the token service's configuration.
type Config struct {
	service.Flags
	// GatewayTLS is the client TLS config of the in-process REST gateway when
	// gRPC is served with TLS (no client certificate).
	GatewayTLS *tls.Config
	// LogOutput receives JSON logs; default io.Discard.
	LogOutput io.Writer

	// Issuer is the public origin and `iss` of every token.
	Issuer string
	// KEKFile holds the versioned key-encryption keys that seal signing
	// keys in etcd. Empty: a per-process key (development only; keys are
	// replaced at every restart).
	KEKFile config.SecretFile
	// RegistrationAddr and PolicyAddr are the gRPC addresses of the
	// registration and policy services (empty: none configured).
	RegistrationAddr string
	PolicyAddr       string
	// SigningAlg is ES256 (default) or EdDSA.
	SigningAlg string
	// AccessTokenTTL is the default access token lifetime;
	// AccessTokenTTLByResource overrides it ("<resource>=<duration>").
	AccessTokenTTL           time.Duration
	AccessTokenTTLByResource config.StringList
	CodeTTL                  time.Duration
	AuthRequestTTL           time.Duration
	SessionTTL               time.Duration
	// GrantLifetime bounds a refresh token family.
	GrantLifetime time.Duration
	// RefreshGrace accepts the previous refresh token this long after a
	// rotation (0: never).
	RefreshGrace time.Duration
	// RevocationClockSkew is the clock difference between replicas that a
	// revocation watermark tolerates (0: the default).
	RevocationClockSkew time.Duration
	// RefreshTokenIssuance is "offline_access" (default) or "registered".
	RefreshTokenIssuance string
	JWKSMaxAge           time.Duration
	// NoRegistrationEndpoint leaves registration_endpoint out of the
	// metadata (dynamic registration disabled).
	NoRegistrationEndpoint bool
	ServiceDocumentation   string
	// Login throttling (negative rate: no limit).
	LockoutThreshold     int
	LockoutDuration      time.Duration
	LoginRatePerMinute   float64
	LoginRateBurst       int
	AccountRatePerMinute float64
	AccountRateBurst     int
	// PasswordHashConcurrency bounds argon2id hashes running at once.
	PasswordHashConcurrency int
	// TrustedProxies are the proxies whose X-Forwarded-For entries count.
	TrustedProxies config.StringList
	// SeedUser and SeedPasswordFile create a built-in user with the admin
	// role at start-up when no user has that username (development).
	SeedUser         string
	SeedPasswordFile config.SecretFile
	// AuditStrict waits for audit to acknowledge each client_credentials
	// issuance event.
	AuditStrict bool
	// ConnectorsFile seeds identity connectors at start-up (YAML, see
	// docs/sso.md); connectors that exist are left as they are.
	ConnectorsFile config.SecretFile
	// ConnectorSecretsDir is the directory whose files the admin API may
	// name as a connector's client_secret_file (empty: none; the API then
	// takes client_secret, sealed with the KEK).
	ConnectorSecretsDir string
	// NoPasswordLogin turns the built-in directory's username and password
	// form off (every user signs in through a connector).
	NoPasswordLogin bool
	// ConnectorFetch replaces the fetcher policy of connector discovery,
	// keys and token endpoints (tests: loopback http issuers). Not a
	// setting.
	ConnectorFetch *fetch.Config
	// SigningKeyRotation is how long a signing key signs before the elected
	// replica publishes its successor (negative: only RotateSigningKey).
	SigningKeyRotation time.Duration

	// Argon2 replaces the password hashing parameters (tests). Not a
	// setting.
	Argon2 *directory.Argon2Params
	// Now is the clock (tests); nil means time.Now. Not a setting.
	Now func() time.Time
}

// RegisterFlags defines the service's settings on fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.Flags.Register(fs, service.Defaults{GRPCAddr: "127.0.0.1:7002", HTTPAddr: "127.0.0.1:7102"})
	fs.StringVar(&c.Issuer, "issuer", DefaultIssuer, "issuer URL: the public origin and iss of every token (https, or http on a loopback host)")
	fs.Var(&c.KEKFile, "kek-file", "file of versioned key-encryption keys sealing signing keys in etcd (lines <version>:<base64 32 bytes>, first encrypts); empty: a per-process key, development only")
	fs.StringVar(&c.RegistrationAddr, "registration-addr", "", "registration service gRPC address (client resolution and authentication)")
	fs.StringVar(&c.PolicyAddr, "policy-addr", "", "policy service gRPC address (resources and scope catalogues)")
	fs.StringVar(&c.SigningAlg, "signing-alg", DefaultSigningAlg, "access token signing algorithm: ES256 or EdDSA")
	fs.DurationVar(&c.AccessTokenTTL, "access-token-ttl", DefaultAccessTokenTTL, "access token lifetime")
	fs.Var(&c.AccessTokenTTLByResource, "access-token-ttl-by-resource", "per-resource access token lifetimes, comma-separated <resource>=<duration>")
	fs.DurationVar(&c.CodeTTL, "code-ttl", DefaultCodeTTL, "authorization code lifetime")
	fs.DurationVar(&c.AuthRequestTTL, "auth-request-ttl", DefaultAuthRequestTTL, "time a user has to sign in and consent")
	fs.DurationVar(&c.SessionTTL, "session-ttl", DefaultSessionTTL, "browser session lifetime")
	fs.DurationVar(&c.GrantLifetime, "grant-lifetime", DefaultGrantLifetime, "absolute lifetime of a refresh token family")
	fs.DurationVar(&c.RefreshGrace, "refresh-grace", 0, "accept the immediately previous refresh token this long after a rotation (0: never)")
	fs.DurationVar(&c.RevocationClockSkew, "revocation-clock-skew", DefaultRevocationClockSkew, "clock difference between replicas a revocation watermark covers")
	fs.StringVar(&c.RefreshTokenIssuance, "refresh-token-issuance", DefaultRefreshTokenIssuance, "when a refresh token is issued: offline_access (consented) or registered (client has the refresh_token grant)")
	fs.DurationVar(&c.JWKSMaxAge, "jwks-max-age", DefaultJWKSMaxAge, "JWKS cache lifetime advertised to verifiers")
	fs.BoolVar(&c.NoRegistrationEndpoint, "no-registration-endpoint", false, "leave registration_endpoint out of the metadata (dynamic registration disabled)")
	fs.StringVar(&c.ServiceDocumentation, "service-documentation", "", "service_documentation URL advertised in the metadata")
	fs.IntVar(&c.LockoutThreshold, "login-lockout-threshold", DefaultLockoutThreshold, "consecutive failed logins that lock an account (negative: never)")
	fs.DurationVar(&c.LockoutDuration, "login-lockout-duration", DefaultLockoutDuration, "how long a locked account stays locked")
	fs.Float64Var(&c.LoginRatePerMinute, "login-rate-per-minute", DefaultLoginRatePerMinute, "login attempts per minute per source address, per replica (negative: no limit)")
	fs.IntVar(&c.LoginRateBurst, "login-rate-burst", DefaultLoginRateBurst, "login attempt burst per source address")
	fs.Float64Var(&c.AccountRatePerMinute, "login-account-rate-per-minute", DefaultAccountRatePerMinute, "login attempts per minute per username, per replica (negative: no limit)")
	fs.IntVar(&c.AccountRateBurst, "login-account-rate-burst", DefaultAccountRateBurst, "login attempt burst per username")
	fs.IntVar(&c.PasswordHashConcurrency, "password-hash-concurrency", 0, "argon2id hashes running at once (0: number of CPUs)")
	fs.Var(&c.TrustedProxies, "trusted-proxy-cidrs", "proxies whose X-Forwarded-For entries are trusted, comma-separated CIDRs")
	fs.StringVar(&c.SeedUser, "seed-user", "", "create this built-in admin user at start-up if absent (development; needs seed-password-file)")
	fs.Var(&c.SeedPasswordFile, "seed-password-file", "file holding the seed user's password")
	fs.BoolVar(&c.AuditStrict, "audit-strict", false, "wait for audit to acknowledge each client_credentials issuance event")
	fs.Var(&c.ConnectorsFile, "connectors-file", "YAML file of identity connectors created at start-up when absent (docs/sso.md)")
	fs.StringVar(&c.ConnectorSecretsDir, "connector-secrets-dir", "", "directory whose files CreateConnector/UpdateConnector may name as client_secret_file (empty: only the connectors file's own paths)")
	fs.BoolVar(&c.NoPasswordLogin, "no-password-login", false, "turn off the built-in directory's password form (sign-in through connectors only)")
	fs.DurationVar(&c.SigningKeyRotation, "signing-key-rotation", keyring.DefaultRotateEvery, "how long a signing key signs before its successor is published (negative: only on request)")
}

func orDefault[T int | float64 | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// settings are the validated settings.
type settings struct {
	oauth       oauth.Config
	dir         directory.Config
	alg         string
	kek         *kek.Ring
	argon2      directory.Argon2Params
	hashSlots   int
	proxies     *srcaddr.Resolver
	seedUser    string
	seedPass    string
	jwksMaxAge  time.Duration
	auditStrict bool
	connectors  []*tokenv1.Connector
	ssoFetch    fetch.Config
}

// checkIssuer accepts an absolute https URL, or http on a loopback host
// (development), without query, fragment or trailing slash.
func checkIssuer(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil || strings.HasSuffix(s, "/") {
		return fmt.Errorf("setting issuer: %q is not an absolute URL without query, fragment or trailing slash", s)
	}
	switch u.Scheme {
	case "https":
	case "http":
		h := u.Hostname()
		if ip := net.ParseIP(h); h != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return fmt.Errorf("setting issuer: %q: http is only allowed on a loopback host", s)
		}
	default:
		return fmt.Errorf("setting issuer: %q must be https (or http on a loopback host)", s)
	}
	return nil
}

// settings validates c; errors name the setting.
func (c Config) settings() (*settings, error) {
	st := &settings{}
	issuer := c.Issuer
	if issuer == "" {
		issuer = DefaultIssuer
	}
	if err := checkIssuer(issuer); err != nil {
		return nil, err
	}
	st.alg = c.SigningAlg
	if st.alg == "" {
		st.alg = DefaultSigningAlg
	}
	if st.alg != jose.ES256 && st.alg != jose.EdDSA {
		return nil, fmt.Errorf("setting signing-alg: %q is not ES256 or EdDSA", c.SigningAlg)
	}
	o := oauth.Config{
		Issuer:                issuer,
		AccessTokenTTL:        orDefault(c.AccessTokenTTL, DefaultAccessTokenTTL),
		ResourceTTL:           map[string]time.Duration{},
		CodeTTL:               orDefault(c.CodeTTL, DefaultCodeTTL),
		AuthRequestTTL:        orDefault(c.AuthRequestTTL, DefaultAuthRequestTTL),
		SessionTTL:            orDefault(c.SessionTTL, DefaultSessionTTL),
		GrantLifetime:         orDefault(c.GrantLifetime, DefaultGrantLifetime),
		RefreshGrace:          c.RefreshGrace,
		RevocationSkew:        orDefault(c.RevocationClockSkew, DefaultRevocationClockSkew),
		RefreshIssuance:       c.RefreshTokenIssuance,
		AdvertiseRegistration: !c.NoRegistrationEndpoint,
		ServiceDocumentation:  c.ServiceDocumentation,
	}
	if o.RefreshIssuance == "" {
		o.RefreshIssuance = DefaultRefreshTokenIssuance
	}
	if o.RefreshIssuance != oauth.RefreshOfflineAccess && o.RefreshIssuance != oauth.RefreshRegistered {
		return nil, fmt.Errorf("setting refresh-token-issuance: %q is not offline_access or registered", c.RefreshTokenIssuance)
	}
	checkDur := func(name string, d, lo, hi time.Duration) error {
		if d < lo || d > hi {
			return fmt.Errorf("setting %s: %v is not between %v and %v", name, d, lo, hi)
		}
		return nil
	}
	for _, chk := range []error{
		checkDur("access-token-ttl", o.AccessTokenTTL, 10*time.Second, maxAccessTokenTTL),
		checkDur("code-ttl", o.CodeTTL, 5*time.Second, 10*time.Minute),
		checkDur("auth-request-ttl", o.AuthRequestTTL, 30*time.Second, time.Hour),
		checkDur("session-ttl", o.SessionTTL, time.Minute, 30*24*time.Hour),
		checkDur("grant-lifetime", o.GrantLifetime, time.Minute, 365*24*time.Hour),
		checkDur("refresh-grace", o.RefreshGrace, 0, time.Minute),
		checkDur("revocation-clock-skew", o.RevocationSkew, 0, time.Minute),
	} {
		if chk != nil {
			return nil, chk
		}
	}
	for _, e := range c.AccessTokenTTLByResource {
		raw, dur, ok := strings.Cut(e, "=")
		res, err := resource.Canonicalize(strings.TrimSpace(raw))
		d, derr := time.ParseDuration(strings.TrimSpace(dur))
		if !ok || err != nil || derr != nil || d < 10*time.Second || d > maxAccessTokenTTL {
			return nil, fmt.Errorf("setting access-token-ttl-by-resource: %q is not <resource URI>=<duration between 10s and 24h>", e)
		}
		o.ResourceTTL[res] = d
	}
	st.oauth = o
	st.jwksMaxAge = orDefault(c.JWKSMaxAge, DefaultJWKSMaxAge)
	if st.jwksMaxAge < 0 || st.jwksMaxAge > 24*time.Hour {
		return nil, errors.New("setting jwks-max-age: must be between 0 and 24h")
	}
	st.dir = directory.Config{
		LockoutThreshold:     max(orDefault(c.LockoutThreshold, DefaultLockoutThreshold), 0),
		LockoutDuration:      orDefault(c.LockoutDuration, DefaultLockoutDuration),
		SourceRatePerMinute:  orDefault(c.LoginRatePerMinute, DefaultLoginRatePerMinute),
		SourceBurst:          orDefault(c.LoginRateBurst, DefaultLoginRateBurst),
		AccountRatePerMinute: orDefault(c.AccountRatePerMinute, DefaultAccountRatePerMinute),
		AccountBurst:         orDefault(c.AccountRateBurst, DefaultAccountRateBurst),
	}
	if st.dir.LockoutDuration < 0 {
		return nil, errors.New("setting login-lockout-duration: must not be negative")
	}
	st.hashSlots = c.PasswordHashConcurrency
	if st.hashSlots <= 0 {
		st.hashSlots = runtime.NumCPU()
	}
	st.argon2 = directory.DefaultArgon2
	if c.Argon2 != nil {
		st.argon2 = *c.Argon2
	}
	var err error
	trusted, err := srcaddr.ParsePrefixes(c.TrustedProxies)
	if err != nil {
		return nil, fmt.Errorf("setting trusted-proxy-cidrs: %w", err)
	}
	st.proxies = srcaddr.NewResolver(trusted)
	if c.KEKFile.Path != "" {
		data, err := c.KEKFile.Read()
		if err != nil {
			return nil, fmt.Errorf("setting kek-file: %w", err)
		}
		if st.kek, err = kek.Parse(data); err != nil {
			return nil, fmt.Errorf("setting kek-file: %w", err)
		}
	} else if st.kek, err = kek.Ephemeral(); err != nil {
		return nil, err
	}
	if c.SeedUser != "" {
		if c.SeedPasswordFile.Path == "" {
			return nil, errors.New("setting seed-password-file: required with seed-user")
		}
		pw, err := c.SeedPasswordFile.Read()
		if err != nil {
			return nil, fmt.Errorf("setting seed-password-file: %w", err)
		}
		st.seedUser, st.seedPass = c.SeedUser, strings.TrimRight(string(pw), "\r\n")
		if err := directory.CheckPassword(st.seedPass, st.seedUser, ""); err != nil {
			return nil, fmt.Errorf("setting seed-password-file: %w", err)
		}
	}
	st.auditStrict = c.AuditStrict
	if err := c.ssoSettings(st); err != nil {
		return nil, err
	}
	return st, nil
}

// ssoSettings reads the connector settings (issue 9).
func (c Config) ssoSettings(st *settings) error {
	st.ssoFetch = fetch.Config{AllowAnyHost: true}
	if c.ConnectorFetch != nil {
		st.ssoFetch = *c.ConnectorFetch
	}
	if c.ConnectorsFile.Path == "" {
		return nil
	}
	data, err := c.ConnectorsFile.Read()
	if err != nil {
		return fmt.Errorf("setting connectors-file: %w", err)
	}
	if st.connectors, err = sso.ParseConnectorsFile(data, sso.IssuerPolicy{AllowHTTP: st.ssoFetch.AllowHTTP}); err != nil {
		return fmt.Errorf("setting connectors-file: %w", err)
	}
	return nil
}

// Complete opens the service's dependencies and listeners.
func (c Config) Complete(ctx context.Context) (*service.Server, error) {
	st, err := c.settings()
	if err != nil {
		return nil, err
	}
	verifier := &lateVerifier{}
	return service.New(ctx, service.Spec{
		Name:       Name,
		Flags:      c.Flags,
		GatewayTLS: c.GatewayTLS,
		LogOutput:  c.LogOutput,
		Methods:    methodPolicy(),
		Verifier:   verifier,
		Setup: func(ctx context.Context, b *service.Base) (*service.Setup, error) {
			return c.setup(ctx, b, st, verifier)
		},
	})
}

// lateVerifier verifies bearer tokens once setup has built the domain (the
// allowlist is created before setup runs).
type lateVerifier struct {
	v atomic.Pointer[oauth.PrincipalVerifier]
}

func (l *lateVerifier) Verify(ctx context.Context, token string) (principal.Claims, error) {
	v := l.v.Load()
	if v == nil {
		return principal.Claims{}, errors.New("token verifier not ready")
	}
	return v.Verify(ctx, token)
}

// setup builds the service's domain on what service.Open opened.
func (c Config) setup(_ context.Context, b *service.Base, st *settings, verifier *lateVerifier) (_ *service.Setup, err error) {
	now := c.Now
	if now == nil {
		now = time.Now
	}
	if st.kek.IsEphemeral() {
		b.Logger.Warn("no kek-file: signing keys are sealed with a per-process key and replaced at every restart (development only)")
	}
	db, err := store.New(b.Etcd, Name, now)
	if err != nil {
		return nil, err
	}
	batcher, err := b.NewBatcher(st.auditStrict)
	if err != nil {
		return nil, fmt.Errorf("audit batcher: %w", err)
	}
	closeBatcher := func(ctx context.Context) error {
		if batcher == nil {
			return nil
		}
		return batcher.Close(ctx)
	}
	defer func() {
		if err != nil {
			_ = closeBatcher(context.Background())
		}
	}()
	ev := events.New(b.Outbox, batcher, b.Logger)
	keys, err := keyring.New(keyring.Config{Store: db, Etcd: b.Etcd, KEK: st.kek, Events: ev, Alg: st.alg, Logger: b.Logger, Now: now,
		Rotation: c.rotation(st)})
	if err != nil {
		return nil, err
	}
	revs, err := revocation.New(b.Etcd, db.RevocationsPrefix(), b.Logger, now)
	if err != nil {
		return nil, err
	}
	var reg clients.Registration
	if c.RegistrationAddr != "" {
		conn, err := b.Dial(c.RegistrationAddr, "registration")
		if err != nil {
			return nil, fmt.Errorf("setting registration-addr: %w", err)
		}
		reg = registrationv1.NewRegistrationServiceClient(conn)
	}
	var pol catalog.PolicyClient
	if c.PolicyAddr != "" {
		conn, err := b.Dial(c.PolicyAddr, "policy")
		if err != nil {
			return nil, fmt.Errorf("setting policy-addr: %w", err)
		}
		pol = policyv1.NewPolicyServiceClient(conn)
	}
	cats := catalog.NewFollower(pol, b.Logger)
	hasher, err := directory.NewHasher(st.argon2, st.hashSlots)
	if err != nil {
		return nil, err
	}
	dir := directory.New(st.dir, db, hasher, ev, now)
	minter := accesstoken.NewMinter(st.oauth.Issuer, keys, now)
	av, err := accesstoken.NewVerifier(st.oauth.Issuer, keys, now)
	if err != nil {
		return nil, err
	}
	fed, err := sso.New(sso.Config{
		Issuer: st.oauth.Issuer, Etcd: b.Etcd, Service: Name, KEK: st.kek, Events: ev, Fetch: st.ssoFetch,
		StateTTL: st.oauth.AuthRequestTTL, PasswordLogin: !c.NoPasswordLogin, Seed: st.connectors,
		SecretsDir: c.ConnectorSecretsDir, Now: now, Logger: b.Logger,
	})
	if err != nil {
		return nil, err
	}
	svc, err := oauth.New(st.oauth, oauth.Deps{
		Store: db, Clients: clients.New(reg, now), Catalogs: cats, Minter: minter, Verifier: av,
		Revocations: revs, Events: ev, Users: dir, Connectors: fed.Registry, Logger: b.Logger, Now: now,
	})
	if err != nil {
		return nil, err
	}
	verifier.v.Store(&oauth.PrincipalVerifier{S: svc})
	pages, err := web.New(svc, st.proxies, b.Logger)
	if err != nil {
		return nil, err
	}
	api := grpcapi.New(svc, dir, keys, st.jwksMaxAge).WithLifecycle(grpcapi.Lifecycle{
		Feed: revocation.NewFeed(b.Etcd, db.RevocationsPrefix(), now, 0), Rotator: keys,
	})
	background := []func(context.Context) error{keys.Run, revs.Run, cats.Run, keys.RunRotation}
	if st.seedUser != "" {
		background = append(background, func(ctx context.Context) error { return seed(ctx, dir, st, b) })
	}
	// SSO (issue 9): connector administration, registry and seeding.
	api.WithConnectors(fed.Admin)
	// A change of a connector's role mappings takes roles away from its
	// users and revokes their admin-audience grants at once.
	fed.Admin.WithRoleKeeper(svc)
	background = append(background, fed.Run)
	ready := []libserver.Check{keys.Ready, revs.Ready, fed.Ready}
	if pol != nil {
		// The metadata's scopes_supported and the consent page come from the
		// policy service's catalogues: not ready until they are loaded
		// (policy's own readiness never waits on this service: no cycle).
		ready = append(ready, cats.Ready)
	}
	return &service.Setup{
		Register:     func(s *grpc.Server) { tokenv1.RegisterTokenServiceServer(s, api) },
		Gateway:      tokenv1.RegisterTokenServiceHandler,
		HTTPHandlers: pages.Handlers(),
		Background:   background,
		Ready:        ready,
		Close:        closeBatcher,
	}, nil
}

// seed creates the development user once etcd answers.
func seed(ctx context.Context, dir *directory.Directory, st *settings, b *service.Base) error {
	backoff := 100 * time.Millisecond
	for {
		created, err := dir.EnsureUser(ctx, st.seedUser, st.seedPass, []string{string(principal.RoleAdmin)})
		if err == nil {
			if created {
				b.Logger.Info("created the seed user", "username", st.seedUser)
			}
			<-ctx.Done()
			return nil
		}
		b.Logger.Warn("seeding the user failed, retrying", "error", err.Error())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, seedRetryMaxBackoff)
	}
}

// WriteKEKFile creates a new key-encryption key file at path (mode 0600) for
// the kek-file setting; it never overwrites an existing file. `mcpid dev`
// calls it once for its data directory.
func WriteKEKFile(path string) error { return kek.WriteFile(path) }
