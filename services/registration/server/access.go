package server

import (
	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
	"github.com/mcpid/mcpid/lib/devca"
	"github.com/mcpid/mcpid/lib/principal"
)

var (
	operatorRead  = principal.Rule{Operators: principal.OperatorRead}
	operatorWrite = principal.Rule{Operators: principal.OperatorWrite}
)

// methodPolicy is the allowlist of every RegistrationService method and who may call it
// (DESIGN: Principals). A method that is not listed is refused, and
// Complete refuses to start when a served method is missing here.
func methodPolicy() principal.Policy {
	return principal.Policy{
		// Public: the OAuth edge; the handler authenticates the client itself.
		registrationv1.RegistrationService_RegisterClient_FullMethodName:           principal.Rule{Public: true},
		registrationv1.RegistrationService_GetClientRegistration_FullMethodName:    principal.Rule{Public: true},
		registrationv1.RegistrationService_UpdateClientRegistration_FullMethodName: principal.Rule{Public: true},
		registrationv1.RegistrationService_DeleteClientRegistration_FullMethodName: principal.Rule{Public: true},
		// Only the token service authenticates and resolves clients, so secrets never leave this service.
		registrationv1.RegistrationService_AuthenticateClient_FullMethodName: principal.Rule{Services: []string{devca.ServiceToken}},
		registrationv1.RegistrationService_ResolveClient_FullMethodName:      principal.Rule{Services: []string{devca.ServiceToken}},
		// Operator writes: admin only.
		registrationv1.RegistrationService_CreateClient_FullMethodName:             operatorWrite,
		registrationv1.RegistrationService_UpdateClient_FullMethodName:             operatorWrite,
		registrationv1.RegistrationService_DeleteClient_FullMethodName:             operatorWrite,
		registrationv1.RegistrationService_SetClientVerification_FullMethodName:    operatorWrite,
		registrationv1.RegistrationService_RotateClientSecret_FullMethodName:       operatorWrite,
		registrationv1.RegistrationService_CreateInitialAccessToken_FullMethodName: operatorWrite,
		registrationv1.RegistrationService_RevokeInitialAccessToken_FullMethodName: operatorWrite,
		// Operator reads: admin or auditor.
		registrationv1.RegistrationService_ListInitialAccessTokens_FullMethodName: operatorRead,
		// Reads the audit service also makes for the agent inventory.
		registrationv1.RegistrationService_GetClient_FullMethodName:   principal.Rule{Operators: principal.OperatorRead, Services: []string{devca.ServiceAudit}},
		registrationv1.RegistrationService_ListClients_FullMethodName: principal.Rule{Operators: principal.OperatorRead, Services: []string{devca.ServiceAudit}},
	}
}
