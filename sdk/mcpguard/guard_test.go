package mcpguard_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	"github.com/mcpid/mcpid/sdk/mcpguard"
)

func TestMetadata(t *testing.T) {
	e := startEnv(t)
	r := do(t, mustReq(t, http.MethodGet, e.origin+"/.well-known/oauth-protected-resource/mcp"))
	if r.code != http.StatusOK || r.header.Get("Access-Control-Allow-Origin") != "*" || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("metadata: %d %v", r.code, r.header)
	}
	want := `{"resource":"` + e.resource + `","authorization_servers":["` + issuer + `"],` +
		`"scopes_supported":["crm:contacts.export","crm:contacts.read","crm:deals.write"],` +
		`"bearer_methods_supported":["header"],"resource_name":"Test CRM"}` + "\n"
	if r.body != want {
		t.Fatalf("metadata body\n got %s\nwant %s", r.body, want)
	}
	if e.guard.MetadataURL() != e.origin+"/.well-known/oauth-protected-resource/mcp" {
		t.Fatalf("MetadataURL %s", e.guard.MetadataURL())
	}
	// CORS preflight, refused methods, and no root document for a resource
	// with a path.
	if r := do(t, mustReq(t, http.MethodOptions, e.origin+"/.well-known/oauth-protected-resource/mcp")); r.code != http.StatusNoContent ||
		r.header.Get("Access-Control-Allow-Origin") != "*" || !strings.Contains(r.header.Get("Access-Control-Allow-Methods"), "GET") {
		t.Fatalf("preflight: %d %v", r.code, r.header)
	}
	if r := do(t, mustReq(t, http.MethodPost, e.origin+"/.well-known/oauth-protected-resource/mcp")); r.code != http.StatusMethodNotAllowed {
		t.Fatalf("POST metadata: %d", r.code)
	}
	if r := do(t, mustReq(t, http.MethodGet, e.origin+"/.well-known/oauth-protected-resource")); r.code != http.StatusNotFound {
		t.Fatalf("root metadata for a resource with a path: %d", r.code)
	}
	if r := do(t, mustReq(t, http.MethodGet, e.origin+"/other")); r.code != http.StatusNotFound {
		t.Fatalf("other path: %d", r.code)
	}
}

// A resource without a path has its metadata at the root well-known URL.
func TestMetadataAtRoot(t *testing.T) {
	conn, err := grpc.NewClient("127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	g, err := mcpguard.New(mcpguard.Config{Resource: "https://mcp.example.com", Issuer: issuer, Policy: conn,
		Scopes: []mcpguard.Scope{{Name: "a", Description: "A"}, {Name: "b", Description: "B", Sensitive: true}}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if g.MetadataPath() != "/.well-known/oauth-protected-resource" || g.MetadataURL() != "https://mcp.example.com/.well-known/oauth-protected-resource" {
		t.Fatalf("path %s url %s", g.MetadataPath(), g.MetadataURL())
	}
	rec := newRecorder()
	g.Handler(nil2Server(), nil).ServeHTTP(rec, mustReq(t, http.MethodGet, "https://mcp.example.com/.well-known/oauth-protected-resource"))
	if rec.code != http.StatusOK || !strings.Contains(rec.body.String(), `"resource":"https://mcp.example.com"`) {
		t.Fatalf("root metadata: %d %s", rec.code, rec.body.String())
	}
	// The 401 challenge asks for the non-sensitive scopes by default.
	rec = newRecorder()
	g.Handler(nil2Server(), nil).ServeHTTP(rec, mustReq(t, http.MethodPost, "https://mcp.example.com/"))
	if got := rec.Header().Get("WWW-Authenticate"); got != `Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource", scope="a"` {
		t.Fatalf("challenge %s", got)
	}
}

func TestConfigErrors(t *testing.T) {
	conn, err := grpc.NewClient("127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for name, c := range map[string]mcpguard.Config{
		"no resource":    {Issuer: issuer, Policy: conn},
		"not canonical":  {Resource: "https://MCP.example.com/mcp/", Issuer: issuer, Policy: conn},
		"no issuer":      {Resource: "https://mcp.example.com/mcp", Policy: conn},
		"no policy":      {Resource: "https://mcp.example.com/mcp", Issuer: issuer},
		"offline_access": {Resource: "https://mcp.example.com/mcp", Issuer: issuer, Policy: conn, Scopes: []mcpguard.Scope{{Name: "offline_access"}}},
		"reserved scope": {Resource: "https://mcp.example.com/mcp", Issuer: issuer, Policy: conn, Scopes: []mcpguard.Scope{{Name: "mcpid:admin"}}},
		"bad jwks url":   {Resource: "https://mcp.example.com/mcp", Issuer: "ftp://x", Policy: conn},
	} {
		if _, err := mcpguard.New(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestUnauthorized(t *testing.T) {
	e := startEnv(t)
	meta := `resource_metadata="` + e.origin + `/.well-known/oauth-protected-resource/mcp"`
	list := map[string]any{}
	expired := e.token("crm:contacts.read", func(c map[string]any) {
		c["exp"] = time.Now().Add(-time.Hour).Unix()
		c["iat"] = time.Now().Add(-2 * time.Hour).Unix()
	})
	for _, tc := range []struct {
		name, auth string
		query      string
		code       int
		challenge  string
	}{
		{"no token", "", "", 401, `Bearer ` + meta + `, scope="crm:contacts.read crm:deals.write"`},
		{"basic scheme", "Basic dXNlcjpwYXNz", "", 401, `Bearer ` + meta + `, scope="crm:contacts.read crm:deals.write"`},
		{"empty bearer", "Bearer ", "", 401, `Bearer ` + meta + `, scope="crm:contacts.read crm:deals.write"`},
		{"garbage", "Bearer abc.def.ghi", "", 401, `Bearer ` + meta + `, scope="crm:contacts.read crm:deals.write", error="invalid_token", error_description="the access token is invalid or expired"`},
		{"expired", "Bearer " + expired, "", 401, `Bearer ` + meta + `, scope="crm:contacts.read crm:deals.write", error="invalid_token", error_description="the access token is invalid or expired"`},
		{"other audience", "Bearer " + e.token("crm:contacts.read", func(c map[string]any) { c["aud"] = "https://other.example.com/mcp" }), "", 401, ""},
		{"two audiences", "Bearer " + e.token("crm:contacts.read", func(c map[string]any) { c["aud"] = []string{e.resource, "https://other.example.com/mcp"} }), "", 401, ""},
		{"other issuer", "Bearer " + e.token("crm:contacts.read", func(c map[string]any) { c["iss"] = "https://evil.example" }), "", 401, ""},
		{"no client_id", "Bearer " + e.token("crm:contacts.read", func(c map[string]any) { delete(c, "client_id") }), "", 401, ""},
		{"query token", "", "?access_token=" + e.token("crm:contacts.read"), 400, `Bearer ` + meta + `, scope="crm:contacts.read crm:deals.write", error="invalid_request", error_description="access tokens are accepted only in the Authorization header"`},
		{"query token beside header", "Bearer " + e.token("crm:contacts.read"), "?access_token=x", 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := mustReq(t, http.MethodPost, e.url+tc.query)
			req.Body = http.NoBody
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			_ = list
			r := do(t, req)
			if r.code != tc.code {
				t.Fatalf("status %d, want %d (%s)", r.code, tc.code, r.body)
			}
			got := r.header.Get("WWW-Authenticate")
			if tc.challenge != "" && got != tc.challenge {
				t.Fatalf("challenge\n got %s\nwant %s", got, tc.challenge)
			}
			if tc.code == 401 && tc.auth != "" && strings.HasPrefix(tc.auth, "Bearer ") && len(tc.auth) > 7 && !strings.Contains(got, `error="invalid_token"`) {
				t.Fatalf("presented token without invalid_token: %s", got)
			}
			if r.header.Get("Cache-Control") != "no-store" {
				t.Fatalf("Cache-Control %q", r.header.Get("Cache-Control"))
			}
		})
	}
	// Two Authorization headers are a bad request.
	r := e.post(e.url, e.token("crm:contacts.read"), `{}`, "Authorization", "Bearer x")
	if r.code != http.StatusBadRequest || !strings.Contains(r.header.Get("WWW-Authenticate"), `error="invalid_request"`) {
		t.Fatalf("two Authorization headers: %d %v", r.code, r.header)
	}
}

func TestRevocationFeed(t *testing.T) {
	e := startEnv(t)
	tok := e.token("crm:contacts.read")
	if r := e.rpc(tok, "tools/call", call("list_contacts", nil)); r.code != http.StatusOK {
		t.Fatalf("before revocation: %d %s", r.code, r.body)
	}
	e.revs.revoke("grant-1")
	r := e.rpc(tok, "tools/call", call("list_contacts", nil))
	if r.code != http.StatusUnauthorized || !strings.Contains(r.header.Get("WWW-Authenticate"), `error="invalid_token", error_description="the access token was revoked"`) {
		t.Fatalf("revoked: %d %v", r.code, r.header)
	}
	// A feed that is not ready refuses everything (fail closed).
	e.revs.notReady.Store(true)
	if r := e.rpc(e.token("crm:contacts.read", func(c map[string]any) { c["grant_id"] = "grant-2" }), "tools/call", call("list_contacts", nil)); r.code != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
		t.Fatalf("feed not ready: %d %v", r.code, r.header)
	}
}

// With Config.Token the guard follows the token service's feed: until it
// is listed every request is refused with 503 (fail closed), while Run
// still publishes the manifest; Run returns when its context ends. (The
// feed refusing a revoked grant's token with 401 is proven against the real
// token service by test/e2e.)
func TestTokenFeedFailsClosed(t *testing.T) {
	e := startEnv(t, func(o *envOpts) { o.tokenAddr = "127.0.0.1:1" })
	tok := e.token("crm:contacts.read")
	notReady := func(when string) {
		t.Helper()
		r := e.rpc(tok, "tools/call", call("list_contacts", nil))
		if r.code != http.StatusServiceUnavailable || r.header.Get("Retry-After") != "1" {
			t.Fatalf("%s: %d %v %s", when, r.code, r.header, r.body)
		}
		if e.lastCall.Load() != nil {
			t.Fatalf("%s: the tool ran", when)
		}
	}
	notReady("before Run")

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- e.guard.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		m, err := e.polAdmin.GetManifest(t.Context(), &policyv1.GetManifestRequest{Resource: e.resource})
		if err == nil && len(m.GetManifest().GetTools()) == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Run did not publish the manifest: %v %v", m, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	notReady("token service unreachable")
	select {
	case err := <-done:
		t.Fatalf("Run returned while following the feed: %v", err)
	default:
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

// Config.Revocations overrides the feed of Config.Token.
func TestRevocationsOverrideToken(t *testing.T) {
	e := startEnv(t, func(o *envOpts) { o.tokenAddr = "127.0.0.1:1"; o.keepRevs = true })
	tok := e.token("crm:contacts.read")
	if r := e.rpc(tok, "tools/call", call("list_contacts", nil)); r.code != http.StatusOK {
		t.Fatalf("override ready: %d %s", r.code, r.body)
	}
	e.revs.revoke("grant-1")
	if r := e.rpc(tok, "tools/call", call("list_contacts", nil)); r.code != http.StatusUnauthorized ||
		!strings.Contains(r.header.Get("WWW-Authenticate"), `error="invalid_token"`) {
		t.Fatalf("override revoked: %d %v", r.code, r.header)
	}
}

func TestToolCallAllowed(t *testing.T) {
	e := startEnv(t)
	r := e.rpc(e.token("crm:contacts.read"), "tools/call", call("list_contacts", map[string]any{"limit": 5}))
	if r.code != http.StatusOK || !strings.Contains(r.body, "list_contacts ok for user-1") {
		t.Fatalf("allowed call: %d %s", r.code, r.body)
	}
	c := e.lastCall.Load()
	if c == nil || c.Subject != "user-1" || c.ClientID != "https://agent.example/client.json" || c.GrantID != "grant-1" ||
		len(c.Scopes) != 1 || !c.HasScope("crm:contacts.read") || c.Expiry.IsZero() || c.TokenID == "" {
		t.Fatalf("caller handed to the tool: %+v", c)
	}
}

func TestInsufficientScope(t *testing.T) {
	e := startEnv(t)
	tok := e.token("crm:contacts.read")
	meta := `resource_metadata="` + e.origin + `/.well-known/oauth-protected-resource/mcp"`
	for _, tc := range []struct{ protocol, want string }{
		// Older clients: the scopes already granted plus the missing ones.
		{"", `Bearer error="insufficient_scope", scope="crm:contacts.read crm:deals.write", ` + meta},
		{"2025-06-18", `Bearer error="insufficient_scope", scope="crm:contacts.read crm:deals.write", ` + meta},
		{"2025-11-25", `Bearer error="insufficient_scope", scope="crm:contacts.read crm:deals.write", ` + meta},
		// 2026-07-28: every scope the call needs.
		{"2026-07-28", `Bearer error="insufficient_scope", scope="crm:deals.write", ` + meta},
	} {
		hdr := []string{}
		if tc.protocol != "" {
			hdr = append(hdr, "Mcp-Protocol-Version", tc.protocol)
		}
		r := e.rpc(tok, "tools/call", call("update_deal", map[string]any{"id": "d1"}), hdr...)
		got := r.header.Get("WWW-Authenticate")
		if r.code != http.StatusForbidden || !strings.HasPrefix(got, tc.want+", error_description=") {
			t.Fatalf("protocol %q: %d\n got %s\nwant %s, error_description=…", tc.protocol, r.code, got, tc.want)
		}
	}
	// With the scope the same call goes through.
	if r := e.rpc(e.token("crm:contacts.read crm:deals.write"), "tools/call", call("update_deal", nil)); r.code != http.StatusOK {
		t.Fatalf("after step-up: %d %s", r.code, r.body)
	}
}

func TestOtherDenials(t *testing.T) {
	e := startEnv(t)
	tok := e.token("crm:contacts.read crm:contacts.export")
	for _, tc := range []struct {
		name   string
		tool   string
		args   map[string]any
		code   int
		reason string
	}{
		{"client not verified", "export_contacts", nil, http.StatusForbidden, "CLIENT_NOT_VERIFIED"},
		{"condition false", "list_contacts", map[string]any{"limit": 500}, http.StatusForbidden, "CONDITION_FALSE"},
		{"unknown tool", "drop_tables", nil, http.StatusOK, "TOOL_UNKNOWN"},
	} {
		r := e.rpc(tok, "tools/call", call(tc.tool, tc.args))
		code, msg, data := rpcErr(t, r.body)
		if r.code != tc.code || code != mcpguard.CodeToolDenied || data["reason"] != tc.reason || data["decision_id"] == "" || msg == "" {
			t.Fatalf("%s: %d %s", tc.name, r.code, r.body)
		}
		if r.header.Get("WWW-Authenticate") != "" {
			t.Fatalf("%s: a non-scope denial carries a challenge", tc.name)
		}
	}
	if _, msg, _ := rpcErr(t, e.rpc(tok, "tools/call", call("list_contacts", map[string]any{"limit": 500})).body); msg != "at most 10 contacts" {
		t.Fatalf("condition message %q", msg)
	}
	// Malformed tools/call.
	if r := e.rpc(tok, "tools/call", map[string]any{"arguments": map[string]any{}}); r.code != http.StatusBadRequest {
		t.Fatalf("no name: %d", r.code)
	}
	if r := e.rpc(tok, "tools/call", map[string]any{"name": "list_contacts", "arguments": []int{1}}); r.code != http.StatusBadRequest {
		t.Fatalf("array arguments: %d", r.code)
	}
	if r := e.post(e.url, tok, `{"jsonrpc":`); r.code != http.StatusBadRequest {
		t.Fatalf("malformed JSON: %d", r.code)
	}
	// A batch is checked call by call: one denied call refuses it.
	batch := `[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_contacts"}},` +
		`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"update_deal"}}]`
	if r := e.post(e.url, tok, batch); r.code != http.StatusForbidden || !strings.Contains(r.header.Get("WWW-Authenticate"), "insufficient_scope") {
		t.Fatalf("batch: %d %v", r.code, r.header)
	}
}

func TestHeaderConsistency(t *testing.T) {
	e := startEnv(t)
	tok := e.token("crm:contacts.read crm:deals.write")
	for _, tc := range []struct {
		name string
		hdr  []string
		ok   bool
	}{
		{"matching", []string{"Mcp-Method", "tools/call", "Mcp-Name", "list_contacts"}, true},
		{"base64 name", []string{"Mcp-Method", "tools/call", "Mcp-Name", "=?base64?bGlzdF9jb250YWN0cw==?="}, true},
		{"method mismatch", []string{"Mcp-Method", "tools/list"}, false},
		{"name mismatch", []string{"Mcp-Method", "tools/call", "Mcp-Name", "update_deal"}, false},
		{"repeated name", []string{"Mcp-Name", "list_contacts", "Mcp-Name", "list_contacts"}, false},
		{"bad base64", []string{"Mcp-Name", "=?base64?!!?="}, false},
	} {
		r := e.rpc(tok, "tools/call", call("list_contacts", nil), tc.hdr...)
		if tc.ok {
			if r.code != http.StatusOK {
				t.Fatalf("%s: %d %s", tc.name, r.code, r.body)
			}
			continue
		}
		code, _, _ := rpcErr(t, r.body)
		if r.code != http.StatusBadRequest || code != mcpguard.CodeHeaderMismatch || !strings.Contains(r.body, `"id":7`) {
			t.Fatalf("%s: %d %s", tc.name, r.code, r.body)
		}
	}
	// Mcp-Name on a method that has no name, and Mcp-Method on a batch.
	if r := e.rpc(tok, "tools/list", map[string]any{}, "Mcp-Name", "x"); r.code != http.StatusBadRequest {
		t.Fatalf("name on tools/list: %d", r.code)
	}
	if r := e.post(e.url, tok, `[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]`, "Mcp-Method", "tools/list"); r.code != http.StatusBadRequest {
		t.Fatalf("headers on a batch: %d", r.code)
	}
}

func TestToolsListFiltered(t *testing.T) {
	e := startEnv(t)
	names := func(tok string) []string {
		r := e.rpc(tok, "tools/list", map[string]any{})
		var res struct {
			Result struct {
				Tools []struct{ Name string } `json:"tools"`
			} `json:"result"`
		}
		if err := json.Unmarshal([]byte(r.body), &res); r.code != http.StatusOK || err != nil {
			t.Fatalf("tools/list: %d %s", r.code, r.body)
		}
		var out []string
		for _, tl := range res.Result.Tools {
			out = append(out, tl.Name)
		}
		return out
	}
	if got := strings.Join(names(e.token("crm:contacts.read")), ","); got != "list_contacts" {
		t.Fatalf("read-only token sees %s", got)
	}
	if got := strings.Join(names(e.token("crm:contacts.read crm:deals.write crm:contacts.export")), ","); got != "list_contacts,update_deal" {
		t.Fatalf("full token (unverified client) sees %s", got)
	}
}

func TestDecisionCache(t *testing.T) {
	e := startEnv(t)
	tok := e.token("crm:contacts.read")
	before := e.calls.Load()
	for range 3 {
		if r := e.rpc(tok, "tools/call", call("list_contacts", nil)); r.code != http.StatusOK {
			t.Fatalf("call: %d %s", r.code, r.body)
		}
	}
	if n := e.calls.Load() - before; n != 1 {
		t.Fatalf("%d policy calls for 3 identical tool calls, want 1", n)
	}
	// Other arguments are another decision.
	if r := e.rpc(tok, "tools/call", call("list_contacts", map[string]any{"limit": 3})); r.code != http.StatusOK {
		t.Fatalf("call: %d", r.code)
	}
	if n := e.calls.Load() - before; n != 2 {
		t.Fatalf("%d policy calls, want 2", n)
	}
	// Past the lifetime the policy service gave (at most MaxCacheTTL) the
	// decision is asked for again.
	e.now.Store(int64(mcpguard.DefaultMaxCacheTTL + time.Second))
	if r := e.rpc(tok, "tools/call", call("list_contacts", nil)); r.code != http.StatusOK {
		t.Fatalf("call: %d", r.code)
	}
	if n := e.calls.Load() - before; n != 3 {
		t.Fatalf("%d policy calls after expiry, want 3", n)
	}
}

// With the policy service unreachable every tool call is refused.
func TestFailClosed(t *testing.T) {
	e := startEnv(t, func(o *envOpts) { o.policyAddr = "127.0.0.1:1"; o.timeout = 200 * time.Millisecond })
	r := e.rpc(e.token("crm:contacts.read"), "tools/call", call("list_contacts", nil))
	code, _, _ := rpcErr(t, r.body)
	if r.code != http.StatusServiceUnavailable || code != mcpguard.CodePolicyUnavailable || r.header.Get("Retry-After") == "" {
		t.Fatalf("policy unreachable: %d %s", r.code, r.body)
	}
	if e.lastCall.Load() != nil {
		t.Fatal("the tool ran")
	}
	// tools/list fails too rather than list tools.
	r = e.rpc(e.token("crm:contacts.read"), "tools/list", map[string]any{})
	if !strings.Contains(r.body, `"error"`) || strings.Contains(r.body, "list_contacts") {
		t.Fatalf("tools/list with policy unreachable: %d %s", r.code, r.body)
	}
}

// The manifest is published for the guard's own resource; publishing it
// again changes nothing.
func TestManifestPublished(t *testing.T) {
	e := startEnv(t)
	resp, err := e.guard.Publish(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetChanged() || len(resp.GetManifest().GetTools()) != 3 || resp.GetManifest().GetResource() != e.resource {
		t.Fatalf("republish: %v", resp)
	}
}
