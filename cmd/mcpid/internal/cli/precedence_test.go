package cli_test

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcpid/mcpid/cmd/mcpid/internal/cli"
	"github.com/mcpid/mcpid/cmd/mcpid/internal/cliconfig"
)

// TestSettingsPrecedence: the configuration file's context, then MCPID_*
// variables, then flags — each overriding the one before, per setting.
func TestSettingsPrecedence(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "cli.yaml")
	err := cliconfig.Save(cfg, &cliconfig.File{CurrentContext: "a", Contexts: map[string]*cliconfig.Context{
		"a": {Registration: "file-a:1", Token: "file-a:2", Policy: "file-a:3", Issuer: "https://a.example.com"},
		"b": {Registration: "file-b:1", Token: "file-b:2", Policy: "file-b:3"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	view := func(env []string, args ...string) map[string]any {
		t.Helper()
		full := append(args, "config", "view", "-o", "json")
		r := runWith(t, func(d *cli.Deps) { d.Environ = env }, "", full...)
		wantCode(t, cli.ExitOK, r, full...)
		var v map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
			t.Fatalf("%v: %v\n%s", full, err, r.stdout)
		}
		return v
	}
	settings := func(v map[string]any) map[string]any { return v["settings"].(map[string]any) }

	v := view([]string{"MCPID_CONFIG=" + cfg})
	if v["context"] != "a" || settings(v)["registration"] != "file-a:1" || v["config_file"] != cfg {
		t.Errorf("file only: %v", v)
	}
	v = view([]string{"MCPID_CONFIG=" + cfg, "MCPID_CONTEXT=b", "MCPID_TOKEN_ADDR=env:2", "MCPID_POLICY_ADDR=env:3"}, "--policy-addr", "flag:3")
	s := settings(v)
	if v["context"] != "b" || s["registration"] != "file-b:1" || s["token"] != "env:2" || s["policy"] != "flag:3" {
		t.Errorf("file < env < flag: %v", v)
	}
	// --config beats MCPID_CONFIG; --context beats MCPID_CONTEXT.
	other := filepath.Join(dir, "other.yaml")
	if err := cliconfig.Save(other, &cliconfig.File{CurrentContext: "o", Contexts: map[string]*cliconfig.Context{"o": {Registration: "other:1"}}}); err != nil {
		t.Fatal(err)
	}
	if v := view([]string{"MCPID_CONFIG=" + cfg}, "--config", other); settings(v)["registration"] != "other:1" {
		t.Errorf("--config over MCPID_CONFIG: %v", v)
	}
	if v := view([]string{"MCPID_CONFIG=" + cfg, "MCPID_CONTEXT=b"}, "--context", "a"); v["context"] != "a" {
		t.Errorf("--context over MCPID_CONTEXT: %v", v)
	}
	// MCPID_OUTPUT sets -o; a bad value names the variable.
	r := runWith(t, func(d *cli.Deps) { d.Environ = []string{"MCPID_CONFIG=" + cfg, "MCPID_TIMEOUT=soon"} }, "", "config", "view")
	wantCode(t, cli.ExitUsage, r, "MCPID_TIMEOUT=soon")
	if !strings.Contains(r.stderr, "MCPID_TIMEOUT") {
		t.Errorf("error does not name the variable: %s", r.stderr)
	}
	r = runWith(t, func(d *cli.Deps) { d.Environ = []string{"MCPID_CONFIG=" + cfg, "MCPID_OUTPUT=yaml"} }, "", "config", "view")
	wantCode(t, cli.ExitOK, r, "MCPID_OUTPUT=yaml")
	if !strings.Contains(r.stdout, "config_file: "+cfg) {
		t.Errorf("MCPID_OUTPUT=yaml ignored:\n%s", r.stdout)
	}
}
