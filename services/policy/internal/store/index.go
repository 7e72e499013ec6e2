package store

import (
	"context"
	"fmt"
	"log/slog"
	"sort"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/mcpid/mcpid/lib/etcdstore"
	"github.com/mcpid/mcpid/services/policy/internal/condition"
	"github.com/mcpid/mcpid/services/policy/internal/effective"
)

// Index keeps every resource's merged, compiled policy in memory, filled by
// list-then-watch of the records (lib/etcdstore Cache). Reads never touch
// etcd: this is what Check consults.
type Index struct {
	cache  *etcdstore.Cache[*effective.Resource]
	prefix etcdstore.Prefix
}

// NewIndex returns an index of the records under prefix (ResourcesPrefix);
// conditions compile in env.
func NewIndex(client etcdstore.WatchClient, prefix etcdstore.Prefix, env *condition.Env, logger *slog.Logger) (*Index, error) {
	cache, err := etcdstore.NewCache(etcdstore.CacheConfig[*effective.Resource]{
		Client: client,
		Prefix: prefix,
		Decode: func(kv *mvccpb.KeyValue) (*effective.Resource, error) {
			rec, err := DecodeRecord(kv)
			if err != nil {
				return nil, err
			}
			if want, err := prefix.Parts(string(kv.Key)); err != nil || len(want) != 1 || want[0] != rec.Resource {
				return nil, fmt.Errorf("%w: key %q holds resource %q", errCorrupt, kv.Key, rec.Resource)
			}
			return effective.Build(rec.Resource, rec.Policy, rec.Manifest, env), nil
		},
		Logger: logger,
	})
	if err != nil {
		return nil, err
	}
	return &Index{cache: cache, prefix: prefix}, nil
}

// Run fills the index and keeps it fresh until ctx ends.
func (i *Index) Run(ctx context.Context) error { return i.cache.Run(ctx) }

// Ready reports whether the first list has been applied.
func (i *Index) Ready() bool { return i.cache.Ready() }

// Get returns the resource's merged policy; false when neither document
// exists (or its record does not decode).
func (i *Index) Get(resource string) (*effective.Resource, bool) {
	return i.cache.Get(i.prefix.Key(resource))
}

// Snapshot returns every resource, ordered by URI, and the revision the
// set reflects.
func (i *Index) Snapshot() ([]*effective.Resource, int64) {
	m, rev := i.cache.Snapshot()
	out := make([]*effective.Resource, 0, len(m))
	for _, r := range m {
		out = append(out, r)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out, rev
}

// WaitForRevision waits until the index reflects rev (see
// etcdstore.Cache.WaitForRevision).
func (i *Index) WaitForRevision(ctx context.Context, rev int64) error {
	return i.cache.WaitForRevision(ctx, rev)
}
