package etcdstore_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mcpid/mcpid/lib/etcdstore"
)

// fill writes n records item-000..item-(n-1) under p, 100 per transaction.
func fill(t testing.TB, ctx context.Context, c *clientv3.Client, p etcdstore.Prefix, n int) {
	t.Helper()
	for start := 0; start < n; start += 100 {
		var ops []clientv3.Op
		for i := start; i < min(n, start+100); i++ {
			ops = append(ops, clientv3.OpPut(p.Key(fmt.Sprintf("item-%04d", i)), fmt.Sprint(i)))
		}
		if _, err := c.Txn(ctx).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
	}
}

func keysOf(kvs []*mvccpb.KeyValue) []string {
	out := make([]string, len(kvs))
	for i, kv := range kvs {
		out[i] = string(kv.Key)
	}
	return out
}

func TestListPagesAreOneConsistentSnapshot(t *testing.T) {
	s, c, _ := newStore(t)
	ctx := testCtx(t)
	items := testPrefix.Sub("items")
	fill(t, ctx, c, items, 25)
	// Neighbours that share the collection's name but not its prefix.
	for _, k := range []string{testPrefix.Key("items"), testPrefix.Key("itemsX", "a"), testPrefix.Key("item")} {
		if _, err := c.Put(ctx, k, "outside"); err != nil {
			t.Fatal(err)
		}
	}

	page1, tok, err := s.List(ctx, items, 10, "")
	if err != nil || len(page1) != 10 || tok == "" {
		t.Fatalf("page 1: %d keys, token %q, %v", len(page1), tok, err)
	}
	// Changes after the first page must not show up in the later ones.
	if _, err := c.Delete(ctx, items.Key("item-0012")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, items.Key("item-0022a"), "new"); err != nil {
		t.Fatal(err)
	}
	page2, tok, err := s.List(ctx, items, 10, tok)
	if err != nil || len(page2) != 10 || tok == "" {
		t.Fatalf("page 2: %d keys, token %q, %v", len(page2), tok, err)
	}
	page3, tok, err := s.List(ctx, items, 10, tok)
	if err != nil || len(page3) != 5 || tok != "" {
		t.Fatalf("page 3: %d keys, token %q, %v", len(page3), tok, err)
	}

	got := keysOf(slices.Concat(page1, page2, page3))
	var want []string
	for i := range 25 {
		want = append(want, items.Key(fmt.Sprintf("item-%04d", i)))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("pages =\n%q\nwant\n%q", got, want)
	}

	// A fresh listing sees the new state.
	all, tok, err := s.List(ctx, items, 100, "")
	if err != nil || tok != "" || len(all) != 25 || !slices.Contains(keysOf(all), items.Key("item-0022a")) {
		t.Fatalf("fresh listing: %d keys, token %q, %v", len(all), tok, err)
	}
}

func TestListExactPageBoundaryEndsWithoutToken(t *testing.T) {
	s, c, _ := newStore(t)
	ctx := testCtx(t)
	items := testPrefix.Sub("items")
	fill(t, ctx, c, items, 20)
	_, tok, err := s.List(ctx, items, 10, "")
	if err != nil {
		t.Fatal(err)
	}
	page2, tok, err := s.List(ctx, items, 10, tok)
	if err != nil || len(page2) != 10 || tok != "" {
		t.Fatalf("last full page: %d keys, token %q, %v", len(page2), tok, err)
	}
	empty, tok, err := s.List(ctx, testPrefix.Sub("nothing"), 10, "")
	if err != nil || len(empty) != 0 || tok != "" {
		t.Fatalf("empty prefix: %d keys, token %q, %v", len(empty), tok, err)
	}
}

func TestListClampsPageSize(t *testing.T) {
	s, c, _ := newStore(t)
	ctx := testCtx(t)
	items := testPrefix.Sub("items")
	fill(t, ctx, c, items, etcdstore.MaxPageSize+5)
	for _, tc := range []struct{ ask, want int }{
		{0, etcdstore.DefaultPageSize},
		{-3, etcdstore.DefaultPageSize},
		{7, 7},
		{1 << 30, etcdstore.MaxPageSize},
	} {
		kvs, tok, err := s.List(ctx, items, tc.ask, "")
		if err != nil || len(kvs) != tc.want || tok == "" {
			t.Errorf("List(pageSize %d) = %d keys, token %q, %v; want %d", tc.ask, len(kvs), tok, err, tc.want)
		}
	}
}

func TestListRejectsBadAndForeignTokens(t *testing.T) {
	s, c, _ := newStore(t)
	ctx := testCtx(t)
	items, other := testPrefix.Sub("items"), testPrefix.Sub("other")
	fill(t, ctx, c, items, 5)
	fill(t, ctx, c, other, 5)
	_, tok, err := s.List(ctx, items, 2, "")
	if err != nil || tok == "" {
		t.Fatal(tok, err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		t.Fatal(err)
	}
	mutate := func(f func(b []byte) []byte) string {
		return base64.RawURLEncoding.EncodeToString(f(slices.Clone(raw)))
	}
	cases := map[string]struct {
		prefix etcdstore.Prefix
		token  string
	}{
		"garbage":        {items, "not a token!"},
		"padded base64":  {items, tok + "=="},
		"truncated":      {items, tok[:6]},
		"wrong version":  {items, mutate(func(b []byte) []byte { b[0] = 9; return b })},
		"no last key":    {items, mutate(func(b []byte) []byte { return b[:10] })},
		"zero revision":  {items, mutate(func(b []byte) []byte { b[9] = 0; return b })},
		"other prefix":   {other, tok},
		"parent prefix":  {testPrefix, tok},
		"future rev":     {items, mutate(func(b []byte) []byte { b[9] = 0x7f; return append(b[:10], "item-0001"...) })},
		"overlong token": {items, string(make([]byte, 5000))},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			kvs, next, err := s.List(ctx, tc.prefix, 2, tc.token)
			if !errors.Is(err, etcdstore.ErrInvalidPageToken) || kvs != nil || next != "" {
				t.Fatalf("List = %d keys, %q, %v; want ErrInvalidPageToken", len(kvs), next, err)
			}
		})
	}
}

func TestListTokenExpiresWithCompaction(t *testing.T) {
	s, c, srv := newStore(t)
	ctx := testCtx(t)
	items := testPrefix.Sub("items")
	fill(t, ctx, c, items, 5)
	_, tok, err := s.List(ctx, items, 2, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, items.Key("later"), "x"); err != nil {
		t.Fatal(err)
	}
	srv.Compact(t, 0)
	_, next, err := s.List(ctx, items, 2, tok)
	if !errors.Is(err, etcdstore.ErrPageTokenExpired) || next != "" {
		t.Fatalf("List after compaction: %q, %v; want ErrPageTokenExpired", next, err)
	}
	// Starting over works.
	if kvs, _, err := s.List(ctx, items, 10, ""); err != nil || len(kvs) != 6 {
		t.Fatalf("fresh listing: %d keys, %v", len(kvs), err)
	}
}
