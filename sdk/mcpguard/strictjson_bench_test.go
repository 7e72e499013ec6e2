package mcpguard

import (
	"encoding/json"
	"testing"
)

// BenchmarkParseMessages is the strict JSON-RPC reading of one tools/call
// body (duplicate and case-variant keys refused), beside a plain
// encoding/json decode of the same body for comparison.
func BenchmarkParseMessages(b *testing.B) {
	body := []byte(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"list_contacts","arguments":{"limit":5,"query":"acme"}}}`)
	b.Run("strict", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := parseMessages(body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var m map[string]any
			if err := json.Unmarshal(body, &m); err != nil {
				b.Fatal(err)
			}
		}
	})
}
