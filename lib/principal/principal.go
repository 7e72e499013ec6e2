// Package principal answers two questions for every gRPC call an mcpid
// service receives: who is calling, and may they call this method.
//
// An Authorizer's interceptors map the peer to a Principal — a verified mTLS
// client certificate (its SPIFFE ID, parsed by lib/devca), else a bearer
// token with a reserved urn:mcpid:* audience, else Anonymous — and then
// enforce a per-method allowlist (Policy). A method that is not listed is
// denied: the allowlist fails closed. Handlers read the caller with
// FromContext.
package principal

import (
	"context"
	"fmt"
	"slices"

	"github.com/mcpid/mcpid/lib/devca"
)

// Kind is the kind of caller.
type Kind int

// Kinds of principal. The zero value is Anonymous, so a Principal nobody
// filled in is never mistaken for an authenticated one.
const (
	// KindAnonymous is a caller that presented no credentials.
	KindAnonymous Kind = iota
	// KindService is one of the four mcpid services (mTLS).
	KindService
	// KindOperator is a human operator: a bootstrap certificate or an
	// urn:mcpid:admin token.
	KindOperator
	// KindMCPServer is an MCP server (resource server) bound to one
	// resource: a certificate or an urn:mcpid:policy token.
	KindMCPServer
	// KindClient is an OAuth client (agent). The interceptor never produces
	// it: OAuth endpoints are Public and authenticate the client themselves,
	// then may record it with NewContext.
	KindClient
	// KindUser is an end user signed in through the login page; like
	// KindClient it is set by the handler that authenticated the user.
	KindUser
)

// String returns a lower-case name for logs.
func (k Kind) String() string {
	switch k {
	case KindAnonymous:
		return "anonymous"
	case KindService:
		return "service"
	case KindOperator:
		return "operator"
	case KindMCPServer:
		return "mcp-server"
	case KindClient:
		return "client"
	case KindUser:
		return "user"
	default:
		return fmt.Sprintf("Kind(%d)", int(k))
	}
}

// Via says how a principal proved who it is.
type Via int

// Ways of proving identity.
const (
	ViaNone   Via = iota // anonymous
	ViaMTLS              // verified client certificate
	ViaBearer            // bearer token checked by a TokenVerifier
)

// String returns a lower-case name for logs.
func (v Via) String() string {
	switch v {
	case ViaNone:
		return "none"
	case ViaMTLS:
		return "mtls"
	case ViaBearer:
		return "bearer"
	default:
		return fmt.Sprintf("Via(%d)", int(v))
	}
}

// Role is an operator role.
type Role string

// Operator roles. An auditor may call read-only admin methods; an admin may
// call every admin method. The names are devca's, so certificates and
// tokens spell them the same way.
const (
	RoleAdmin   Role = devca.RoleAdmin
	RoleAuditor Role = devca.RoleAuditor
)

// Principal is an authenticated or anonymous caller. The zero value is the
// anonymous principal.
type Principal struct {
	Kind Kind
	// ID names the principal within its kind: the service name; the
	// operator's name (certificate) or token subject; for an MCP server
	// its client_id (token) or SPIFFE ID (certificate); for handler-set
	// kinds the client_id or user subject. Empty for Anonymous.
	ID string
	// ClientID is the OAuth client that obtained the bearer token, if any.
	ClientID string
	// Roles are an operator's roles; only known roles are kept.
	Roles []Role
	// Resource is the canonical resource URI an MCP server is bound to.
	Resource string
	// Scopes are the bearer token's scopes, if any.
	Scopes []string
	// Via is how the principal was authenticated.
	Via Via
}

// IsService reports whether p is the named mcpid service.
func (p Principal) IsService(name string) bool {
	return p.Kind == KindService && p.ID == name
}

// HasRole reports whether p is an operator holding role.
func (p Principal) HasRole(role Role) bool {
	return p.Kind == KindOperator && slices.Contains(p.Roles, role)
}

// String returns "kind:id" for logs, or "anonymous". It never includes
// token contents.
func (p Principal) String() string {
	if p.Kind == KindAnonymous {
		return p.Kind.String()
	}
	return p.Kind.String() + ":" + p.ID
}

type contextKey struct{}

// NewContext returns a copy of ctx carrying p.
func NewContext(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, contextKey{}, p)
}

// FromContext returns the principal in ctx. Without one it returns the
// anonymous (zero) principal and false, so a handler reached without the interceptor sees no
// authority.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(contextKey{}).(Principal)
	return p, ok
}
