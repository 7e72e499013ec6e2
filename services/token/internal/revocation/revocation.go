// Package revocation keeps the revocation set in memory (list-then-watch of
// /mcpid/token/revocations/) and answers "is this access token revoked?"
// without touching etcd: by grant, by token (jti), and by the "issued
// before" watermarks of its user, client and resource.
package revocation

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mcpid/mcpid/lib/etcdstore"
	"github.com/mcpid/mcpid/services/token/internal/store"
)

// ErrNotReady means the set has not been loaded yet; callers must not answer
// "not revoked".
var ErrNotReady = errors.New("revocation: set not loaded yet")

// Token is what a check needs of an access token.
type Token struct {
	JTI      string
	GrantID  string
	Subject  string
	ClientID string
	Audience string
	IssuedAt time.Time
}

// Set is the in-memory revocation set.
type Set struct {
	prefix etcdstore.Prefix
	cache  *etcdstore.Cache[*store.Revocation]
	now    func() time.Time
}

// New returns a set over the store's revocation prefix; Run fills it.
func New(cli *clientv3.Client, prefix etcdstore.Prefix, log *slog.Logger, now func() time.Time) (*Set, error) {
	if now == nil {
		now = time.Now
	}
	c, err := etcdstore.NewCache(etcdstore.CacheConfig[*store.Revocation]{
		Client: cli,
		Prefix: prefix,
		Decode: func(kv *mvccpb.KeyValue) (*store.Revocation, error) {
			r := new(store.Revocation)
			return r, json.Unmarshal(kv.Value, r)
		},
		Logger: log,
	})
	if err != nil {
		return nil, err
	}
	return &Set{prefix: prefix, cache: c, now: now}, nil
}

// Run keeps the set fresh until ctx ends.
func (s *Set) Run(ctx context.Context) error { return s.cache.Run(ctx) }

// Ready reports whether the set is loaded.
func (s *Set) Ready(context.Context) error {
	if !s.cache.Ready() {
		return ErrNotReady
	}
	return nil
}

// WaitForRevision waits until the set reflects revision rev (a write's
// revision), so a caller can read its own revocation back.
func (s *Set) WaitForRevision(ctx context.Context, rev int64) error {
	return s.cache.WaitForRevision(ctx, rev)
}

func (s *Set) live(kind, id string) (*store.Revocation, bool) {
	if id == "" {
		return nil, false
	}
	r, ok := s.cache.Get(s.prefix.Key(kind, id))
	if !ok || !s.now().Before(r.Expires) {
		return nil, false
	}
	return r, true
}

// Revoked reports whether t is revoked, or ErrNotReady.
func (s *Set) Revoked(t Token) (bool, error) {
	if !s.cache.Ready() {
		return false, ErrNotReady
	}
	if _, ok := s.live(store.RevokeGrant, t.GrantID); ok {
		return true, nil
	}
	if _, ok := s.live(store.RevokeToken, t.JTI); ok {
		return true, nil
	}
	for _, w := range []struct{ kind, id string }{
		{store.RevokeUser, t.Subject},
		{store.RevokeClient, t.ClientID},
		{store.RevokeResource, t.Audience},
	} {
		if r, ok := s.live(w.kind, w.id); ok && t.IssuedAt.Before(r.IssuedBefore) {
			return true, nil
		}
	}
	return false, nil
}

// Watermark returns the "issued before" time of a live USER, CLIENT or
// RESOURCE entry.
func (s *Set) Watermark(kind, id string) (time.Time, bool) {
	r, ok := s.live(kind, id)
	if !ok {
		return time.Time{}, false
	}
	return r.IssuedBefore, true
}

// GrantRevoked reports whether the grant has a live GRANT entry.
func (s *Set) GrantRevoked(grantID string) bool {
	_, ok := s.live(store.RevokeGrant, grantID)
	return ok
}
