package principal

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/reflection/grpc_reflection_v1alpha"

	"github.com/mcpid/mcpid/lib/devca"
)

// ErrInvalidPolicy is returned (wrapped) by NewAuthorizer for a policy that
// is malformed or ambiguous.
var ErrInvalidPolicy = errors.New("invalid principal policy")

// OperatorAccess says which operators a Rule admits.
type OperatorAccess int

// Operator access levels.
const (
	// NoOperators admits no operator (the zero value).
	NoOperators OperatorAccess = iota
	// OperatorRead admits operators with the auditor or the admin role:
	// for read-only admin methods.
	OperatorRead
	// OperatorWrite admits only operators with the admin role.
	OperatorWrite
)

// Rule says who may call one method. Fields admit principals; a principal
// that no field admits is refused.
type Rule struct {
	// Public admits everyone, anonymous callers included, and must be the
	// only field set. For the OAuth edge (the handler authenticates the
	// client itself), health and reflection. The interceptor does not read
	// the authorization header of a public method — it may carry a client's
	// Basic credentials — but still records a verified mTLS peer.
	Public bool
	// Services admits the named mcpid services (devca.Service*).
	Services []string
	// Operators admits operators by role.
	Operators OperatorAccess
	// MCPServers admits MCP servers. Their handlers must still check that
	// the request concerns the principal's own Resource.
	MCPServers bool
}

// Policy maps full gRPC method names ("/mcpid.token.v1.TokenService/ListGrants")
// to the rule for that method. A method that is not in the policy is denied.
type Policy map[string]Rule

// HealthMethods are the gRPC health methods, for Config.PublicHealth.
func HealthMethods() []string {
	return []string{
		grpc_health_v1.Health_Check_FullMethodName,
		grpc_health_v1.Health_List_FullMethodName,
		grpc_health_v1.Health_Watch_FullMethodName,
	}
}

// ReflectionMethods are the gRPC server reflection methods, for
// Config.PublicReflection.
func ReflectionMethods() []string {
	return []string{
		grpc_reflection_v1.ServerReflection_ServerReflectionInfo_FullMethodName,
		grpc_reflection_v1alpha.ServerReflection_ServerReflectionInfo_FullMethodName,
	}
}

// Missing returns, sorted, the methods of services that p has no rule for —
// typically from (*grpc.Server).GetServiceInfo, so that start-up can refuse
// a server whose allowlist forgot a method rather than find out from a
// caller's PermissionDenied.
func (p Policy) Missing(services map[string]grpc.ServiceInfo) []string {
	var missing []string
	for svc, info := range services {
		for _, m := range info.Methods {
			full := "/" + svc + "/" + m.Name
			if _, ok := p[full]; !ok {
				missing = append(missing, full)
			}
		}
	}
	sort.Strings(missing)
	return missing
}

// allows reports whether r admits p.
func (r Rule) allows(p Principal) bool {
	if r.Public {
		return true
	}
	switch p.Kind {
	case KindService:
		return slices.Contains(r.Services, p.ID)
	case KindOperator:
		switch r.Operators {
		case OperatorRead:
			return p.HasRole(RoleAdmin) || p.HasRole(RoleAuditor)
		case OperatorWrite:
			return p.HasRole(RoleAdmin)
		}
		return false
	case KindMCPServer:
		return r.MCPServers
	default:
		return false
	}
}

func (r Rule) validate() error {
	if r.Operators < NoOperators || r.Operators > OperatorWrite {
		return fmt.Errorf("unknown operator access %d", int(r.Operators))
	}
	for _, s := range r.Services {
		if !devca.IsService(s) {
			return fmt.Errorf("unknown service %q", s)
		}
	}
	others := len(r.Services) > 0 || r.Operators != NoOperators || r.MCPServers
	if r.Public && others {
		return errors.New("a public rule must not also name principals")
	}
	if !r.Public && !others {
		// Leaving the method out already denies it; an empty rule is more
		// likely a forgotten field than a deliberate deny.
		return errors.New("rule admits nobody; leave the method out to deny it")
	}
	return nil
}

// validMethod reports whether m looks like a full gRPC method name,
// "/package.Service/Method".
func validMethod(m string) bool {
	svc, method, ok := strings.Cut(strings.TrimPrefix(m, "/"), "/")
	return strings.HasPrefix(m, "/") && ok && svc != "" && method != "" && !strings.Contains(method, "/")
}
