package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/lib/devca"
	"github.com/mcpid/mcpid/services/audit/internal/chain"
	"github.com/mcpid/mcpid/services/audit/internal/store"
	"github.com/mcpid/mcpid/services/audit/server"
)

// Done when: four concurrent producers through two audit replicas yield
// one chain that verifies.
func TestConcurrentProducersTwoReplicasOneChain(t *testing.T) {
	e := newEnv(t)
	replicas := []*replica{e.start(t, nil), e.start(t, nil)}
	producers := []string{devca.ServiceRegistration, devca.ServiceToken, devca.ServicePolicy, devca.ServicePolicy}
	const calls, perCall = 15, 20

	var mu sync.Mutex
	sent := map[string]bool{}
	var wg sync.WaitGroup
	errc := make(chan error, len(producers))
	for p, name := range producers {
		clients := []auditv1.AuditServiceClient{e.as(t, replicas[0], e.service(t, name)), e.as(t, replicas[1], e.service(t, name))}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range calls {
				req := &auditv1.AppendEventsRequest{}
				for j := range perCall {
					var ev *auditv1.Event
					switch name {
					case devca.ServiceRegistration:
						ev = e.registered(t, fmt.Sprintf("client-%d-%d-%d", p, i, j), "agent")
					case devca.ServiceToken:
						ev = e.login(t, fmt.Sprintf("user-%d", j), "client-1")
					default:
						ev = e.decision(t, "client-1", fmt.Sprintf("tool-%d", j), auditv1.Decision_DECISION_ALLOW)
					}
					req.Events = append(req.Events, ev)
				}
				// Producers alternate replicas, so both append all along.
				resp, err := clients[(p+i)%2].AppendEvents(context.Background(), req)
				if err != nil {
					errc <- err
					return
				}
				mu.Lock()
				for k, r := range resp.GetResults() {
					if r.GetStatus() != auditv1.AppendEventStatus_APPEND_EVENT_STATUS_APPENDED {
						mu.Unlock()
						errc <- fmt.Errorf("producer %d: %v %s", p, r.GetStatus(), r.GetMessage())
						return
					}
					sent[req.Events[k].GetId()] = true
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}

	auditor := e.as(t, replicas[1], e.operator(t, devca.RoleAuditor))
	evs := allEvents(t, auditor)
	seen := map[string]bool{}
	produced := 0
	for i, ev := range evs {
		if ev.GetSequence() != uint64(i+1) {
			t.Fatalf("event %d has sequence %d", i, ev.GetSequence())
		}
		if seen[ev.GetId()] {
			t.Fatalf("event %s chained twice", ev.GetId())
		}
		seen[ev.GetId()] = true
		if sent[ev.GetId()] {
			produced++
		}
	}
	if produced != len(producers)*calls*perCall || len(sent) != produced {
		t.Fatalf("chained %d of %d produced events", produced, len(sent))
	}
	for _, r := range replicas {
		v := verifyChain(t, e.as(t, r, e.operator(t, devca.RoleAuditor)), nil)
		if !v.GetIntact() || v.GetEventsChecked() != uint64(len(evs)) || v.GetHeadSequence() != uint64(len(evs)) {
			t.Fatalf("verify: %v", v)
		}
	}
}

// tamper rewrites, in etcd directly, the batch holding seq.
func tamper(t *testing.T, cli *clientv3.Client, seq uint64, fn func(b *store.Batch)) {
	t.Helper()
	b := batchAt(t, cli, seq)
	fn(b.Batch)
	v, err := store.EncodeBatch(b.Batch)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(testCtx(t), b.Key, string(v)); err != nil {
		t.Fatal(err)
	}
}

func batchAt(t *testing.T, cli *clientv3.Client, seq uint64) store.StoredBatch {
	t.Helper()
	bs, err := store.New(cli).BatchesFrom(testCtx(t), seq, 1, false)
	if err != nil || len(bs) == 0 || bs[0].Batch == nil {
		t.Fatalf("batch holding %d: %v %v", seq, bs, err)
	}
	return bs[0]
}

// chainOf appends calls batches of n policy decisions (one batch key each)
// and returns the sequences of the first event of each call.
func chainOf(t *testing.T, e *env, r *replica, calls, n int) []uint64 {
	t.Helper()
	policy := e.as(t, r, e.service(t, devca.ServicePolicy))
	settled(t, e.as(t, r, e.operator(t, devca.RoleAuditor)))
	var firsts []uint64
	for range calls {
		var evs []*auditv1.Event
		for j := range n {
			evs = append(evs, e.decision(t, "c1", fmt.Sprintf("tool-%d", j), auditv1.Decision_DECISION_DENY))
		}
		firsts = append(firsts, appendOK(t, policy, evs...)[0].GetSequence())
	}
	return firsts
}

func wantBreak(t *testing.T, v *auditv1.VerifyChainResponse, kind auditv1.ChainBreakKind, seq uint64) {
	t.Helper()
	if v.GetIntact() || v.GetFirstBreak().GetKind() != kind || v.GetFirstBreak().GetSequence() != seq {
		t.Fatalf("verify: intact %v, break %v; want %v at %d", v.GetIntact(), v.GetFirstBreak(), kind, seq)
	}
}

// Done when: an event altered or deleted directly in etcd is reported by
// VerifyChain at the right place.
func TestVerifyFindsEditsInEtcd(t *testing.T) {
	cases := []struct {
		name   string
		target func(firsts []uint64) uint64 // the sequence tampered with
		edit   func(b *store.Batch, seq uint64)
		kind   auditv1.ChainBreakKind
		at     func(seq uint64) uint64
	}{
		{"field altered", func(f []uint64) uint64 { return f[2] + 3 }, func(b *store.Batch, seq uint64) {
			b.Entries[seq-b.First].Event.ClientId = "someone-else"
		}, auditv1.ChainBreakKind_CHAIN_BREAK_KIND_HASH_MISMATCH, func(s uint64) uint64 { return s }},
		{"altered with its hash recomputed", func(f []uint64) uint64 { return f[2] + 3 }, func(b *store.Batch, seq uint64) {
			ev := b.Entries[seq-b.First].Event
			ev.Tool = "forged"
			ev.Hash, _ = chain.Hash(ev)
		}, auditv1.ChainBreakKind_CHAIN_BREAK_KIND_PREV_HASH_MISMATCH, func(s uint64) uint64 { return s + 1 }},
		{"cleartext altered", func(f []uint64) uint64 { return f[1] + 1 }, func(b *store.Batch, seq uint64) {
			v := `{"q":"forged"}`
			b.Entries[seq-b.First].Event.ToolArguments.Value = &v
		}, auditv1.ChainBreakKind_CHAIN_BREAK_KIND_DIGEST_MISMATCH, func(s uint64) uint64 { return s }},
		{"event deleted inside a batch", func(f []uint64) uint64 { return f[3] + 2 }, func(b *store.Batch, seq uint64) {
			i := seq - b.First
			b.Entries = append(b.Entries[:i], b.Entries[i+1:]...)
		}, auditv1.ChainBreakKind_CHAIN_BREAK_KIND_SEQUENCE_GAP, func(s uint64) uint64 { return s }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			r := e.start(t, nil)
			firsts := chainOf(t, e, r, 5, 6)
			auditor := e.as(t, r, e.operator(t, devca.RoleAuditor))
			if v := verifyChain(t, auditor, nil); !v.GetIntact() {
				t.Fatalf("before tampering: %v", v.GetFirstBreak())
			}
			seq := c.target(firsts)
			tamper(t, e.etcd.Client(t), seq, func(b *store.Batch) { c.edit(b, seq) })
			v := verifyChain(t, auditor, nil)
			wantBreak(t, v, c.kind, c.at(seq))
			if v.GetThroughSequence() != c.at(seq)-1 {
				t.Fatalf("through_sequence %d, want %d", v.GetThroughSequence(), c.at(seq)-1)
			}
		})
	}

	t.Run("batch deleted", func(t *testing.T) {
		e := newEnv(t)
		r := e.start(t, nil)
		firsts := chainOf(t, e, r, 5, 6)
		cli := e.etcd.Client(t)
		if _, err := cli.Delete(testCtx(t), batchAt(t, cli, firsts[2]).Key); err != nil {
			t.Fatal(err)
		}
		v := verifyChain(t, e.as(t, r, e.operator(t, devca.RoleAuditor)), nil)
		wantBreak(t, v, auditv1.ChainBreakKind_CHAIN_BREAK_KIND_SEQUENCE_GAP, firsts[2])
	})

	t.Run("chain rewritten consistently after a checkpoint was signed", func(t *testing.T) {
		e := newEnv(t)
		r := e.start(t, nil)
		firsts := chainOf(t, e, r, 4, 5)
		auditor := e.as(t, r, e.operator(t, devca.RoleAuditor))
		head := firsts[3] + 4
		waitCheckpoint(t, auditor, head)
		// The first checkpoint the forgery contradicts is the lowest one at
		// or after the forged event.
		cps, err := auditor.ListCheckpoints(testCtx(t), &auditv1.ListCheckpointsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var cp *auditv1.Checkpoint
		for _, c := range cps.GetCheckpoints() {
			if c.GetSequence() >= firsts[1] {
				cp = c
			}
		}
		r.stop() // no new checkpoint may cover the forgery
		// Forge event firsts[1] and re-link everything after it.
		cli := e.etcd.Client(t)
		var prev []byte
		for _, f := range firsts[1:] {
			tamper(t, cli, f, func(b *store.Batch) {
				for i, en := range b.Entries {
					ev := en.Event
					if f == firsts[1] && i == 0 {
						ev.Reason = "forged"
						prev = ev.GetPrevHash()
					}
					ev.PrevHash = prev
					ev.Hash, _ = chain.Hash(ev)
					prev = ev.Hash
				}
			})
		}
		r2 := e.start(t, func(c *server.Config) { c.CheckpointInterval = 1 << 40 })
		v := verifyChain(t, e.as(t, r2, e.operator(t, devca.RoleAuditor)), nil)
		wantBreak(t, v, auditv1.ChainBreakKind_CHAIN_BREAK_KIND_CHECKPOINT_MISMATCH, cp.GetSequence())
	})
}

// Done when: a tail cut off after the last checkpoint is reported by
// VerifyChain at the right place.
func TestVerifyFindsATruncatedTail(t *testing.T) {
	e := newEnv(t)
	r := e.start(t, nil)
	firsts := chainOf(t, e, r, 4, 5)
	auditor := e.as(t, r, e.operator(t, devca.RoleAuditor))
	cp := waitCheckpoint(t, auditor, firsts[3]+4)
	r.stop()

	// Someone with etcd access cuts the last two batches and moves the head
	// back so that the chain looks complete.
	cli := e.etcd.Client(t)
	for _, f := range firsts[2:] {
		if _, err := cli.Delete(testCtx(t), batchAt(t, cli, f).Key); err != nil {
			t.Fatal(err)
		}
	}
	last := batchAt(t, cli, firsts[1]).Batch
	lastEv := last.Entries[len(last.Entries)-1].Event
	h, _ := json.Marshal(store.Head{Sequence: lastEv.GetSequence(), Hash: lastEv.GetHash(), EventID: lastEv.GetId(), AppendTime: lastEv.GetAppendTime().AsTime()})
	if _, err := cli.Put(testCtx(t), store.HeadKey, string(h)); err != nil {
		t.Fatal(err)
	}
	r2 := e.start(t, func(c *server.Config) { c.CheckpointInterval = 1 << 40 })
	auditor = e.as(t, r2, e.operator(t, devca.RoleAuditor))
	v := verifyChain(t, auditor, nil)
	wantBreak(t, v, auditv1.ChainBreakKind_CHAIN_BREAK_KIND_TRUNCATED, cp.GetSequence())
	if !bytes.Equal(v.GetFirstBreak().GetExpected(), cp.GetHeadHash()) || v.GetFirstBreak().GetCheckpointSequence() != cp.GetSequence() {
		t.Fatalf("truncation break %v does not name checkpoint %d", v.GetFirstBreak(), cp.GetSequence())
	}
	if v.GetEventsChecked() != lastEv.GetSequence() {
		t.Fatalf("verify: %v", v)
	}

	// Deleting the stored checkpoints as well hides the cut from the
	// stored records, but not from a checkpoint kept outside mcpid.
	if _, err := cli.Delete(testCtx(t), string(store.Checkpoints), clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	if v := verifyChain(t, auditor, nil); !v.GetIntact() {
		t.Fatalf("without checkpoints nothing can tell: %v", v.GetFirstBreak())
	}
	v = verifyChain(t, auditor, &auditv1.VerifyChainRequest{TrustedCheckpoints: []string{cp.GetJws()}})
	wantBreak(t, v, auditv1.ChainBreakKind_CHAIN_BREAK_KIND_TRUNCATED, cp.GetSequence())
}

// A tail cut while the recorded head is left alone is reported against the
// head.
func TestVerifyFindsACutAgainstTheHead(t *testing.T) {
	e := newEnv(t)
	r := e.start(t, func(c *server.Config) { c.CheckpointInterval = 1 << 40 })
	firsts := chainOf(t, e, r, 3, 4)
	cli := e.etcd.Client(t)
	if _, err := cli.Delete(testCtx(t), batchAt(t, cli, firsts[2]).Key); err != nil {
		t.Fatal(err)
	}
	v := verifyChain(t, e.as(t, r, e.operator(t, devca.RoleAuditor)), nil)
	wantBreak(t, v, auditv1.ChainBreakKind_CHAIN_BREAK_KIND_TRUNCATED, firsts[2]+3)
}
