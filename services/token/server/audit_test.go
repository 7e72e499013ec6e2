package server_test

import (
	"context"
	"testing"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	auditserver "github.com/mcpid/mcpid/services/audit/server"
)

// auditCount counts the token service's events of type t at the audit
// service.
func (e *env) auditCount(t auditv1.EventType) int {
	e.t.Helper()
	c := auditv1.NewAuditServiceClient(e.pki.Dial(e.t, e.audit, auditserver.Name, e.pki.AsOperator(e.t, "root", "auditor")))
	n, token := 0, ""
	for range 100 {
		resp, err := c.QueryEvents(context.Background(), &auditv1.QueryEventsRequest{PageSize: 500, PageToken: token})
		if err != nil {
			e.t.Fatal(err)
		}
		for _, ev := range resp.GetEvents() {
			if ev.GetType() == t && ev.GetSourceService() == auditv1.SourceService_SOURCE_SERVICE_TOKEN {
				n++
			}
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	return n
}

// TestAuditEventsDelivered checks both producer paths against the audit
// service: state changes through the outbox (relayed, then deleted from it),
// client_credentials issuance through the batched emitter.
func TestAuditEventsDelivered(t *testing.T) {
	e := startEnv(t, withAudit)
	a := webAuthz("crm:read offline_access")
	code, _ := e.fullFlow(a, "crm:read", "offline_access")
	tr := decodeToken(t, e.exchange(code, a))
	decodeToken(t, e.post("/oauth2/token", tokenForm("grant_type", "refresh_token", "refresh_token", tr.RefreshToken), clientWeb, secretWeb))
	for range 3 {
		decodeToken(t, e.post("/oauth2/token", tokenForm("grant_type", "client_credentials", "resource", resCRM,
			"client_id", clientMachine, "client_secret", secretMachine), "", ""))
	}
	e.waitFor("events at audit", func() bool {
		return e.auditCount(auditv1.EventType_EVENT_TYPE_LOGIN_SUCCEEDED) == 1 &&
			e.auditCount(auditv1.EventType_EVENT_TYPE_CONSENT_GRANTED) == 1 &&
			e.auditCount(auditv1.EventType_EVENT_TYPE_TOKEN_REFRESHED) == 1 &&
			e.auditCount(auditv1.EventType_EVENT_TYPE_USER_CREATED) == 2 &&
			e.auditCount(auditv1.EventType_EVENT_TYPE_KEY_ROTATED) == 1 &&
			// one authorization_code issuance + three client_credentials
			e.auditCount(auditv1.EventType_EVENT_TYPE_TOKEN_ISSUED) == 4
	})
	e.waitFor("outbox drained", func() bool { return len(e.outboxTypes()) == 0 })
}
