// Package server wires the registration service: who the clients (agents) are: CIMD, DCR (RFC 7591/7592) and operator-created clients.
// It follows the shared lifecycle: Config → Complete → Run.
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/lib/admintoken"
	"github.com/mcpid/mcpid/lib/config"
	"github.com/mcpid/mcpid/lib/fetch"
	"github.com/mcpid/mcpid/lib/jose"
	libserver "github.com/mcpid/mcpid/lib/server"
	"github.com/mcpid/mcpid/lib/service"
	"github.com/mcpid/mcpid/lib/srcaddr"
	"github.com/mcpid/mcpid/services/registration/internal/cimd"
	"github.com/mcpid/mcpid/services/registration/internal/clientkeys"
	"github.com/mcpid/mcpid/services/registration/internal/expiry"
	"github.com/mcpid/mcpid/services/registration/internal/grpcapi"
	"github.com/mcpid/mcpid/services/registration/internal/metadata"
	"github.com/mcpid/mcpid/services/registration/internal/ratelimit"
	"github.com/mcpid/mcpid/services/registration/internal/registry"
	"github.com/mcpid/mcpid/services/registration/internal/revoke"
	"github.com/mcpid/mcpid/services/registration/internal/softstmt"
	"github.com/mcpid/mcpid/services/registration/internal/store"
)

// Name is the service's name in health checks, logs and certificates.
const Name = "registration"

// Defaults of the service's own settings. A zero field in Config means its
// default (so a Config built in code, as `mcpid dev` does, gets these), and
// where "off" must be expressible a negative value means off.
const (
	DefaultIssuer             = "http://127.0.0.1:8080"
	DefaultIATTTL             = 24 * time.Hour
	DefaultDCRRatePerMinute   = 20
	DefaultDCRRateBurst       = 10
	DefaultDuplicateLimit     = 5
	DefaultDuplicateWindow    = time.Hour
	DefaultMaxClients         = 100_000
	DefaultClientIdleLifetime = 30 * 24 * time.Hour
	DefaultLastUsedInterval   = time.Minute
	DefaultCIMDMinCache       = 5 * time.Minute
	DefaultCIMDMaxCache       = 24 * time.Hour
	DefaultCIMDMaxStale       = 24 * time.Hour
	DefaultCIMDFetchTimeout   = 5 * time.Second
	defaultJWKSMaxAge         = 5 * time.Minute
	defaultJWKSMinRefresh     = 30 * time.Second
	preRegisteredMaxBackoff   = 5 * time.Second
)

// Config is the registration service's configuration.
type Config struct {
	service.Flags
	// GatewayTLS is the client TLS config of the in-process REST gateway when
	// gRPC is served with TLS (no client certificate).
	GatewayTLS *tls.Config
	// LogOutput receives JSON logs; default io.Discard.
	LogOutput io.Writer

	// Issuer is the public origin (the OAuth issuer URL).
	Issuer string
	// AssertionAudienceCompat also accepts the token endpoint URL as the
	// audience of private_key_jwt assertions.
	AssertionAudienceCompat bool
	// DisableDCR turns RFC 7591 registration off.
	DisableDCR bool
	// DCRAllowedCIDRs limits DCR to these source networks (empty: any).
	DCRAllowedCIDRs config.StringList
	// TrustedProxies are the proxies whose X-Forwarded-For entries count.
	TrustedProxies config.StringList
	// InitialAccessTokens is off, optional (default) or required.
	InitialAccessTokens string
	// InitialAccessTokenTTL is the default lifetime of a new token.
	InitialAccessTokenTTL time.Duration
	// RedirectHostAllowlist restricts redirect URI hosts (empty: any).
	RedirectHostAllowlist config.StringList
	// DCRRatePerMinute and DCRRateBurst limit DCR and RFC 7592 updates per
	// source address (negative rate: no limit).
	DCRRatePerMinute float64
	DCRRateBurst     int
	// DuplicateLimit bounds identical registrations from one source within
	// DuplicateWindow (negative: no bound).
	DuplicateLimit  int
	DuplicateWindow time.Duration
	// MaxClients caps the number of clients (negative: no cap).
	MaxClients int64
	// ClientIdleLifetime is how long an unused DCR or CIMD client lives
	// (negative: forever).
	ClientIdleLifetime time.Duration
	// LastUsedInterval is how often a client's use is recorded at most.
	LastUsedInterval time.Duration
	// ClientSecretLifetime is the default lifetime of client secrets
	// (zero: never expire).
	ClientSecretLifetime time.Duration
	// SoftwareStatementIssuers trust software statement publishers:
	// "<issuer>=<JWKS file>" entries.
	SoftwareStatementIssuers config.StringList
	// DisableCIMD turns Client ID Metadata Documents off.
	DisableCIMD bool
	// CIMDTrustedDomains are hosts whose documents verify clients;
	// CIMDAllowedDomains are hosts whose documents are accepted unverified
	// (default "*": any host).
	CIMDTrustedDomains config.StringList
	CIMDAllowedDomains config.StringList
	CIMDMinCache       time.Duration
	CIMDMaxCache       time.Duration
	CIMDMaxStale       time.Duration
	CIMDFetchTimeout   time.Duration
	// FetchAllowPrivate lets outbound fetches (CIMD, jwks_uri) reach
	// private and loopback addresses (never cloud metadata addresses).
	FetchAllowPrivate bool
	// FetchAllowedPorts are ports outbound fetches may use besides 443.
	FetchAllowedPorts config.StringList

	// FetchHooks replace the outbound fetchers' DNS resolver, dialer and
	// root CAs (tests). Not settings.
	FetchHooks FetchHooks
	// TokenAddr is the token service's gRPC address: a deleted, expired or
	// suspended client's grants and consents are revoked there. Empty:
	// revocations wait in etcd until a replica with it delivers them.
	TokenAddr string
	// GrantRevoker replaces the token service client built from TokenAddr
	// (tests). Not a setting.
	GrantRevoker revoke.Revoker
	// JWKSURL is where the keys of operator tokens (`mcpid login`,
	// aud=urn:mcpid:admin) are fetched; empty means <issuer>/oauth2/jwks.
	JWKSURL string
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
}

// FetchHooks are test hooks of the outbound fetchers.
type FetchHooks struct {
	Resolver    fetch.Resolver
	DialContext fetch.DialFunc
	RootCAs     *x509.CertPool
}

// RegisterFlags defines the service's settings on fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.Flags.Register(fs, service.Defaults{GRPCAddr: "127.0.0.1:7001", HTTPAddr: "127.0.0.1:7101"})
	fs.StringVar(&c.Issuer, "issuer", DefaultIssuer, "public origin (OAuth issuer URL): builds registration_client_uri, expected audience of private_key_jwt assertions")
	fs.BoolVar(&c.AssertionAudienceCompat, "assertion-audience-compat", false, "also accept the token endpoint URL as private_key_jwt assertion audience")
	fs.BoolVar(&c.DisableDCR, "disable-dcr", false, "turn RFC 7591 dynamic client registration off")
	fs.Var(&c.DCRAllowedCIDRs, "dcr-allowed-cidrs", "source networks allowed to use DCR, comma-separated CIDRs (empty: any)")
	fs.Var(&c.TrustedProxies, "trusted-proxy-cidrs", "proxies whose X-Forwarded-For entries are trusted, comma-separated CIDRs")
	fs.StringVar(&c.InitialAccessTokens, "initial-access-tokens", registry.IATOptional, "initial access tokens at DCR: off, optional or required")
	fs.DurationVar(&c.InitialAccessTokenTTL, "initial-access-token-ttl", DefaultIATTTL, "default lifetime of a new initial access token")
	fs.Var(&c.RedirectHostAllowlist, "redirect-host-allowlist", "allowed redirect URI hosts: host, IP or *.domain, comma-separated (empty: any)")
	fs.Float64Var(&c.DCRRatePerMinute, "dcr-rate-per-minute", DefaultDCRRatePerMinute, "DCR requests per minute per source address, per replica (negative: no limit)")
	fs.IntVar(&c.DCRRateBurst, "dcr-rate-burst", DefaultDCRRateBurst, "DCR request burst per source address")
	fs.IntVar(&c.DuplicateLimit, "dcr-duplicate-limit", DefaultDuplicateLimit, "identical registrations from one source per window (negative: no bound)")
	fs.DurationVar(&c.DuplicateWindow, "dcr-duplicate-window", DefaultDuplicateWindow, "window of dcr-duplicate-limit")
	fs.Int64Var(&c.MaxClients, "max-clients", DefaultMaxClients, "maximum number of clients (negative: no cap)")
	fs.DurationVar(&c.ClientIdleLifetime, "client-idle-lifetime", DefaultClientIdleLifetime, "unused DCR and CIMD clients expire after this (negative: never)")
	fs.DurationVar(&c.LastUsedInterval, "last-used-interval", DefaultLastUsedInterval, "record a client's use at most this often")
	fs.DurationVar(&c.ClientSecretLifetime, "client-secret-lifetime", 0, "default client secret lifetime (0: never expires)")
	fs.Var(&c.SoftwareStatementIssuers, "software-statement-issuers", "trusted software statement issuers, comma-separated <issuer>=<JWKS file>")
	fs.BoolVar(&c.DisableCIMD, "disable-cimd", false, "turn Client ID Metadata Documents off")
	fs.Var(&c.CIMDTrustedDomains, "cimd-trusted-domains", "hosts whose metadata documents verify their clients: host or *.domain, comma-separated")
	fs.Var(&c.CIMDAllowedDomains, "cimd-allowed-domains", "hosts whose metadata documents are accepted unverified (default *: any host)")
	fs.DurationVar(&c.CIMDMinCache, "cimd-min-cache", DefaultCIMDMinCache, "shortest time a metadata document is used before it is fetched again")
	fs.DurationVar(&c.CIMDMaxCache, "cimd-max-cache", DefaultCIMDMaxCache, "longest time a metadata document is used before it is fetched again")
	fs.DurationVar(&c.CIMDMaxStale, "cimd-max-stale", DefaultCIMDMaxStale, "how long a stale document is served while fetching it fails")
	fs.DurationVar(&c.CIMDFetchTimeout, "cimd-fetch-timeout", DefaultCIMDFetchTimeout, "bound on one metadata document or jwks_uri fetch")
	fs.StringVar(&c.TokenAddr, "token-addr", "", "token service gRPC address: where a deleted, expired or suspended client's grants are revoked (empty: revocations wait in etcd)")
	fs.StringVar(&c.JWKSURL, "jwks-url", "", "JWKS URL of the token service, for operator tokens (mcpid login); empty means <issuer>"+admintoken.JWKSPath)
	fs.BoolVar(&c.FetchAllowPrivate, "fetch-allow-private", false, "let CIMD and jwks_uri fetches reach private and loopback addresses (never cloud metadata)")
	fs.Var(&c.FetchAllowedPorts, "fetch-allowed-ports", "ports CIMD and jwks_uri fetches may use besides 443, comma-separated")
}

// settings are the validated settings with defaults applied.
type settings struct {
	dom        registry.Config
	trusted    srcaddr.Prefixes
	ratePerMin float64
	rateBurst  int
	cimd       *cimd.Config
	fetch      fetch.Config
	statements []softstmt.Issuer
}

func orDefault[T int | int64 | float64 | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// settings validates c; errors name the setting.
func (c Config) settings() (*settings, error) {
	s := &settings{}
	d := &s.dom
	d.Issuer = c.Issuer
	if d.Issuer == "" {
		d.Issuer = DefaultIssuer
	}
	if u, err := url.Parse(d.Issuer); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("setting issuer: %q is not an absolute http(s) URL without query or fragment", c.Issuer)
	}
	d.AssertionAudienceCompat = c.AssertionAudienceCompat
	d.DCREnabled = !c.DisableDCR
	var err error
	if d.DCRAllowedCIDRs, err = srcaddr.ParsePrefixes(c.DCRAllowedCIDRs); err != nil {
		return nil, fmt.Errorf("setting dcr-allowed-cidrs: %w", err)
	}
	if s.trusted, err = srcaddr.ParsePrefixes(c.TrustedProxies); err != nil {
		return nil, fmt.Errorf("setting trusted-proxy-cidrs: %w", err)
	}
	d.IATMode = c.InitialAccessTokens
	if d.IATMode == "" {
		d.IATMode = registry.IATOptional
	}
	switch d.IATMode {
	case registry.IATOff, registry.IATOptional, registry.IATRequired:
	default:
		return nil, fmt.Errorf("setting initial-access-tokens: %q is not off, optional or required", c.InitialAccessTokens)
	}
	if d.IATDefaultTTL = orDefault(c.InitialAccessTokenTTL, DefaultIATTTL); d.IATDefaultTTL < time.Minute || d.IATDefaultTTL > 90*24*time.Hour {
		return nil, errors.New("setting initial-access-token-ttl: must be between 1m and 2160h")
	}
	if d.RedirectHosts, err = metadata.ParseHostPatterns(c.RedirectHostAllowlist); err != nil {
		return nil, fmt.Errorf("setting redirect-host-allowlist: %w", err)
	}
	s.ratePerMin = orDefault(c.DCRRatePerMinute, DefaultDCRRatePerMinute)
	s.rateBurst = orDefault(c.DCRRateBurst, DefaultDCRRateBurst)
	if s.rateBurst < 0 {
		return nil, errors.New("setting dcr-rate-burst: must not be negative")
	}
	d.DuplicateLimit = max(orDefault(c.DuplicateLimit, DefaultDuplicateLimit), 0)
	if d.DuplicateWindow = orDefault(c.DuplicateWindow, DefaultDuplicateWindow); d.DuplicateWindow < time.Second {
		return nil, errors.New("setting dcr-duplicate-window: must be at least 1s")
	}
	d.MaxClients = max(orDefault(c.MaxClients, DefaultMaxClients), 0)
	d.IdleLifetime = max(orDefault(c.ClientIdleLifetime, DefaultClientIdleLifetime), 0)
	if d.LastUsedInterval = orDefault(c.LastUsedInterval, DefaultLastUsedInterval); d.LastUsedInterval < 0 {
		return nil, errors.New("setting last-used-interval: must not be negative")
	}
	if d.IdleLifetime > 0 && d.IdleLifetime < 2*d.LastUsedInterval {
		// Uses are recorded (and the lease renewed) at most every interval:
		// a shorter lifetime would expire clients in use.
		return nil, errors.New("settings client-idle-lifetime and last-used-interval: the lifetime must be at least twice the interval")
	}
	if d.SecretLifetime = c.ClientSecretLifetime; d.SecretLifetime < 0 {
		return nil, errors.New("setting client-secret-lifetime: must not be negative")
	}
	d.CIMDMaxStale = orDefault(c.CIMDMaxStale, DefaultCIMDMaxStale)
	if s.statements, err = softstmt.ParseTrust(c.SoftwareStatementIssuers); err != nil {
		return nil, fmt.Errorf("setting software-statement-issuers: %w", err)
	}

	var ports []uint16
	for _, p := range c.FetchAllowedPorts {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("setting fetch-allowed-ports: %q is not a port", p)
		}
		ports = append(ports, uint16(n))
	}
	timeout := orDefault(c.CIMDFetchTimeout, DefaultCIMDFetchTimeout)
	if timeout < 0 {
		return nil, errors.New("setting cimd-fetch-timeout: must be positive")
	}
	s.fetch = fetch.Config{
		AllowPrivate: c.FetchAllowPrivate,
		AllowedPorts: ports,
		Timeout:      timeout,
		Resolver:     c.FetchHooks.Resolver,
		DialContext:  c.FetchHooks.DialContext,
		RootCAs:      c.FetchHooks.RootCAs,
		Now:          c.Now,
		UserAgent:    "mcpid-registration/1",
	}
	if !c.DisableCIMD {
		allowed := c.CIMDAllowedDomains
		if len(allowed) == 0 {
			allowed = config.StringList{"*"}
		}
		s.cimd = &cimd.Config{
			TrustedDomains: c.CIMDTrustedDomains,
			AllowedDomains: allowed,
			RedirectHosts:  d.RedirectHosts,
			MinCache:       orDefault(c.CIMDMinCache, DefaultCIMDMinCache),
			MaxCache:       orDefault(c.CIMDMaxCache, DefaultCIMDMaxCache),
			Fetch:          s.fetch,
		}
		if s.cimd.MinCache <= 0 || s.cimd.MaxCache < s.cimd.MinCache {
			return nil, errors.New("settings cimd-min-cache and cimd-max-cache: need 0 < min <= max")
		}
	}
	return s, nil
}

// Complete opens the service's dependencies and listeners.
func (c Config) Complete(ctx context.Context) (*service.Server, error) {
	st, err := c.settings()
	if err != nil {
		return nil, err
	}
	operators, err := admintoken.New(admintoken.Config{Issuer: st.dom.Issuer, JWKSURL: c.JWKSURL, Now: c.Now})
	if err != nil {
		return nil, err
	}
	srv, err := service.New(ctx, service.Spec{
		Name:       Name,
		Flags:      c.Flags,
		GatewayTLS: c.GatewayTLS,
		LogOutput:  c.LogOutput,
		Methods:    methodPolicy(),
		Verifier:   operators,
		Setup: func(ctx context.Context, b *service.Base) (*service.Setup, error) {
			return c.setup(ctx, b, st, operators)
		},
	})
	if err != nil {
		operators.Close()
	}
	return srv, err
}

// setup builds the service's domain on what service.Open opened.
func (c Config) setup(_ context.Context, b *service.Base, st *settings, operators *admintoken.Verifier) (_ *service.Setup, err error) {
	now := c.Now
	if now == nil {
		now = time.Now
	}
	var closers []func(context.Context) error
	closeAll := func(ctx context.Context) error {
		var errs []error
		for i := len(closers) - 1; i >= 0; i-- {
			errs = append(errs, closers[i](ctx))
		}
		return errors.Join(errs...)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, closeAll(context.Background()))
		}
	}()
	closers = append(closers, func(context.Context) error { operators.Close(); return nil })

	db, err := store.New(b.Etcd, Name, now)
	if err != nil {
		return nil, err
	}
	// Client authentication (every token request) reads clients from
	// memory; see store.ClientCache for how fresh that is.
	clientCache, err := store.NewClientCache(db, b.Logger)
	if err != nil {
		return nil, err
	}
	batcher, err := b.NewBatcher(false)
	if err != nil {
		return nil, fmt.Errorf("audit batcher: %w", err)
	}
	if batcher != nil {
		closers = append(closers, batcher.Close)
	}
	keys, err := clientkeys.New(st.fetch, jose.CacheOptions{MaxAge: defaultJWKSMaxAge, MinRefreshInterval: defaultJWKSMinRefresh, Now: now})
	if err != nil {
		return nil, fmt.Errorf("jwks fetcher: %w", err)
	}
	closers = append(closers, func(context.Context) error { keys.Close(); return nil })
	var resolver *cimd.Resolver
	if st.cimd != nil {
		if resolver, err = cimd.New(*st.cimd); err != nil {
			return nil, fmt.Errorf("settings cimd-*: %w", err)
		}
		closers = append(closers, func(context.Context) error { resolver.Close(); return nil })
	}
	statements, err := softstmt.New(st.statements, now)
	if err != nil {
		return nil, fmt.Errorf("setting software-statement-issuers: %w", err)
	}
	svc, err := registry.New(st.dom, registry.Deps{
		Store:      db,
		Clients:    clientCache,
		Outbox:     b.Outbox,
		Batcher:    batcher,
		Limiter:    ratelimit.New(st.ratePerMin, st.rateBurst, now),
		CIMD:       resolver,
		Keys:       keys,
		Statements: statements,
		Logger:     b.Logger,
		Now:        now,
	})
	if err != nil {
		return nil, err
	}
	expirer, err := expiry.New(expiry.Config{
		Client: b.Etcd, Prefix: db.ExpiryPrefix(), MarkerClientID: db.ExpiryMarkerClientID, Expirer: svc, Logger: b.Logger,
	})
	if err != nil {
		return nil, err
	}
	var preRegistered atomic.Bool
	background := []func(context.Context) error{
		clientCache.Run,
		expirer.Run,
		func(ctx context.Context) error { return ensurePreRegistered(ctx, svc, &preRegistered, b) },
	}
	revoker := c.GrantRevoker
	if c.TokenAddr != "" {
		conn, err := b.Dial(c.TokenAddr, "token")
		if err != nil {
			return nil, fmt.Errorf("setting token-addr: %w", err)
		}
		tokens := tokenv1.NewTokenServiceClient(conn)
		if revoker == nil {
			revoker = revoke.TokenRevoker{Client: tokens}
		}
		// Revoked operator logins are refused within a second.
		follow, err := operators.Follow(tokens, b.Logger, now)
		if err != nil {
			return nil, err
		}
		background = append(background, follow)
	} else {
		b.Logger.Warn("no token-addr: a revoked operator token is accepted until it expires")
	}
	if revoker != nil {
		w, err := revoke.New(b.Etcd, db, revoker, b.Logger)
		if err != nil {
			return nil, err
		}
		background = append(background, w.Run)
	}
	api := grpcapi.New(svc, srcaddr.NewResolver(st.trusted))
	return &service.Setup{
		Register:   func(s *grpc.Server) { registrationv1.RegisterRegistrationServiceServer(s, api) },
		Gateway:    registrationv1.RegisterRegistrationServiceHandler,
		Background: background,
		Ready: []libserver.Check{func(context.Context) error {
			if !preRegistered.Load() {
				return errors.New("pre-registered clients not applied yet")
			}
			return nil
		}},
		Close: closeAll,
	}, nil
}

// ensurePreRegistered applies the pre-registered clients once, retrying
// while etcd is not reachable.
func ensurePreRegistered(ctx context.Context, svc *registry.Service, done *atomic.Bool, b *service.Base) error {
	for failures := 0; ; failures++ {
		err := svc.EnsurePreRegistered(ctx)
		if err == nil {
			done.Store(true)
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		b.Logger.WarnContext(ctx, "applying pre-registered clients failed; retrying", "error", err)
		d := min(100*time.Millisecond<<min(failures, 6), preRegisteredMaxBackoff)
		t := time.NewTimer(d/2 + rand.N(d/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}
