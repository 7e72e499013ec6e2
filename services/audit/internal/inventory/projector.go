package inventory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/services/audit/internal/store"
)

// cursorName is the meta record holding the last sequence projected.
const cursorName = "agents-cursor"

// eventsPerRound bounds one round of the projector.
const eventsPerRound = 5000

// Projector folds chained events into the inventory records. Run it on the
// elected replica; two running at once (an election handover) stay
// correct, because each record remembers the last sequence applied to it
// and is written by compare-and-swap.
type Projector struct {
	Store store.Store
}

type cursor struct {
	Sequence uint64 `json:"sequence"`
}

// Processed returns the sequence the projection has applied through.
func (p *Projector) Processed(ctx context.Context) (uint64, error) {
	c, _, err := p.cursor(ctx)
	return c.Sequence, err
}

func (p *Projector) cursor(ctx context.Context) (cursor, int64, error) {
	v, rev, err := p.Store.Meta(ctx, cursorName)
	if errors.Is(err, store.ErrNotFound) {
		return cursor{}, 0, nil
	}
	if err != nil {
		return cursor{}, 0, err
	}
	var c cursor
	if err := json.Unmarshal(v, &c); err != nil {
		return cursor{}, 0, fmt.Errorf("inventory: cursor: %w", err)
	}
	return c, rev, nil
}

// Round projects the next events after the cursor (at most a few thousand)
// and reports how many it read; 0 means it is caught up.
func (p *Projector) Round(ctx context.Context) (int, error) {
	c, crev, err := p.cursor(ctx)
	if err != nil {
		return 0, err
	}
	st, err := p.Store.State(ctx)
	if err != nil {
		return 0, err
	}
	next := c.Sequence + 1
	if next < st.Tail.Oldest {
		// Archived before projection (retention waits for the projector,
		// so only after a restore or a manual change): go on from the window.
		next = st.Tail.Oldest
	}
	if next > st.Head.Sequence {
		return 0, nil
	}
	byClient := map[string][]*auditv1.Event{}
	var order []string
	read, last := 0, c.Sequence
	for read < eventsPerRound && next <= st.Head.Sequence {
		batches, err := p.Store.BatchesFrom(ctx, next, 8, false)
		if err != nil {
			return 0, err
		}
		if len(batches) == 0 {
			break
		}
		for _, b := range batches {
			if b.Batch == nil {
				// Unreadable: skip it (VerifyChain reports it) so the
				// inventory does not stop.
				next = b.First + 1
				last = max(last, b.First)
				continue
			}
			for _, e := range b.Batch.Entries {
				seq := e.Event.GetSequence()
				if seq < next {
					continue
				}
				if id := e.Event.GetClientId(); id != "" {
					if _, ok := byClient[id]; !ok {
						order = append(order, id)
					}
					byClient[id] = append(byClient[id], e.Event)
				}
				read++
				last, next = seq, seq+1
			}
		}
	}
	slices.Sort(order)
	for _, id := range order {
		if err := p.applyClient(ctx, id, byClient[id]); err != nil {
			return 0, err
		}
	}
	v, err := json.Marshal(cursor{Sequence: last})
	if err != nil {
		return 0, err
	}
	if err := p.Store.PutMeta(ctx, cursorName, v, crev); err != nil && !errors.Is(err, store.ErrConflict) {
		return 0, err
	}
	return read, nil
}

func (p *Projector) applyClient(ctx context.Context, id string, events []*auditv1.Event) error {
	for range 16 {
		v, rev, err := p.Store.Agent(ctx, id)
		rec := &Record{ClientID: id}
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return err
		default:
			if rec, err = decodeRecord(v); err != nil {
				rec = &Record{ClientID: id} // rebuilt from here on; never stops the projection
			}
		}
		changed := false
		for _, ev := range events {
			if ev.GetSequence() <= rec.AsOf {
				continue
			}
			rec.apply(ev)
			changed = true
		}
		if !changed {
			return nil
		}
		nv, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		err = p.Store.PutAgent(ctx, id, nv, rev)
		if !errors.Is(err, store.ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("inventory: agent %q kept changing", id)
}
