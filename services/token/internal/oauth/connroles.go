package oauth

import (
	"context"
	"errors"
	"slices"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/lib/principal"
	"github.com/mcpid/mcpid/services/token/internal/connector"
	"github.com/mcpid/mcpid/services/token/internal/directory"
	"github.com/mcpid/mcpid/services/token/internal/events"
	"github.com/mcpid/mcpid/services/token/internal/store"
)

// Roles a connector gives count only as its current role mappings give
// them: a mapping change, or disabling or deleting the connector, narrows
// the stored roles of its users and revokes their admin-audience grants at
// once (ConnectorRolesChanged, called by the connector admin API), and every
// check that reads roles recomputes them against the live registry
// (rolesNow), so a user whose stored roles were not yet narrowed (another
// replica's change, a failed sweep) gains nothing from them.

// rolesNow are u's operator roles as they count now: operator-assigned
// ones, and for each linked identity the roles it holds that its connector,
// enabled, still gives its upstream groups.
func (s *Service) rolesNow(u *store.User) []string {
	return u.RolesNow(func(id store.Identity) []string {
		if len(id.Roles) == 0 {
			return nil
		}
		c, ok := s.d.Connectors.Get(id.ConnectorID)
		if !ok {
			return nil // disabled or deleted
		}
		m, ok := c.(connector.RoleMapper)
		if !ok {
			return id.Roles
		}
		return intersect(id.Roles, m.RolesFor(id.Groups))
	})
}

func intersect(a, b []string) []string {
	var out []string
	for _, x := range a {
		for _, y := range b {
			if x == y {
				out = append(out, x)
				break
			}
		}
	}
	return out
}

// errRolesUnchanged ends a user update that has nothing to write.
var errRolesUnchanged = errors.New("oauth: connector roles unchanged")

// ConnectorRolesChanged applies a change of connectorID's role mappings to
// the linked user userID: the roles its identities of that connector hold
// are narrowed to what rolesFor gives their stored upstream groups (nil
// rolesFor: the connector was disabled or deleted, they are cleared), and
// when the user's roles shrink its urn:mcpid:admin grants are revoked (the
// GRANT_REVOKED events carry reason "roles_changed", as after an operator's
// role change). The grants go first, so that a call failing half-way
// and retried still revokes them. A user that no longer exists is
// skipped. Idempotent.
func (s *Service) ConnectorRolesChanged(ctx context.Context, actor *auditv1.Actor, connectorID, userID string, rolesFor func(upstreamGroups []string) []string) error {
	cur, err := s.d.Store.GetUser(ctx, userID)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return storeErr(err)
	}
	probe := *cur
	probe.Identities = slices.Clone(cur.Identities)
	if !directory.ConnectorRoles(&probe, connectorID, rolesFor) {
		return nil
	}
	if directory.RolesRemoved(cur.EffectiveRoles(), probe.EffectiveRoles()) {
		if err := s.revokeUserGrants(ctx, actor, userID, "roles_changed",
			func(g *store.Grant) bool { return g.Resource == principal.AdminAudience }); err != nil {
			return err
		}
	}
	_, err = s.d.Store.UpdateUser(ctx, userID, func(u *store.User) ([]store.Op, error) {
		if !directory.ConnectorRoles(u, connectorID, rolesFor) {
			return nil, errRolesUnchanged
		}
		u.Updated = s.d.Now().UTC()
		op, err := s.d.Events.Op(ctx, events.AdminAction(actor, "user.updated", u.ID))
		if err != nil {
			return nil, err
		}
		return []store.Op{op}, nil
	})
	if err != nil && !errors.Is(err, errRolesUnchanged) && !errors.Is(err, store.ErrNotFound) {
		return storeErr(err)
	}
	return nil
}
