package server_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/lib/config"
	"github.com/mcpid/mcpid/lib/etcdtest"
	"github.com/mcpid/mcpid/lib/service/servicetest"
	"github.com/mcpid/mcpid/services/token/server"
)

const keysPrefix = "/mcpid/token/signing-keys/"

// storedKey is the part of a signing key record these tests read from etcd.
type storedKey struct {
	Kid     string `json:"kid"`
	State   string `json:"state"`
	Private struct {
		Version string `json:"kek_version"`
	} `json:"private"`
}

func storedKeys(t testing.TB, cli *clientv3.Client) (map[string]storedKey, map[string][]byte) {
	t.Helper()
	resp, err := cli.Get(context.Background(), keysPrefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out, raw := map[string]storedKey{}, map[string][]byte{}
	for _, kv := range resp.Kvs {
		var k storedKey
		if err := json.Unmarshal(kv.Value, &k); err != nil {
			t.Fatal(err)
		}
		out[k.Kid], raw[k.Kid] = k, kv.Value
	}
	return out, raw
}

// replica runs one token service replica until the returned stop is
// called (or the test ends).
func replica(t *testing.T, cfg server.Config) (servicetest.Runnable, func()) {
	t.Helper()
	cfg.Flags.GRPCAddr, cfg.Flags.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	srv, err := cfg.Complete(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(stop)
	servicetest.WaitReady(t, srv, server.Name)
	return srv, stop
}

func kekLine(t *testing.T, version string) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return version + ":" + base64.StdEncoding.EncodeToString(b) + "\n"
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kek")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestK2KEKReseal: after a KEK rotation (a new first line in kek-file) the
// elected replica re-seals every published signing key under the new
// version; the old version still opens the keys until then (the replica
// with both lines starts and signs with the v1-sealed key), and once
// resealed a replica whose file holds only the new version runs with the
// same key. Before the reseal such a replica refuses to run.
func TestK2KEKReseal(t *testing.T) {
	etcd := etcdtest.Start(t)
	cli := etcd.Client(t)
	v1, v2 := kekLine(t, "v1"), kekLine(t, "v2")
	base := server.Config{Flags: servicetest.Flags(etcd.Endpoints()), JWKSMaxAge: time.Second, SigningKeyRotation: -1}

	cfg := base
	cfg.KEKFile = config.SecretFile{Path: writeFile(t, v1)}
	a, stopA := replica(t, cfg)
	kids := jwksKids(t, "http://"+a.HTTPAddr().String())
	keys, _ := storedKeys(t, cli)
	if len(kids) != 1 || keys[kids[0]].Private.Version != "v1" {
		t.Fatalf("first key %v sealed %v, want one key under v1", kids, keys)
	}
	stopA()

	// Only v2 before the reseal: refuses, naming the setting.
	only2 := base
	only2.KEKFile = config.SecretFile{Path: writeFile(t, v2)}
	only2.Flags.GRPCAddr, only2.Flags.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	srv, err := only2.Complete(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	err = srv.Run(ctx)
	cancel()
	if err == nil {
		t.Fatal("a replica without the sealing KEK version ran")
	}

	// v2 on top, v1 kept: the replica opens the v1-sealed key and, elected,
	// reseals it under v2.
	both := base
	both.KEKFile = config.SecretFile{Path: writeFile(t, v2+v1)}
	b, stopB := replica(t, both)
	if got := jwksKids(t, "http://"+b.HTTPAddr().String()); len(got) != 1 || got[0] != kids[0] {
		t.Fatalf("after KEK rotation JWKS = %v, want the same key %v", got, kids)
	}
	poll(t, "reseal under v2", func() bool {
		ks, _ := storedKeys(t, cli)
		return ks[kids[0]].Private.Version == "v2"
	})
	stopB()

	// Only v2 after the reseal: runs with the same key.
	c, _ := replica(t, only2)
	if got := jwksKids(t, "http://"+c.HTTPAddr().String()); len(got) != 1 || got[0] != kids[0] {
		t.Fatalf("v2-only replica JWKS = %v, want %v", got, kids)
	}
}

// TestK2ScheduledRotationTwoReplicas: with two replicas on one etcd only
// the elected one rotates on schedule — never two PENDING keys, never a
// superseded (retired at once) key — and when a replica stops, the other
// carries on rotating.
func TestK2ScheduledRotationTwoReplicas(t *testing.T) {
	etcd := etcdtest.Start(t)
	cli := etcd.Client(t)
	cfg := server.Config{
		Flags: servicetest.Flags(etcd.Endpoints()), KEKFile: config.SecretFile{Path: writeFile(t, kekLine(t, "v1"))},
		JWKSMaxAge: time.Second, SigningKeyRotation: 2 * time.Second,
	}
	_, stopA := replica(t, cfg)
	_, stopB := replica(t, cfg)

	check := func() map[string]storedKey {
		ks, _ := storedKeys(t, cli)
		n := map[string]int{}
		for _, k := range ks {
			n[k.State]++
		}
		// Tokens live 5 minutes by default, so no key may be RETIRED yet: a
		// retired key here would be a superseded duplicate rotation.
		if n["pending"] > 1 || n["active"] != 1 || n["retired"] > 0 {
			t.Fatalf("key states %v (%v): a double rotation", n, ks)
		}
		return ks
	}
	waitKeys := func(want int) {
		t.Helper()
		poll(t, "rotation", func() bool {
			ks := check()
			n := 0
			for _, k := range ks {
				if k.State == "retiring" {
					n++
				}
			}
			return n+1 >= want
		})
	}
	waitKeys(2)
	// Stop one replica (whichever leads), then the other must rotate on.
	stopA()
	waitKeys(3)
	_, stopA2 := replica(t, cfg)
	stopB()
	waitKeys(4)
	stopA2()
	check()
}

// TestK2EmergencyRotationNotUndone (review finding 7): a PENDING key
// written before an emergency rotation (the key a stale replica missed)
// never becomes active afterwards: the elected replica retires it instead
// of promoting it, and the emergency key keeps signing.
func TestK2EmergencyRotationNotUndone(t *testing.T) {
	e := startEnv(t, func(o *envOptions) {
		o.tweak = func(_ *env, c *server.Config) { c.JWKSMaxAge = time.Second; c.SigningKeyRotation = -1 }
	})
	ctx := context.Background()
	pend, err := e.grpcTok.RotateSigningKey(ctx, &tokenv1.RotateSigningKeyRequest{Reason: "scheduled-like"})
	if err != nil {
		t.Fatal(err)
	}
	em, err := e.grpcTok.RotateSigningKey(ctx, &tokenv1.RotateSigningKeyRequest{Emergency: true, Reason: "compromise"})
	if err != nil {
		t.Fatal(err)
	}
	pk, ek := pend.GetKey().GetKid(), em.GetKey().GetKid()
	if s := keyByKid(t, e, pk).GetState(); s != tokenv1.SigningKeyState_SIGNING_KEY_STATE_RETIRED {
		t.Fatalf("pending key after emergency rotation: %v", s)
	}
	// The lost race's outcome: the earlier key is still PENDING, due now.
	_, raw := storedKeys(t, e.cli)
	var rec map[string]any
	if err := json.Unmarshal(raw[pk], &rec); err != nil {
		t.Fatal(err)
	}
	rec["state"] = "pending"
	rec["activate"] = time.Now().Add(-time.Second).UTC().Format(time.RFC3339Nano)
	delete(rec, "retire")
	delete(rec, "remove")
	b, _ := json.Marshal(rec)
	if _, err := e.cli.Put(ctx, keysPrefix+pk, string(b)); err != nil {
		t.Fatal(err)
	}
	poll(t, "the stale pending key retired", func() bool {
		if s := keyByKid(t, e, ek).GetState(); s != tokenv1.SigningKeyState_SIGNING_KEY_STATE_ACTIVE {
			t.Fatalf("emergency key is %v: undone by the stale pending key", s)
		}
		return keyByKid(t, e, pk).GetState() == tokenv1.SigningKeyState_SIGNING_KEY_STATE_RETIRED
	})
	if kid := kidOf(t, e.ccToken(t, clientMachine, secretMachine, resCRM)); kid != ek {
		t.Fatalf("token signed by %s, want the emergency key %s", kid, ek)
	}
}
