package cliconfig

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSaveLoadRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "config.yaml")
	exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	in := &File{CurrentContext: "prod", Contexts: map[string]*Context{
		"prod": {Issuer: "https://id.example.com", Registration: "reg:443", Token: "tok:443", Policy: "pol:443", Audit: "aud:443",
			CAFile: "/ca.pem", Login: &Login{AccessToken: "at", RefreshToken: "rt", Expiry: exp, Subject: "usr_1", Roles: []string{"admin"}}},
		"dev": {Registration: "127.0.0.1:1", CertFile: "/op.crt", KeyFile: "/op.key"},
	}}
	if err := Save(path, in); err != nil {
		t.Fatal(err)
	}
	// 0600 file in a 0700 folder: it holds tokens and key paths.
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("file mode %v (%v), want 0600", st.Mode(), err)
	}
	if st, err := os.Stat(filepath.Dir(path)); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("folder mode %v (%v), want 0700", st.Mode(), err)
	}
	out, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if out.CurrentContext != "prod" || out.Contexts["prod"].Login.RefreshToken != "rt" || !out.Contexts["prod"].Login.Expiry.Equal(exp) ||
		out.Contexts["dev"].KeyFile != "/op.key" {
		t.Errorf("round trip: %+v %+v", out.Contexts["prod"], out.Contexts["dev"])
	}
	if got := strings.Join(out.Names(), ","); got != "dev,prod" {
		t.Errorf("Names = %s", got)
	}
}

// TestSaveAtomic: a write replaces the file in one rename, so a reader sees
// the old or the new file, never a torn one; no temporary files stay, and
// an existing file's looser mode is not kept.
func TestSaveAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte("current_context: old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := Update(path, func(f *File) error { f.CurrentContext = "new"; return nil }); err != nil {
		t.Fatal(err)
	}
	after, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if os.SameFile(before, after) {
		t.Error("the file was rewritten in place, not replaced")
	}
	if after.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", after.Mode())
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("folder holds %d entries, want only the file: %v", len(entries), entries)
	}
	f, err := Load(path)
	if err != nil || f.CurrentContext != "new" {
		t.Errorf("Load = %+v, %v", f, err)
	}
}

func TestUpdateErrorWritesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := Save(path, &File{CurrentContext: "a"}); err != nil {
		t.Fatal(err)
	}
	want := os.ErrInvalid
	if err := Update(path, func(f *File) error { f.CurrentContext = "b"; return want }); !errors.Is(err, want) {
		t.Fatalf("Update = %v", err)
	}
	if f, _ := Load(path); f.CurrentContext != "a" {
		t.Errorf("failed update was written: %q", f.CurrentContext)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	// Missing: an empty configuration.
	f, err := Load(filepath.Join(dir, "none.yaml"))
	if err != nil || len(f.Contexts) != 0 || f.Contexts == nil {
		t.Fatalf("missing file: %+v, %v", f, err)
	}
	// A null context is an empty one, not a nil pointer.
	p := filepath.Join(dir, "null.yaml")
	if err := os.WriteFile(p, []byte("contexts:\n  x:\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if f, err := Load(p); err != nil || f.Contexts["x"] == nil {
		t.Fatalf("null context: %+v, %v", f, err)
	}
	// Unknown fields and bad YAML are errors that name the file.
	for name, body := range map[string]string{"typo.yaml": "contexts:\n  x:\n    registraton: a:1\n", "bad.yaml": "contexts: [\n"} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(p); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: %v, want an error naming the file", name, err)
		}
	}
}

func TestDefaultPath(t *testing.T) {
	cwd, home := t.TempDir(), t.TempDir()
	if got := DefaultPath(cwd, home); got != filepath.Join(home, "mcpid", "config.yaml") {
		t.Errorf("without .mcpid: %s", got)
	}
	dev := filepath.Join(cwd, ".mcpid", DevFileName)
	if err := Save(dev, &File{}); err != nil {
		t.Fatal(err)
	}
	if got := DefaultPath(cwd, home); got != dev {
		t.Errorf("with .mcpid/cli.yaml: %s", got)
	}
	if got := DefaultPath(t.TempDir(), ""); !strings.HasSuffix(got, filepath.Join(".mcpid", DevFileName)) {
		t.Errorf("without a user configuration folder: %s", got)
	}
}
