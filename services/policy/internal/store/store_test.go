package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	"github.com/mcpid/mcpid/lib/auditemit"
	"github.com/mcpid/mcpid/lib/etcdstore"
	"github.com/mcpid/mcpid/lib/etcdtest"
	"github.com/mcpid/mcpid/services/policy/internal/condition"
	"github.com/mcpid/mcpid/services/policy/internal/store"
)

const res = "https://crm.example.com/mcp"

type fixture struct {
	st     *store.Etcd
	cli    *clientv3.Client
	outbox *auditemit.Outbox
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	e := etcdtest.Start(t)
	cli := e.Client(t)
	ob, err := auditemit.NewOutbox(auditemit.OutboxConfig{Service: "policy"})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{st: store.NewEtcd(cli, etcdstore.MustPrefix("policy"), ob), cli: cli, outbox: ob}
}

func ev(t auditv1.EventType) func(_, _ *store.Record) (*auditv1.Event, error) {
	return func(_, _ *store.Record) (*auditv1.Event, error) {
		return &auditv1.Event{Type: t, Actor: &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_OPERATOR, Id: "alice"}, Resource: res}, nil
	}
}

func (f *fixture) put(ctx context.Context, p *policyv1.Policy, expected *int64) (*store.WriteResult, error) {
	return f.st.PutPolicy(ctx, store.PutPolicyRequest{
		Policy: p, ExpectedRevision: expected, By: "operator:alice", Now: time.Now(),
		Validate: func(*policyv1.Manifest) error { return nil },
		Event:    ev(auditv1.EventType_EVENT_TYPE_POLICY_UPDATED),
	})
}

func (f *fixture) publish(ctx context.Context, m *policyv1.Manifest) (*store.WriteResult, error) {
	return f.st.PublishManifest(ctx, store.PublishManifestRequest{
		Manifest: m, By: "resource:" + res, Now: time.Now(),
		Event: func(_, _ *store.Record) (*auditv1.Event, error) {
			return &auditv1.Event{Type: auditv1.EventType_EVENT_TYPE_TOOL_MANIFEST_PUBLISHED, Actor: &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_MCP_SERVER, Id: res}, Resource: res}, nil
		},
	})
}

func (f *fixture) outboxLen(t *testing.T) int {
	t.Helper()
	resp, err := f.cli.Get(context.Background(), f.outbox.Prefix().String(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return int(resp.Count)
}

func i64(v int64) *int64 { return &v }

// TestRevisionsPerLayer: each layer keeps its own revision although both
// live in one key, and a write of one layer never changes the other.
func TestRevisionsPerLayer(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	p1, err := f.put(ctx, &policyv1.Policy{Resource: res, DisplayName: "v1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m1, err := f.publish(ctx, &policyv1.Manifest{Resource: res, ServerVersion: "1"})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := f.st.Get(ctx, res)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Policy.GetRevision() != p1.Revision || rec.Manifest.GetRevision() != m1.Revision || rec.ModRevision != m1.Revision {
		t.Fatalf("revisions: policy %d (want %d), manifest %d (want %d), record %d",
			rec.Policy.GetRevision(), p1.Revision, rec.Manifest.GetRevision(), m1.Revision, rec.ModRevision)
	}
	// Put with the policy's own revision succeeds although the record moved.
	p2, err := f.put(ctx, &policyv1.Policy{Resource: res, DisplayName: "v2"}, i64(p1.Revision))
	if err != nil {
		t.Fatal(err)
	}
	rec, _ = f.st.Get(ctx, res)
	if rec.Policy.GetRevision() != p2.Revision || rec.Manifest.GetRevision() != m1.Revision || rec.Manifest.GetServerVersion() != "1" {
		t.Fatalf("after policy write: %+v", rec)
	}
	if n := f.outboxLen(t); n != 3 {
		t.Fatalf("outbox holds %d events, want one per write (3)", n)
	}
	// Nothing written: no event either.
	if r, err := f.put(ctx, &policyv1.Policy{Resource: res, DisplayName: "v2"}, nil); err != nil || r.Changed {
		t.Fatalf("identical: %+v, %v", r, err)
	}
	if _, err := f.st.PutPolicy(ctx, store.PutPolicyRequest{Policy: &policyv1.Policy{Resource: res, DisplayName: "v3"},
		Validate: func(*policyv1.Manifest) error { return errors.New("invalid") }, Event: ev(auditv1.EventType_EVENT_TYPE_POLICY_UPDATED)}); err == nil {
		t.Fatal("validation error ignored")
	}
	if n := f.outboxLen(t); n != 3 {
		t.Fatalf("outbox holds %d events after writes that wrote nothing", n)
	}
}

// TestConcurrentWriters: racing operators with the same expected revision —
// exactly one wins; racing publishers and operators lose no update.
func TestConcurrentWriters(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	base, err := f.put(ctx, &policyv1.Policy{Resource: res}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = f.put(ctx, &policyv1.Policy{Resource: res, DisplayName: fmt.Sprint("writer ", i)}, i64(base.Revision))
		}()
	}
	wg.Wait()
	wins := 0
	for _, err := range errs {
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, store.ErrRevisionMismatch):
			t.Errorf("loser: %v, want ErrRevisionMismatch", err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d writers won, want 1", wins)
	}

	// Unconditional writers of both layers, interleaved: the last of each
	// layer is what is stored.
	for i := range 6 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			if _, err := f.publish(ctx, &policyv1.Manifest{Resource: res, ServerVersion: fmt.Sprint(i)}); err != nil {
				t.Error(err)
			}
		}()
		go func() {
			defer wg.Done()
			if _, err := f.put(ctx, &policyv1.Policy{Resource: res, DisplayName: fmt.Sprint("p", i)}, nil); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	rec, err := f.st.Get(ctx, res)
	if err != nil || rec.Policy == nil || rec.Manifest == nil {
		t.Fatalf("lost a layer: %+v, %v", rec, err)
	}
}

func TestDeleteAndList(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for i := range 5 {
		if _, err := f.put(ctx, &policyv1.Policy{Resource: fmt.Sprintf("https://r%d.example.com", i)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	recs, rev, more, err := f.st.ListAt(ctx, 0, "", 2)
	if err != nil || len(recs) != 2 || !more || rev == 0 {
		t.Fatalf("ListAt: %d, %d, %v, %v", len(recs), rev, more, err)
	}
	if _, err := f.st.Delete(ctx, store.DeleteRequest{Resource: "https://r0.example.com", Event: func(*store.Record) (*auditv1.Event, error) {
		return &auditv1.Event{Type: auditv1.EventType_EVENT_TYPE_POLICY_DELETED, Actor: &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_OPERATOR, Id: "a"}}, nil
	}}); err != nil {
		t.Fatal(err)
	}
	// The listing continues at its revision: the deleted record is still
	// there.
	recs, _, _, err = f.st.ListAt(ctx, rev, "", 10)
	if err != nil || len(recs) != 5 {
		t.Fatalf("at the old revision: %d, %v", len(recs), err)
	}
	if _, err := f.st.Get(ctx, "https://r0.example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted: %v", err)
	}
	_, err = f.st.Delete(ctx, store.DeleteRequest{Resource: "https://r0.example.com", Event: nil})
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("delete again: %v", err)
	}
}

func TestIndexFollowsWrites(t *testing.T) {
	f := newFixture(t)
	env, err := condition.NewEnv(0)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := store.NewIndex(f.cli, f.st.Prefix(), env, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = idx.Run(ctx) }()
	defer func() { cancel(); <-done }()
	w, err := f.put(context.Background(), &policyv1.Policy{Resource: res, Tools: []*policyv1.Tool{{Name: "t"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	if err := idx.WaitForRevision(wctx, w.Revision); err != nil {
		t.Fatal(err)
	}
	r, ok := idx.Get(res)
	if !ok || !r.Active() || r.Revision() != w.Revision {
		t.Fatalf("index: %v %v", r, ok)
	}
	// A corrupt record is left out (fail closed: the resource is unknown).
	if _, err := f.cli.Put(context.Background(), f.st.Prefix().Key("https://bad.example.com"), "{not json"); err != nil {
		t.Fatal(err)
	}
	if _, ok := idx.Get("https://bad.example.com"); ok {
		t.Fatal("corrupt record indexed")
	}
}

// FuzzDecodeRecord: stored records are parsed by every replica's cache;
// nothing in etcd may make one panic.
func FuzzDecodeRecord(f *testing.F) {
	for _, s := range []string{
		`{"v":1,"seq":1,"resource":"https://crm.example.com/mcp","policy":{"doc":{"resource":"https://crm.example.com/mcp"},"time":"2026-01-01T00:00:00Z","by":"operator:a"}}`,
		`{"v":1,"resource":"https://crm.example.com/mcp","manifest":{"doc":{"resource":"https://crm.example.com/mcp","tools":[{"name":"t"}]},"rev":4,"time":"2026-01-01T00:00:00Z","by":"x"}}`,
		`{"v":2}`, `{}`, `null`, ``, `{"v":1,"policy":{"doc":"x"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := store.DecodeRecord(&mvccpb.KeyValue{Key: []byte("/mcpid/policy/resources/x"), Value: b, ModRevision: 7})
		if err != nil {
			return
		}
		if r.Policy == nil && r.Manifest == nil {
			t.Fatal("decoded a record without documents")
		}
		if r.Policy != nil && r.Policy.GetRevision() == 0 {
			t.Fatal("policy revision unresolved")
		}
	})
}
