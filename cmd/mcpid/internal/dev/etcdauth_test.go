package dev

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/mcpid/mcpid/lib/etcdauth"
)

// etcdAs connects to the environment's etcd as user ("" anonymous).
func etcdAs(t *testing.T, env *Env, user string) *clientv3.Client {
	t.Helper()
	cfg := clientv3.Config{Endpoints: env.Etcd, DialTimeout: 5 * time.Second, Logger: zap.NewNop()}
	if user != "" {
		pw, err := os.ReadFile(filepath.Join(env.EtcdUsers, strings.TrimPrefix(user, "mcpid-")))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Username, cfg.Password = user, strings.TrimSpace(string(pw))
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		t.Fatalf("etcd as %q: %v", user, err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// TestDevEtcdAuth runs `mcpid dev --etcd-auth`: every service connects to
// the embedded etcd as its own user, the system becomes ready, and the
// token service's user cannot read the registration service's keys.
func TestDevEtcdAuth(t *testing.T) {
	dataDir := t.TempDir()
	start := func(on bool) *Env {
		t.Helper()
		env, err := Start(context.Background(), Options{
			Addr: "127.0.0.1:0", EtcdAddr: "127.0.0.1:0", DataDir: dataDir, LogLevel: "error", CRMAddr: "off", EtcdAuth: on,
		}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if err := env.WaitReady(context.Background(), 60*time.Second); err != nil {
			_ = env.Stop()
			t.Fatal(err)
		}
		return env
	}
	env := start(true)
	t.Cleanup(func() { _ = env.Stop() })
	if env.EtcdUsers != filepath.Join(dataDir, EtcdAuthDir) {
		t.Fatalf("EtcdUsers = %q", env.EtcdUsers)
	}
	for _, f := range append([]string{etcdauth.RootUser}, etcdauth.Services...) {
		st, err := os.Stat(filepath.Join(env.EtcdUsers, f))
		if err != nil || st.Mode().Perm() != 0o600 || st.Size() < 20 {
			t.Errorf("password file %s: %v %v", f, err, st)
		}
	}
	var out bytes.Buffer
	env.PrintQuickStart(&out)
	if !strings.Contains(out.String(), env.EtcdUsers) {
		t.Errorf("quick start does not say where the etcd passwords are:\n%s", out.String())
	}

	ctx := context.Background()
	tok := etcdAs(t, env, etcdauth.UserName("token"))
	if _, err := tok.Get(ctx, etcdauth.Prefix("token"), clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil {
		t.Errorf("token user reading its own prefix: %v", err)
	}
	for _, p := range []string{etcdauth.Prefix("registration"), "/mcpid/", "/"} {
		_, err := tok.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if !errors.Is(err, rpctypes.ErrPermissionDenied) {
			t.Errorf("token user reading %s: %v, want permission denied", p, err)
		}
	}
	if _, err := tok.Put(ctx, etcdauth.Prefix("registration")+"x", "x"); !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Errorf("token user writing registration's prefix: %v, want permission denied", err)
	}
	anon := etcdAs(t, env, "")
	if _, err := anon.Get(ctx, etcdauth.Prefix("registration"), clientv3.WithPrefix()); !errors.Is(err, rpctypes.ErrUserEmpty) && !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Errorf("anonymous read: %v, want refused", err)
	}

	// A later `mcpid dev` on this data folder without --etcd-auth keeps
	// access control on (the services could not connect anonymously); a
	// folder where it was never on stays without it.
	if dir, err := setupEtcdAuth(ctx, false, dataDir, env.Etcd); err != nil || dir != env.EtcdUsers {
		t.Errorf("without --etcd-auth on a folder that has it: %q, %v", dir, err)
	}
	if dir, err := setupEtcdAuth(ctx, false, t.TempDir(), env.Etcd); err != nil || dir != "" {
		t.Errorf("without --etcd-auth on a new folder: %q, %v", dir, err)
	}
}
