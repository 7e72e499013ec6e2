package mcpguard_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

const codeInvalidRequest = -32600

// A body that encoding/json and the MCP SDK read differently must not get
// a call past the policy check: the guard refuses every such body before
// any tool runs. The token may only read (list_contacts); update_deal
// needs crm:deals.write. Each body was a bypass when the guard read it with
// encoding/json (case-insensitive keys, last duplicate wins) while the SDK
// ran what it read case-sensitively.
func TestParserDifferentialRefused(t *testing.T) {
	e := startEnv(t)
	tok := e.token("crm:contacts.read")
	const head = `{"jsonrpc":"2.0","id":1,`
	for _, tc := range []struct{ name, body string }{
		// The SDK runs update_deal; encoding/json saw list_contacts.
		{"NAME beside name", head + `"method":"tools/call","params":{"name":"update_deal","NAME":"list_contacts","arguments":{}}}`},
		{"Name beside name", head + `"method":"tools/call","params":{"name":"update_deal","Name":"list_contacts"}}`},
		{"Name alone", head + `"method":"tools/call","params":{"Name":"list_contacts"}}`},
		{"duplicate name", head + `"method":"tools/call","params":{"name":"update_deal","name":"list_contacts"}}`},
		{"duplicate name, escaped", head + `"method":"tools/call","params":{"name":"update_deal","n\u0061me":"list_contacts"}}`},
		{"Arguments beside arguments", head + `"method":"tools/call","params":{"name":"list_contacts","arguments":{"limit":500},"Arguments":{"limit":5}}}`},
		// U+017F (long s) folds to "s" for encoding/json.
		{"arguments folded by Unicode", head + `"method":"tools/call","params":{"name":"list_contacts","arguments":{"limit":500},"argument\u017f":{"limit":5}}}`},
		{"duplicate arguments", head + `"method":"tools/call","params":{"name":"list_contacts","arguments":{"limit":500},"arguments":{"limit":5}}}`},
		// The SDK runs tools/call; encoding/json saw ping and checked nothing.
		{"Method beside method", head + `"method":"tools/call","Method":"ping","params":{"name":"update_deal"}}`},
		{"METHOD beside method", head + `"METHOD":"ping","method":"tools/call","params":{"name":"update_deal"}}`},
		{"duplicate method", head + `"method":"tools/call","params":{"name":"update_deal"},"method":"ping"}`},
		{"Params beside params", head + `"method":"tools/call","params":{"name":"update_deal"},"Params":{"name":"list_contacts"}}`},
		{"params folded by Unicode", head + `"method":"tools/call","params":{"name":"update_deal"},"param\u017f":{"name":"list_contacts"}}`},
		{"duplicate params", head + `"method":"tools/call","params":{"name":"update_deal"},"params":{"name":"list_contacts"}}`},
		{"ID beside id", head + `"ID":2,"method":"tools/call","params":{"name":"list_contacts"}}`},
		// Exact duplicates are refused at any depth, arguments included.
		{"duplicate key in arguments", head + `"method":"tools/call","params":{"name":"list_contacts","arguments":{"limit":5,"limit":500}}}`},
		// The SDK reads the first value only and ignores the rest.
		{"second value", head + `"method":"tools/call","params":{"name":"list_contacts"}} {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"update_deal"}}`},
		{"batch element with Method", `[` + head + `"method":"tools/call","Method":"ping","params":{"name":"update_deal"}}]`},
		{"empty batch", `[]`},
		{"message not an object", `[1]`},
		{"method not a string", head + `"method":5}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hdr := []string{"Mcp-Protocol-Version", "2025-06-18"}
			if strings.HasPrefix(tc.body, "[") {
				hdr = nil // batches exist before 2025-06-18 only
			}
			r := e.post(e.url, tok, tc.body, hdr...)
			if r.code != http.StatusBadRequest {
				t.Fatalf("status %d, want 400: %s", r.code, r.body)
			}
			if code, _, _ := rpcErr(t, r.body); code != codeInvalidRequest {
				t.Fatalf("JSON-RPC code %d, want %d: %s", code, codeInvalidRequest, r.body)
			}
			if ran := e.runs(); len(ran) != 0 {
				t.Fatalf("a tool ran: %+v", ran)
			}
		})
	}
	// Syntax errors and nesting deeper than the SDK reads are parse errors.
	deep := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_contacts","arguments":{"x":` +
		strings.Repeat("[", 1000) + strings.Repeat("]", 1000) + `}}}`
	for name, body := range map[string]string{"too deep": deep, "trailing garbage": head + `"method":"tools/call","params":{"name":"list_contacts"}}}`} {
		r := e.post(e.url, tok, body, "Mcp-Protocol-Version", "2025-06-18")
		if code, _, _ := rpcErr(t, r.body); r.code != http.StatusBadRequest || code != -32700 {
			t.Fatalf("%s: %d %s", name, r.code, r.body)
		}
	}
	// Batches are refused from 2025-06-18 on, as the SDK does, before any
	// policy call.
	before := e.calls.Load()
	r := e.post(e.url, tok, `[`+head+`"method":"tools/call","params":{"name":"list_contacts"}}]`, "Mcp-Protocol-Version", "2025-06-18")
	if code, _, _ := rpcErr(t, r.body); r.code != http.StatusBadRequest || code != codeInvalidRequest || e.calls.Load() != before {
		t.Fatalf("batch at 2025-06-18: %d %s", r.code, r.body)
	}
	if ran := e.runs(); len(ran) != 0 {
		t.Fatalf("a tool ran: %+v", ran)
	}
}

// Arguments are the tool's data: keys that differ only in case are
// distinct keys for the SDK too, so they are not refused, and the policy
// decides on the same arguments the tool receives.
func TestArgumentCaseVariantsAreData(t *testing.T) {
	e := startEnv(t)
	tok := e.token("crm:contacts.read")
	const body = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_contacts",` +
		`"arguments":{"limit":5,"LIMIT":500,"Limit":{"limit":1,"Limit":2}}}}`
	r := e.post(e.url, tok, body, "Mcp-Protocol-Version", "2025-06-18")
	if r.code != http.StatusOK || !strings.Contains(r.body, "list_contacts ok") {
		t.Fatalf("case variants in arguments: %d %s", r.code, r.body)
	}
	want := []ranCall{{tool: "list_contacts", args: map[string]any{"limit": 5.0, "LIMIT": 500.0, "Limit": map[string]any{"limit": 1.0, "Limit": 2.0}}}}
	if got := e.runs(); !reflect.DeepEqual(got, want) {
		t.Fatalf("ran %+v, want %+v", got, want)
	}
	// The condition (limit <= 10) reads the key the tool reads: "limit".
	r = e.post(e.url, tok, strings.Replace(body, `"limit":5,"LIMIT":500`, `"limit":500,"LIMIT":5`, 1), "Mcp-Protocol-Version", "2025-06-18")
	if _, _, data := rpcErr(t, r.body); r.code != http.StatusForbidden || data["reason"] != "CONDITION_FALSE" {
		t.Fatalf("limit 500 beside LIMIT 5: %d %s", r.code, r.body)
	}
	if got := e.runs(); len(got) != 1 {
		t.Fatalf("ran %+v", got)
	}
}

// The SDK-side middleware runs a tools/call only when the SDK's tool name
// and arguments are those the guard allowed for the request. To show it
// catches a difference the strict reading might miss, a stand-in
// differential (fakeDifferential: rewrites the body between the guard and
// the SDK, as a parser disagreement would) sits in front of a real SDK
// server.
func TestMiddlewareRefusesUncheckedCall(t *testing.T) {
	e := startEnv(t)
	server := e.mcpServer()
	server.AddReceivingMiddleware(e.guard.Middleware())
	sdk := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: true})
	var from, to string
	fakeDifferential := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		b = bytes.Replace(b, []byte(from), []byte(to), 1)
		r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
		sdk.ServeHTTP(w, r)
	})
	ts := httptest.NewServer(e.guard.Protect(fakeDifferential))
	defer ts.Close()
	tok := e.token("crm:contacts.read")
	const call = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_contacts","arguments":{"limit":5}}}`
	for _, tc := range []struct {
		name, body, from, to string
	}{
		{"other tool", call, `"list_contacts"`, `"update_deal"`},
		{"other arguments", call, `"limit":5`, `"limit":500`},
		{"arguments added", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_contacts"}}`, `"list_contacts"`, `"list_contacts","arguments":{"limit":500}`},
		{"call the guard did not see", `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"name":"list_contacts"}}`, `tools/list`, `tools/call`},
	} {
		from, to = tc.from, tc.to
		r := e.post(ts.URL, tok, tc.body, "Mcp-Protocol-Version", "2025-06-18")
		if code, _, _ := rpcErr(t, r.body); code != codeInvalidRequest {
			t.Fatalf("%s: %d %s", tc.name, r.code, r.body)
		}
		if ran := e.runs(); len(ran) != 0 {
			t.Fatalf("%s: a tool ran: %+v", tc.name, ran)
		}
	}
	// Unchanged, the same call runs.
	from, to = "", ""
	if r := e.post(ts.URL, tok, call, "Mcp-Protocol-Version", "2025-06-18"); r.code != http.StatusOK || !strings.Contains(r.body, "list_contacts ok") {
		t.Fatalf("unchanged call: %d %s", r.code, r.body)
	}
	want := []ranCall{{tool: "list_contacts", args: map[string]any{"limit": 5.0}}}
	if got := e.runs(); !reflect.DeepEqual(got, want) {
		t.Fatalf("ran %+v, want %+v", got, want)
	}
}

// The middleware alone (no Protect in front) runs no tool call.
func TestMiddlewareWithoutProtect(t *testing.T) {
	e := startEnv(t)
	server := e.mcpServer()
	server.AddReceivingMiddleware(e.guard.Middleware())
	sdk := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: true})
	ts := httptest.NewServer(sdk)
	defer ts.Close()
	r := e.post(ts.URL, "", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_contacts"}}`, "Mcp-Protocol-Version", "2025-06-18")
	if code, _, _ := rpcErr(t, r.body); code != codeInvalidRequest {
		t.Fatalf("tools/call without Protect: %d %s", r.code, r.body)
	}
	if ran := e.runs(); len(ran) != 0 {
		t.Fatalf("a tool ran: %+v", ran)
	}
}
