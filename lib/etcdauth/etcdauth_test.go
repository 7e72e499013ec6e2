package etcdauth_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/mcpid/mcpid/lib/auditemit"
	"github.com/mcpid/mcpid/lib/etcdauth"
	"github.com/mcpid/mcpid/lib/etcdtest"
)

func passwords() map[string]string {
	pw := map[string]string{}
	for _, s := range etcdauth.Services {
		pw[s] = "pw-" + s
	}
	return pw
}

func login(t *testing.T, etcd *etcdtest.Server, user, password string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   etcd.Endpoints(),
		DialTimeout: 10 * time.Second,
		Logger:      zap.NewNop(),
		Username:    user,
		Password:    password,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func setup(t *testing.T) *etcdtest.Server {
	t.Helper()
	etcd := etcdtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := etcdauth.Setup(ctx, etcd.Client(t), etcdauth.Config{RootPassword: "root-pw", Passwords: passwords()}); err != nil {
		t.Fatal(err)
	}
	return etcd
}

func denied(err error) bool { return errors.Is(err, rpctypes.ErrPermissionDenied) }

// TestServiceUsersConfinedToTheirPrefix: each service's user reads and
// writes its own prefix (including the audit outbox and the readiness key)
// and is refused every read, write, delete, transaction and watch on every
// other service's prefix and outside /mcpid/<service>/.
func TestServiceUsersConfinedToTheirPrefix(t *testing.T) {
	etcd := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	root := login(t, etcd, etcdauth.RootUser, "root-pw")
	for _, s := range etcdauth.Services {
		if _, err := root.Put(ctx, etcdauth.Prefix(s)+"secret", "of "+s); err != nil {
			t.Fatalf("root put: %v", err)
		}
	}
	for _, svc := range etcdauth.Services {
		cli := login(t, etcd, etcdauth.UserName(svc), "pw-"+svc)
		own := etcdauth.Prefix(svc)
		if _, err := cli.Put(ctx, own+"k", "v"); err != nil {
			t.Errorf("%s: put own prefix: %v", svc, err)
		}
		if resp, err := cli.Get(ctx, own, clientv3.WithPrefix()); err != nil || resp.Count < 2 {
			t.Errorf("%s: list own prefix: %v %v", svc, resp, err)
		}
		if _, err := cli.Get(ctx, own+"health", clientv3.WithCountOnly()); err != nil {
			t.Errorf("%s: readiness read: %v", svc, err)
		}
		// The audit outbox lives in the service's prefix: writing an event
		// with a state change must work with the service's own user.
		outbox, err := auditemit.NewOutbox(auditemit.OutboxConfig{Service: svc})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(outbox.Prefix().String(), own) {
			t.Errorf("%s: outbox prefix %s outside %s", svc, outbox.Prefix(), own)
		}
		if _, err := cli.Put(ctx, outbox.Prefix().Key("1"), "{}"); err != nil {
			t.Errorf("%s: outbox put: %v", svc, err)
		}
		lease, err := cli.Grant(ctx, 30)
		if err != nil {
			t.Errorf("%s: lease grant: %v", svc, err)
		} else {
			if _, err := cli.Put(ctx, own+"leased", "v", clientv3.WithLease(lease.ID)); err != nil {
				t.Errorf("%s: leased put: %v", svc, err)
			}
			if _, err := cli.Revoke(ctx, lease.ID); err != nil {
				t.Errorf("%s: lease revoke: %v", svc, err)
			}
		}

		foreign := []string{"/mcpid/health", "/mcpid/", "/other"}
		for _, o := range etcdauth.Services {
			if o != svc {
				foreign = append(foreign, etcdauth.Prefix(o)+"secret", etcdauth.Prefix(o))
			}
		}
		for _, key := range foreign {
			if _, err := cli.Get(ctx, key); !denied(err) {
				t.Errorf("%s: get %s = %v, want permission denied", svc, key, err)
			}
			if _, err := cli.Get(ctx, key, clientv3.WithPrefix()); !denied(err) {
				t.Errorf("%s: list %s = %v, want permission denied", svc, key, err)
			}
			if _, err := cli.Put(ctx, key+"x", "stolen"); !denied(err) {
				t.Errorf("%s: put %s = %v, want permission denied", svc, key, err)
			}
			if _, err := cli.Delete(ctx, key, clientv3.WithPrefix()); !denied(err) {
				t.Errorf("%s: delete %s = %v, want permission denied", svc, key, err)
			}
			_, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.Version(own+"k"), ">", 0)).
				Then(clientv3.OpPut(key+"x", "stolen")).Commit()
			if !denied(err) {
				t.Errorf("%s: txn put %s = %v, want permission denied", svc, key, err)
			}
		}
		// A watch on another prefix is cancelled with the permission error.
		other := etcdauth.Prefix(etcdauth.Services[(indexOf(svc)+1)%len(etcdauth.Services)])
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
		wresp, ok := <-cli.Watch(clientv3.WithRequireLeader(wctx), other, clientv3.WithPrefix())
		wcancel()
		if !ok || !wresp.Canceled {
			t.Errorf("%s: watch %s not refused: ok=%v %+v", svc, other, ok, wresp)
		}
	}
	// Nothing a service user did reached another prefix.
	for _, s := range etcdauth.Services {
		resp, err := root.Get(ctx, etcdauth.Prefix(s)+"secret")
		if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "of "+s {
			t.Errorf("%s secret changed: %v %v", s, resp, err)
		}
	}
}

func indexOf(svc string) int {
	for i, s := range etcdauth.Services {
		if s == svc {
			return i
		}
	}
	return -1
}

func TestWrongPasswordRefused(t *testing.T) {
	etcd := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := clientv3.New(clientv3.Config{
		Endpoints: etcd.Endpoints(), DialTimeout: 10 * time.Second, Logger: zap.NewNop(),
		Username: etcdauth.UserName("token"), Password: "wrong",
	})
	if err == nil {
		defer c.Close()
		_, err = c.Get(ctx, etcdauth.Prefix("token"))
	}
	if !errors.Is(err, rpctypes.ErrAuthFailed) {
		t.Fatalf("wrong password: %v, want auth failed", err)
	}
	// Without credentials nothing is readable once auth is on.
	anon := etcd.Client(t)
	if _, err := anon.Get(ctx, etcdauth.Prefix("token")); !denied(err) && !errors.Is(err, rpctypes.ErrUserEmpty) {
		t.Fatalf("anonymous get: %v, want refused", err)
	}
}

// TestSetupIsIdempotent: running it again as root (auth on) resets
// passwords and strips a permission added by hand.
func TestSetupIsIdempotent(t *testing.T) {
	etcd := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	root := login(t, etcd, etcdauth.RootUser, "root-pw")
	if _, err := root.RoleGrantPermission(ctx, etcdauth.UserName("policy"), "/mcpid/token/", clientv3.GetPrefixRangeEnd("/mcpid/token/"), clientv3.PermissionType(clientv3.PermRead)); err != nil {
		t.Fatal(err)
	}
	pw := passwords()
	pw["policy"] = "new-pw"
	if err := etcdauth.Setup(ctx, root, etcdauth.Config{RootPassword: "root-pw", Passwords: pw}); err != nil {
		t.Fatalf("second Setup: %v", err)
	}
	policy := login(t, etcd, etcdauth.UserName("policy"), "new-pw")
	if _, err := policy.Get(ctx, "/mcpid/token/x"); !denied(err) {
		t.Fatalf("extra grant survived Setup: %v", err)
	}
	if _, err := policy.Put(ctx, "/mcpid/policy/x", "v"); err != nil {
		t.Fatalf("policy with new password: %v", err)
	}
}

func TestSetupValidates(t *testing.T) {
	ctx := context.Background()
	for name, cfg := range map[string]etcdauth.Config{
		"no root password": {Passwords: passwords()},
		"no services":      {RootPassword: "x"},
		"empty password":   {RootPassword: "x", Passwords: map[string]string{"token": ""}},
		"bad name":         {RootPassword: "x", Passwords: map[string]string{"../token": "x"}},
	} {
		if err := etcdauth.Setup(ctx, nil, cfg); err == nil {
			t.Errorf("%s: Setup accepted it", name)
		}
	}
}
