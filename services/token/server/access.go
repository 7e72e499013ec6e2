package server

import (
	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/lib/devca"
	"github.com/mcpid/mcpid/lib/principal"
)

var (
	operatorRead  = principal.Rule{Operators: principal.OperatorRead}
	operatorWrite = principal.Rule{Operators: principal.OperatorWrite}

	revocationFollowers = []string{devca.ServicePolicy, devca.ServiceRegistration, devca.ServiceAudit}
)

// methodPolicy is the allowlist of every TokenService method and who may call it
// (DESIGN: Principals). A method that is not listed is refused, and
// Complete refuses to start when a served method is missing here.
func methodPolicy() principal.Policy {
	return principal.Policy{
		// Public: the OAuth edge; the handler authenticates the client itself.
		tokenv1.TokenService_GetAuthorizationServerMetadata_FullMethodName: principal.Rule{Public: true},
		tokenv1.TokenService_GetJwks_FullMethodName:                        principal.Rule{Public: true},
		tokenv1.TokenService_Token_FullMethodName:                          principal.Rule{Public: true},
		tokenv1.TokenService_RevokeToken_FullMethodName:                    principal.Rule{Public: true},
		tokenv1.TokenService_IntrospectToken_FullMethodName:                principal.Rule{Public: true},
		// Operator writes: admin only.
		tokenv1.TokenService_CreateUser_FullMethodName:       operatorWrite,
		tokenv1.TokenService_UpdateUser_FullMethodName:       operatorWrite,
		tokenv1.TokenService_DeleteUser_FullMethodName:       operatorWrite,
		tokenv1.TokenService_SetUserPassword_FullMethodName:  operatorWrite,
		tokenv1.TokenService_RotateSigningKey_FullMethodName: operatorWrite,
		tokenv1.TokenService_CreateConnector_FullMethodName:  operatorWrite,
		tokenv1.TokenService_UpdateConnector_FullMethodName:  operatorWrite,
		tokenv1.TokenService_DeleteConnector_FullMethodName:  operatorWrite,
		// Operator reads: admin or auditor.
		tokenv1.TokenService_GetGrant_FullMethodName:        operatorRead,
		tokenv1.TokenService_ListSigningKeys_FullMethodName: operatorRead,
		tokenv1.TokenService_GetConnector_FullMethodName:    operatorRead,
		tokenv1.TokenService_ListConnectors_FullMethodName:  operatorRead,
		// Reads the audit service also makes for the agent inventory.
		tokenv1.TokenService_GetUser_FullMethodName:      principal.Rule{Operators: principal.OperatorRead, Services: []string{devca.ServiceAudit}},
		tokenv1.TokenService_ListUsers_FullMethodName:    principal.Rule{Operators: principal.OperatorRead, Services: []string{devca.ServiceAudit}},
		tokenv1.TokenService_ListConsents_FullMethodName: principal.Rule{Operators: principal.OperatorRead, Services: []string{devca.ServiceAudit}},
		tokenv1.TokenService_ListGrants_FullMethodName:   principal.Rule{Operators: principal.OperatorRead, Services: []string{devca.ServiceAudit}},
		// Revocations registration asks for (client suspended, expired, deleted or redirect URIs changed), and operators.
		tokenv1.TokenService_RevokeConsents_FullMethodName: principal.Rule{Operators: principal.OperatorWrite, Services: []string{devca.ServiceRegistration}},
		tokenv1.TokenService_RevokeGrants_FullMethodName:   principal.Rule{Operators: principal.OperatorWrite, Services: []string{devca.ServiceRegistration}},
		// The revocation feed: policy replicas (every resource), registration and audit (urn:mcpid:admin: revoked
		// operator logins), MCP servers (their own resource only, checked by the handler) and operators.
		tokenv1.TokenService_ListRevocations_FullMethodName:  principal.Rule{Operators: principal.OperatorRead, Services: revocationFollowers, MCPServers: true},
		tokenv1.TokenService_WatchRevocations_FullMethodName: principal.Rule{Operators: principal.OperatorRead, Services: revocationFollowers, MCPServers: true},
	}
}
