package server

import (
	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/lib/devca"
	"github.com/mcpid/mcpid/lib/principal"
)

var (
	operatorRead  = principal.Rule{Operators: principal.OperatorRead}
	operatorWrite = principal.Rule{Operators: principal.OperatorWrite}
)

// methodPolicy is the allowlist of every AuditService method and who may call it
// (DESIGN: Principals). A method that is not listed is refused, and
// Complete refuses to start when a served method is missing here.
func methodPolicy() principal.Policy {
	return principal.Policy{
		// Only services append events (each only as itself, checked by the handler).
		auditv1.AuditService_AppendEvents_FullMethodName: principal.Rule{Services: []string{devca.ServiceRegistration, devca.ServiceToken, devca.ServicePolicy}},
		// Operator reads: admin or auditor.
		auditv1.AuditService_QueryEvents_FullMethodName:       operatorRead,
		auditv1.AuditService_TailEvents_FullMethodName:        operatorRead,
		auditv1.AuditService_VerifyChain_FullMethodName:       operatorRead,
		auditv1.AuditService_ListCheckpoints_FullMethodName:   operatorRead,
		auditv1.AuditService_GetCheckpoint_FullMethodName:     operatorRead,
		auditv1.AuditService_GetCheckpointKeys_FullMethodName: operatorRead,
		auditv1.AuditService_ListAgents_FullMethodName:        operatorRead,
		auditv1.AuditService_GetAgent_FullMethodName:          operatorRead,
		// Operator writes: admin only.
		auditv1.AuditService_ErasePersonalData_FullMethodName: operatorWrite,
	}
}
