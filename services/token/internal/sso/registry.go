package sso

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"sync/atomic"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mcpid/mcpid/lib/etcdstore"
	"github.com/mcpid/mcpid/services/token/internal/connector"
	"github.com/mcpid/mcpid/services/token/internal/directory"
)

// Registry is the set of connectors of this replica, following the records
// in etcd by list-then-watch: a connector created, changed, disabled or
// deleted through any replica's admin API takes effect here within moments,
// without restart. It implements connector.Registry.
type Registry struct {
	env      *Env
	cache    *etcdstore.Cache[*cached]
	password bool
	snap     atomic.Pointer[snapshot]
}

// cached is a decoded record with its revision; the connector object (and
// its discovery and key cache) is kept while the record does not change.
type cached struct {
	rec *Record
	rev int64
	c   atomic.Pointer[OIDC]
}

type snapshot struct {
	enabled  []connector.Connector
	byID     map[string]*OIDC
	byDomain map[string]*OIDC
}

var _ connector.Registry = (*Registry)(nil)

// NewRegistry returns a registry over the store's connectors. password says
// whether the built-in directory's form is offered.
func NewRegistry(cli *clientv3.Client, env *Env, password bool, log *slog.Logger) (*Registry, error) {
	r := &Registry{env: env, password: password}
	r.snap.Store(&snapshot{byID: map[string]*OIDC{}, byDomain: map[string]*OIDC{}})
	c, err := etcdstore.NewCache(etcdstore.CacheConfig[*cached]{
		Client: cli,
		Prefix: env.Store.ConnectorsPrefix(),
		Decode: func(kv *mvccpb.KeyValue) (*cached, error) {
			rec, err := decodeRecord(kv.Value)
			if err != nil {
				return nil, err
			}
			return &cached{rec: rec, rev: kv.ModRevision}, nil
		},
		OnChange: func(etcdstore.Change[*cached]) { r.rebuild() },
		Logger:   log,
	})
	if err != nil {
		return nil, err
	}
	r.cache = c
	return r, nil
}

// Run follows etcd until ctx ends.
func (r *Registry) Run(ctx context.Context) error { return r.cache.Run(ctx) }

// Ready reports whether the first list has been loaded.
func (r *Registry) Ready(context.Context) error {
	if !r.cache.Ready() {
		return errNotReady
	}
	return nil
}

// WaitForRevision waits until this replica's registry reflects rev.
func (r *Registry) WaitForRevision(ctx context.Context, rev int64) error {
	return r.cache.WaitForRevision(ctx, rev)
}

func (r *Registry) rebuild() {
	all, _ := r.cache.Snapshot()
	s := &snapshot{byID: map[string]*OIDC{}, byDomain: map[string]*OIDC{}}
	for _, e := range all {
		if e == nil || !e.rec.Enabled {
			continue
		}
		c := e.c.Load()
		if c == nil {
			c = NewOIDC(e.rec, r.env)
			if !e.c.CompareAndSwap(nil, c) {
				c = e.c.Load()
			}
		}
		s.byID[e.rec.ID] = c
		for _, d := range e.rec.HomeRealmDomains {
			s.byDomain[d] = c
		}
	}
	list := make([]*OIDC, 0, len(s.byID))
	for _, c := range s.byID {
		list = append(list, c)
	}
	slices.SortFunc(list, func(a, b *OIDC) int {
		return cmp.Or(cmp.Compare(a.rec.DisplayName, b.rec.DisplayName), cmp.Compare(a.rec.ID, b.rec.ID))
	})
	for _, c := range list {
		s.enabled = append(s.enabled, c)
	}
	r.snap.Store(s)
}

// Enabled implements connector.Registry.
func (r *Registry) Enabled() []connector.Connector { return r.snap.Load().enabled }

// Get implements connector.Registry.
func (r *Registry) Get(id string) (connector.Connector, bool) {
	c, ok := r.snap.Load().byID[id]
	if !ok {
		return nil, false
	}
	return c, true
}

// ForEmail implements connector.Registry (home-realm discovery).
func (r *Registry) ForEmail(email string) (connector.Connector, bool) {
	c, ok := r.snap.Load().byDomain[EmailDomain(email)]
	if !ok {
		return nil, false
	}
	return c, true
}

// PasswordLogin implements connector.Registry.
func (r *Registry) PasswordLogin() bool { return r.password }

// records returns every record (enabled or not) this replica knows.
func (r *Registry) records() []*Record {
	all, _ := r.cache.Snapshot()
	out := make([]*Record, 0, len(all))
	for _, e := range all {
		if e != nil {
			out = append(out, e.rec)
		}
	}
	return out
}

// Links returns the identity link store (directory.IdentityLinks).
func (r *Registry) Links() directory.IdentityLinks { return r.env.Store }

// HasHomeRealms reports whether the login page should offer home-realm
// discovery for this connector.
func (c *OIDC) HasHomeRealms() bool { return len(c.rec.HomeRealmDomains) > 0 }
