// Package clients is the token service's view of OAuth clients: it asks the
// registration service (ResolveClient, AuthenticateClient) and never holds a
// client secret beyond passing the presented one on. It also holds the
// client rules the token service applies itself: redirect URI matching
// (exact, any port for loopback, RFC 8252 section 7.3), grant types,
// reserved audiences, and extracting the credential of a token endpoint
// request (RFC 6749 section 2.3).
package clients

import (
	"context"
	"encoding/base64"
	"errors"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/lib/apierr"
)

// Registration is the part of registrationv1.RegistrationServiceClient the
// token service uses.
type Registration interface {
	AuthenticateClient(ctx context.Context, in *registrationv1.AuthenticateClientRequest, opts ...grpc.CallOption) (*registrationv1.AuthenticateClientResponse, error)
	ResolveClient(ctx context.Context, in *registrationv1.ResolveClientRequest, opts ...grpc.CallOption) (*registrationv1.ResolveClientResponse, error)
}

// Errors of Resolve.
var (
	// ErrUnknown: no such client (or a malformed client_id).
	ErrUnknown = errors.New("clients: unknown client")
)

// RejectedError means the client exists (or its document was fetched) but cannot
// be used: a CIMD document refused, a domain not trusted. Message is safe to
// show.
type RejectedError struct{ Message string }

func (e *RejectedError) Error() string { return "clients: " + e.Message }

// resolveTTL is how long a resolved client is reused. The registration
// contract allows up to 10 s; suspension must bite quickly, so less.
const resolveTTL = 5 * time.Second

// maxCached bounds the resolve cache.
const maxCached = 4096

// Directory answers questions about clients.
type Directory struct {
	reg Registration
	now func() time.Time

	mu    sync.Mutex
	cache map[string]cached
}

type cached struct {
	c       *registrationv1.Client
	expires time.Time
}

// New returns a directory over reg; nil reg (no registration service
// configured) knows no client.
func New(reg Registration, now func() time.Time) *Directory {
	if now == nil {
		now = time.Now
	}
	return &Directory{reg: reg, now: now, cache: map[string]cached{}}
}

// unavailable is the error for "registration cannot answer now".
func unavailable(err error) error {
	return apierr.New(codes.Unavailable, tokenv1.ErrorReason_ERROR_REASON_STORE_UNAVAILABLE.String(),
		"the client registry is temporarily unavailable").WithCause(err)
}

// Resolve returns the client for client_id as sent at /oauth2/authorize,
// SUSPENDED ones included (the caller refuses those). Errors: ErrUnknown,
// *RejectedError, or an UNAVAILABLE apierr.
func (d *Directory) Resolve(ctx context.Context, clientID string) (*registrationv1.Client, error) {
	if d.reg == nil {
		return nil, ErrUnknown
	}
	now := d.now()
	d.mu.Lock()
	if e, ok := d.cache[clientID]; ok && now.Before(e.expires) {
		d.mu.Unlock()
		return e.c, nil
	}
	d.mu.Unlock()
	resp, err := d.reg.ResolveClient(ctx, &registrationv1.ResolveClientRequest{ClientId: clientID})
	if err != nil {
		switch status.Code(err) {
		case codes.NotFound, codes.InvalidArgument:
			return nil, ErrUnknown
		case codes.PermissionDenied, codes.FailedPrecondition:
			return nil, &RejectedError{Message: status.Convert(err).Message()}
		default:
			return nil, unavailable(err)
		}
	}
	d.mu.Lock()
	if len(d.cache) >= maxCached {
		clear(d.cache)
	}
	d.cache[clientID] = cached{c: resp.GetClient(), expires: now.Add(resolveTTL)}
	d.mu.Unlock()
	return resp.GetClient(), nil
}

// Credentials is a client credential as presented at an endpoint.
type Credentials struct {
	ClientID      string
	Method        registrationv1.TokenEndpointAuthMethod
	Secret        string
	AssertionType string
	Assertion     string
	EndpointURL   string
}

// Presented are the raw inputs of client authentication.
type Presented struct {
	// Authorization is the Authorization header (gRPC metadata), if any.
	Authorization string
	// ClientID, ClientSecret, AssertionType, Assertion are form parameters.
	ClientID      string
	ClientSecret  string
	AssertionType string
	Assertion     string
}

// Extract determines the one authentication method of a request. Several
// methods at once are invalid_request; none at all is invalid_client.
func Extract(p Presented, endpointURL string) (Credentials, error) {
	c := Credentials{EndpointURL: endpointURL, ClientID: p.ClientID}
	methods := 0
	basicID := ""
	if p.Authorization != "" {
		scheme, rest, _ := strings.Cut(p.Authorization, " ")
		if !strings.EqualFold(scheme, "Basic") {
			return c, apierr.OAuth("invalid_client", "unsupported authorization scheme")
		}
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(rest))
		if err != nil {
			return c, apierr.OAuth("invalid_client", "malformed Basic credentials")
		}
		user, pass, ok := strings.Cut(string(raw), ":")
		if !ok {
			return c, apierr.OAuth("invalid_client", "malformed Basic credentials")
		}
		// RFC 6749 section 2.3.1: both parts are form-URL-encoded.
		if basicID, err = url.QueryUnescape(user); err != nil {
			return c, apierr.OAuth("invalid_client", "malformed Basic credentials")
		}
		if c.Secret, err = url.QueryUnescape(pass); err != nil {
			return c, apierr.OAuth("invalid_client", "malformed Basic credentials")
		}
		c.Method = registrationv1.TokenEndpointAuthMethod_TOKEN_ENDPOINT_AUTH_METHOD_CLIENT_SECRET_BASIC
		methods++
	}
	if p.ClientSecret != "" {
		c.Method = registrationv1.TokenEndpointAuthMethod_TOKEN_ENDPOINT_AUTH_METHOD_CLIENT_SECRET_POST
		c.Secret = p.ClientSecret
		methods++
	}
	if p.Assertion != "" || p.AssertionType != "" {
		c.Method = registrationv1.TokenEndpointAuthMethod_TOKEN_ENDPOINT_AUTH_METHOD_PRIVATE_KEY_JWT
		c.AssertionType, c.Assertion = p.AssertionType, p.Assertion
		methods++
	}
	if methods > 1 {
		return c, apierr.OAuth("invalid_request", "use exactly one client authentication method")
	}
	if basicID != "" {
		if p.ClientID != "" && p.ClientID != basicID {
			return c, apierr.OAuth("invalid_client", "client_id does not match the authenticated client")
		}
		c.ClientID = basicID
	}
	if methods == 0 {
		if p.ClientID == "" {
			return c, apierr.OAuth("invalid_client", "client authentication required")
		}
		c.Method = registrationv1.TokenEndpointAuthMethod_TOKEN_ENDPOINT_AUTH_METHOD_NONE
	}
	if c.Method == registrationv1.TokenEndpointAuthMethod_TOKEN_ENDPOINT_AUTH_METHOD_CLIENT_SECRET_POST && c.ClientID == "" {
		return c, apierr.OAuth("invalid_request", "client_id is required with client_secret")
	}
	return c, nil
}

// Authenticated is an authenticated client.
type Authenticated struct {
	Client *registrationv1.Client
	Method registrationv1.TokenEndpointAuthMethod
}

// Authenticate authenticates c through the registration service. Errors are
// caller-visible apierr values: the registration service's oauth2 errors
// (invalid_client, invalid_request) as they are, UNAVAILABLE when it cannot
// answer.
func (d *Directory) Authenticate(ctx context.Context, c Credentials) (*Authenticated, error) {
	if d.reg == nil {
		return nil, apierr.OAuth("invalid_client", "unknown client")
	}
	resp, err := d.reg.AuthenticateClient(ctx, &registrationv1.AuthenticateClientRequest{
		ClientId: c.ClientID, AuthMethod: c.Method, ClientSecret: c.Secret,
		ClientAssertionType: c.AssertionType, ClientAssertion: c.Assertion, EndpointUrl: c.EndpointURL,
	})
	if err != nil {
		if info := apierr.Info(err); info != nil && info.GetDomain() == apierr.DomainOAuth {
			return nil, apierr.OAuth(info.GetReason(), status.Convert(err).Message())
		}
		switch status.Code(err) {
		case codes.Unauthenticated:
			return nil, apierr.OAuth("invalid_client", "client authentication failed")
		case codes.InvalidArgument:
			return nil, apierr.OAuth("invalid_request", status.Convert(err).Message())
		case codes.NotFound:
			return nil, apierr.OAuth("invalid_client", "unknown client")
		case codes.Canceled:
			return nil, err
		default:
			return nil, unavailable(err)
		}
	}
	cl := resp.GetClient()
	if cl.GetVerification().GetStatus() == registrationv1.VerificationStatus_VERIFICATION_STATUS_SUSPENDED {
		// AuthenticateClient never answers a suspended client; if it ever
		// did, it gets nothing here either.
		return nil, apierr.OAuth("invalid_client", "client is suspended")
	}
	if c.ClientID != "" && cl.GetClientId() != c.ClientID {
		return nil, apierr.OAuth("invalid_client", "client_id does not match the authenticated client")
	}
	return &Authenticated{Client: cl, Method: c.Method}, nil
}

// AuthMethodName is the RFC 7591 name of a method.
func AuthMethodName(m registrationv1.TokenEndpointAuthMethod) string {
	switch m {
	case registrationv1.TokenEndpointAuthMethod_TOKEN_ENDPOINT_AUTH_METHOD_NONE:
		return "none"
	case registrationv1.TokenEndpointAuthMethod_TOKEN_ENDPOINT_AUTH_METHOD_CLIENT_SECRET_BASIC:
		return "client_secret_basic"
	case registrationv1.TokenEndpointAuthMethod_TOKEN_ENDPOINT_AUTH_METHOD_CLIENT_SECRET_POST:
		return "client_secret_post"
	case registrationv1.TokenEndpointAuthMethod_TOKEN_ENDPOINT_AUTH_METHOD_PRIVATE_KEY_JWT:
		return "private_key_jwt"
	}
	return ""
}

// HasGrant reports whether the client registered grant type g.
func HasGrant(c *registrationv1.Client, g registrationv1.GrantType) bool {
	for _, x := range c.GetMetadata().GetGrantTypes() {
		if x == g {
			return true
		}
	}
	return false
}

// Suspended reports whether the client is suspended.
func Suspended(c *registrationv1.Client) bool {
	return c.GetVerification().GetStatus() == registrationv1.VerificationStatus_VERIFICATION_STATUS_SUSPENDED
}

// Verified reports whether the client is verified.
func Verified(c *registrationv1.Client) bool {
	return c.GetVerification().GetStatus() == registrationv1.VerificationStatus_VERIFICATION_STATUS_VERIFIED
}

// Public reports whether the client is public (auth method none).
func Public(c *registrationv1.Client) bool {
	return c.GetClientType() == registrationv1.ClientType_CLIENT_TYPE_PUBLIC ||
		c.GetMetadata().GetTokenEndpointAuthMethod() == registrationv1.TokenEndpointAuthMethod_TOKEN_ENDPOINT_AUTH_METHOD_NONE
}

// MayGetReservedAudience reports whether registration lists aud among the
// client's reserved audiences.
func MayGetReservedAudience(c *registrationv1.Client, aud string) bool {
	for _, a := range c.GetReservedAudiences() {
		if a == aud {
			return true
		}
	}
	return false
}

// AllowedResource returns the client_credentials allow-list entry for
// resource.
func AllowedResource(c *registrationv1.Client, resource string) (*registrationv1.AllowedResource, bool) {
	for _, r := range c.GetAllowedResources() {
		if r.GetResource() == resource {
			return r, true
		}
	}
	return nil, false
}

// MatchRedirectURI returns the registered redirect URI that candidate
// matches: byte for byte, or for a registered loopback http URI
// (127.0.0.1, [::1], localhost) the same URI with any port (RFC 8252 section
// 7.3). The candidate must not carry a fragment or userinfo.
func MatchRedirectURI(c *registrationv1.Client, candidate string) bool {
	if candidate == "" || strings.Contains(candidate, "#") {
		return false
	}
	for _, reg := range c.GetMetadata().GetRedirectUris() {
		if reg == candidate {
			return true
		}
		if loopbackMatch(reg, candidate) {
			return true
		}
	}
	return false
}

func loopbackMatch(registered, candidate string) bool {
	r, err := url.Parse(registered)
	if err != nil || r.Scheme != "http" || !isLoopbackHost(r.Hostname()) {
		return false
	}
	c, err := url.Parse(candidate)
	if err != nil || c.Scheme != "http" || c.User != nil || c.Fragment != "" || c.Opaque != "" {
		return false
	}
	if c.Hostname() != r.Hostname() {
		return false
	}
	return c.EscapedPath() == r.EscapedPath() && c.RawQuery == r.RawQuery && c.ForceQuery == r.ForceQuery
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// IsLocalRedirect reports whether uri is loopback http or a private-use
// scheme (any program on the user's device can receive it).
func IsLocalRedirect(uri string) bool {
	u, err := url.Parse(uri)
	if err != nil {
		return false
	}
	switch u.Scheme {
	case "https":
		return false
	case "http":
		return isLoopbackHost(u.Hostname())
	default:
		return true
	}
}
