package store

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/mcpid/mcpid/lib/etcdstore"
)

// clientCacheCatchUp bounds how long a read waits for the cache to reach this
// replica's own latest client write before it reads etcd instead.
const clientCacheCatchUp = time.Second

// ClientCache answers client reads of the authentication path (every token
// request) from memory: a list-then-watch copy of the client records. It
// holds the stored records as they are: secret digests, never a secret in
// clear.
//
// What it answers is never older than etcd by more than the watch delay
// (milliseconds), and never older than this replica's own writes:
//   - while the watch is not established (start-up, a broken stream, a
//     member without a leader) it reads etcd, so a partitioned replica fails
//     as it did without the cache instead of answering from old state;
//   - after this replica wrote a client (suspension, rotation, deletion,
//     ...) it waits for the cache to have that write before answering from
//     it (or reads etcd), so a change is effective here as soon as the call
//     that made it returned;
//   - a client it does not hold (created a moment ago on another replica) is
//     read from etcd.
type ClientCache struct {
	db    *Etcd
	cache *etcdstore.Cache[*Client]
}

// NewClientCache returns a cache of db's clients; call Run to fill it.
func NewClientCache(db *Etcd, logger *slog.Logger) (*ClientCache, error) {
	cache, err := etcdstore.NewCache(etcdstore.CacheConfig[*Client]{
		Client: db.cli,
		Prefix: db.prefix.Sub(collClients),
		Decode: decodeClient,
		Logger: logger,
	})
	if err != nil {
		return nil, fmt.Errorf("store: client cache: %w", err)
	}
	return &ClientCache{db: db, cache: cache}, nil
}

// Run fills the cache and keeps it fresh until ctx ends.
func (c *ClientCache) Run(ctx context.Context) error { return c.cache.Run(ctx) }

// Live reports whether reads are answered from memory (the cache follows
// etcd); while false they go to etcd.
func (c *ClientCache) Live() bool { return c.cache.Live() }

// GetClient returns the client with this id, ErrNotFound if none. The
// record may be shared with the cache and other readers: callers must not
// modify it (Clone it first).
func (c *ClientCache) GetClient(ctx context.Context, id string) (*Client, error) {
	if !c.current(ctx) {
		return c.db.GetClient(ctx, id)
	}
	rec, ok := c.cache.Get(c.db.clientKey(id))
	if !ok {
		return c.db.GetClient(ctx, id)
	}
	return rec, nil
}

// current reports whether the cache may answer: it is following etcd and
// holds this replica's latest client write.
func (c *ClientCache) current(ctx context.Context) bool {
	if !c.cache.Live() {
		return false
	}
	written := c.db.clientWrites.Load()
	if c.cache.Revision() >= written {
		return true
	}
	wctx, cancel := context.WithTimeout(ctx, clientCacheCatchUp)
	defer cancel()
	return c.cache.WaitForRevision(wctx, written) == nil && c.cache.Live()
}
