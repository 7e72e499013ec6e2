package cli_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/mcpid/mcpid/cmd/mcpid/internal/cli"
)

// writes is every command that changes state, with valid arguments: an
// auditor must be refused each one by the services (exit 4), whatever the
// object.
var writes = [][]string{
	{"clients", "create", "--id", "aud-x", "--auth-method", "none", "--redirect-uri", "http://127.0.0.1/cb"},
	{"clients", "delete", "mcpid"},
	{"clients", "verify", "mcpid", "--reason", "x"},
	{"clients", "unverify", "mcpid", "--reason", "x"},
	{"clients", "suspend", "mcpid", "--reason", "x"},
	{"clients", "rotate-secret", "mcpid"},
	{"clients", "iat", "create", "--max-uses", "1"},
	{"clients", "iat", "revoke", "x"},
	{"users", "create", "aud-user"},
	{"users", "delete", "usr_00000000000000000000000000"},
	{"users", "reset-password", "usr_00000000000000000000000000", "--password-stdin"},
	{"users", "set-roles", "usr_00000000000000000000000000", "--role", "admin"},
	{"policies", "apply", "-f", "-"},
	{"policies", "delete", "https://mcp.example.com/x"},
	{"grants", "revoke", "--client", "mcpid"},
	{"keys", "rotate"},
	{"connectors", "add", "x", "--name", "X", "--issuer-url", "https://idp.example.com", "--client-id", "x"},
	{"connectors", "remove", "x"},
}

func TestAuditorRefusedEveryWrite(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(sys.DataDir, "ca")
	out := mustRun(t, "", "certs", "issue-operator", "--name", "auditor1", "--role", "auditor",
		"--ca-cert", filepath.Join(ca, "ca.crt"), "--ca-key", filepath.Join(ca, "ca.key"), "--out-dir", dir, "--set-context", "auditor-test")
	if !strings.Contains(out, "auditor1.crt") {
		t.Fatalf("issue-operator:\n%s", out)
	}
	// Reads work for the auditor.
	for _, args := range [][]string{{"clients", "list"}, {"users", "list"}, {"policies", "list"}, {"audit", "verify"}, {"agents", "list"}, {"keys", "list"}} {
		mustRun(t, "", append([]string{"--context", "auditor-test"}, args...)...)
	}
	for _, args := range writes {
		full := append([]string{"--context", "auditor-test"}, args...)
		r := run(t, "a password long enough\n", full...)
		if args[0] == "policies" && args[1] == "apply" {
			r = run(t, testPolicy, full...)
		}
		wantCode(t, cli.ExitAuth, r, full...)
		if !strings.Contains(r.stderr, "role may not") {
			t.Errorf("%v: no hint about the role: %s", args, r.stderr)
		}
	}
}

func TestUnauthenticatedAndUnavailable(t *testing.T) {
	r := runEnv(t, []string{"MCPID_CERT_FILE=", "MCPID_CONTEXT=nope"}, "", "clients", "list")
	wantCode(t, cli.ExitUsage, r, "unknown context")
	// No credential at all: the services answer UNAUTHENTICATED.
	r = run(t, "", "--config", filepath.Join(t.TempDir(), "none.yaml"), "--registration-addr", sys.Services["registration"].GRPC.String(),
		"--ca-file", filepath.Join(sys.DataDir, "pki", "ca.crt"), "clients", "list")
	wantCode(t, cli.ExitAuth, r, "no credential")
	if !strings.Contains(r.stderr, "mcpid login") {
		t.Errorf("no hint: %s", r.stderr)
	}
	r = run(t, "", "--registration-addr", "127.0.0.1:1", "--timeout", "2s", "clients", "list")
	wantCode(t, cli.ExitUnavailable, r, "unreachable")
	r = run(t, "", "--config", filepath.Join(t.TempDir(), "none.yaml"), "clients", "list")
	wantCode(t, cli.ExitUsage, r, "no address")
}

// TestHelpComplete walks every command: each has a short and a long
// description, every runnable one an example, every flag a usage text, and
// --help exits 0 and names the command.
func TestHelpComplete(t *testing.T) {
	root := cli.RootForDocs()
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" || c.Name() == "completion" || strings.HasPrefix(c.CommandPath(), "mcpid completion") {
			return
		}
		if c.Short == "" || c.Long == "" {
			t.Errorf("%s: missing Short or Long", c.CommandPath())
		}
		if c.Runnable() && c.Example == "" && c != root {
			t.Errorf("%s: missing Example", c.CommandPath())
		}
		c.LocalFlags().VisitAll(func(f *pflag.Flag) {
			if f.Usage == "" {
				t.Errorf("%s --%s: no usage", c.CommandPath(), f.Name)
			}
		})
		args := append(strings.Fields(strings.TrimPrefix(c.CommandPath(), "mcpid")), "--help")
		r := run(t, "", args...)
		if r.code != 0 || !strings.Contains(r.stdout, c.Short) && c.Long == "" {
			t.Errorf("%v: exit %d\n%s", args, r.code, r.stdout)
		}
		if !strings.Contains(r.stdout, "Usage:") && c.Name() != "dev" {
			t.Errorf("%v: no usage section:\n%s", args, r.stdout)
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	// Shell completion scripts.
	for _, sh := range []string{"bash", "zsh", "fish", "powershell"} {
		if out := mustRun(t, "", "completion", sh); len(out) < 100 {
			t.Errorf("completion %s: %q", sh, out)
		}
	}
}
