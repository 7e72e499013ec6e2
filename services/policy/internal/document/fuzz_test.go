package document_test

import (
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/mcpid/mcpid/services/policy/internal/document"
	"github.com/mcpid/mcpid/services/policy/internal/effective"
)

// FuzzParsePolicy feeds arbitrary documents to the parser, and whatever
// parses to validation and the merge. Nothing may panic; a document that
// validates must merge into a policy whose tools are all in it, and must
// survive a JSON round trip unchanged. The seeds run as part of go test.
func FuzzParsePolicy(f *testing.F) {
	for _, seed := range []string{
		"resource: https://crm.example.com/mcp\n",
		"resource: https://crm.example.com/mcp\ndisplay_name: CRM\ndefaults:\n  deny_unlisted_tools: true\n  require_verified_client: true\n",
		"resource: https://crm.example.com/mcp\nscopes:\n  - name: crm:a\n    description: A\n    implies: [crm:b]\n  - name: crm:b\n    description: B\ntools:\n  - name: t\n    required_scopes: [crm:a]\n    conditions:\n      - expression: '\"sales\" in groups'\n",
		"resource: https://crm.example.com/mcp\nscopes:\n  - name: crm:a\n    description: A\n    implies: [crm:a]\n",
		"resource: https://crm.example.com/mcp\ntools:\n  - name: x\n    deny: true\n  - name: x\n",
		`{"resource":"https://crm.example.com/mcp","tools":[{"name":"t","conditions":[{"expression":"arguments.limit <= 1000.0","message":"m"}]}]}`,
		`{"resource":"https://crm.example.com/mcp","scopes":[{"name":"offline_access","description":"x"}]}`,
		"resource: &a https://x.example\nname: *a\n",
		"? [a]\n: b\n",
		"",
		"{}",
		"resource: https://crm.example.com/mcp\ntools:\n  - name: t\n    conditions:\n      - expression: 'arguments.items.all(a, arguments.items.all(b, a == b))'\n",
	} {
		f.Add([]byte(seed))
	}
	v := validator(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := document.ParsePolicy(data)
		if err != nil {
			return
		}
		p = document.NormalizePolicy(p)
		if vs := v.ValidatePolicy(p, nil, "policy"); len(vs) > 0 {
			// Invalid documents still merge without panicking (stored
			// records are merged whatever they hold).
			_ = effective.Build("https://crm.example.com/mcp", p, nil, nil)
			return
		}
		r := effective.Build(p.GetResource(), p, nil, nil)
		if got, want := len(r.Effective.GetTools()), len(p.GetTools()); got != want {
			t.Fatalf("effective policy has %d tools, document %d", got, want)
		}
		b, err := protojson.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		back, err := document.ParsePolicy(b)
		if err != nil {
			t.Fatalf("round trip: %v", err)
		}
		if !proto.Equal(document.NormalizePolicy(back), p) {
			t.Fatalf("round trip changed the policy")
		}
	})
}
