package cli_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpid/mcpid/cmd/mcpid/internal/cli"
)

func TestClientsCommands(t *testing.T) {
	mustRun(t, "", "clients", "create", "--id", "cli-native", "--name", "Native app", "--auth-method", "none", "--redirect-uri", "http://127.0.0.1/callback")
	out := mustRun(t, "", "clients", "create", "--id", "cli-machine", "--name", "Machine", "--auth-method", "client_secret_basic",
		"--grant-type", "client_credentials", "--allowed-resource", "https://mcp.example.com/crm=crm:read")
	if !strings.Contains(out, "client secret: ") {
		t.Errorf("create did not print the secret once:\n%s", out)
	}
	golden(t, "clients_list", mustRun(t, "", "clients", "list"))

	var got map[string]any
	if err := json.Unmarshal([]byte(mustRun(t, "", "clients", "get", "cli-native", "-o", "json")), &got); err != nil || got["client_id"] != "cli-native" {
		t.Errorf("get -o json = %v, %v", got, err)
	}
	if out := mustRun(t, "", "clients", "get", "cli-native", "-o", "yaml"); !strings.Contains(out, "client_id: cli-native") {
		t.Errorf("get -o yaml:\n%s", out)
	}
	mustRun(t, "", "clients", "suspend", "cli-native", "--reason", "test")
	golden(t, "clients_verify", mustRun(t, "", "clients", "verify", "cli-native", "--reason", "reviewed"))
	mustRun(t, "", "clients", "unverify", "cli-native", "--reason", "test")
	if out := mustRun(t, "", "clients", "rotate-secret", "cli-machine", "--grace", "1h"); !strings.Contains(out, "client secret: ") {
		t.Errorf("rotate-secret:\n%s", out)
	}
	// Negative cases with their stable exit codes and hints.
	r := run(t, "", "clients", "get", "no-such-client")
	wantCode(t, cli.ExitNotFound, r, "clients get no-such-client")
	if !strings.Contains(r.stderr, "hint:") {
		t.Errorf("no hint: %s", r.stderr)
	}
	wantCode(t, cli.ExitConflict, run(t, "", "clients", "create", "--id", "cli-native", "--auth-method", "none", "--redirect-uri", "http://127.0.0.1/cb"), "create duplicate")
	wantCode(t, cli.ExitUsage, run(t, "", "clients", "list", "--status", "bogus"), "list --status bogus")
	wantCode(t, cli.ExitUsage, run(t, "", "clients", "create", "--id", "x"), "create without --auth-method")
	wantCode(t, cli.ExitConflict, run(t, "", "clients", "delete", "mcpid"), "delete the pre-registered client")

	out = mustRun(t, "", "clients", "iat", "create", "--max-uses", "2", "--note", "test token")
	if !strings.Contains(out, "token: ") {
		t.Errorf("iat create:\n%s", out)
	}
	var iats []map[string]any
	if err := json.Unmarshal([]byte(mustRun(t, "", "clients", "iat", "list", "-o", "json")), &iats); err != nil || len(iats) == 0 {
		t.Fatalf("iat list = %v, %v", iats, err)
	}
	mustRun(t, "", "clients", "iat", "revoke", iats[0]["id"].(string))

	mustRun(t, "", "clients", "delete", "cli-native")
	wantCode(t, cli.ExitNotFound, run(t, "", "clients", "get", "cli-native"), "get deleted")
	if out := mustRun(t, "", "clients", "delete", "cli-machine", "-o", "json"); !strings.Contains(out, `"result"`) {
		t.Errorf("delete -o json is not JSON: %s", out)
	}
}

func TestUsersCommands(t *testing.T) {
	mustRun(t, "a password long enough\n", "users", "create", "carol", "--email", "carol@example.com", "--role", "auditor", "--password-stdin")
	if out := mustRun(t, "", "users", "list"); !strings.Contains(out, "carol") || !strings.Contains(out, "demo") {
		t.Errorf("users list:\n%s", out)
	}
	golden(t, "users_get", mustRun(t, "", "users", "get", "carol"))
	if out := mustRun(t, "", "users", "get", "carol"); !strings.Contains(out, "carol@example.com") {
		t.Errorf("get:\n%s", out)
	}
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("another long password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "", "users", "reset-password", "carol", "--password-file", pw)
	wantCode(t, cli.ExitUsage, run(t, "short\n", "users", "reset-password", "carol", "--password-stdin"), "password too short")
	wantCode(t, cli.ExitUsage, run(t, "", "users", "reset-password", "carol"), "no password")
	if out := mustRun(t, "", "users", "set-roles", "carol", "--role", "admin"); !strings.Contains(out, "admin") {
		t.Errorf("set-roles:\n%s", out)
	}
	wantCode(t, cli.ExitConflict, run(t, "", "users", "create", "carol"), "duplicate user")
	mustRun(t, "", "users", "delete", "carol")
	wantCode(t, cli.ExitNotFound, run(t, "", "users", "get", "carol"), "get deleted user")
}

const testPolicy = `resource: https://mcp.example.com/cli-test
display_name: CLI test
scopes:
  - name: test:read
    description: Read test data
  - name: test:write
    description: Change test data
    sensitive: true
tools:
  - name: read_things
    required_scopes: [test:read]
  - name: write_things
    required_scopes: [test:write]
    require_verified_client: true
    conditions:
      - expression: arguments.count <= 10.0
        message: at most 10 things
`

func TestPoliciesCommands(t *testing.T) {
	const res = "https://mcp.example.com/cli-test"
	dir := t.TempDir()
	file := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(file, []byte(testPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := mustRun(t, "", "policies", "apply", "-f", file, "--dry-run"); !strings.Contains(out, "would change") {
		t.Errorf("dry run:\n%s", out)
	}
	mustRun(t, "", "policies", "apply", "-f", file)
	if out := mustRun(t, testPolicy, "policies", "apply", "-f", "-"); !strings.Contains(out, "unchanged") {
		t.Errorf("apply from stdin of the same policy:\n%s", out)
	}
	if out := mustRun(t, "", "policies", "list"); !strings.Contains(out, "https://mcp.example.com/cli-test  CLI test  active  2      1") {
		t.Errorf("policies list:\n%s", out)
	}
	golden(t, "policies_effective", mustRun(t, "", "policies", "get", res, "--effective"))
	// get -o yaml can be edited and applied back (its revision makes the
	// write conditional).
	y := mustRun(t, "", "policies", "get", res, "-o", "yaml")
	back := filepath.Join(dir, "back.yaml")
	if err := os.WriteFile(back, []byte(strings.Replace(y, "CLI test", "CLI test 2", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "", "policies", "apply", "-f", back)
	wantCode(t, cli.ExitConflict, run(t, "", "policies", "apply", "-f", back), "stale revision")
	golden(t, "policies_drift", mustRun(t, "", "policies", "drift", res))
	mustRun(t, "", "policies", "drift")

	claims := filepath.Join(dir, "claims.yaml")
	if err := os.WriteFile(claims, []byte("scope: test:read\nsub: usr_x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := run(t, "", "policies", "explain", res, "write_things", "--claims", claims, "--arguments", `{"count": 3}`)
	wantCode(t, cli.ExitNegative, r, "explain without the scope")
	if !strings.Contains(r.stdout, "deny") {
		t.Errorf("explain:\n%s", r.stdout)
	}
	tok := filepath.Join(dir, "token")
	if err := os.WriteFile(tok, []byte("not-a-jwt"), 0o600); err != nil {
		t.Fatal(err)
	}
	r = run(t, "", "policies", "check", res, "read_things", "--token-file", tok)
	wantCode(t, cli.ExitNegative, r, "check with a bad token")
	if !strings.Contains(r.stdout, "decision:        deny") {
		t.Errorf("check:\n%s", r.stdout)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("resource: https://mcp.example.com/x\ntoolz: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	wantCode(t, cli.ExitUsage, run(t, "", "policies", "apply", "-f", bad), "unknown field")
	mustRun(t, "", "policies", "delete", res)
	wantCode(t, cli.ExitNotFound, run(t, "", "policies", "get", res), "get deleted policy")
}

func TestAuditCommands(t *testing.T) {
	mustRun(t, "", "users", "create", "dave")
	mustRun(t, "", "users", "delete", "dave")
	out := mustRun(t, "", "audit", "query", "--type", "user.created", "--limit", "5")
	if !strings.Contains(out, "user.created") {
		t.Errorf("query:\n%s", out)
	}
	if out := mustRun(t, "", "audit", "tail", "-n", "5"); !strings.Contains(out, "SEQ") {
		t.Errorf("tail:\n%s", out)
	}
	if out := mustRun(t, "", "audit", "verify"); !strings.Contains(out, "intact") {
		t.Errorf("verify:\n%s", out)
	}
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	r := run(t, "", "audit", "export", "--out", path)
	wantCode(t, 0, r, "audit export")
	if !strings.Contains(r.stderr, "%") || !strings.Contains(r.stderr, "Exported") {
		t.Errorf("no progress bar: %q", r.stderr)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	for _, l := range lines {
		var e map[string]any
		if err := json.Unmarshal([]byte(l), &e); err != nil || e["hash"] == nil {
			t.Fatalf("export line %q: %v", l, err)
		}
	}
	wantCode(t, cli.ExitUsage, run(t, "", "audit", "query", "--type", "no.such"), "unknown type")
}

func TestAuditTailFollow(t *testing.T) {
	out := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- cli.Execute(ctx, []string{"audit", "tail", "-f", "--type", "user.created", "-o", "json"}, cli.Deps{
			Stdin: strings.NewReader(""), Stdout: out, Stderr: io.Discard,
			Environ: []string{"MCPID_CONFIG=" + sys.CLIConfig}, Cwd: os.TempDir(),
		})
	}()
	// Events chained after the subscription reach the follower; create
	// users until one arrives (the stream may subscribe after the first).
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; !strings.Contains(out.String(), "EVENT_TYPE_USER_CREATED"); i++ {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("tail -f saw nothing: %q", out.String())
		}
		name := fmt.Sprintf("tail-user-%d", i)
		mustRun(t, "", "users", "create", name)
		time.Sleep(200 * time.Millisecond)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("tail -f exit %d after cancel", code)
	}
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var e map[string]any
		if err := json.Unmarshal([]byte(l), &e); err != nil || e["type"] != "EVENT_TYPE_USER_CREATED" {
			t.Errorf("tail line %q: %v", l, err)
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestAgentsCommands(t *testing.T) {
	mustRun(t, "", "agents", "list")
	mustRun(t, "", "agents", "list", "--status", "verified", "-o", "json")
	wantCode(t, cli.ExitNotFound, run(t, "", "agents", "show", "no-such-agent"), "agents show unknown")
}

func TestKeysList(t *testing.T) {
	out := mustRun(t, "", "keys", "list")
	if !strings.Contains(out, "active") {
		t.Errorf("keys list:\n%s", out)
	}
}

// The tests below use RPCs still UNIMPLEMENTED in the token service
// (grants, key rotation: helper A; connectors: helper B). They pass once
// those land.

func TestGrantsCommands(t *testing.T) {
	mustRun(t, "", "grants", "list")
	mustRun(t, "", "grants", "list", "--user", "demo", "--client", "mcpid")
	mustRun(t, "", "grants", "revoke", "--client", "no-such-client", "--reason", "test")
	wantCode(t, cli.ExitUsage, run(t, "", "grants", "revoke"), "revoke without a selector")
}

func TestKeysRotate(t *testing.T) {
	mustRun(t, "", "keys", "rotate", "--reason", "test")
	if out := mustRun(t, "", "keys", "list", "--state", "pending"); !strings.Contains(out, "pending") {
		t.Errorf("no pending key after rotate:\n%s", out)
	}
}

func TestConnectorsCommands(t *testing.T) {
	mustRun(t, "", "connectors", "list")
	wantCode(t, cli.ExitConflict, run(t, "", "connectors", "add", "corp", "--name", "Corp", "--issuer-url", "https://127.0.0.1:1/none", "--client-id", "x"), "add with unreachable discovery")
	wantCode(t, cli.ExitNotFound, run(t, "", "connectors", "remove", "corp"), "remove unknown")
}
