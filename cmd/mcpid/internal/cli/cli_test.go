package cli_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mcpid/mcpid/cmd/mcpid/internal/cli"
	"github.com/mcpid/mcpid/cmd/mcpid/internal/dev"
)

var update = flag.Bool("update", false, "rewrite golden files")

// sys is the running system every test uses: `mcpid dev` started in-process
// exactly as the command does (embedded etcd, dev CA, all four services with
// mTLS, the edge router), once for the package.
var sys *dev.Env

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "mcpid-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	env, err := dev.Start(context.Background(), dev.Options{Addr: "127.0.0.1:0", EtcdAddr: "127.0.0.1:0", DataDir: dir, LogLevel: "error"}, io.Discard)
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting mcpid dev:", err)
		os.Exit(1)
	}
	if err := env.WaitReady(context.Background(), 90*time.Second); err != nil {
		fmt.Fprintln(os.Stderr, err)
		_ = env.Stop()
		os.Exit(1)
	}
	sys = env
	code := m.Run()
	_ = env.Stop()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	code           int
	stdout, stderr string
}

// run runs the CLI in-process against the system, in a folder without
// .mcpid so the configuration comes from MCPID_CONFIG.
func run(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	return runEnv(t, nil, stdin, args...)
}

func runEnv(t *testing.T, env []string, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code := cli.Execute(ctx, args, cli.Deps{
		Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errb,
		Environ: append([]string{"MCPID_CONFIG=" + sys.CLIConfig}, env...),
		Cwd:     t.TempDir(),
	})
	return result{code, out.String(), errb.String()}
}

func mustRun(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	r := run(t, stdin, args...)
	if r.code != 0 {
		t.Fatalf("mcpid %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

func wantCode(t *testing.T, want int, r result, args ...string) {
	t.Helper()
	if r.code != want {
		t.Fatalf("mcpid %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, want, r.stdout, r.stderr)
	}
}

var volatile = []struct {
	re   *regexp.Regexp
	repl string
}{
	{regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`), "2006-01-02T15:04:05Z"},
	{regexp.MustCompile(`usr_[a-z0-9]{26}`), "usr_00000000000000000000000000"},
}

// golden compares table output with testdata/<name>.golden after replacing
// times and generated ids by fixed values of the same width (so the
// alignment stays what the command printed).
func golden(t *testing.T, name, got string) {
	t.Helper()
	for _, v := range volatile {
		got = v.re.ReplaceAllString(got, v.repl)
	}
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from %s:\n--- got\n%s\n--- want\n%s", name, path, got, want)
	}
}
