package document_test

import (
	"strings"
	"testing"

	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	"github.com/mcpid/mcpid/services/policy/internal/condition"
	"github.com/mcpid/mcpid/services/policy/internal/document"
)

const res = "https://crm.example.com/mcp"

func validator(t testing.TB) *document.Validator {
	t.Helper()
	env, err := condition.NewEnv(0)
	if err != nil {
		t.Fatal(err)
	}
	return document.NewValidator(env)
}

func manifest() *policyv1.Manifest {
	return &policyv1.Manifest{
		Resource:      res,
		DisplayName:   "Acme CRM",
		ServerVersion: "1.4.2",
		Scopes: []*policyv1.Scope{
			{Name: "crm:contacts.read", Description: "Read your contacts"},
			{Name: "crm:deals.write", Description: "Update your deals"},
			{Name: "crm:admin", Description: "Administer the CRM", Implies: []string{"crm:deals.write", "crm:contacts.read"}},
		},
		Tools: []*policyv1.Tool{
			{Name: "list_contacts", RequiredScopes: []string{"crm:contacts.read"}},
			{Name: "update_deal", RequiredScopes: []string{"crm:deals.write"}, Destructive: true},
		},
	}
}

func TestValidManifestAndPolicy(t *testing.T) {
	v := validator(t)
	if vs := v.ValidateManifest(manifest(), "manifest"); len(vs) > 0 {
		t.Fatalf("manifest: %+v", vs)
	}
	p := &policyv1.Policy{
		Resource: res,
		Defaults: &policyv1.PolicyDefaults{DenyUnlistedTools: true, Conditions: []*policyv1.Condition{{Expression: `token.sub != ""`}}},
		Scopes: []*policyv1.Scope{
			{Name: "crm:contacts.export", Description: "Export your contact lists", Sensitive: true, Implies: []string{"crm:contacts.read"}},
			{Name: "crm:contacts.read", Description: "Read all your contacts", Sensitive: true},
		},
		Tools: []*policyv1.Tool{
			{Name: "list_contacts"},
			{Name: "export_contacts", RequiredScopes: []string{"crm:contacts.export"}, RequireVerifiedClient: true,
				Conditions: []*policyv1.Condition{{Expression: "arguments.limit <= 1000.0", Message: "exports are limited to 1000 contacts"}}},
			{Name: "delete_everything", Deny: true},
		},
	}
	if vs := v.ValidatePolicy(p, manifest(), "policy"); len(vs) > 0 {
		t.Fatalf("policy: %+v", vs)
	}
	// A policy alone (no manifest) naming only the resource is valid.
	if vs := v.ValidatePolicy(&policyv1.Policy{Resource: res}, nil, "policy"); len(vs) > 0 {
		t.Fatalf("minimal policy: %+v", vs)
	}
}

// expectViolation checks that the violations include one at field whose
// description contains want.
func expectViolation(t *testing.T, vs []document.Violation, field, want string) {
	t.Helper()
	for _, v := range vs {
		if v.Field == field && strings.Contains(v.Description, want) {
			return
		}
	}
	t.Errorf("no violation %s ~ %q in %+v", field, want, vs)
}

func TestManifestRules(t *testing.T) {
	v := validator(t)
	cases := []struct {
		name        string
		mut         func(m *policyv1.Manifest)
		field, want string
	}{
		{"no resource", func(m *policyv1.Manifest) { m.Resource = "" }, "manifest.resource", "required"},
		{"reserved resource", func(m *policyv1.Manifest) { m.Resource = "urn:mcpid:policy" }, "manifest.resource", "reserved"},
		{"bad resource", func(m *policyv1.Manifest) { m.Resource = "https://crm.example.com/mcp?x=1" }, "manifest.resource", "query"},
		{"long display name", func(m *policyv1.Manifest) { m.DisplayName = strings.Repeat("x", 101) }, "manifest.display_name", "at most 100"},
		{"control character", func(m *policyv1.Manifest) { m.DisplayName = "a\x07b" }, "manifest.display_name", "control character"},
		{"duplicate scope", func(m *policyv1.Manifest) { m.Scopes = append(m.Scopes, m.Scopes[0]) }, "manifest.scopes[3].name", "twice"},
		{"scope without description", func(m *policyv1.Manifest) { m.Scopes[0].Description = "" }, "manifest.scopes[0].description", "required"},
		{"scope with space", func(m *policyv1.Manifest) { m.Scopes[0].Name = "crm read" }, "manifest.scopes[0].name", "not an OAuth scope token"},
		{"offline_access", func(m *policyv1.Manifest) { m.Scopes[0].Name = "offline_access" }, "manifest.scopes[0].name", "authorization-server scope"},
		{"reserved scope", func(m *policyv1.Manifest) { m.Scopes[0].Name = "MCPID:admin" }, "manifest.scopes[0].name", "reserved"},
		{"implies unknown", func(m *policyv1.Manifest) { m.Scopes[2].Implies = []string{"crm:nope"} }, "manifest.scopes[2].implies[0]", "not defined"},
		{"implies itself", func(m *policyv1.Manifest) { m.Scopes[2].Implies = []string{"crm:admin"} }, "manifest.scopes[2].implies[0]", "implies itself"},
		{"cycle", func(m *policyv1.Manifest) { m.Scopes[1].Implies = []string{"crm:admin"} }, "manifest.scopes[1].implies", "cycle"},
		{"unknown required scope", func(m *policyv1.Manifest) { m.Tools[0].RequiredScopes = []string{"crm:nope"} }, "manifest.tools[0].required_scopes[0]", "not defined"},
		{"bad tool name", func(m *policyv1.Manifest) { m.Tools[0].Name = "list contacts" }, "manifest.tools[0].name", "characters from"},
		{"duplicate tool", func(m *policyv1.Manifest) { m.Tools[1].Name = m.Tools[0].Name }, "manifest.tools[1].name", "two entries"},
		{"deny in manifest", func(m *policyv1.Manifest) { m.Tools[0].Deny = true }, "manifest.tools[0].deny", "only the operator"},
		{"bad condition", func(m *policyv1.Manifest) {
			m.Tools[0].Conditions = []*policyv1.Condition{{Expression: "arguments.limit <="}}
		}, "manifest.tools[0].conditions[0].expression", "line 1, column"},
		{"non-bool condition", func(m *policyv1.Manifest) {
			m.Tools[0].Conditions = []*policyv1.Condition{{Expression: "arguments.limit"}}
		}, "manifest.tools[0].conditions[0].expression", "want bool"},
		{"too many conditions", func(m *policyv1.Manifest) {
			for range 9 {
				m.Tools[0].Conditions = append(m.Tools[0].Conditions, &policyv1.Condition{Expression: "true"})
			}
		}, "manifest.tools[0].conditions", "at most 8"},
		{"long message", func(m *policyv1.Manifest) {
			m.Tools[0].Conditions = []*policyv1.Condition{{Expression: "true", Message: strings.Repeat("m", 201)}}
		}, "manifest.tools[0].conditions[0].message", "at most 200"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := manifest()
			tc.mut(m)
			expectViolation(t, v.ValidateManifest(m, "manifest"), tc.field, tc.want)
		})
	}
}

func TestPolicyRules(t *testing.T) {
	v := validator(t)
	cases := []struct {
		name        string
		p           *policyv1.Policy
		field, want string
	}{
		{"unknown scope", &policyv1.Policy{Resource: res, Tools: []*policyv1.Tool{{Name: "x", RequiredScopes: []string{"crm:nope"}}}},
			"policy.tools[0].required_scopes[0]", "not defined"},
		{"new scope without description", &policyv1.Policy{Resource: res, Scopes: []*policyv1.Scope{{Name: "crm:new"}}},
			"policy.scopes[0].description", "required"},
		{"implication on a manifest scope", &policyv1.Policy{Resource: res, Scopes: []*policyv1.Scope{{Name: "crm:contacts.read", Implies: []string{"crm:deals.write"}}}},
			"policy.scopes[0].implies", "widen"},
		{"cycle through the operator layer", &policyv1.Policy{Resource: res, Scopes: []*policyv1.Scope{
			{Name: "crm:a", Description: "a", Implies: []string{"crm:b"}},
			{Name: "crm:b", Description: "b", Implies: []string{"crm:a"}},
		}}, "policy.scopes[0].implies", "cycle"},
		{"bad default condition", &policyv1.Policy{Resource: res, Defaults: &policyv1.PolicyDefaults{Conditions: []*policyv1.Condition{{Expression: "nope"}}}},
			"policy.defaults.conditions[0].expression", "undeclared"},
		{"duplicate tool entry", &policyv1.Policy{Resource: res, Tools: []*policyv1.Tool{{Name: "a"}, {Name: "a"}}},
			"policy.tools[1].name", "two entries"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			expectViolation(t, v.ValidatePolicy(tc.p, manifest(), "policy"), tc.field, tc.want)
		})
	}
}

func TestNormalize(t *testing.T) {
	p := document.NormalizePolicy(&policyv1.Policy{Resource: "HTTPS://CRM.example.com:443/mcp/", Revision: 7, UpdatedBy: "x", Defaults: &policyv1.PolicyDefaults{}})
	if p.GetResource() != res || p.GetRevision() != 0 || p.GetUpdatedBy() != "" || p.GetDefaults() != nil {
		t.Fatalf("normalized %+v", p)
	}
}

func TestParse(t *testing.T) {
	yml := `
resource: https://crm.example.com/mcp
display_name: Acme CRM
defaults:
  deny_unlisted_tools: true
scopes:
  - name: crm:contacts.export
    description: Export your contact lists
    sensitive: true
tools:
  - name: list_contacts
  - name: export_contacts
    required_scopes: [crm:contacts.export]
    require_verified_client: true
    conditions:
      - expression: arguments.limit <= 1000.0
        message: exports are limited to 1000 contacts
`
	p, err := document.ParsePolicy([]byte(yml))
	if err != nil {
		t.Fatal(err)
	}
	if p.GetDisplayName() != "Acme CRM" || len(p.GetTools()) != 2 || p.GetTools()[1].GetConditions()[0].GetMessage() == "" || !p.GetDefaults().GetDenyUnlistedTools() {
		t.Fatalf("parsed %v", p)
	}
	if vs := validator(t).ValidatePolicy(p, nil, "policy"); len(vs) > 0 {
		t.Fatalf("example policy: %+v", vs)
	}
	for name, bad := range map[string]string{
		"unknown field":  "resource: x\nrequire_verified_clients: true\n",
		"not a mapping":  "- a\n- b\n",
		"two documents":  "resource: a\n---\nresource: b\n",
		"bad JSON":       `{"resource": }`,
		"wrong type":     "tools: 3\n",
		"non-string key": "? [a, b]\n: c\n",
	} {
		if _, err := document.ParsePolicy([]byte(bad)); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
	if _, err := document.ParseManifest([]byte(`{"resource":"https://crm.example.com/mcp","tools":[{"name":"a"}]}`)); err != nil {
		t.Errorf("JSON manifest: %v", err)
	}
}
