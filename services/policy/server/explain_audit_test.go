package server_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	"github.com/mcpid/mcpid/services/policy/internal/testutil"
	"github.com/mcpid/mcpid/services/policy/server"
)

func steps(resp *policyv1.ExplainResponse) string {
	var out []string
	for _, s := range resp.GetTrace() {
		out = append(out, strings.TrimPrefix(s.GetKind().String(), "EVALUATION_STEP_KIND_")+"="+strings.TrimPrefix(s.GetOutcome().String(), "STEP_OUTCOME_"))
	}
	return strings.Join(out, " ")
}

func TestExplain(t *testing.T) {
	e := newEnv(t)
	e.start()
	e.installCRM(nil)
	ex := e.auditor(nil)

	// A real token that lacks a scope and fails a condition: every step is
	// evaluated and the decision is the first failure's.
	tok := e.keys.Token(t, crm, "crm:contacts.read")
	resp, err := ex.Explain(ctx(t), &policyv1.ExplainRequest{
		Resource: crm, Tool: "export_contacts",
		Token:     &policyv1.ExplainRequest_AccessToken{AccessToken: tok},
		Arguments: args(t, map[string]any{"limit": 5000.0}),
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "READINESS=PASS RESOURCE=PASS TOKEN_SIGNATURE=PASS TOKEN_CLAIMS=PASS TOKEN_AUDIENCE=PASS TOKEN_REVOCATION=PASS ARGUMENTS=PASS TOOL=PASS TOOL_DENY=PASS CLIENT_VERIFICATION=FAIL SCOPES=FAIL CONDITION=FAIL"
	if got := steps(resp); got != want {
		t.Errorf("trace\n got %s\nwant %s", got, want)
	}
	r := resp.GetResult()
	if r.GetReason() != policyv1.DecisionReason_DECISION_REASON_CLIENT_NOT_VERIFIED || r.GetDecisionId() != "" {
		t.Errorf("result %v", r)
	}
	last := resp.GetTrace()[len(resp.GetTrace())-1]
	if last.GetLayer() != policyv1.Layer_LAYER_POLICY || last.GetField() != "tools[0].conditions[0]" || last.GetExpression() != "arguments.limit <= 1000.0" {
		t.Errorf("condition step %v", last)
	}
	if resp.GetEffectiveTool().GetName() != "export_contacts" || resp.GetConditionInput().GetArguments().GetFields()["limit"].GetNumberValue() != 5000 {
		t.Errorf("effective tool / input: %v %v", resp.GetEffectiveTool(), resp.GetConditionInput())
	}
	scopes := resp.GetTrace()[10]
	if !strings.Contains(scopes.GetDetail(), "missing crm:contacts.export") {
		t.Errorf("scope detail %q", scopes.GetDetail())
	}

	// An expired token: its claims step fails, the rest is still evaluated.
	exp := testutil.Claims(crm, "crm:admin")
	exp["exp"] = time.Now().Add(-time.Hour).Unix()
	exp["iat"] = time.Now().Add(-2 * time.Hour).Unix()
	delete(exp, "nbf")
	resp, err = ex.Explain(ctx(t), &policyv1.ExplainRequest{Resource: crm, Tool: "list_contacts", Token: &policyv1.ExplainRequest_AccessToken{AccessToken: e.keys.Sign(t, exp)}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetResult().GetReason() != policyv1.DecisionReason_DECISION_REASON_TOKEN_EXPIRED || !strings.Contains(steps(resp), "TOKEN_CLAIMS=FAIL TOKEN_AUDIENCE=PASS") || !strings.Contains(steps(resp), "SCOPES=PASS") {
		t.Errorf("expired: %v / %s", resp.GetResult().GetReason(), steps(resp))
	}
	// ... and at a time it was valid, it passes.
	resp, err = ex.Explain(ctx(t), &policyv1.ExplainRequest{Resource: crm, Tool: "list_contacts", Token: &policyv1.ExplainRequest_AccessToken{AccessToken: e.keys.Sign(t, exp)},
		Time: timestamppb.New(time.Now().Add(-90 * time.Minute))})
	if err != nil || resp.GetResult().GetDecision() != allow {
		t.Errorf("at a past time: %v, %v", resp.GetResult(), err)
	}

	// Simulated claims against a candidate policy that is not stored.
	cand := crmPolicy()
	cand.Tools = append(cand.Tools, &policyv1.Tool{Name: "list_contacts", Conditions: []*policyv1.Condition{{Expression: `"eng" in groups`, Message: "eng only"}}})
	claims, _ := structpb.NewStruct(map[string]any{"sub": "u", "client_id": "c", "scope": "crm:contacts.read", "groups": []any{"eng"}})
	resp, err = ex.Explain(ctx(t), &policyv1.ExplainRequest{Resource: crm, Tool: "list_contacts",
		Token:           &policyv1.ExplainRequest_SimulatedToken{SimulatedToken: &policyv1.SimulatedToken{Claims: claims}},
		CandidatePolicy: cand})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetResult().GetDecision() != allow || resp.GetResult().GetPolicyRevision() != 0 || !strings.Contains(steps(resp), "TOKEN_SIGNATURE=SKIPPED") {
		t.Errorf("simulated: %v / %s", resp.GetResult(), steps(resp))
	}
	// The candidate was not stored.
	eff, err := ex.GetEffectivePolicy(ctx(t), &policyv1.GetEffectivePolicyRequest{Resource: crm})
	if err != nil {
		t.Fatal(err)
	}
	for _, tool := range eff.GetEffective().GetTools() {
		if tool.GetName() == "list_contacts" && len(tool.GetConditions()) != 0 {
			t.Error("Explain stored its candidate")
		}
	}

	// Bad requests.
	bad := crmPolicy()
	bad.Tools[0].Conditions[0].Expression = "1 +"
	_, err = ex.Explain(ctx(t), &policyv1.ExplainRequest{Resource: crm, Tool: "x", Token: &policyv1.ExplainRequest_AccessToken{AccessToken: "t"}, CandidatePolicy: bad})
	expectCode(t, err, codes.InvalidArgument, "ERROR_REASON_POLICY_INVALID")
	if v := violations(err); len(v) == 0 || v[0] != "candidate_policy.tools[0].conditions[0].expression" {
		t.Errorf("violations %v", v)
	}
	_, err = ex.Explain(ctx(t), &policyv1.ExplainRequest{Resource: crm, Tool: "x"})
	expectCode(t, err, codes.InvalidArgument, "ERROR_REASON_INVALID_FIELD")
	_, err = ex.Explain(ctx(t), &policyv1.ExplainRequest{Resource: crm, Tool: "x", Token: &policyv1.ExplainRequest_AccessToken{AccessToken: "t"},
		CandidatePolicy: &policyv1.Policy{Resource: other}})
	expectCode(t, err, codes.InvalidArgument, "ERROR_REASON_INVALID_FIELD")
}

func eventsOf(f *fakeAudit, typ auditv1.EventType) []*auditv1.Event {
	var out []*auditv1.Event
	for _, ev := range f.snapshot() {
		if ev.GetType() == typ {
			out = append(out, ev)
		}
	}
	return out
}

// TestAuditEvents: policy changes reach audit through the outbox (same
// transaction, relayed), decisions through the batched emitter — every
// denial, allows of destructive tools, other allows as sampled — each with
// its decision id.
func TestAuditEvents(t *testing.T) {
	e := newEnv(t)
	e.audit = startFakeAudit(t, e.pki)
	e.start(withAudit(e), func(c *server.Config) { c.AuditAllowSampleEvery = 1000 })
	e.installCRM(nil)
	eventually(t, "the manifest and policy events", func() bool {
		return len(eventsOf(e.audit, auditv1.EventType_EVENT_TYPE_TOOL_MANIFEST_PUBLISHED)) == 1 &&
			len(eventsOf(e.audit, auditv1.EventType_EVENT_TYPE_POLICY_UPDATED)) == 1
	})
	up := eventsOf(e.audit, auditv1.EventType_EVENT_TYPE_POLICY_UPDATED)[0]
	if up.GetActor().GetKind() != auditv1.ActorKind_ACTOR_KIND_OPERATOR || up.GetActor().GetId() != "alice" || up.GetResource() != crm {
		t.Errorf("policy.updated %v", up)
	}
	pub := eventsOf(e.audit, auditv1.EventType_EVENT_TYPE_TOOL_MANIFEST_PUBLISHED)[0]
	if pub.GetActor().GetKind() != auditv1.ActorKind_ACTOR_KIND_MCP_SERVER || pub.GetActor().GetId() != crm || pub.GetDetails().GetFields()["version"].GetStringValue() != "1.4.2" {
		t.Errorf("tool_manifest.published %v", pub)
	}

	c := e.mcp(nil, crm)
	check := func(tool, scope string, a map[string]any) *policyv1.CheckResult {
		req := &policyv1.CheckRequest{AccessToken: e.keys.Token(t, crm, scope), Resource: crm, Tool: tool}
		if a != nil {
			req.Arguments = args(t, a)
		}
		resp, err := c.Check(ctx(t), req)
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetResult()
	}
	allowed := check("list_contacts", "crm:contacts.read", nil)     // sampled out (1 in 1000)
	destructive := check("update_deal", "crm:deals.write", nil)     // always
	denied := check("merge_contacts", "", map[string]any{"q": "x"}) // always
	if allowed.GetDecision() != allow || destructive.GetDecision() != allow || denied.GetDecision() != deny {
		t.Fatal("unexpected decisions")
	}
	eventually(t, "two decision events", func() bool {
		return len(eventsOf(e.audit, auditv1.EventType_EVENT_TYPE_POLICY_DECISION)) >= 2
	})
	byID := map[string]*auditv1.Event{}
	for _, ev := range eventsOf(e.audit, auditv1.EventType_EVENT_TYPE_POLICY_DECISION) {
		byID[ev.GetDecisionId()] = ev
	}
	if _, ok := byID[allowed.GetDecisionId()]; ok {
		t.Error("a sampled-out allow reached audit")
	}
	d := byID[destructive.GetDecisionId()]
	if d.GetDecision() != auditv1.Decision_DECISION_ALLOW || d.GetTool() != "update_deal" || d.GetClientId() == "" || d.GetUserId() != "user-1" || d.GetTokenId() == "" || d.GetGrantId() != "grant-1" {
		t.Errorf("destructive allow event %v", d)
	}
	n := byID[denied.GetDecisionId()]
	if n.GetDecision() != auditv1.Decision_DECISION_DENY || n.GetReason() != "DECISION_REASON_SCOPE_MISSING" ||
		len(n.GetDetails().GetFields()["missing_scopes"].GetListValue().GetValues()) != 2 ||
		n.GetToolArguments().GetValue() != `{"q":"x"}` || strings.Join(n.GetScopes(), " ") != "crm:contacts.read crm:deals.write" {
		t.Errorf("deny event %v", n)
	}
	if n.GetActor().GetKind() != auditv1.ActorKind_ACTOR_KIND_MCP_SERVER {
		t.Errorf("actor %v", n.GetActor())
	}

	if _, err := e.admin(nil).DeletePolicy(ctx(t), &policyv1.DeletePolicyRequest{Resource: crm}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "policy.deleted", func() bool { return len(eventsOf(e.audit, auditv1.EventType_EVENT_TYPE_POLICY_DELETED)) == 1 })
}
