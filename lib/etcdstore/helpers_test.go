package etcdstore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mcpid/mcpid/lib/etcdstore"
	"github.com/mcpid/mcpid/lib/etcdtest"
)

var testPrefix = etcdstore.MustPrefix("test")

// testCtx bounds every test: a hang fails it instead of stalling the run.
func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func newStore(t testing.TB, opts ...etcdstore.Option) (*etcdstore.Store, *clientv3.Client, *etcdtest.Server) {
	t.Helper()
	srv := etcdtest.Start(t)
	c := srv.Client(t)
	return etcdstore.New(c, opts...), c, srv
}

// value reads key directly; "" with ok false when absent.
func value(t testing.TB, ctx context.Context, c *clientv3.Client, key string) (string, bool) {
	t.Helper()
	resp, err := c.Get(ctx, key)
	if err != nil {
		t.Fatalf("get %q: %v", key, err)
	}
	if len(resp.Kvs) == 0 {
		return "", false
	}
	return string(resp.Kvs[0].Value), true
}

// keyErr asserts err is a *KeyError about key wrapping want.
func wantKeyErr(t testing.TB, err error, want error, key string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("err = %v, want %v", err, want)
	}
	var ke *etcdstore.KeyError
	if !errors.As(err, &ke) || ke.Key != key {
		t.Fatalf("err = %v, want a KeyError for %q", err, key)
	}
}

// eventually polls cond every 50ms for at most limit.
func eventually(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %v waiting for %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
