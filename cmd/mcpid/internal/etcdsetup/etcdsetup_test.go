package etcdsetup

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/mcpid/mcpid/lib/etcdauth"
	"github.com/mcpid/mcpid/lib/etcdtest"
)

// TestCommandGeneratesPasswordsAndConfinesServices runs the command twice
// against a real etcd: the first run generates the password files and
// enables auth, the second (auth on) logs in as root and succeeds again.
func TestCommandGeneratesPasswordsAndConfinesServices(t *testing.T) {
	etcd := etcdtest.Start(t)
	dir := t.TempDir()
	args := []string{"--etcd-endpoints", strings.Join(etcd.Endpoints(), ","),
		"--root-password-file", filepath.Join(dir, "root"), "--password-dir", filepath.Join(dir, "etcd"), "--generate"}
	for i := range 2 {
		cmd := NewCommand()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetArgs(args)
		if err := cmd.ExecuteContext(context.Background()); err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		if !strings.Contains(out.String(), "etcd authentication enabled") {
			t.Fatalf("run %d output: %s", i, out.String())
		}
	}
	pw, err := os.ReadFile(filepath.Join(dir, "etcd", "token"))
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "etcd", "token")); fi.Mode().Perm() != 0o600 {
		t.Fatalf("password file mode %v", fi.Mode())
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: etcd.Endpoints(), DialTimeout: 10 * time.Second, Logger: zap.NewNop(),
		Username: etcdauth.UserName("token"), Password: strings.TrimSpace(string(pw))})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "/mcpid/token/x", "v"); err != nil {
		t.Fatalf("own prefix: %v", err)
	}
	if _, err := cli.Get(ctx, "/mcpid/registration/x"); !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Fatalf("other prefix: %v", err)
	}
}

func TestCommandRequiresPasswordFiles(t *testing.T) {
	cmd := NewCommand()
	cmd.SetArgs([]string{"--password-dir", t.TempDir()})
	if err := cmd.ExecuteContext(context.Background()); err == nil || !strings.Contains(err.Error(), "root-password-file") {
		t.Fatalf("err = %v", err)
	}
	dir := t.TempDir()
	cmd = NewCommand()
	cmd.SetArgs([]string{"--root-password-file", filepath.Join(dir, "root"), "--password-dir", dir})
	if err := cmd.ExecuteContext(context.Background()); err == nil || !strings.Contains(err.Error(), "password file") {
		t.Fatalf("missing file without --generate: %v", err)
	}
}
