package etcdtest_test

import (
	"context"
	"errors"
	"net"
	"net/url"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mcpid/mcpid/lib/etcdtest"
)

func TestStartServesOnLoopbackWithRealPort(t *testing.T) {
	srv := etcdtest.Start(t)
	eps := srv.Endpoints()
	if len(eps) != 1 {
		t.Fatalf("Endpoints() = %v, want one", eps)
	}
	u, err := url.Parse(eps[0])
	if err != nil {
		t.Fatal(err)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	if host != "127.0.0.1" || port == "0" || port == "" {
		t.Fatalf("endpoint %q: want 127.0.0.1 with a real port", eps[0])
	}

	c := srv.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	resp, err := c.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("Get(k) = %v", resp.Kvs)
	}
}

func TestTwoServersAreIndependent(t *testing.T) {
	a, b := etcdtest.Start(t), etcdtest.Start(t)
	if a.Endpoints()[0] == b.Endpoints()[0] {
		t.Fatalf("both servers on %s", a.Endpoints()[0])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := a.Client(t).Put(ctx, "only-in-a", "1"); err != nil {
		t.Fatal(err)
	}
	resp, err := b.Client(t).Get(ctx, "only-in-a")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 0 {
		t.Fatal("write to server a visible on server b")
	}
}

func TestCompactMakesOldRevisionsUnreadable(t *testing.T) {
	srv := etcdtest.Start(t)
	c := srv.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	first, err := c.Put(ctx, "k", "1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, "k", "2"); err != nil {
		t.Fatal(err)
	}
	compacted := srv.Compact(t, 0)
	if compacted <= first.Header.Revision {
		t.Fatalf("Compact(0) = %d, want > %d", compacted, first.Header.Revision)
	}
	_, err = c.Get(ctx, "k", clientv3.WithRev(first.Header.Revision))
	if !errors.Is(err, rpctypes.ErrCompacted) {
		t.Fatalf("Get at compacted revision: err = %v, want ErrCompacted", err)
	}
}

func TestQuotaRejectsWritesBeyondIt(t *testing.T) {
	// etcd's smallest useful backend is a few hundred KiB; 1 MiB fills fast.
	srv := etcdtest.Start(t, etcdtest.WithQuota(1<<20))
	c := srv.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	val := string(make([]byte, 512<<10))
	var err error
	for i := 0; i < 16 && err == nil; i++ {
		_, err = c.Put(ctx, "big", val)
	}
	if !errors.Is(err, rpctypes.ErrNoSpace) {
		t.Fatalf("err = %v, want ErrNoSpace", err)
	}
}
