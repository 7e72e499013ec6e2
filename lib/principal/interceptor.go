package principal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/mcpid/mcpid/lib/apierr"
	"github.com/mcpid/mcpid/lib/devca"
	"github.com/mcpid/mcpid/lib/resource"
)

// Claims are the parts of a verified access token the interceptor uses.
type Claims struct {
	Audience []string // aud
	Subject  string   // sub
	ClientID string   // client_id
	Scope    string   // scope, space-delimited as in RFC 9068
	Roles    []string // roles (operator roles, admin audience only)
	Resource string   // resource the token is bound to (policy audience)
}

// TokenVerifier verifies a bearer token: signature, issuer, expiry, token
// type and revocation. Audience is left to the caller, which knows which
// audiences it accepts. Errors must not contain the token or its claims:
// they are logged.
type TokenVerifier interface {
	Verify(ctx context.Context, token string) (Claims, error)
}

// Config configures an Authorizer.
type Config struct {
	// Policy is the per-method allowlist. Required.
	Policy Policy
	// Verifier checks bearer tokens. If nil, bearer tokens are refused.
	Verifier TokenVerifier
	// PublicHealth makes the gRPC health methods public.
	PublicHealth bool
	// PublicReflection makes gRPC server reflection public.
	PublicReflection bool
	// Logger receives one line per refused call. Nil discards.
	Logger *slog.Logger
}

// Authorizer authenticates callers and enforces a Policy. Its interceptors
// must run before any interceptor that acts on the caller's behalf.
//
// Everything that reaches a service through an mTLS connection carries that
// connection's identity. A component that forwards other people's requests
// (the grpc-gateway of the OAuth edge) must therefore dial without a client
// certificate, or every request it forwards would run as the service.
type Authorizer struct {
	policy   Policy
	verifier TokenVerifier
	log      *slog.Logger
}

// NewAuthorizer validates cfg and returns an Authorizer.
func NewAuthorizer(cfg Config) (*Authorizer, error) {
	policy := make(Policy, len(cfg.Policy)+5)
	for m, r := range cfg.Policy {
		if !validMethod(m) {
			return nil, fmt.Errorf("%w: %q is not a full method name (/package.Service/Method)", ErrInvalidPolicy, m)
		}
		if err := r.validate(); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrInvalidPolicy, m, err)
		}
		r.Services = slices.Clone(r.Services) // the caller may reuse its slice
		policy[m] = r
	}
	var public []string
	if cfg.PublicHealth {
		public = append(public, HealthMethods()...)
	}
	if cfg.PublicReflection {
		public = append(public, ReflectionMethods()...)
	}
	for _, m := range public {
		if _, ok := policy[m]; ok {
			return nil, fmt.Errorf("%w: %s is both in the policy and made public by a flag", ErrInvalidPolicy, m)
		}
		policy[m] = Rule{Public: true}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Authorizer{policy: policy, verifier: cfg.Verifier, log: log}, nil
}

// Missing returns the methods of services the Authorizer has no rule for;
// see Policy.Missing.
func (a *Authorizer) Missing(services map[string]grpc.ServiceInfo) []string {
	return a.policy.Missing(services)
}

// UnaryServerInterceptor authenticates and authorizes unary calls.
func (a *Authorizer) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := a.authorize(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor authenticates and authorizes streaming calls.
func (a *Authorizer) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := a.authorize(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		return handler(srv, &serverStream{ServerStream: ss, ctx: ctx})
	}
}

// serverStream replaces the stream's context with one carrying the principal.
type serverStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *serverStream) Context() context.Context { return s.ctx }

// Reasons a caller is not authenticated. They are logged, never returned:
// the caller gets one generic message so that it cannot probe which check
// failed.
var (
	errBadCertificate    = errors.New("client certificate does not name an mcpid principal")
	errBadAuthorization  = errors.New("malformed authorization metadata")
	errNoVerifier        = errors.New("bearer tokens are not accepted here")
	errAudience          = errors.New("token audience is not accepted by service APIs")
	errIncompleteClaims  = errors.New("token lacks a claim its audience requires")
	errResource          = errors.New("token resource is not a canonical resource URI")
	errTokenVerification = errors.New("token verification failed")
)

// authorize returns ctx with the caller's principal, or the status error
// that refuses the call.
func (a *Authorizer) authorize(ctx context.Context, method string) (context.Context, error) {
	rule, ok := a.policy[method]
	if !ok {
		a.log.WarnContext(ctx, "call refused: method not in allowlist", "method", method)
		return nil, permissionDenied(method, "method is not allowed")
	}
	if rule.Public {
		// The handler authenticates the caller itself; a verified
		// certificate is recorded, a bad one is not this method's concern.
		p, _, err := fromPeer(ctx)
		if err != nil {
			p = Principal{}
		}
		return NewContext(ctx, p), nil
	}
	p, err := a.authenticate(ctx)
	if err != nil {
		a.log.InfoContext(ctx, "call refused: not authenticated", "method", method, "error", err.Error())
		return nil, unauthenticated(method)
	}
	if p.Kind == KindAnonymous {
		a.log.InfoContext(ctx, "call refused: no credentials", "method", method)
		return nil, unauthenticated(method)
	}
	if !rule.allows(p) {
		a.log.WarnContext(ctx, "call refused: principal not allowed", "method", method,
			"principal", p.String(), "via", p.Via.String())
		return nil, permissionDenied(method, fmt.Sprintf("%s may not call this method", p))
	}
	return NewContext(ctx, p), nil
}

// authenticate maps the caller to a principal: a verified client
// certificate wins, then a bearer token, else anonymous.
func (a *Authorizer) authenticate(ctx context.Context) (Principal, error) {
	if p, ok, err := fromPeer(ctx); err != nil || ok {
		return p, err
	}
	token, ok, err := bearerToken(ctx)
	if err != nil || !ok {
		return Principal{}, err
	}
	if a.verifier == nil {
		return Principal{}, errNoVerifier
	}
	claims, err := a.verifier.Verify(ctx, token)
	if err != nil {
		return Principal{}, fmt.Errorf("%w: %w", errTokenVerification, err)
	}
	return fromClaims(claims)
}

// fromPeer returns the principal of a verified client certificate. ok is
// false when the connection carries none (no TLS, or no certificate sent).
func fromPeer(ctx context.Context) (p Principal, ok bool, err error) {
	pr, found := peer.FromContext(ctx)
	if !found {
		return Principal{}, false, nil
	}
	info, isTLS := pr.AuthInfo.(credentials.TLSInfo)
	// Only a chain the TLS stack verified counts: PeerCertificates alone
	// would include whatever an unverified peer sent.
	if !isTLS || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return Principal{}, false, nil
	}
	leaf := info.State.VerifiedChains[0][0]
	id, err := devca.IdentityFromCertificate(leaf)
	if err != nil {
		return Principal{}, false, fmt.Errorf("%w: %w", errBadCertificate, err)
	}
	switch id.Kind {
	case devca.KindService:
		return Principal{Kind: KindService, ID: id.Name, Via: ViaMTLS}, true, nil
	case devca.KindOperator:
		return Principal{Kind: KindOperator, ID: id.Name, Roles: []Role{Role(id.Role)}, Via: ViaMTLS}, true, nil
	case devca.KindMCPServer:
		return Principal{Kind: KindMCPServer, ID: id.String(), Resource: id.Resource, Via: ViaMTLS}, true, nil
	default:
		return Principal{}, false, fmt.Errorf("%w: kind %v", errBadCertificate, id.Kind)
	}
}

// bearerToken returns the token of an "authorization: Bearer <token>"
// metadata entry. ok is false when there is no authorization metadata or
// it uses another scheme. Several authorization entries are an error: which
// one would count is ambiguous.
func bearerToken(ctx context.Context) (token string, ok bool, err error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) == 0 {
		return "", false, nil
	}
	if len(vals) > 1 {
		return "", false, errBadAuthorization
	}
	scheme, token, found := strings.Cut(vals[0], " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", false, nil
	}
	// RFC 6750 b64token: one token, no inner whitespace.
	if !found || token == "" || strings.ContainsAny(token, " \t\r\n") {
		return "", false, errBadAuthorization
	}
	return token, true, nil
}

// fromClaims maps a verified token to a principal by its audience. Only the
// two reserved audiences are accepted; a token for an MCP server (or any
// other audience) is refused, so a resource token can never be replayed
// against mcpid's own APIs.
func fromClaims(c Claims) (Principal, error) {
	if len(c.Audience) != 1 {
		// One audience per token: a token naming both an admin audience and
		// a resource would be usable in two places.
		return Principal{}, errAudience
	}
	scopes := strings.Fields(c.Scope)
	switch c.Audience[0] {
	case AdminAudience:
		if c.Subject == "" {
			return Principal{}, fmt.Errorf("%w: sub", errIncompleteClaims)
		}
		var roles []Role
		for _, r := range c.Roles {
			if devca.IsRole(r) {
				roles = append(roles, Role(r))
			}
		}
		return Principal{Kind: KindOperator, ID: c.Subject, ClientID: c.ClientID, Roles: roles, Scopes: scopes, Via: ViaBearer}, nil
	case PolicyAudience:
		if c.ClientID == "" {
			return Principal{}, fmt.Errorf("%w: client_id", errIncompleteClaims)
		}
		if c.Resource == "" {
			return Principal{}, fmt.Errorf("%w: resource", errIncompleteClaims)
		}
		// Handlers compare Resource byte for byte with request fields; a
		// non-canonical spelling would never match, or worse, match a
		// different policy key.
		if canon, err := resource.Canonicalize(c.Resource); err != nil || canon != c.Resource {
			return Principal{}, errResource
		}
		return Principal{Kind: KindMCPServer, ID: c.ClientID, ClientID: c.ClientID, Resource: c.Resource, Scopes: scopes, Via: ViaBearer}, nil
	default:
		return Principal{}, errAudience
	}
}

func unauthenticated(method string) error {
	return apierr.New(codes.Unauthenticated, apierr.ReasonUnauthenticated, "missing or invalid credentials").
		WithMetadata("method", method)
}

func permissionDenied(method, msg string) error {
	return apierr.New(codes.PermissionDenied, apierr.ReasonNotAllowed, "%s", msg).
		WithMetadata("method", method)
}
