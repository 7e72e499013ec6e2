// Package keyring keeps the access token signing keys: it makes sure an
// active key exists for the configured algorithm (one replica wins the race
// to create it), keeps every replica's view current by list-then-watch of the
// keys in etcd, opens the active private key with the KEK, and serves the
// public keys as the JWKS and as the key source that verifies tokens.
//
// Rotation by an elected replica (PENDING → ACTIVE → RETIRING → RETIRED) is
// the lifecycle the records already carry; this package follows whatever
// state etcd holds, so adding the rotation job does not change readers.
package keyring

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/lib/etcdstore"
	"github.com/mcpid/mcpid/lib/jose"
	"github.com/mcpid/mcpid/services/token/internal/events"
	"github.com/mcpid/mcpid/services/token/internal/kek"
	"github.com/mcpid/mcpid/services/token/internal/store"
)

// sealPurpose binds sealed private keys to their use.
const sealPurpose = "signing-key"

// ErrNotReady means no active key has been loaded yet.
var ErrNotReady = errors.New("keyring: signing keys not loaded yet")

// Config configures a Ring.
type Config struct {
	Store  store.Store
	Etcd   *clientv3.Client
	KEK    *kek.Ring
	Events *events.Emitter
	// Alg is the signing algorithm (jose.ES256 or jose.EdDSA).
	Alg    string
	Logger *slog.Logger
	Now    func() time.Time
	// Rotation configures scheduled rotation and RotateSigningKey (see
	// rotate.go); zero values take the defaults there.
	Rotation Rotation
}

// Ring is the set of signing keys. Safe for concurrent use.
type Ring struct {
	cfg   Config
	log   *slog.Logger
	cache *etcdstore.Cache[*store.SigningKey]

	// created maps a kid to its record's etcd CreateRevision: the exact
	// order in which keys were written, whatever the replicas' clocks say
	// (a kid is never reused, so an entry never changes).
	created sync.Map

	mu      sync.Mutex // serializes rebuilds
	active  atomic.Pointer[jose.SigningKey]
	public  atomic.Pointer[published]
	loadErr atomic.Pointer[error]
}

// published is an immutable view of the publishable keys.
type published struct {
	set  *jose.KeySet
	jwks []*tokenv1.JsonWebKey
	keys []*store.SigningKey
}

// New returns a ring; Run loads and follows the keys.
func New(cfg Config) (*Ring, error) {
	if cfg.Alg != jose.ES256 && cfg.Alg != jose.EdDSA {
		return nil, fmt.Errorf("keyring: algorithm %q not supported (ES256 or EdDSA)", cfg.Alg)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Ring{cfg: cfg, log: cfg.Logger}
	cache, err := etcdstore.NewCache(etcdstore.CacheConfig[*store.SigningKey]{
		Client: cfg.Etcd,
		Prefix: cfg.Store.SigningKeysPrefix(),
		Decode: func(kv *mvccpb.KeyValue) (*store.SigningKey, error) {
			k := new(store.SigningKey)
			if err := json.Unmarshal(kv.Value, k); err != nil {
				return nil, err
			}
			r.created.Store(k.Kid, kv.CreateRevision)
			return k, nil
		},
		OnChange: func(etcdstore.Change[*store.SigningKey]) { r.rebuild() },
		Logger:   cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	r.cache = cache
	return r, nil
}

// Run makes sure an active key exists, then follows the keys until ctx ends.
// It returns an error (stopping the service) only for a configuration
// problem: an active key sealed with a KEK version the kek-file lacks.
func (r *Ring) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- r.cache.Run(ctx) }()
	if err := r.cache.WaitForRevision(ctx, 0); err != nil {
		return <-errc
	}
	for failures := 0; ; failures++ {
		err := r.ensureActive(ctx)
		if err == nil {
			break
		}
		if errors.Is(err, kek.ErrUnknownVersion) || errors.Is(err, kek.ErrOpen) {
			return fmt.Errorf("setting kek-file: the active signing key cannot be opened: %w", err)
		}
		r.log.Warn("signing key not ready, retrying", "error", err.Error())
		select {
		case <-ctx.Done():
			return <-errc
		case <-time.After(min(time.Duration(failures+1)*200*time.Millisecond, 5*time.Second)):
		}
	}
	return <-errc
}

// Ready reports whether a key can sign.
func (r *Ring) Ready(context.Context) error {
	if r.active.Load() == nil {
		if p := r.loadErr.Load(); p != nil {
			return fmt.Errorf("%w: %w", ErrNotReady, *p)
		}
		return ErrNotReady
	}
	return nil
}

// ensureActive creates the first key of the algorithm when none is active,
// and replaces an active key this replica cannot open when the KEK is an
// ephemeral development one.
func (r *Ring) ensureActive(ctx context.Context) error {
	for attempt := 0; attempt < 5; attempt++ {
		_, rev := r.cache.Snapshot()
		cur := r.activeRecord()
		if cur == nil {
			k, rec, err := r.newKey()
			if err != nil {
				return err
			}
			ops, err := r.cfg.Events.Ops(ctx, events.KeyRotated(events.ServiceActor(), rec.Kid, "active", rec.Alg, "initial_key"))
			if err != nil {
				return err
			}
			err = r.cfg.Store.CreateActiveSigningKey(ctx, rec, ops...)
			if errors.Is(err, store.ErrAlreadyExists) {
				// Another replica won; wait for its key to reach the cache.
				if err := r.cache.WaitForRevision(ctx, rev+1); err != nil {
					return err
				}
				continue
			}
			if err != nil {
				return err
			}
			r.log.Info("created the first signing key", "kid", k.KeyID(), "alg", k.Algorithm())
			if err := r.waitFor(ctx, rec.Kid); err != nil {
				return err
			}
			continue
		}
		if _, err := r.open(cur); err == nil {
			r.rebuild()
			if r.active.Load() != nil {
				return nil
			}
			return errors.New("keyring: active key loaded but not usable")
		} else if !r.cfg.KEK.IsEphemeral() {
			return err
		}
		// Development without a KEK file: the key was sealed by an earlier
		// process's ephemeral KEK. Replace it (tokens signed with it stop
		// verifying, as after an emergency rotation).
		_, rec, err := r.newKey()
		if err != nil {
			return err
		}
		ops, err := r.cfg.Events.Ops(ctx, events.KeyRotated(events.ServiceActor(), rec.Kid, "active", rec.Alg, "previous_key_unreadable"))
		if err != nil {
			return err
		}
		r.log.Warn("replacing a signing key sealed by another process's ephemeral key-encryption key; set kek-file",
			"old_kid", cur.Kid, "new_kid", rec.Kid)
		if err := r.cfg.Store.ReplaceActiveSigningKey(ctx, cur.Kid, rec, ops...); err != nil && !errors.Is(err, store.ErrConflict) {
			return err
		}
		if err := r.waitFor(ctx, rec.Kid); err != nil {
			return err
		}
	}
	return errors.New("keyring: could not settle on an active signing key")
}

func (r *Ring) waitFor(ctx context.Context, kid string) error {
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		if _, ok := r.cache.Get(r.cfg.Store.SigningKeysPrefix().Key(kid)); ok {
			return nil
		}
		select {
		case <-wctx.Done():
			return wctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// newKey generates a key and its sealed record, ACTIVE from now.
func (r *Ring) newKey() (*jose.SigningKey, *store.SigningKey, error) {
	now := r.cfg.Now()
	k, err := jose.GenerateKey(r.cfg.Alg, now)
	if err != nil {
		return nil, nil, err
	}
	priv, err := k.MarshalPrivate()
	if err != nil {
		return nil, nil, err
	}
	sealed, err := r.cfg.KEK.Seal(sealPurpose, k.KeyID(), priv)
	if err != nil {
		return nil, nil, err
	}
	pubSet, err := jose.NewKeySet(k).MarshalJSON()
	if err != nil {
		return nil, nil, err
	}
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(pubSet, &doc); err != nil || len(doc.Keys) != 1 {
		return nil, nil, fmt.Errorf("keyring: public JWK of %s: %w", k.KeyID(), err)
	}
	return k, &store.SigningKey{
		Kid: k.KeyID(), Alg: k.Algorithm(), State: store.KeyActive, Public: doc.Keys[0],
		Private: sealed, Created: now, Activate: now,
	}, nil
}

func (r *Ring) open(rec *store.SigningKey) (*jose.SigningKey, error) {
	priv, err := r.cfg.KEK.Open(sealPurpose, rec.Kid, rec.Private)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", rec.Kid, err)
	}
	k, err := jose.UnmarshalPrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", rec.Kid, err)
	}
	if k.KeyID() != rec.Kid || k.Algorithm() != rec.Alg {
		return nil, fmt.Errorf("signing key %s: record and key disagree", rec.Kid)
	}
	return k, nil
}

// activeRecord returns the newest ACTIVE key of the configured algorithm.
func (r *Ring) activeRecord() *store.SigningKey {
	snap, _ := r.cache.Snapshot()
	var best *store.SigningKey
	for _, k := range snap {
		if k.State != store.KeyActive || k.Alg != r.cfg.Alg {
			continue
		}
		if best == nil || k.Activate.After(best.Activate) {
			best = k
		}
	}
	return best
}

// rebuild recomputes the published keys and the active signer from the
// cache.
func (r *Ring) rebuild() {
	r.mu.Lock()
	defer r.mu.Unlock()
	snap, _ := r.cache.Snapshot()
	var keys []*store.SigningKey
	for _, k := range snap {
		switch k.State {
		case store.KeyPending, store.KeyActive, store.KeyRetiring:
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].Created.After(keys[j].Created) })
	raw := make([]json.RawMessage, 0, len(keys))
	jwks := make([]*tokenv1.JsonWebKey, 0, len(keys))
	for _, k := range keys {
		var j tokenv1.JsonWebKey
		var fields struct {
			Kty string `json:"kty"`
			Crv string `json:"crv"`
			X   string `json:"x"`
			Y   string `json:"y"`
			N   string `json:"n"`
			E   string `json:"e"`
		}
		if err := json.Unmarshal(k.Public, &fields); err != nil {
			r.log.Error("unreadable public signing key", "kid", k.Kid, "error", err.Error())
			continue
		}
		j.Kty, j.Use, j.Alg, j.Kid, j.Crv, j.X, j.Y, j.N, j.E = fields.Kty, "sig", k.Alg, k.Kid, fields.Crv, fields.X, fields.Y, fields.N, fields.E
		jwks = append(jwks, &j)
		raw = append(raw, k.Public)
	}
	doc, _ := json.Marshal(map[string]any{"keys": raw})
	set, err := jose.ParseJWKS(doc)
	if err != nil {
		r.log.Error("signing keys do not form a key set", "error", err.Error())
		return
	}
	r.public.Store(&published{set: set, jwks: jwks, keys: keys})

	cur := r.activeRecord()
	if cur == nil {
		return
	}
	if a := r.active.Load(); a != nil && a.KeyID() == cur.Kid {
		return
	}
	k, err := r.open(cur)
	if err != nil {
		r.loadErr.Store(&err)
		r.log.Error("active signing key cannot be opened", "kid", cur.Kid, "error", err.Error())
		return
	}
	r.active.Store(k)
}

// Signer returns the key that signs new tokens.
func (r *Ring) Signer() (*jose.SigningKey, error) {
	k := r.active.Load()
	if k == nil {
		return nil, ErrNotReady
	}
	return k, nil
}

// JWKS returns the published public keys (PENDING, ACTIVE, RETIRING).
func (r *Ring) JWKS() ([]*tokenv1.JsonWebKey, error) {
	p := r.public.Load()
	if p == nil || r.active.Load() == nil {
		return nil, ErrNotReady
	}
	return p.jwks, nil
}

// LookupKey implements jose.KeySource over the published keys.
func (r *Ring) LookupKey(ctx context.Context, kid string) (jose.PublicKey, error) {
	p := r.public.Load()
	if p == nil {
		return jose.PublicKey{}, fmt.Errorf("%w: %w", jose.ErrKeySetUnavailable, ErrNotReady)
	}
	if kid == "" {
		// Our tokens always carry a kid; never guess.
		return jose.PublicKey{}, fmt.Errorf("%w: token without kid", jose.ErrUnknownKey)
	}
	return p.set.LookupKey(ctx, kid)
}

// Keys returns the stored signing key records (all states), newest first.
func (r *Ring) Keys() []*store.SigningKey {
	snap, _ := r.cache.Snapshot()
	out := make([]*store.SigningKey, 0, len(snap))
	for _, k := range snap {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out
}
