package keyring

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/services/token/internal/events"
	"github.com/mcpid/mcpid/services/token/internal/store"
)

// Rotation defaults.
const (
	DefaultRotateEvery = 30 * 24 * time.Hour
	DefaultPublishLead = 5 * time.Minute
	DefaultMaxTokenTTL = 5 * time.Minute
	electionName       = "signing-keys"
	sessionTTLSeconds  = 10
)

// Rotation configures the signing key lifecycle.
type Rotation struct {
	// Every is how long a key signs before the elected replica publishes
	// its successor (negative: no scheduled rotation).
	Every time.Duration
	// PublishLead is how long a new key is published (PENDING, in the JWKS)
	// before it signs: at least one JWKS cache lifetime, so every verifier
	// that honours the cache lifetime knows it before it meets a token.
	PublishLead time.Duration
	// MaxTokenTTL is the longest access token lifetime: a retired key stays
	// published (RETIRING) that long after it stopped signing.
	MaxTokenTTL time.Duration
	// Tick is how often the elected replica moves the lifecycle on; zero
	// derives it from PublishLead.
	Tick time.Duration
}

func (c Rotation) withDefaults() Rotation {
	if c.Every == 0 {
		c.Every = DefaultRotateEvery
	}
	if c.PublishLead <= 0 {
		c.PublishLead = DefaultPublishLead
	}
	if c.MaxTokenTTL <= 0 {
		c.MaxTokenTTL = DefaultMaxTokenTTL
	}
	if c.Tick <= 0 {
		c.Tick = min(max(c.PublishLead/4, 100*time.Millisecond), 30*time.Second)
	}
	return c
}

// Rotation errors (the gRPC layer maps them).
var (
	// ErrRotationInProgress: a PENDING key already waits to become active.
	ErrRotationInProgress = errors.New("keyring: a rotation is already in progress")
	// ErrAlgorithmNotEnabled: the algorithm is not the configured one.
	ErrAlgorithmNotEnabled = errors.New("keyring: signing algorithm not enabled")
)

// Alg is the configured signing algorithm.
func (r *Ring) Alg() string { return r.cfg.Alg }

// snapshotOf returns the stored keys of alg by state, from this replica's
// cache.
func (r *Ring) snapshotOf(alg string) (active *store.SigningKey, pending, retiring []*store.SigningKey) {
	snap, _ := r.cache.Snapshot()
	keys := make([]*store.SigningKey, 0, len(snap))
	for _, k := range snap {
		keys = append(keys, k)
	}
	return classify(keys, alg)
}

// classify sorts keys of alg by state (pending oldest first).
func classify(keys []*store.SigningKey, alg string) (active *store.SigningKey, pending, retiring []*store.SigningKey) {
	for _, k := range keys {
		if k.Alg != alg {
			continue
		}
		switch k.State {
		case store.KeyActive:
			if active == nil || k.Activate.After(active.Activate) {
				active = k
			}
		case store.KeyPending:
			pending = append(pending, k)
		case store.KeyRetiring:
			retiring = append(retiring, k)
		}
	}
	sort.Slice(pending, func(i, j int) bool { return pending[i].Created.Before(pending[j].Created) })
	return active, pending, retiring
}

func clone(k *store.SigningKey) *store.SigningKey {
	c := *k
	return &c
}

// Rotate starts a rotation now. Normal: a new PENDING key is published and
// becomes ACTIVE PublishLead later (the elected replica promotes it).
// Emergency: a new key signs at once and every other key of the algorithm is
// RETIRED (removed from the JWKS) at once.
func (r *Ring) Rotate(ctx context.Context, actor *auditv1.Actor, alg string, emergency bool, reason string) (*store.SigningKey, error) {
	if alg == "" {
		alg = r.cfg.Alg
	}
	if alg != r.cfg.Alg {
		return nil, ErrAlgorithmNotEnabled
	}
	rot := r.cfg.Rotation.withDefaults()
	active, pending, retiring := r.snapshotOf(alg)
	fromRev := int64(0)
	if emergency {
		// An emergency rotation must retire every earlier key, including a
		// PENDING one another replica wrote that this cache has not seen
		// yet (it does not move the active pointer, so the pointer
		// condition alone would not notice it): read the keys from etcd.
		keys, rev, err := r.readKeys(ctx)
		if err != nil {
			return nil, err
		}
		active, pending, retiring = classify(keys, alg)
		fromRev = rev
	}
	if active == nil {
		return nil, ErrNotReady
	}
	if !emergency && len(pending) > 0 {
		return nil, ErrRotationInProgress
	}
	_, rec, err := r.newKey()
	if err != nil {
		return nil, err
	}
	now := r.cfg.Now().UTC()
	if reason == "" {
		reason = "operator"
	}
	var puts []*store.SigningKey
	var evs []*auditv1.Event
	newActive := ""
	if emergency {
		rec.Activate = now
		newActive = rec.Kid
		puts = append(puts, rec)
		evs = append(evs, events.KeyRotated(actor, rec.Kid, "active", alg, "emergency: "+reason))
		for _, k := range append(append([]*store.SigningKey{active}, pending...), retiring...) {
			old := clone(k)
			old.State = store.KeyRetired
			if old.Retire.IsZero() {
				old.Retire = now
			}
			old.Remove = now
			puts = append(puts, old)
			evs = append(evs, events.KeyRotated(actor, old.Kid, "retired", alg, "emergency: "+reason))
		}
	} else {
		rec.State = store.KeyPending
		rec.Activate = now.Add(rot.PublishLead)
		puts = append(puts, rec)
		evs = append(evs, events.KeyRotated(actor, rec.Kid, "pending", alg, reason))
	}
	ops, err := r.cfg.Events.Ops(ctx, evs...)
	if err != nil {
		return nil, err
	}
	if err := r.cfg.Store.UpdateSigningKeys(ctx, alg, active.Kid, newActive, puts, ops...); err != nil {
		return nil, err
	}
	if emergency {
		// A key written between the read above and the commit (conditional
		// on the old pointer, so before the commit) is retired now;
		// step never promotes it either (it predates the active key).
		if err := r.retireOlder(ctx, actor, alg, rec.Kid, fromRev, "emergency: "+reason); err != nil {
			return nil, err
		}
	}
	if err := r.waitFor(ctx, rec.Kid); err != nil {
		return nil, err
	}
	r.log.InfoContext(ctx, "signing key rotation started", "kid", rec.Kid, "emergency", emergency)
	return rec, nil
}

// RunRotation campaigns for the rotation leadership and, while elected,
// moves the lifecycle on every Tick, until ctx ends.
func (r *Ring) RunRotation(ctx context.Context) error {
	rot := r.cfg.Rotation.withDefaults()
	host, _ := os.Hostname()
	for failures := 0; ctx.Err() == nil; failures++ {
		err := r.lead(ctx, rot, fmt.Sprintf("%s-%d", host, os.Getpid()))
		if ctx.Err() != nil {
			break
		}
		r.log.WarnContext(ctx, "signing key rotation leadership lost; campaigning again", "error", errString(err))
		select {
		case <-ctx.Done():
		case <-time.After(min(time.Duration(failures+1)*time.Second, 10*time.Second)):
		}
	}
	return nil
}

func errString(err error) string {
	if err == nil {
		return "session ended"
	}
	return err.Error()
}

// lead campaigns, then rotates while the session lives.
func (r *Ring) lead(ctx context.Context, rot Rotation, id string) error {
	sess, err := concurrency.NewSession(r.cfg.Etcd, concurrency.WithTTL(sessionTTLSeconds), concurrency.WithContext(ctx))
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_, _ = r.cfg.Etcd.Revoke(cctx, sess.Lease())
		_ = sess.Close()
	}()
	el := concurrency.NewElection(sess, r.cfg.Store.ElectionPrefix(electionName))
	if err := el.Campaign(clientv3.WithRequireLeader(ctx), id); err != nil {
		return err
	}
	r.log.InfoContext(ctx, "elected to rotate signing keys")
	t := time.NewTicker(rot.Tick)
	defer t.Stop()
	for {
		if err := r.step(ctx, rot); err != nil && ctx.Err() == nil {
			r.log.WarnContext(ctx, "signing key rotation step failed", "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-sess.Done():
			return errors.New("election session expired")
		case <-t.C:
		}
	}
}

// step moves the lifecycle of the configured algorithm on by at most one
// transition per kind: schedule a successor, promote a due PENDING key,
// retire RETIRING keys whose tokens have expired, and re-seal keys sealed
// with an older KEK version. Every write is conditional on the active
// pointer, so a deposed leader's late step changes nothing.
func (r *Ring) step(ctx context.Context, rot Rotation) error {
	alg := r.cfg.Alg
	active, pending, retiring := r.snapshotOf(alg)
	if active == nil {
		return nil // ensureActive creates the first key
	}
	now := r.cfg.Now().UTC()
	actor := events.SystemActor("signing-key-rotation")
	// A PENDING key written before the active key (a scheduled rotation
	// that raced an emergency one) must never become active: it would undo
	// the emergency rotation. Retire it instead.
	var stale []*store.SigningKey
	pending, stale = r.splitStale(active, pending)
	if len(stale) > 0 {
		var puts []*store.SigningKey
		var evs []*auditv1.Event
		for _, p := range stale {
			q := clone(p)
			q.State, q.Retire, q.Remove = store.KeyRetired, now, now
			puts = append(puts, q)
			evs = append(evs, events.KeyRotated(actor, q.Kid, "retired", alg, "superseded"))
		}
		if err := r.commit(ctx, alg, active.Kid, "", puts, evs); err != nil {
			return err
		}
	}
	switch {
	case len(pending) > 0 && !now.Before(pending[len(pending)-1].Activate):
		// Promote the newest due PENDING key; older PENDING ones (a lost
		// race between two rotate calls) are retired with the active key.
		next := clone(pending[len(pending)-1])
		next.State = store.KeyActive
		next.Activate = now
		old := clone(active)
		old.State, old.Retire, old.Remove = store.KeyRetiring, now, now.Add(rot.MaxTokenTTL)
		puts := []*store.SigningKey{next, old}
		evs := []*auditv1.Event{
			events.KeyRotated(actor, next.Kid, "active", alg, "scheduled"),
			events.KeyRotated(actor, old.Kid, "retiring", alg, "scheduled"),
		}
		for _, p := range pending[:len(pending)-1] {
			q := clone(p)
			q.State, q.Retire, q.Remove = store.KeyRetired, now, now
			puts = append(puts, q)
			evs = append(evs, events.KeyRotated(actor, q.Kid, "retired", alg, "superseded"))
		}
		if err := r.commit(ctx, alg, active.Kid, next.Kid, puts, evs); err != nil {
			return err
		}
	case len(pending) == 0 && rot.Every > 0 && !now.Before(active.Activate.Add(rot.Every)):
		if _, err := r.Rotate(ctx, actor, alg, false, "scheduled"); err != nil && !errors.Is(err, ErrRotationInProgress) {
			return err
		}
	}
	for _, k := range retiring {
		if now.Before(k.Remove) {
			continue
		}
		old := clone(k)
		old.State = store.KeyRetired
		if err := r.commit(ctx, alg, active.Kid, "", []*store.SigningKey{old},
			[]*auditv1.Event{events.KeyRotated(actor, old.Kid, "retired", alg, "tokens_expired")}); err != nil {
			return err
		}
	}
	return r.reseal(ctx, alg)
}

func (r *Ring) commit(ctx context.Context, alg, expect, newActive string, puts []*store.SigningKey, evs []*auditv1.Event) error {
	ops, err := r.cfg.Events.Ops(ctx, evs...)
	if err != nil {
		return err
	}
	err = r.cfg.Store.UpdateSigningKeys(ctx, alg, expect, newActive, puts, ops...)
	if errors.Is(err, store.ErrConflict) {
		return nil // someone else moved it on; the next step sees the new state
	}
	return err
}

// reseal re-encrypts the private keys of published keys that were sealed
// with a KEK version other than the current one, so the old KEK line can be
// dropped from kek-file once ListSigningKeys shows no key on it.
func (r *Ring) reseal(ctx context.Context, alg string) error {
	if r.cfg.KEK.IsEphemeral() {
		return nil
	}
	cur := r.cfg.KEK.Current()
	snap, _ := r.cache.Snapshot()
	active, _, _ := r.snapshotOf(alg)
	for _, k := range snap {
		if k.Private.Version == cur || k.State == store.KeyRetired || !r.cfg.KEK.Has(k.Private.Version) {
			continue
		}
		priv, err := r.cfg.KEK.Open(sealPurpose, k.Kid, k.Private)
		if err != nil {
			return fmt.Errorf("reseal %s: %w", k.Kid, err)
		}
		sealed, err := r.cfg.KEK.Seal(sealPurpose, k.Kid, priv)
		if err != nil {
			return err
		}
		next := clone(k)
		next.Private = sealed
		if err := r.commit(ctx, alg, active.Kid, "", []*store.SigningKey{next},
			[]*auditv1.Event{events.KeyRotated(events.SystemActor("signing-key-rotation"), k.Kid, k.State, k.Alg, "kek_resealed:"+cur)}); err != nil {
			return err
		}
	}
	return nil
}

// createRev is the etcd CreateRevision of kid's record (0 if unknown).
func (r *Ring) createRev(kid string) int64 {
	v, ok := r.created.Load(kid)
	if !ok {
		return 0
	}
	rev, _ := v.(int64)
	return rev
}

// splitStale separates the PENDING keys written before the active key
// (by etcd revision) from those written after it.
func (r *Ring) splitStale(active *store.SigningKey, pending []*store.SigningKey) (fresh, stale []*store.SigningKey) {
	ar := r.createRev(active.Kid)
	for _, p := range pending {
		if pr := r.createRev(p.Kid); ar > 0 && pr > 0 && pr < ar {
			stale = append(stale, p)
			continue
		}
		fresh = append(fresh, p)
	}
	return fresh, stale
}

// readKeys reads every signing key record from etcd (linearizable), with
// the revision read at.
func (r *Ring) readKeys(ctx context.Context) ([]*store.SigningKey, int64, error) {
	kvs, rev, err := r.readKVs(ctx)
	if err != nil {
		return nil, 0, err
	}
	out := make([]*store.SigningKey, 0, len(kvs))
	for _, kv := range kvs {
		out = append(out, kv.key)
	}
	return out, rev, nil
}

type keyKV struct {
	key       *store.SigningKey
	createRev int64
}

func (r *Ring) readKVs(ctx context.Context) ([]keyKV, int64, error) {
	resp, err := r.cfg.Etcd.Get(ctx, r.cfg.Store.SigningKeysPrefix().String(), clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("keyring: read signing keys: %w", err)
	}
	out := make([]keyKV, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		k := new(store.SigningKey)
		if err := json.Unmarshal(kv.Value, k); err != nil {
			return nil, 0, fmt.Errorf("keyring: decode signing key: %w", err)
		}
		out = append(out, keyKV{key: k, createRev: kv.CreateRevision})
	}
	return out, resp.Header.Revision, nil
}

// retireOlder retires every published key of alg other than kid that was
// written after fromRev but before kid: keys an emergency rotation's read
// missed. The write is conditional on kid still being active.
func (r *Ring) retireOlder(ctx context.Context, actor *auditv1.Actor, alg, kid string, fromRev int64, reason string) error {
	kvs, _, err := r.readKVs(ctx)
	if err != nil {
		return err
	}
	var mine int64
	for _, kv := range kvs {
		if kv.key.Kid == kid {
			mine = kv.createRev
		}
	}
	now := r.cfg.Now().UTC()
	var puts []*store.SigningKey
	var evs []*auditv1.Event
	for _, kv := range kvs {
		k := kv.key
		if k.Alg != alg || k.Kid == kid || k.State == store.KeyRetired || kv.createRev <= fromRev || (mine > 0 && kv.createRev > mine) {
			continue
		}
		q := clone(k)
		q.State, q.Remove = store.KeyRetired, now
		if q.Retire.IsZero() {
			q.Retire = now
		}
		puts = append(puts, q)
		evs = append(evs, events.KeyRotated(actor, q.Kid, "retired", alg, reason))
	}
	if len(puts) == 0 {
		return nil
	}
	return r.commit(ctx, alg, kid, "", puts, evs)
}
