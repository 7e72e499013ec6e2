package devca

import (
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/mcpid/mcpid/lib/resource"
)

// TrustDomain is the SPIFFE trust domain of every mcpid identity.
const TrustDomain = "mcpid"

// idPrefix starts every identity URI. Matching it byte for byte (rather than
// comparing parsed URL fields) rejects upper-case schemes, userinfo, ports and
// other spellings that a lenient URL parser would accept as equivalent.
const idPrefix = "spiffe://" + TrustDomain + "/"

// Path segments that name the kind of principal.
const (
	segService   = "service"
	segOperator  = "operator"
	segMCPServer = "mcp-server"
)

// maxIDLen bounds an identity URI; the SPIFFE specification caps IDs at 2048
// bytes, and a base64url resource URI of resource's 2048-byte maximum fits.
const maxIDLen = 4096

// maxNameLen bounds operator names, which end up in logs and audit events.
const maxNameLen = 128

// Service names: the four mcpid services, each with its own certificate.
const (
	ServiceRegistration = "registration"
	ServiceToken        = "token"
	ServicePolicy       = "policy"
	ServiceAudit        = "audit"
)

// Operator roles a certificate (or an admin token) can carry. An auditor may
// call read-only admin methods; an admin may call every admin method.
const (
	RoleAdmin   = "admin"
	RoleAuditor = "auditor"
)

// ErrInvalidID is returned (wrapped) for an identity URI, or a certificate's
// URI SANs, that does not name exactly one well-formed mcpid principal.
var ErrInvalidID = errors.New("invalid mcpid identity")

// Kind is the kind of principal a certificate identifies.
type Kind int

// Kinds of certificate identity. The zero value is invalid so that an
// Identity nobody filled in never passes for a real one.
const (
	KindService   Kind = iota + 1 // one of the four services
	KindOperator                  // a human operator with one role
	KindMCPServer                 // an MCP server bound to one resource URI
)

// String returns the path segment that names the kind.
func (k Kind) String() string {
	switch k {
	case KindService:
		return segService
	case KindOperator:
		return segOperator
	case KindMCPServer:
		return segMCPServer
	default:
		return fmt.Sprintf("Kind(%d)", int(k))
	}
}

// Identity is the principal a certificate names in its one URI SAN.
//
// The URI forms are SPIFFE IDs in the "mcpid" trust domain:
//
//	spiffe://mcpid/service/<service>          e.g. spiffe://mcpid/service/token
//	spiffe://mcpid/operator/<role>/<name>     e.g. spiffe://mcpid/operator/admin/alice
//	spiffe://mcpid/mcp-server/<b64>           b64 = unpadded base64url of the canonical resource URI
//
// The operator's role is part of the path (SPIFFE IDs have no query and an
// SVID has exactly one URI SAN), so a certificate grants exactly one role.
// The resource is base64url-encoded because a URI cannot be one path segment.
type Identity struct {
	Kind     Kind
	Name     string // service name or operator name; empty for an MCP server
	Role     string // operator role; empty otherwise
	Resource string // canonical resource URI of an MCP server; empty otherwise
}

// IsService reports whether name is one of the four mcpid services.
func IsService(name string) bool {
	switch name {
	case ServiceRegistration, ServiceToken, ServicePolicy, ServiceAudit:
		return true
	}
	return false
}

// IsRole reports whether role is an operator role.
func IsRole(role string) bool {
	return role == RoleAdmin || role == RoleAuditor
}

// ServiceID returns the identity of the named service.
func ServiceID(name string) (Identity, error) {
	id := Identity{Kind: KindService, Name: name}
	return id, id.Validate()
}

// OperatorID returns the identity of an operator holding role.
func OperatorID(name, role string) (Identity, error) {
	id := Identity{Kind: KindOperator, Name: name, Role: role}
	return id, id.Validate()
}

// MCPServerID returns the identity of the MCP server for resourceURI, which
// must already be in canonical form (see lib/resource): the identity is
// compared byte for byte with the resource a token or request names, so a
// non-canonical spelling would silently never match.
func MCPServerID(resourceURI string) (Identity, error) {
	id := Identity{Kind: KindMCPServer, Resource: resourceURI}
	return id, id.Validate()
}

// Validate reports whether id is well formed: a known kind with exactly the
// fields that kind uses, each valid.
func (id Identity) Validate() error {
	switch id.Kind {
	case KindService:
		if !IsService(id.Name) {
			return fmt.Errorf("%w: unknown service %q", ErrInvalidID, id.Name)
		}
		if id.Role != "" || id.Resource != "" {
			return fmt.Errorf("%w: service identity with role or resource", ErrInvalidID)
		}
	case KindOperator:
		if !validSegment(id.Name) || len(id.Name) > maxNameLen {
			return fmt.Errorf("%w: operator name %q must be 1-128 of [A-Za-z0-9._-] and not a dot segment", ErrInvalidID, id.Name)
		}
		if !IsRole(id.Role) {
			return fmt.Errorf("%w: unknown operator role %q", ErrInvalidID, id.Role)
		}
		if id.Resource != "" {
			return fmt.Errorf("%w: operator identity with resource", ErrInvalidID)
		}
	case KindMCPServer:
		if id.Name != "" || id.Role != "" {
			return fmt.Errorf("%w: MCP server identity with name or role", ErrInvalidID)
		}
		canon, err := resource.Canonicalize(id.Resource)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidID, err)
		}
		if canon != id.Resource {
			return fmt.Errorf("%w: resource URI is not canonical (want %q)", ErrInvalidID, canon)
		}
	default:
		return fmt.Errorf("%w: unknown kind %d", ErrInvalidID, int(id.Kind))
	}
	return nil
}

// String returns the identity URI. It does not validate; call Validate or
// build identities with ServiceID, OperatorID and MCPServerID.
func (id Identity) String() string {
	switch id.Kind {
	case KindService:
		return idPrefix + segService + "/" + id.Name
	case KindOperator:
		return idPrefix + segOperator + "/" + id.Role + "/" + id.Name
	case KindMCPServer:
		return idPrefix + segMCPServer + "/" + base64.RawURLEncoding.EncodeToString([]byte(id.Resource))
	default:
		return ""
	}
}

// URI returns the identity as a URL for a certificate's URI SAN.
func (id Identity) URI() (*url.URL, error) {
	if err := id.Validate(); err != nil {
		return nil, err
	}
	u, err := url.Parse(id.String())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidID, err)
	}
	return u, nil
}

// ParseID parses an identity URI strictly: only the exact forms documented
// on Identity are accepted, so every identity has exactly one spelling.
func ParseID(s string) (Identity, error) {
	if len(s) > maxIDLen {
		return Identity{}, fmt.Errorf("%w: longer than %d bytes", ErrInvalidID, maxIDLen)
	}
	rest, ok := strings.CutPrefix(s, idPrefix)
	if !ok {
		return Identity{}, fmt.Errorf("%w: not in %s", ErrInvalidID, idPrefix)
	}
	segs := strings.Split(rest, "/")
	for _, seg := range segs {
		// Rejecting everything outside the SPIFFE segment alphabet also
		// rejects '?', '#', '%' and ':', i.e. queries, fragments,
		// percent-encoding and anything port-like.
		if !validSegment(seg) {
			return Identity{}, fmt.Errorf("%w: bad path segment", ErrInvalidID)
		}
	}
	var id Identity
	switch {
	case segs[0] == segService && len(segs) == 2:
		id = Identity{Kind: KindService, Name: segs[1]}
	case segs[0] == segOperator && len(segs) == 3:
		id = Identity{Kind: KindOperator, Role: segs[1], Name: segs[2]}
	case segs[0] == segMCPServer && len(segs) == 2:
		// Strict decoding refuses non-zero padding bits, so one resource has
		// one encoding.
		raw, err := base64.RawURLEncoding.Strict().DecodeString(segs[1])
		if err != nil {
			return Identity{}, fmt.Errorf("%w: resource is not unpadded base64url", ErrInvalidID)
		}
		id = Identity{Kind: KindMCPServer, Resource: string(raw)}
	default:
		return Identity{}, fmt.Errorf("%w: unknown form", ErrInvalidID)
	}
	if err := id.Validate(); err != nil {
		return Identity{}, err
	}
	return id, nil
}

// IdentityFromCertificate returns the identity named by cert, which must
// carry exactly one URI SAN (as a SPIFFE SVID does) and that SAN must parse
// with ParseID. It does not verify the certificate: callers pass a
// certificate from a verified chain.
func IdentityFromCertificate(cert *x509.Certificate) (Identity, error) {
	if cert == nil {
		return Identity{}, fmt.Errorf("%w: no certificate", ErrInvalidID)
	}
	if len(cert.URIs) != 1 {
		return Identity{}, fmt.Errorf("%w: certificate has %d URI SANs, want 1", ErrInvalidID, len(cert.URIs))
	}
	return ParseID(cert.URIs[0].String())
}

// validSegment reports whether s is a SPIFFE path segment: one or more of
// [A-Za-z0-9._-], not "." or "..".
func validSegment(s string) bool {
	if s == "" || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}
