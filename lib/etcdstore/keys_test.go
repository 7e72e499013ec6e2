package etcdstore_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/mcpid/mcpid/lib/etcdstore"
)

func TestNewPrefixValidatesServiceName(t *testing.T) {
	p, err := etcdstore.NewPrefix("registration")
	if err != nil || p != "/mcpid/registration/" {
		t.Fatalf("NewPrefix(registration) = %q, %v", p, err)
	}
	for _, bad := range []string{"", "Token", "a/b", "../x", "x y", "1abc", "token/", strings.Repeat("a", 64)} {
		if _, err := etcdstore.NewPrefix(bad); err == nil {
			t.Errorf("NewPrefix(%q) accepted", bad)
		}
	}
}

var hostileParts = []string{
	"a/b", "/", "//", "..", ".", "../../token/keys", "", "%", "%2F", "%25", "a%2Fb",
	"x\x00y", "\xff\xfe", "ünï/cødé", " ", "?q=1#f", "a;b,c", strings.Repeat("/", 10),
}

func TestEscapedPartsStayOneSegment(t *testing.T) {
	p := etcdstore.MustPrefix("registration")
	for _, part := range hostileParts {
		seg := etcdstore.EscapePart(part)
		if strings.Contains(seg, "/") || seg == "" {
			t.Errorf("EscapePart(%q) = %q: empty or contains '/'", part, seg)
		}
		back, err := etcdstore.UnescapePart(seg)
		if err != nil || back != part {
			t.Errorf("UnescapePart(EscapePart(%q)) = %q, %v", part, back, err)
		}
		key := p.Key("clients", part)
		if !p.Sub("clients").Contains(key) || strings.Count(key[len(p.Sub("clients")):], "/") != 0 {
			t.Errorf("Key(clients, %q) = %q escapes its collection", part, key)
		}
		parts, err := p.Parts(key)
		if err != nil || !slices.Equal(parts, []string{"clients", part}) {
			t.Errorf("Parts(%q) = %q, %v", key, parts, err)
		}
	}
}

func TestKeysAreInjective(t *testing.T) {
	p := etcdstore.MustPrefix("token")
	seen := map[string][]string{}
	tuples := [][]string{{"a/b"}, {"a", "b"}, {""}, {"", ""}, {"%"}, {"%25"}, {"a%2Fb"}}
	for _, part := range hostileParts {
		tuples = append(tuples, []string{part}, []string{"grants", part})
	}
	for _, tu := range tuples {
		k := p.Key(tu...)
		if prev, dup := seen[k]; dup && !slices.Equal(prev, tu) {
			t.Fatalf("Key(%q) == Key(%q) == %q", prev, tu, k)
		}
		seen[k] = tu
	}
	// A hostile id cannot name a key inside another record's sub-collection.
	if p.Sub("grants", "alice").Contains(p.Key("grants", "alice/x")) {
		t.Fatal(`Key(grants, "alice/x") lies under Sub(grants, alice)`)
	}
}

func TestUnescapeRejectsNonCanonicalSegments(t *testing.T) {
	for _, seg := range []string{"", "a/b", "%2f", "%zz", "%", "a%"} {
		if seg == "%" {
			continue // the canonical spelling of ""
		}
		if _, err := etcdstore.UnescapePart(seg); err == nil {
			t.Errorf("UnescapePart(%q) accepted", seg)
		}
	}
	p := etcdstore.MustPrefix("token")
	for _, key := range []string{"/mcpid/other/x", "/mcpid/token/", "/mcpid/token/a//b"} {
		if _, err := p.Parts(key); err == nil {
			t.Errorf("Parts(%q) accepted", key)
		}
	}
}

func FuzzEscapePart(f *testing.F) {
	for _, s := range hostileParts {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		seg := etcdstore.EscapePart(s)
		if seg == "" || strings.Contains(seg, "/") {
			t.Fatalf("EscapePart(%q) = %q", s, seg)
		}
		back, err := etcdstore.UnescapePart(seg)
		if err != nil || back != s {
			t.Fatalf("round trip of %q: %q, %v", s, back, err)
		}
	})
}

func TestHostileIDsCannotReachOtherRecordsInEtcd(t *testing.T) {
	s, _, _ := newStore(t)
	ctx := testCtx(t)
	clients := testPrefix.Sub("clients")
	// Alice's grants live under clients/alice/grants/. A client registering
	// the id "alice/grants/evil" must not land there.
	if _, err := s.Create(ctx, clients.Sub("alice", "grants").Key("g1"), []byte("alice's")); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"alice/grants/evil", "alice/grants/g1", "../clients/alice/grants/g1"} {
		if _, err := s.Create(ctx, clients.Key(id), []byte("hostile")); err != nil {
			t.Fatalf("Create(%q): %v", id, err)
		}
	}
	kvs, _, err := s.List(ctx, clients.Sub("alice", "grants"), 0, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(kvs) != 1 || string(kvs[0].Value) != "alice's" {
		t.Fatalf("alice's grants = %q, want only her own", kvs)
	}
	kvs, _, err = s.List(ctx, clients, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(kvs) != 4 {
		t.Fatalf("%d keys under clients/, want 4 distinct ones", len(kvs))
	}
}
