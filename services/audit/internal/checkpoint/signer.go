package checkpoint

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/lib/auditemit"
	"github.com/mcpid/mcpid/services/audit/internal/store"
)

// Meta record names.
const (
	keyUseName   = "checkpoint-key-use"
	keyStateName = "checkpoint-key-state"
)

// Use is when a key signed its first and last stored checkpoint.
type Use struct {
	First time.Time `json:"first"`
	Last  time.Time `json:"last"`
}

// Signer signs the chain head into stored checkpoints. Run it on the
// elected replica; two at once (a handover) only race on creating the
// same checkpoint, which one wins.
type Signer struct {
	Store store.Store
	Ring  *Ring
	// Emit chains one of audit's own events (key.rotated).
	Emit   func(ctx context.Context, ev *auditv1.Event) error
	IDs    *auditemit.IDGenerator
	Now    func() time.Time
	Logger *slog.Logger
}

// SignHead signs the head when the chain grew since the latest checkpoint.
func (s *Signer) SignHead(ctx context.Context) (bool, error) {
	st, err := s.Store.State(ctx)
	if err != nil {
		return false, err
	}
	if st.Head.Sequence == 0 {
		return false, nil
	}
	latest, err := s.Store.LatestCheckpoint(ctx)
	switch {
	case err == nil && latest.Sequence >= st.Head.Sequence:
		return false, nil
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return false, err
	}
	rec, err := s.Ring.Sign(st.Head, s.Now())
	if err != nil {
		return false, err
	}
	if err := s.Store.CreateCheckpoint(ctx, rec); err != nil {
		if errors.Is(err, store.ErrExists) {
			return false, nil
		}
		return false, err
	}
	s.recordUse(ctx, rec.KeyID, rec.SignTime)
	return true, nil
}

// recordUse notes when a key signed; a lost race only loses a timestamp.
func (s *Signer) recordUse(ctx context.Context, kid string, at time.Time) {
	v, rev, err := s.Store.Meta(ctx, keyUseName)
	uses := map[string]Use{}
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return
	default:
		_ = json.Unmarshal(v, &uses)
	}
	u := uses[kid]
	if u.First.IsZero() {
		u.First = at
	}
	u.Last = at
	uses[kid] = u
	if b, err := json.Marshal(uses); err == nil {
		if err := s.Store.PutMeta(ctx, keyUseName, b, rev); err != nil && !errors.Is(err, store.ErrConflict) {
			s.Logger.Warn("checkpoint: recording key use failed", "error", err)
		}
	}
}

// KeyUses returns when each key signed its first and last checkpoint.
func KeyUses(ctx context.Context, st store.Store) (map[string]Use, error) {
	v, _, err := st.Meta(ctx, keyUseName)
	if errors.Is(err, store.ErrNotFound) {
		return map[string]Use{}, nil
	}
	if err != nil {
		return nil, err
	}
	uses := map[string]Use{}
	if err := json.Unmarshal(v, &uses); err != nil {
		return map[string]Use{}, nil //nolint:nilerr // a damaged record only loses timestamps
	}
	return uses, nil
}

type keyState struct {
	Active    string `json:"active"`
	Algorithm string `json:"algorithm"`
}

// AnnounceKey chains key.rotated events when the active checkpoint key is
// not the one recorded as active (a new key configured, or the first
// start): the new key "active", the previous one "retired".
func (s *Signer) AnnounceKey(ctx context.Context) error {
	v, rev, err := s.Store.Meta(ctx, keyStateName)
	var prev keyState
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return err
	default:
		_ = json.Unmarshal(v, &prev)
	}
	kid := s.Ring.ActiveKeyID()
	if prev.Active == kid {
		return nil
	}
	alg := s.Ring.active.Algorithm()
	if prev.Active != "" {
		if err := s.emitRotated(ctx, prev.Active, prev.Algorithm, "retired"); err != nil {
			return err
		}
	}
	if err := s.emitRotated(ctx, kid, alg, "active"); err != nil {
		return err
	}
	b, err := json.Marshal(keyState{Active: kid, Algorithm: alg})
	if err != nil {
		return err
	}
	if err := s.Store.PutMeta(ctx, keyStateName, b, rev); err != nil && !errors.Is(err, store.ErrConflict) {
		return err
	}
	return nil
}

func (s *Signer) emitRotated(ctx context.Context, kid, alg, state string) error {
	id, err := s.IDs.NewID()
	if err != nil {
		return err
	}
	details, err := structpb.NewStruct(map[string]any{
		"purpose": "audit_checkpoint", "key_id": kid, "state": state, "algorithm": alg,
	})
	if err != nil {
		return err
	}
	return s.Emit(ctx, &auditv1.Event{
		Id: id, Time: timestamppb.New(s.Now()), Type: auditv1.EventType_EVENT_TYPE_KEY_ROTATED,
		Actor:   &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_SYSTEM, Id: "audit-checkpoint-key", Display: "audit checkpoint key"},
		Details: details,
	})
}
