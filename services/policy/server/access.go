package server

import (
	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	"github.com/mcpid/mcpid/lib/devca"
	"github.com/mcpid/mcpid/lib/principal"
)

var (
	operatorRead  = principal.Rule{Operators: principal.OperatorRead}
	operatorWrite = principal.Rule{Operators: principal.OperatorWrite}
)

// methodPolicy is the allowlist of every PolicyService method and who may call it
// (DESIGN: Principals). A method that is not listed is refused, and
// Complete refuses to start when a served method is missing here.
func methodPolicy() principal.Policy {
	return principal.Policy{
		// MCP servers (their own resource only, checked by the handler) and operators.
		policyv1.PolicyService_Check_FullMethodName:              principal.Rule{Operators: principal.OperatorRead, MCPServers: true},
		policyv1.PolicyService_BatchCheck_FullMethodName:         principal.Rule{Operators: principal.OperatorRead, MCPServers: true},
		policyv1.PolicyService_ListAllowedTools_FullMethodName:   principal.Rule{Operators: principal.OperatorRead, MCPServers: true},
		policyv1.PolicyService_GetManifest_FullMethodName:        principal.Rule{Operators: principal.OperatorRead, MCPServers: true},
		policyv1.PolicyService_GetEffectivePolicy_FullMethodName: principal.Rule{Operators: principal.OperatorRead, MCPServers: true},
		// An MCP server publishes its own manifest; admins may too.
		policyv1.PolicyService_PublishManifest_FullMethodName: principal.Rule{Operators: principal.OperatorWrite, MCPServers: true},
		// Operator writes: admin only.
		policyv1.PolicyService_PutPolicy_FullMethodName:    operatorWrite,
		policyv1.PolicyService_DeletePolicy_FullMethodName: operatorWrite,
		// Operator reads: admin or auditor.
		policyv1.PolicyService_GetPolicy_FullMethodName:    operatorRead,
		policyv1.PolicyService_ListPolicies_FullMethodName: operatorRead,
		policyv1.PolicyService_Explain_FullMethodName:      operatorRead,
		policyv1.PolicyService_GetDrift_FullMethodName:     operatorRead,
		policyv1.PolicyService_ListDrift_FullMethodName:    operatorRead,
		// Scope catalogues: the token service (consent page, invalid_target), MCP servers (their own), operators.
		policyv1.PolicyService_GetScopeCatalog_FullMethodName: principal.Rule{Operators: principal.OperatorRead, Services: []string{devca.ServiceToken}, MCPServers: true},
		// The catalogue feed the token service follows, and operators.
		policyv1.PolicyService_ListScopeCatalogs_FullMethodName:  principal.Rule{Operators: principal.OperatorRead, Services: []string{devca.ServiceToken}},
		policyv1.PolicyService_WatchScopeCatalogs_FullMethodName: principal.Rule{Operators: principal.OperatorRead, Services: []string{devca.ServiceToken}},
	}
}
