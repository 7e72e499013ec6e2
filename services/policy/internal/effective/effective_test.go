package effective_test

import (
	"slices"
	"strings"
	"testing"

	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	"github.com/mcpid/mcpid/services/policy/internal/condition"
	"github.com/mcpid/mcpid/services/policy/internal/effective"
)

const res = "https://crm.example.com/mcp"

func manifest() *policyv1.Manifest {
	return &policyv1.Manifest{
		Resource:      res,
		DisplayName:   "CRM (server)",
		ServerVersion: "1.4.2",
		Revision:      5,
		Scopes: []*policyv1.Scope{
			{Name: "crm:contacts.read", Description: "Read your contacts"},
			{Name: "crm:deals.write", Description: "Update your deals", Sensitive: true},
			{Name: "crm:admin", Description: "Administer", Implies: []string{"crm:deals.write"}},
		},
		Tools: []*policyv1.Tool{
			{Name: "list_contacts", RequiredScopes: []string{"crm:contacts.read"}, Conditions: []*policyv1.Condition{{Expression: "true"}}},
			{Name: "update_deal", RequiredScopes: []string{"crm:deals.write"}},
			{Name: "merge_contacts", RequiredScopes: []string{"crm:contacts.read"}},
		},
	}
}

func policy() *policyv1.Policy {
	return &policyv1.Policy{
		Resource:    res,
		DisplayName: "Acme CRM",
		Revision:    9,
		Defaults: &policyv1.PolicyDefaults{
			RequireVerifiedClient: true,
			Conditions:            []*policyv1.Condition{{Expression: `now.getHours("UTC") >= 0`}},
		},
		Scopes: []*policyv1.Scope{
			{Name: "crm:contacts.export", Description: "Export", Implies: []string{"crm:contacts.read"}},
			{Name: "crm:contacts.read", Description: "Read all your contacts", Sensitive: true},
			{Name: "crm:admin", Implies: []string{"crm:contacts.export"}}, // ignored: a manifest scope
		},
		Tools: []*policyv1.Tool{
			{Name: "list_contacts", RequiredScopes: []string{"crm:contacts.export"}, Conditions: []*policyv1.Condition{{Expression: "client.verified"}}},
			{Name: "update_deal", Deny: true},
			{Name: "export_contacts", RequiredScopes: []string{"crm:contacts.export", "crm:gone"}, Destructive: true},
		},
	}
}

func build(t *testing.T, p *policyv1.Policy, m *policyv1.Manifest) *effective.Resource {
	t.Helper()
	env, err := condition.NewEnv(0)
	if err != nil {
		t.Fatal(err)
	}
	return effective.Build(res, p, m, env)
}

func TestMerge(t *testing.T) {
	r := build(t, policy(), manifest())
	e := r.Effective
	if e.GetState() != policyv1.ResourceState_RESOURCE_STATE_ACTIVE || e.GetRevision() != 9 || e.GetPolicyRevision() != 9 || e.GetManifestRevision() != 5 {
		t.Errorf("state/revisions: %v", e)
	}
	if e.GetDisplayName() != "Acme CRM" {
		t.Errorf("display name %q: the operator's wins", e.GetDisplayName())
	}

	lc, _ := r.Tool("list_contacts")
	if got := strings.Join(lc.Required, " "); got != "crm:contacts.export crm:contacts.read" {
		t.Errorf("list_contacts requires %q: union of both layers", got)
	}
	if len(lc.Conditions) != 3 || lc.Conditions[0].Proto.GetLayer() != policyv1.Layer_LAYER_MANIFEST ||
		lc.Conditions[1].Proto.GetLayer() != policyv1.Layer_LAYER_POLICY || lc.Conditions[2].Proto.GetLayer() != policyv1.Layer_LAYER_POLICY_DEFAULTS {
		t.Errorf("conditions: manifest, operator entry, defaults in order: %+v", lc.Proto.GetConditions())
	}
	if lc.Conditions[2].Proto.GetField() != "defaults.conditions[0]" || lc.Conditions[0].Proto.GetField() != "tools[0].conditions[0]" {
		t.Errorf("condition fields %q %q", lc.Conditions[0].Proto.GetField(), lc.Conditions[2].Proto.GetField())
	}
	if !lc.RequireVerified || !lc.ReadsNow {
		t.Errorf("defaults fold in: verified %v, reads now %v", lc.RequireVerified, lc.ReadsNow)
	}
	if ud, _ := r.Tool("update_deal"); !ud.Denied {
		t.Error("update_deal: deny in the operator layer")
	}
	if ec, _ := r.Tool("export_contacts"); !ec.Destructive || ec.Proto.GetInManifest() || !ec.Proto.GetInPolicy() {
		t.Errorf("export_contacts %+v", ec.Proto)
	}
	if mc, _ := r.Tool("merge_contacts"); mc.Denied {
		t.Error("merge_contacts: unlisted tools are callable unless deny_unlisted_tools")
	}
	if _, ok := r.Tool("nope"); ok {
		t.Error("a tool in neither layer exists")
	}

	scopes := map[string]*policyv1.CatalogScope{}
	for _, s := range r.Catalog.GetScopes() {
		scopes[s.GetName()] = s
	}
	if s := scopes["crm:contacts.read"]; s.GetDescription() != "Read all your contacts" || !s.GetSensitive() {
		t.Errorf("operator overrides description and sets sensitive: %v", s)
	}
	if s := scopes["crm:admin"]; strings.Join(s.GetImplies(), " ") != "crm:deals.write" || !s.GetSensitive() {
		t.Errorf("crm:admin: manifest implications only, sensitive through deals.write: %v", s)
	}
	if s := scopes["crm:contacts.export"]; strings.Join(s.GetImpliedScopes(), " ") != "crm:contacts.read" || !s.GetSensitive() {
		t.Errorf("export implies read (sensitive): %v", s)
	}
	if got := r.Implied("crm:admin"); !slices.Equal(got, []string{"crm:deals.write"}) {
		t.Errorf("implied(admin) = %v", got)
	}
}

func TestDeniedUnlisted(t *testing.T) {
	p := &policyv1.Policy{Resource: res, Defaults: &policyv1.PolicyDefaults{DenyUnlistedTools: true}, Tools: []*policyv1.Tool{{Name: "list_contacts"}}}
	r := build(t, p, manifest())
	if lc, _ := r.Tool("list_contacts"); lc.Denied {
		t.Error("a reviewed tool (entry with only its name) is allowed")
	}
	if ud, _ := r.Tool("update_deal"); !ud.Denied || ud.DenySource.Field != "defaults.deny_unlisted_tools" {
		t.Errorf("unreviewed tool: %+v", ud.DenySource)
	}
}

func TestDrift(t *testing.T) {
	r := build(t, policy(), manifest())
	var got []string
	for _, it := range r.Drift.GetItems() {
		got = append(got, it.GetKind().String()+"/"+it.GetTool()+"/"+strings.Join(it.GetScopes(), ","))
	}
	want := []string{
		"DRIFT_KIND_TOOL_NOT_REVIEWED/merge_contacts/",
		"DRIFT_KIND_TOOL_NOT_IN_MANIFEST/export_contacts/",
		"DRIFT_KIND_TOOL_SCOPES_ADDED/list_contacts/crm:contacts.export",
		"DRIFT_KIND_SCOPE_NOT_IN_MANIFEST//crm:contacts.export",
		"DRIFT_KIND_SCOPE_OVERRIDDEN//crm:contacts.read",
		"DRIFT_KIND_SCOPE_UNDEFINED/export_contacts/crm:gone",
		"DRIFT_KIND_IMPLICATION_IGNORED//crm:admin",
	}
	if !slices.Equal(got, want) {
		t.Errorf("drift\n got %q\nwant %q", got, want)
	}
	// Fail closed: the undefined scope stays required.
	if ec, _ := r.Tool("export_contacts"); !slices.Contains(ec.Required, "crm:gone") {
		t.Errorf("export_contacts requires %v", ec.Required)
	}
	if r.Summary.GetDriftCount() != int32(len(want)) || r.Summary.GetToolCount() != 4 {
		t.Errorf("summary %v", r.Summary)
	}

	onlyPolicy := build(t, &policyv1.Policy{Resource: res}, nil)
	if k := onlyPolicy.Drift.GetItems()[0].GetKind(); k != policyv1.DriftKind_DRIFT_KIND_MANIFEST_MISSING || len(onlyPolicy.Drift.GetItems()) != 1 {
		t.Errorf("policy only: %v", onlyPolicy.Drift.GetItems())
	}
	onlyManifest := build(t, nil, manifest())
	if k := onlyManifest.Drift.GetItems()[0].GetKind(); k != policyv1.DriftKind_DRIFT_KIND_POLICY_MISSING || len(onlyManifest.Drift.GetItems()) != 1 {
		t.Errorf("manifest only: %v", onlyManifest.Drift.GetItems())
	}
	if onlyManifest.Catalog != nil || onlyManifest.Effective.GetState() != policyv1.ResourceState_RESOURCE_STATE_PENDING {
		t.Error("a manifest alone is PENDING, without a catalogue")
	}
	if onlyManifest.Effective.GetDisplayName() != "CRM (server)" {
		t.Errorf("display name falls back to the manifest's: %q", onlyManifest.Effective.GetDisplayName())
	}
}

func TestBrokenStoredConditionIsAnError(t *testing.T) {
	m := manifest()
	m.Tools[0].Conditions = []*policyv1.Condition{{Expression: "no_such_variable"}}
	r := build(t, nil, m)
	lc, _ := r.Tool("list_contacts")
	if lc.Conditions[0].Err == nil || lc.Conditions[0].Program != nil {
		t.Fatal("a stored condition that no longer compiles must carry its error")
	}
}
