package server_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	"github.com/mcpid/mcpid/lib/auditemit"
	"github.com/mcpid/mcpid/services/policy/internal/decision"
	"github.com/mcpid/mcpid/services/policy/internal/testutil"
)

const (
	allow = policyv1.Decision_DECISION_ALLOW
	deny  = policyv1.Decision_DECISION_DENY
)

// TestCheckRules runs every decision rule through the real service: real
// etcd, real mTLS, the MCP server as caller.
func TestCheckRules(t *testing.T) {
	e := newEnv(t)
	e.start()
	e.installCRM(nil)
	c := e.mcp(nil, crm)
	k := e.keys

	verified := func(c map[string]any) { c["client_verified"] = true }
	tokenWith := func(scope string, mut func(map[string]any)) string {
		cl := testutil.Claims(crm, scope)
		if mut != nil {
			mut(cl)
		}
		return k.Sign(t, cl)
	}
	check := func(t *testing.T, token, tool string, a map[string]any) *policyv1.CheckResult {
		t.Helper()
		req := &policyv1.CheckRequest{AccessToken: token, Resource: crm, Tool: tool}
		if a != nil {
			req.Arguments = args(t, a)
		}
		resp, err := c.Check(ctx(t), req)
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		return resp.GetResult()
	}
	expect := func(t *testing.T, r *policyv1.CheckResult, d policyv1.Decision, reason policyv1.DecisionReason) {
		t.Helper()
		if r.GetDecision() != d || r.GetReason() != reason {
			t.Fatalf("got %v/%v (%q), want %v/%v", r.GetDecision(), r.GetReason(), r.GetReasonText(), d, reason)
		}
		if _, err := auditemit.IDTime(r.GetDecisionId()); err != nil {
			t.Errorf("decision id %q: %v", r.GetDecisionId(), err)
		}
	}

	t.Run("allowed with the scope", func(t *testing.T) {
		r := check(t, tokenWith("crm:contacts.read", nil), "list_contacts", nil)
		expect(t, r, allow, policyv1.DecisionReason_DECISION_REASON_ALLOWED)
		if strings.Join(r.GetRequiredScopes(), " ") != "crm:contacts.read" || strings.Join(r.GetGrantedScopes(), " ") != "crm:contacts.read" {
			t.Errorf("required %v granted %v", r.GetRequiredScopes(), r.GetGrantedScopes())
		}
		if r.GetPolicyRevision() == 0 {
			t.Error("policy_revision unset")
		}
		ttl := r.GetCacheTtl().AsDuration()
		if ttl <= 0 || ttl > decision.DefaultMaxCacheTTL {
			t.Errorf("cache_ttl %v, want (0, %v]", ttl, decision.DefaultMaxCacheTTL)
		}
	})
	t.Run("cache lifetime never beyond exp", func(t *testing.T) {
		r := check(t, tokenWith("crm:contacts.read", func(c map[string]any) { c["exp"] = time.Now().Add(5 * time.Second).Unix() }), "list_contacts", nil)
		expect(t, r, allow, policyv1.DecisionReason_DECISION_REASON_ALLOWED)
		if ttl := r.GetCacheTtl().AsDuration(); ttl > 5*time.Second {
			t.Errorf("cache_ttl %v beyond the token's exp", ttl)
		}
	})
	t.Run("allowed by implication", func(t *testing.T) {
		expect(t, check(t, tokenWith("crm:admin", nil), "merge_contacts", nil), allow, policyv1.DecisionReason_DECISION_REASON_ALLOWED)
	})
	t.Run("every missing scope named", func(t *testing.T) {
		r := check(t, tokenWith("crm:reports.read", nil), "merge_contacts", nil)
		expect(t, r, deny, policyv1.DecisionReason_DECISION_REASON_SCOPE_MISSING)
		if got := strings.Join(r.GetMissingScopes(), " "); got != "crm:contacts.read crm:deals.write" {
			t.Errorf("missing %q, want both, sorted", got)
		}
		if got := strings.Join(r.GetRequiredScopes(), " "); got != "crm:contacts.read crm:deals.write" {
			t.Errorf("required %q", got)
		}
		if got := strings.Join(r.GetGrantedScopes(), " "); got != "crm:reports.read" {
			t.Errorf("granted %q", got)
		}
		if !strings.Contains(r.GetReasonText(), "crm:deals.write") {
			t.Errorf("reason text %q", r.GetReasonText())
		}
	})
	t.Run("no scopes at all", func(t *testing.T) {
		r := check(t, tokenWith("", nil), "update_deal", nil)
		expect(t, r, deny, policyv1.DecisionReason_DECISION_REASON_SCOPE_MISSING)
		if strings.Join(r.GetMissingScopes(), " ") != "crm:deals.write" {
			t.Errorf("missing %v", r.GetMissingScopes())
		}
	})
	t.Run("unknown tool", func(t *testing.T) {
		r := check(t, tokenWith("crm:admin", nil), "drop_tables", nil)
		expect(t, r, deny, policyv1.DecisionReason_DECISION_REASON_TOOL_UNKNOWN)
		if len(r.GetRequiredScopes()) != 0 {
			t.Errorf("required scopes of an unknown tool: %v", r.GetRequiredScopes())
		}
		expect(t, check(t, tokenWith("crm:admin", nil), "bad name!", nil), deny, policyv1.DecisionReason_DECISION_REASON_TOOL_UNKNOWN)
	})
	t.Run("denied by the operator", func(t *testing.T) {
		expect(t, check(t, tokenWith("crm:admin", nil), "purge", nil), deny, policyv1.DecisionReason_DECISION_REASON_TOOL_DENIED)
	})
	t.Run("client verification", func(t *testing.T) {
		// The token service states the client's verification in the
		// client_verified claim; only a JSON true counts.
		for name, mut := range map[string]func(map[string]any){
			"absent":   nil,
			"false":    func(c map[string]any) { c["client_verified"] = false },
			"a string": func(c map[string]any) { c["client_verified"] = "true" },
			"a number": func(c map[string]any) { c["client_verified"] = 1 },
		} {
			tok := tokenWith("crm:contacts.export crm:contacts.read", mut)
			if r := check(t, tok, "export_contacts", map[string]any{"limit": 10.0}); r.GetReason() != policyv1.DecisionReason_DECISION_REASON_CLIENT_NOT_VERIFIED {
				t.Errorf("%s: export_contacts %v, want CLIENT_NOT_VERIFIED", name, r.GetReason())
			}
			if r := check(t, tok, "verified_only", nil); r.GetReason() != policyv1.DecisionReason_DECISION_REASON_CONDITION_FALSE {
				t.Errorf("%s: verified_only %v, want CONDITION_FALSE", name, r.GetReason())
			}
		}
		tok := tokenWith("crm:contacts.export crm:contacts.read", verified)
		expect(t, check(t, tok, "export_contacts", map[string]any{"limit": 10.0}), allow, policyv1.DecisionReason_DECISION_REASON_ALLOWED)
		expect(t, check(t, tok, "verified_only", nil), allow, policyv1.DecisionReason_DECISION_REASON_ALLOWED)
	})
	t.Run("conditions on arguments", func(t *testing.T) {
		tok := tokenWith("crm:contacts.export crm:contacts.read", verified)
		expect(t, check(t, tok, "export_contacts", map[string]any{"limit": 1000.0}), allow, policyv1.DecisionReason_DECISION_REASON_ALLOWED)
		r := check(t, tok, "export_contacts", map[string]any{"limit": 5000.0})
		expect(t, r, deny, policyv1.DecisionReason_DECISION_REASON_CONDITION_FALSE)
		if r.GetReasonText() != "exports are limited to 1000 contacts" {
			t.Errorf("reason text %q, want the condition's message", r.GetReasonText())
		}
		// A missing argument cannot be decided: denied, never allowed.
		expect(t, check(t, tok, "export_contacts", nil), deny, policyv1.DecisionReason_DECISION_REASON_CONDITION_ERROR)
		expect(t, check(t, tok, "export_contacts", map[string]any{"limit": "lots"}), deny, policyv1.DecisionReason_DECISION_REASON_CONDITION_ERROR)
	})
	t.Run("conditions on groups", func(t *testing.T) {
		sales := tokenWith("crm:reports.read", func(c map[string]any) { c["groups"] = []string{"sales"} })
		eng := tokenWith("crm:reports.read", func(c map[string]any) { c["groups"] = []string{"eng"} })
		none := tokenWith("crm:reports.read", nil)
		expect(t, check(t, sales, "sales_report", nil), allow, policyv1.DecisionReason_DECISION_REASON_ALLOWED)
		expect(t, check(t, eng, "sales_report", nil), deny, policyv1.DecisionReason_DECISION_REASON_CONDITION_FALSE)
		expect(t, check(t, none, "sales_report", nil), deny, policyv1.DecisionReason_DECISION_REASON_CONDITION_FALSE)
	})
	t.Run("a condition reading now is not cacheable", func(t *testing.T) {
		r := check(t, tokenWith("", nil), "office_hours", nil)
		expect(t, r, allow, policyv1.DecisionReason_DECISION_REASON_ALLOWED)
		if r.GetCacheTtl().AsDuration() != 0 {
			t.Errorf("cache_ttl %v, want 0", r.GetCacheTtl().AsDuration())
		}
	})
	t.Run("bad tokens are denials", func(t *testing.T) {
		good := testutil.Claims(crm, "crm:admin")
		valid := k.Sign(t, good)
		expired := testutil.Claims(crm, "crm:admin")
		expired["exp"] = time.Now().Add(-time.Hour).Unix()
		expired["iat"] = time.Now().Add(-2 * time.Hour).Unix()
		expired["nbf"] = expired["iat"]
		forged := testutil.Claims(crm, "crm:admin")
		forged["sub"] = "someone-else"
		cases := map[string]struct {
			token string
			want  policyv1.DecisionReason
		}{
			"tampered":                 {testutil.Tampered(valid, forged), policyv1.DecisionReason_DECISION_REASON_TOKEN_INVALID},
			"expired":                  {k.Sign(t, expired), policyv1.DecisionReason_DECISION_REASON_TOKEN_EXPIRED},
			"wrong audience":           {k.Token(t, other, "crm:admin"), policyv1.DecisionReason_DECISION_REASON_AUDIENCE_MISMATCH},
			"alg none":                 {k.AlgNone(good), policyv1.DecisionReason_DECISION_REASON_TOKEN_INVALID},
			"HMAC with the public key": {k.HMACWithPublicKey(t, good), policyv1.DecisionReason_DECISION_REASON_TOKEN_INVALID},
			"another issuer's key":     {testutil.NewKeys(t).Sign(t, good), policyv1.DecisionReason_DECISION_REASON_TOKEN_INVALID},
			"empty":                    {"", policyv1.DecisionReason_DECISION_REASON_TOKEN_INVALID},
		}
		for name, tc := range cases {
			t.Run(name, func(t *testing.T) {
				r := check(t, tc.token, "list_contacts", nil)
				expect(t, r, deny, tc.want)
				if r.GetCacheTtl().AsDuration() != 0 || len(r.GetGrantedScopes()) != 0 || len(r.GetRequiredScopes()) != 0 {
					t.Errorf("a rejected token got ttl %v, granted %v, required %v", r.GetCacheTtl().AsDuration(), r.GetGrantedScopes(), r.GetRequiredScopes())
				}
			})
		}
	})
	t.Run("revoked", func(t *testing.T) {
		tok := tokenWith("crm:admin", func(c map[string]any) { c["grant_id"] = "grant-revoked" })
		expect(t, check(t, tok, "list_contacts", nil), allow, policyv1.DecisionReason_DECISION_REASON_ALLOWED)
		e.revocations.revokeGrant("grant-revoked")
		// The cached verification does not outlive a revocation.
		expect(t, check(t, tok, "list_contacts", nil), deny, policyv1.DecisionReason_DECISION_REASON_TOKEN_REVOKED)
	})
	t.Run("revocation feed not current", func(t *testing.T) {
		e.revocations.notReady.Store(true)
		defer e.revocations.notReady.Store(false)
		r := check(t, tokenWith("crm:admin", nil), "list_contacts", nil)
		expect(t, r, deny, policyv1.DecisionReason_DECISION_REASON_NOT_READY)
		if r.GetCacheTtl().AsDuration() != 0 {
			t.Error("NOT_READY must not be cached")
		}
	})
	t.Run("arguments too large", func(t *testing.T) {
		big := map[string]any{"blob": strings.Repeat("x", 70<<10)}
		expect(t, check(t, tokenWith("crm:admin", nil), "list_contacts", big), deny, policyv1.DecisionReason_DECISION_REASON_ARGUMENTS_TOO_LARGE)
		deep := map[string]any{}
		cur := deep
		for range 40 {
			next := map[string]any{}
			cur["a"] = next
			cur = next
		}
		expect(t, check(t, tokenWith("crm:admin", nil), "list_contacts", deep), deny, policyv1.DecisionReason_DECISION_REASON_ARGUMENTS_TOO_LARGE)
	})
	t.Run("unknown and pending resources", func(t *testing.T) {
		resp, err := e.admin(nil).Check(ctx(t), &policyv1.CheckRequest{AccessToken: k.Token(t, other, ""), Resource: other, Tool: "x"})
		if err != nil {
			t.Fatal(err)
		}
		expect(t, resp.GetResult(), deny, policyv1.DecisionReason_DECISION_REASON_RESOURCE_UNKNOWN)
		if _, err := e.mcp(nil, other).PublishManifest(ctx(t), &policyv1.PublishManifestRequest{Manifest: &policyv1.Manifest{
			Resource: other, Tools: []*policyv1.Tool{{Name: "x"}},
		}}); err != nil {
			t.Fatal(err)
		}
		resp, err = e.mcp(nil, other).Check(ctx(t), &policyv1.CheckRequest{AccessToken: k.Token(t, other, ""), Resource: other, Tool: "x"})
		if err != nil {
			t.Fatal(err)
		}
		expect(t, resp.GetResult(), deny, policyv1.DecisionReason_DECISION_REASON_RESOURCE_UNKNOWN)
	})
	t.Run("decision ids are unique", func(t *testing.T) {
		seen := map[string]bool{}
		tok := tokenWith("crm:admin", nil)
		for range 20 {
			id := check(t, tok, "list_contacts", nil).GetDecisionId()
			if seen[id] {
				t.Fatalf("decision id %s repeated", id)
			}
			seen[id] = true
		}
	})
	t.Run("malformed requests are call errors", func(t *testing.T) {
		for name, req := range map[string]*policyv1.CheckRequest{
			"no resource":  {Tool: "x"},
			"bad resource": {Resource: "not a uri", Tool: "x"},
			"no tool":      {Resource: crm},
		} {
			_, err := c.Check(ctx(t), req)
			if status.Code(err) != codes.InvalidArgument || reasonOf(err) != "ERROR_REASON_INVALID_FIELD" {
				t.Errorf("%s: %v, want INVALID_ARGUMENT / INVALID_FIELD", name, err)
			}
		}
	})
}

func TestBatchCheckAndListAllowedTools(t *testing.T) {
	e := newEnv(t)
	e.start()
	e.installCRM(nil)
	c := e.mcp(nil, crm)
	tok := e.keys.Token(t, crm, "crm:contacts.read")

	resp, err := c.BatchCheck(ctx(t), &policyv1.BatchCheckRequest{AccessToken: tok, Resource: crm, Items: []*policyv1.BatchCheckItem{
		{Tool: "list_contacts"}, {Tool: "update_deal"}, {Tool: "nope"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := []policyv1.DecisionReason{
		policyv1.DecisionReason_DECISION_REASON_ALLOWED,
		policyv1.DecisionReason_DECISION_REASON_SCOPE_MISSING,
		policyv1.DecisionReason_DECISION_REASON_TOOL_UNKNOWN,
	}
	ids := map[string]bool{}
	for i, r := range resp.GetResults() {
		if r.GetReason() != want[i] || r.GetTool() != []string{"list_contacts", "update_deal", "nope"}[i] {
			t.Errorf("item %d: %v %v", i, r.GetTool(), r.GetReason())
		}
		ids[r.GetDecisionId()] = true
	}
	if len(ids) != 3 {
		t.Errorf("decision ids not distinct: %v", ids)
	}
	for name, req := range map[string]*policyv1.BatchCheckRequest{
		"no items":       {AccessToken: tok, Resource: crm},
		"too many items": {AccessToken: tok, Resource: crm, Items: make([]*policyv1.BatchCheckItem, 101)},
		"item tool":      {AccessToken: tok, Resource: crm, Items: []*policyv1.BatchCheckItem{{}}},
	} {
		if _, err := c.BatchCheck(ctx(t), req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v", name, err)
		}
	}
	// A bad token denies every item.
	resp, err = c.BatchCheck(ctx(t), &policyv1.BatchCheckRequest{AccessToken: "x", Resource: crm, Items: []*policyv1.BatchCheckItem{{Tool: "list_contacts"}, {Tool: "purge"}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range resp.GetResults() {
		if r.GetDecision() != deny || r.GetReason() != policyv1.DecisionReason_DECISION_REASON_TOKEN_INVALID {
			t.Errorf("bad token: %v", r)
		}
	}

	list, err := c.ListAllowedTools(ctx(t), &policyv1.ListAllowedToolsRequest{AccessToken: tok, Resource: crm})
	if err != nil {
		t.Fatal(err)
	}
	if list.GetDecision() != allow || strings.Join(list.GetAllowedTools(), ",") != "list_contacts,office_hours" {
		t.Errorf("allowed %v (%v)", list.GetAllowedTools(), list.GetReason())
	}
	denied := map[string]*policyv1.ToolDenial{}
	for _, d := range list.GetDeniedTools() {
		denied[d.GetTool()] = d
	}
	if d := denied["update_deal"]; d.GetReason() != policyv1.DecisionReason_DECISION_REASON_SCOPE_MISSING || strings.Join(d.GetMissingScopes(), " ") != "crm:deals.write" {
		t.Errorf("update_deal: %v", d)
	}
	if d := denied["purge"]; d.GetReason() != policyv1.DecisionReason_DECISION_REASON_TOOL_DENIED {
		t.Errorf("purge: %v", d)
	}
	if list.GetCacheTtl().AsDuration() != 0 {
		t.Error("office_hours reads now: the list is not cacheable")
	}
	// A condition on arguments is assumed satisfiable in the listing.
	vc := testutil.Claims(crm, "crm:contacts.export crm:contacts.read")
	vc["client_verified"] = true
	list, err = c.ListAllowedTools(ctx(t), &policyv1.ListAllowedToolsRequest{AccessToken: e.keys.Sign(t, vc), Resource: crm})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(list.GetAllowedTools(), ","), "export_contacts") {
		t.Errorf("export_contacts (condition on arguments) hidden: %v", list.GetAllowedTools())
	}
	list, err = c.ListAllowedTools(ctx(t), &policyv1.ListAllowedToolsRequest{AccessToken: e.keys.Token(t, other, ""), Resource: crm})
	if err != nil {
		t.Fatal(err)
	}
	if list.GetDecision() != deny || list.GetReason() != policyv1.DecisionReason_DECISION_REASON_AUDIENCE_MISMATCH || len(list.GetAllowedTools()) != 0 {
		t.Errorf("wrong audience: %v", list)
	}
}
