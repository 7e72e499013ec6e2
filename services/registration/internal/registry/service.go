// Package registry is the registration service's domain: who the clients
// are and how they prove it. It implements RFC 7591/7592 dynamic
// registration with its hardening rules, CIMD resolution, operator-managed
// clients and initial access tokens, client authentication for the token
// service, verification status and expiry. Every state change commits its
// audit event to the outbox in the same etcd transaction.
package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/mcpid/mcpid/lib/auditemit"
	"github.com/mcpid/mcpid/lib/principal"
	"github.com/mcpid/mcpid/lib/srcaddr"
	"github.com/mcpid/mcpid/services/registration/internal/cimd"
	"github.com/mcpid/mcpid/services/registration/internal/clientkeys"
	"github.com/mcpid/mcpid/services/registration/internal/metadata"
	"github.com/mcpid/mcpid/services/registration/internal/ratelimit"
	"github.com/mcpid/mcpid/services/registration/internal/softstmt"
	"github.com/mcpid/mcpid/services/registration/internal/store"
)

// Initial access token modes.
const (
	IATOff      = "off"
	IATOptional = "optional"
	IATRequired = "required"
)

// Config is the domain's settings (server.Config maps the flags onto it).
type Config struct {
	// Issuer is the public origin: it builds registration_client_uri and is
	// the audience private_key_jwt assertions must name.
	Issuer string
	// AssertionAudienceCompat also accepts the endpoint URL as assertion
	// audience (clients written for older drafts).
	AssertionAudienceCompat bool

	DCREnabled      bool
	DCRAllowedCIDRs srcaddr.Prefixes
	IATMode         string
	IATDefaultTTL   time.Duration
	RedirectHosts   metadata.HostPatterns
	DuplicateLimit  int
	DuplicateWindow time.Duration
	// MaxClients caps the stored clients (0: no cap).
	MaxClients int64
	// IdleLifetime is how long an unused DCR or CIMD client lives (0:
	// forever).
	IdleLifetime time.Duration
	// LastUsedInterval is how often a use is recorded (and the idle expiry
	// renewed) at most.
	LastUsedInterval time.Duration
	// SecretLifetime is the default client secret lifetime (0: forever).
	SecretLifetime time.Duration
	// CIMDMaxStale is how long a stale CIMD document is served while
	// re-fetching fails.
	CIMDMaxStale time.Duration
}

// ClientReader reads client records for client authentication and
// resolution (the token service's hot path); the record returned is shared
// and read only. store.ClientCache answers from memory.
type ClientReader interface {
	GetClient(ctx context.Context, id string) (*store.Client, error)
}

// Deps are what the domain uses.
type Deps struct {
	Store store.Store
	// Clients, when set, answers the client reads of AuthenticateClient and
	// ResolveClient (nil: Store). Every other read, and every
	// read-modify-write, goes to Store.
	Clients ClientReader
	Outbox  *auditemit.Outbox
	// Batcher carries read-path events (rejected registrations); nil
	// without an audit service.
	Batcher *auditemit.Batcher
	// Limiter limits DCR requests per source; nil means no limit.
	Limiter *ratelimit.Limiter
	// CIMD resolves metadata documents; nil when CIMD is disabled.
	CIMD *cimd.Resolver
	Keys *clientkeys.Keys
	// Statements verifies software statements; nil trusts no issuer.
	Statements *softstmt.Verifier
	Logger     *slog.Logger
	Now        func() time.Time
}

// Service is the domain.
type Service struct {
	cfg Config
	Deps
	ids *auditemit.IDGenerator
}

// New returns the domain service.
func New(cfg Config, d Deps) (*Service, error) {
	if d.Store == nil || d.Outbox == nil || d.Keys == nil {
		return nil, errors.New("registry: Store, Outbox and Keys are required")
	}
	switch cfg.IATMode {
	case IATOff, IATOptional, IATRequired:
	default:
		return nil, fmt.Errorf("registry: initial access token mode %q", cfg.IATMode)
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Clients == nil {
		d.Clients = d.Store
	}
	return &Service{cfg: cfg, Deps: d, ids: auditemit.NewIDGenerator(d.Now, nil)}, nil
}

// Caller is what the transport knows about a request.
type Caller struct {
	Principal principal.Principal
	// Source is the client address (DCR), invalid if unknown.
	Source netip.Addr
	// UserAgent is the HTTP User-Agent, if any.
	UserAgent string
	// Bearer is the token of an "Authorization: Bearer" header; empty if
	// none. BadAuthorization is set when an authorization header was sent
	// but is not a usable bearer token.
	Bearer           string
	BadAuthorization bool
}

// Who is the "who" of verification and creation records.
func (c Caller) Who() string {
	switch c.Principal.Kind {
	case principal.KindOperator:
		return "operator:" + c.Principal.ID
	case principal.KindService:
		return "service:" + c.Principal.ID
	}
	return "client"
}

const whoService = "service:registration"

// storeErr maps store failures that callers should see; the rest stay
// internal (logged, answered with a fixed message).
func storeErr(err error, id string) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return mcpidErr(codes.NotFound, rNotFound, "no client %q", clip(id))
	case errors.Is(err, store.ErrConflict):
		return mcpidErr(codes.Aborted, rEtag, "client %q is being changed concurrently; retry", clip(id))
	}
	return err
}

func clip(s string) string {
	if len(s) > 128 {
		return s[:128] + "..."
	}
	return s
}

// checkCap refuses a new client beyond the configured cap. The count is
// read before the write, so concurrent creations may pass the cap by the
// number of creations in flight.
func (s *Service) checkCap(ctx context.Context) error {
	if s.cfg.MaxClients <= 0 {
		return nil
	}
	n, err := s.Store.CountClients(ctx)
	if err != nil {
		return err
	}
	if n >= s.cfg.MaxClients {
		return mcpidErr(codes.ResourceExhausted, rClientLimit, "the maximum number of clients (%d) is reached", s.cfg.MaxClients)
	}
	return nil
}

// metadataErr maps a validation failure for the operator API.
func metadataErr(err error) error {
	var e *metadata.Error
	if !errors.As(err, &e) {
		return err
	}
	switch e.Kind {
	case metadata.KindRedirectURI:
		return mcpidErr(codes.InvalidArgument, rRedirect, "%s", e.Error())
	case metadata.KindReservedScope:
		return mcpidErr(codes.InvalidArgument, rReservedScope, "%s", e.Error())
	case metadata.KindClientCredentials:
		return mcpidErr(codes.FailedPrecondition, rCCNotPermitted, "%s", e.Error())
	}
	return mcpidErr(codes.InvalidArgument, rMetadata, "%s", e.Error())
}

// oauthMetadataErr maps a validation failure for RFC 7591/7592.
func oauthMetadataErr(err error) error {
	var e *metadata.Error
	if !errors.As(err, &e) {
		return err
	}
	switch e.Kind {
	case metadata.KindRedirectURI:
		return oauthErr("invalid_redirect_uri", rRedirect, e.Error())
	case metadata.KindReservedScope:
		return oauthErr("invalid_client_metadata", rReservedScope, e.Error())
	case metadata.KindClientCredentials:
		return oauthErr("invalid_client_metadata", rCCNotPermitted, e.Error())
	}
	return oauthErr("invalid_client_metadata", rMetadata, e.Error())
}

// clientExpiry is the expiry of a new DCR or CIMD client.
func (s *Service) idleExpiry(now time.Time) (time.Time, bool) {
	if s.cfg.IdleLifetime <= 0 {
		return time.Time{}, false
	}
	return now.Add(s.cfg.IdleLifetime), true
}

// recordUse records a successful authentication or resolution, at most once
// per LastUsedInterval, renewing an idle expiry. A client whose lease is
// already gone is expiring: it is refused.
func (s *Service) recordUse(ctx context.Context, c *store.Client) error {
	now := s.Now()
	if !c.LastUsedTime.IsZero() && now.Sub(c.LastUsedTime) < s.cfg.LastUsedInterval {
		return nil
	}
	expire := c.ExpireTime
	if c.IdleExpiry && s.cfg.IdleLifetime > 0 {
		expire = now.Add(s.cfg.IdleLifetime)
	}
	err := s.Store.RenewClient(ctx, c, now, expire)
	if errors.Is(err, store.ErrNotFound) {
		return mcpidErr(codes.NotFound, rNotFound, "no client %q", clip(c.ClientID))
	}
	if err != nil {
		// Recording use is best effort; the request itself succeeded.
		s.Logger.WarnContext(ctx, "recording client use failed", "client_id", c.ClientID, "error", err)
	}
	return nil
}
