package chain_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/services/audit/internal/chain"
)

func sample(t testing.TB) *auditv1.Event {
	t.Helper()
	details, err := structpb.NewStruct(map[string]any{"zeta": 1.5, "alpha": []any{"b", true}, "n": 1e21})
	if err != nil {
		t.Fatal(err)
	}
	v := "203.0.113.7"
	return &auditv1.Event{
		Id: "01JD0000000000000000000000", Sequence: 7,
		Time:          timestamppb.New(time.Date(2026, 11, 1, 12, 0, 0, 500_000_000, time.UTC)),
		AppendTime:    timestamppb.New(time.Date(2026, 11, 1, 12, 0, 1, 0, time.UTC)),
		Type:          auditv1.EventType_EVENT_TYPE_POLICY_DECISION,
		Actor:         &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_MCP_SERVER, Id: "https://mcp.example.test"},
		SourceService: auditv1.SourceService_SOURCE_SERVICE_POLICY,
		ClientId:      "client-1", Resource: "https://mcp.example.test", Tool: "search",
		Scopes: []string{"b:read", "a:read"}, Decision: auditv1.Decision_DECISION_DENY, Reason: "missing_scope",
		SourceAddress: &auditv1.Protected{Value: &v, Salt: bytes.Repeat([]byte{1}, 16), Digest: bytes.Repeat([]byte{2}, 32)},
		Details:       details, HashVersion: 1, PrevHash: bytes.Repeat([]byte{0xab}, 32),
		Hash: bytes.Repeat([]byte{0xff}, 32), EraseTime: timestamppb.Now(),
	}
}

// The canonical encoding is pinned byte for byte: external verifiers
// implement it from the contract, so it must never drift.
func TestCanonicalEncodingIsPinned(t *testing.T) {
	got, err := chain.Canonical(sample(t))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"actor":{"id":"https://mcp.example.test","kind":3},"append_time":"2026-11-01T12:00:01Z",` +
		`"client_id":"client-1","decision":2,"details":{"alpha":["b",true],"n":1e+21,"zeta":1.5},"hash_version":1,` +
		`"id":"01JD0000000000000000000000","prev_hash":"q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=","reason":"missing_scope",` +
		`"resource":"https://mcp.example.test","scopes":["b:read","a:read"],"sequence":"7",` +
		`"source_address":{"digest":"AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="},"source_service":3,` +
		`"time":"2026-11-01T12:00:00.500Z","tool":"search","type":24}`
	if string(got) != want {
		t.Fatalf("canonical encoding\n got %s\nwant %s", got, want)
	}
	h, err := chain.Hash(sample(t))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(want))
	if !bytes.Equal(h, sum[:]) {
		t.Fatalf("hash %s, want sha256 of the canonical text %s", hex.EncodeToString(h), hex.EncodeToString(sum[:]))
	}
}

func TestHashIgnoresCleartextSaltHashAndEraseTime(t *testing.T) {
	a, b := sample(t), sample(t)
	b.SourceAddress.Value, b.SourceAddress.Salt = nil, nil // erased
	b.Hash, b.EraseTime = nil, nil
	ha, _ := chain.Hash(a)
	hb, _ := chain.Hash(b)
	if !bytes.Equal(ha, hb) {
		t.Fatal("erasing cleartext changed the hash")
	}
	b.ClientId = "client-2"
	hb, _ = chain.Hash(b)
	if bytes.Equal(ha, hb) {
		t.Fatal("changing client_id did not change the hash")
	}
}

func link(t *testing.T, evs []*auditv1.Event) {
	t.Helper()
	var prev []byte
	for i, ev := range evs {
		ev.Sequence, ev.HashVersion, ev.PrevHash = uint64(i+1), chain.HashVersion, prev
		chain.Protect(ev)
		h, err := chain.Hash(ev)
		if err != nil {
			t.Fatal(err)
		}
		ev.Hash, prev = h, h
	}
}

func events(t *testing.T, n int) []*auditv1.Event {
	t.Helper()
	var out []*auditv1.Event
	for range n {
		ua := "agent/1.0"
		out = append(out, &auditv1.Event{
			Id: "01JD0000000000000000000000", Time: timestamppb.Now(), AppendTime: timestamppb.Now(),
			Type:      auditv1.EventType_EVENT_TYPE_LOGIN_SUCCEEDED,
			Actor:     &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_USER, Id: "u1"},
			UserAgent: &auditv1.Protected{Value: &ua},
		})
	}
	link(t, out)
	return out
}

func TestCheckEventFindsEachKindOfBreak(t *testing.T) {
	evs := events(t, 3)
	for i, ev := range evs {
		var prev []byte
		if i > 0 {
			prev = evs[i-1].GetHash()
		}
		if brk, _ := chain.CheckEvent(ev, uint64(i+1), prev); brk != nil {
			t.Fatalf("intact event %d: %v", i+1, brk)
		}
	}

	cases := []struct {
		name   string
		mutate func(ev *auditv1.Event)
		want   auditv1.ChainBreakKind
		field  string
	}{
		{"edited field", func(ev *auditv1.Event) { ev.UserId = "someone" }, auditv1.ChainBreakKind_CHAIN_BREAK_KIND_HASH_MISMATCH, ""},
		{"edited cleartext", func(ev *auditv1.Event) { v := "other"; ev.UserAgent.Value = &v }, auditv1.ChainBreakKind_CHAIN_BREAK_KIND_DIGEST_MISMATCH, "user_agent"},
		{"replaced link", func(ev *auditv1.Event) { ev.PrevHash = bytes.Repeat([]byte{9}, 32) }, auditv1.ChainBreakKind_CHAIN_BREAK_KIND_PREV_HASH_MISMATCH, ""},
		{"unknown version", func(ev *auditv1.Event) { ev.HashVersion = 2 }, auditv1.ChainBreakKind_CHAIN_BREAK_KIND_UNSUPPORTED_HASH_VERSION, ""},
		{"gap", func(ev *auditv1.Event) { ev.Sequence = 5 }, auditv1.ChainBreakKind_CHAIN_BREAK_KIND_SEQUENCE_GAP, ""},
		{"disorder", func(ev *auditv1.Event) { ev.Sequence = 1 }, auditv1.ChainBreakKind_CHAIN_BREAK_KIND_SEQUENCE_DISORDER, ""},
	}
	for _, c := range cases {
		ev := proto.Clone(evs[1]).(*auditv1.Event)
		c.mutate(ev)
		brk, _ := chain.CheckEvent(ev, 2, evs[0].GetHash())
		if brk.GetKind() != c.want || brk.GetField() != c.field {
			t.Errorf("%s: break %v, want %v field %q", c.name, brk, c.want, c.field)
		}
	}

	// An erased value is not a break.
	ev := proto.Clone(evs[1]).(*auditv1.Event)
	ev.UserAgent = &auditv1.Protected{Digest: ev.GetUserAgent().GetDigest()}
	if brk, erased := chain.CheckEvent(ev, 2, evs[0].GetHash()); brk != nil || erased != 1 {
		t.Fatalf("erased value: break %v, erased %d", brk, erased)
	}
}

func TestContentDigestIgnoresOutputFields(t *testing.T) {
	a := sample(t)
	b := proto.Clone(a).(*auditv1.Event)
	b.Sequence, b.Hash, b.PrevHash, b.AppendTime = 99, nil, nil, nil
	b.SourceAddress.Salt, b.SourceAddress.Digest = nil, nil
	if !bytes.Equal(chain.ContentDigest(a), chain.ContentDigest(b)) {
		t.Fatal("output-only fields changed the content digest")
	}
	b.Tool = "other"
	if bytes.Equal(chain.ContentDigest(a), chain.ContentDigest(b)) {
		t.Fatal("different content, same digest")
	}
}

// BenchmarkHash is the per-event cost of the canonical encoding and hash,
// the CPU AppendEvents spends on each event.
func BenchmarkHash(b *testing.B) {
	ev := sample(b)
	for b.Loop() {
		if _, err := chain.Hash(ev); err != nil {
			b.Fatal(err)
		}
	}
}
