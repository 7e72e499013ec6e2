package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mcpid/mcpid/lib/etcdstore"
	"github.com/mcpid/mcpid/lib/etcdtest"
	"github.com/mcpid/mcpid/services/registration/internal/metadata"
	"github.com/mcpid/mcpid/services/registration/internal/secret"
	"github.com/mcpid/mcpid/services/registration/internal/store"
)

func newStore(t *testing.T) (*store.Etcd, *etcdtest.Server) {
	t.Helper()
	srv := etcdtest.Start(t)
	s, err := store.New(srv.Client(t), "registration", nil)
	if err != nil {
		t.Fatal(err)
	}
	return s, srv
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func client(id string) *store.Client {
	return &store.Client{
		ClientID: id, Source: store.SourceDCR,
		Metadata:     metadata.Metadata{RedirectURIs: []string{"https://a.example/cb"}, TokenEndpointAuthMethod: "none", GrantTypes: []string{"authorization_code"}, ApplicationType: "web"},
		Verification: store.Verification{Status: store.StatusUnverified},
		CreateTime:   time.Now(), UpdateTime: time.Now(),
	}
}

func TestClientLifecycleAndConsentEpoch(t *testing.T) {
	s, _ := newStore(t)
	ctx := ctxT(t)
	c := client("c1")
	rev, err := s.CreateClient(ctx, c, store.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateClient(ctx, client("c1"), store.CreateOptions{}); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("second create: %v", err)
	}
	got, err := s.GetClient(ctx, "c1")
	if err != nil || got.ConsentEpoch != rev || got.Revision != rev {
		t.Fatalf("Get = %+v, %v; want epoch %d", got, err, rev)
	}
	// A write that leaves the redirect URIs keeps the epoch.
	up, err := s.UpdateClient(ctx, "c1", func(c *store.Client) ([]etcdstore.Op, error) {
		c.Metadata.ClientName = "renamed"
		return nil, nil
	})
	if err != nil || up.ConsentEpoch != rev || up.Revision <= rev || up.Metadata.ClientName != "renamed" {
		t.Fatalf("update = %+v, %v", up, err)
	}
	// One that changes them (epoch 0) gets its own revision.
	up2, err := s.UpdateClient(ctx, "c1", func(c *store.Client) ([]etcdstore.Op, error) {
		c.Metadata.RedirectURIs = []string{"https://b.example/cb"}
		c.ConsentEpoch = 0
		return nil, nil
	})
	if err != nil || up2.ConsentEpoch != up2.Revision || up2.ConsentEpoch <= up.Revision {
		t.Fatalf("redirect change = epoch %d rev %d, %v", up2.ConsentEpoch, up2.Revision, err)
	}
	// Renewing keeps it.
	if err := s.RenewClient(ctx, up2, time.Now(), time.Time{}); err != nil {
		t.Fatal(err)
	}
	again, _ := s.GetClient(ctx, "c1")
	if again.ConsentEpoch != up2.ConsentEpoch || again.LastUsedTime.IsZero() {
		t.Fatalf("after renew: %+v", again)
	}
	// fn's error stops the update.
	boom := errors.New("boom")
	if _, err := s.UpdateClient(ctx, "c1", func(*store.Client) ([]etcdstore.Op, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("fn error: %v", err)
	}
	if _, err := s.DeleteClient(ctx, "c1", func(*store.Client) ([]etcdstore.Op, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetClient(ctx, "c1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	// Re-created with the same id: a new, larger epoch.
	rev2, err := s.CreateClient(ctx, client("c1"), store.CreateOptions{})
	if err != nil || rev2 <= up2.ConsentEpoch {
		t.Fatalf("re-create rev %d, %v", rev2, err)
	}
}

func TestExpiryMarkerFollowsLease(t *testing.T) {
	s, srv := newStore(t)
	ctx := ctxT(t)
	cli := srv.Client(t)
	c := client("exp")
	c.ExpireTime = time.Now().Add(time.Hour)
	c.IdleExpiry = true
	if _, err := s.CreateClient(ctx, c, store.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if c.LeaseID == 0 {
		t.Fatal("no lease")
	}
	resp, err := cli.Get(ctx, s.ExpiryPrefix().Key("exp"))
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].Lease != c.LeaseID {
		t.Fatalf("marker = %v, %v", resp.Kvs, err)
	}
	if id, err := s.ExpiryMarkerClientID(string(resp.Kvs[0].Key)); err != nil || id != "exp" {
		t.Fatalf("marker id %q, %v", id, err)
	}
	if alive, err := s.LeaseAlive(ctx, c.LeaseID); !alive || err != nil {
		t.Fatalf("LeaseAlive = %v, %v", alive, err)
	}
	got, _ := s.GetClient(ctx, "exp")
	if err := s.RenewClient(ctx, got, time.Now(), time.Now().Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	// Clearing the expiry removes the marker and its lease.
	up, err := s.UpdateClient(ctx, "exp", func(c *store.Client) ([]etcdstore.Op, error) {
		c.ExpireTime = time.Time{}
		return nil, nil
	})
	if err != nil || up.LeaseID != 0 {
		t.Fatalf("clear expiry: %+v, %v", up, err)
	}
	resp, _ = cli.Get(ctx, s.ExpiryPrefix().Key("exp"))
	if len(resp.Kvs) != 0 {
		t.Fatal("marker kept")
	}
	if alive, _ := s.LeaseAlive(ctx, c.LeaseID); alive {
		t.Fatal("old lease kept")
	}
	// Renewing a client whose lease is gone reports it.
	got, _ = s.GetClient(ctx, "exp")
	got.IdleExpiry, got.LeaseID = true, c.LeaseID
	if err := s.RenewClient(ctx, got, time.Now(), time.Now()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("renew with a dead lease: %v", err)
	}
}

func TestIATUseIsCompareAndSwap(t *testing.T) {
	s, _ := newStore(t)
	ctx := ctxT(t)
	tok := secret.Generate()
	iat := &store.IAT{ID: "01JAAAAAAAAAAAAAAAAAAAAAAA", MaxUses: 2, Hash: secret.Hash(tok), CreateTime: time.Now(), ExpireTime: time.Now().Add(time.Hour)}
	if err := s.CreateIAT(ctx, iat); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetIATByHash(ctx, secret.Hash(tok))
	if err != nil || got.ID != iat.ID {
		t.Fatalf("by hash: %+v, %v", got, err)
	}
	use := func(read *store.IAT, id string) error {
		u := *read
		u.UseCount++
		_, err := s.CreateClient(ctx, client(id), store.CreateOptions{IAT: &u})
		return err
	}
	if err := use(got, "a"); err != nil {
		t.Fatal(err)
	}
	// The same read again is stale: the count moved.
	if err := use(got, "b"); !errors.Is(err, store.ErrIATChanged) {
		t.Fatalf("stale use: %v", err)
	}
	if _, err := s.GetClient(ctx, "b"); !errors.Is(err, store.ErrNotFound) {
		t.Fatal("client of a failed use was stored")
	}
	got, _ = s.GetIAT(ctx, iat.ID)
	if got.UseCount != 1 {
		t.Fatalf("use count %d", got.UseCount)
	}
}

func TestListIATsNewestFirst(t *testing.T) {
	s, _ := newStore(t)
	ctx := ctxT(t)
	for _, id := range []string{"01J0000000000000000000000A", "01J0000000000000000000000B", "01J0000000000000000000000C"} {
		if err := s.CreateIAT(ctx, &store.IAT{ID: id, MaxUses: 1, Hash: secret.Hash(id), ExpireTime: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	page, next, err := s.ListIATs(ctx, 2, "")
	if err != nil || len(page) != 2 || page[0].ID != "01J0000000000000000000000C" || next == "" {
		t.Fatalf("page 1: %v %q %v", page, next, err)
	}
	page, next, err = s.ListIATs(ctx, 2, next)
	if err != nil || len(page) != 1 || page[0].ID != "01J0000000000000000000000A" || next != "" {
		t.Fatalf("page 2: %v %q %v", page, next, err)
	}
	if _, _, err := s.ListIATs(ctx, 2, "garbage"); !errors.Is(err, store.ErrInvalidPageToken) {
		t.Fatalf("bad token: %v", err)
	}
}

func TestRememberJTIOnce(t *testing.T) {
	s, _ := newStore(t)
	ctx := ctxT(t)
	until := time.Now().Add(time.Minute)
	if err := s.RememberJTI(ctx, "c", "j1", until); err != nil {
		t.Fatal(err)
	}
	if err := s.RememberJTI(ctx, "c", "j1", until); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("replay: %v", err)
	}
	if err := s.RememberJTI(ctx, "other", "j1", until); err != nil {
		t.Fatalf("same jti, other client: %v", err)
	}
}

func TestDuplicateSlots(t *testing.T) {
	s, _ := newStore(t)
	ctx := ctxT(t)
	for i := range 2 {
		slot, _, err := s.DuplicateSlot(ctx, "fp", 2)
		if err != nil {
			t.Fatalf("slot %d: %v", i, err)
		}
		if _, err := s.CreateClient(ctx, client(secret.RandomID(8)), store.CreateOptions{DuplicateSlot: slot, DuplicateWindow: time.Hour}); err != nil {
			t.Fatal(err)
		}
	}
	_, wait, err := s.DuplicateSlot(ctx, "fp", 2)
	if !errors.Is(err, store.ErrDuplicateLimit) || wait <= 0 || wait > time.Hour+time.Second {
		t.Fatalf("third: %v, wait %v", err, wait)
	}
	if _, _, err := s.DuplicateSlot(ctx, "other", 2); err != nil {
		t.Fatalf("other fingerprint: %v", err)
	}
}

func TestRevocations(t *testing.T) {
	s, _ := newStore(t)
	ctx := ctxT(t)
	op, err := s.RevocationOp("c1", "deleted", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateClient(ctx, client("x"), store.CreateOptions{Extra: []etcdstore.Op{op}}); err != nil {
		t.Fatal(err)
	}
	rs, err := s.ListRevocations(ctx, 10)
	if err != nil || len(rs) != 1 || rs[0].ClientID != "c1" || rs[0].Reason != "deleted" {
		t.Fatalf("revocations: %v, %v", rs, err)
	}
	if err := s.DeleteRevocation(ctx, rs[0].Key); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRevocation(ctx, "/mcpid/registration/clients/x"); err == nil {
		t.Fatal("deleted a non-revocation key")
	}
	if rs, _ := s.ListRevocations(ctx, 10); len(rs) != 0 {
		t.Fatal("not deleted")
	}
}
