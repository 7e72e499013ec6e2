package registry

import (
	"context"
	"errors"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/lib/etcdstore"
	"github.com/mcpid/mcpid/services/registration/internal/store"
)

// errNotExpiring stops the expiry of a client that is not expiring (its
// lease was replaced, or is still alive).
var errNotExpiring = errors.New("client is not expiring")

// ExpireClient deletes a client whose expiry lease ran out, with the
// `client.expired` event and the pending revocation of its grants, in one
// transaction. lease is the lease the deleted marker was on (0: unknown);
// a client now on another lease, or whose lease is still alive, is left
// alone. Several replicas may call it for the same client: exactly one
// deletion commits, the others find nothing.
func (s *Service) ExpireClient(ctx context.Context, id string, lease int64) error {
	_, err := s.Store.DeleteClient(ctx, id, func(rec *store.Client) ([]etcdstore.Op, error) {
		if rec.LeaseID == 0 || (lease != 0 && rec.LeaseID != lease) {
			return nil, errNotExpiring
		}
		alive, err := s.Store.LeaseAlive(ctx, rec.LeaseID)
		if err != nil {
			return nil, err
		}
		if alive {
			return nil, errNotExpiring
		}
		return s.deleteOps(ctx, noCaller, actorExpiry, rec, auditv1.EventType_EVENT_TYPE_CLIENT_EXPIRED, "expired")
	})
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, errNotExpiring) {
		return nil
	}
	if err == nil {
		s.Logger.InfoContext(ctx, "client expired", "client_id", id)
	}
	return err
}

// ReconcileExpiry finds clients whose expiry marker is gone while no
// replica was watching (hasMarker reports the markers that exist) and
// expires them. It runs when the expiry worker starts.
func (s *Service) ReconcileExpiry(ctx context.Context, hasMarker func(id string) bool) error {
	token := ""
	for {
		recs, next, err := s.Store.ListClients(ctx, maxPageSize, token)
		if err != nil {
			return err
		}
		for _, rec := range recs {
			if rec.LeaseID != 0 && !hasMarker(rec.ClientID) {
				if err := s.ExpireClient(ctx, rec.ClientID, 0); err != nil {
					return err
				}
			}
		}
		if next == "" {
			return nil
		}
		token = next
	}
}
