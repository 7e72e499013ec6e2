package directory

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/mcpid/mcpid/services/token/internal/connector"
	"github.com/mcpid/mcpid/services/token/internal/events"
	"github.com/mcpid/mcpid/services/token/internal/store"
)

// ErrDisabled means a federated sign-in resolved to a disabled user.
var ErrDisabled = errors.New("directory: user disabled")

// ErrNoLinks means no identity link store was configured.
var ErrNoLinks = errors.New("directory: no identity links configured")

// IdentityLinks maps (connector, upstream subject) to a user id, uniquely.
// The sso package's store implements it.
type IdentityLinks interface {
	// GetLink returns the linked user id and the link's revision, or an
	// error for which IsAbsent is true.
	GetLink(ctx context.Context, connectorID, subject string) (string, int64, error)
	// ClaimLink creates the link (rev 0) or replaces it while still at rev;
	// it fails when another sign-in claimed it first.
	ClaimLink(ctx context.Context, connectorID, subject, userID string, rev int64) error
}

// maxLinkAttempts bounds the retries of two first sign-ins racing.
const maxLinkAttempts = 4

// Federated returns the user linked to the identity, creating it just in
// time at the first sign-in. The link is by (connector, subject) only: an
// email changed upstream updates the user, never creates a second one. The
// link is claimed before the user is created, so two first sign-ins at once
// end on one user; a link whose user was deleted is replaced by a new user
// (a deleted user is never resurrected). created reports a new user.
func (d *Directory) Federated(ctx context.Context, links IdentityLinks, id connector.Identity, r events.Request) (*store.User, bool, error) {
	if links == nil {
		return nil, false, ErrNoLinks
	}
	for range maxLinkAttempts {
		uid, rev, err := links.GetLink(ctx, id.ConnectorID, id.Subject)
		switch {
		case err == nil:
			u, err := d.store.GetUser(ctx, uid)
			if err == nil {
				if u.Disabled {
					return u, false, ErrDisabled
				}
				return u, false, nil
			}
			if !errors.Is(err, store.ErrNotFound) {
				return nil, false, err
			}
			// The user was deleted: link the identity to a new user.
		case errors.Is(err, store.ErrNotFound):
			rev = 0
		default:
			return nil, false, err
		}
		newID, err := NewUserID()
		if err != nil {
			return nil, false, err
		}
		if err := links.ClaimLink(ctx, id.ConnectorID, id.Subject, newID, rev); err != nil {
			if errors.Is(err, store.ErrAlreadyExists) || errors.Is(err, store.ErrConflict) {
				continue // another sign-in of the same account won: use its user
			}
			return nil, false, err
		}
		now := d.now().UTC()
		u := &store.User{ID: newID, Created: now, Updated: now}
		ApplyIdentity(u, id, now)
		op, err := d.events.Op(ctx, events.UserCreated(events.SystemActor("connector:"+id.ConnectorID), u.ID, u.Email))
		if err != nil {
			return nil, false, err
		}
		if err := d.store.CreateUser(ctx, u, op); err != nil {
			return nil, false, err
		}
		return u, true, nil
	}
	return nil, false, fmt.Errorf("directory: linking %s identity: too many concurrent changes", id.ConnectorID)
}

// ApplyIdentity refreshes a federated user's profile from the upstream
// claims of a sign-in: email, display name, groups (as they will appear in
// access tokens), the roles the connector's mappings give, and the
// identity's email and last sign-in.
//
// Roles: the identity's connector-given roles (store.Identity.Roles) are
// replaced by those the upstream groups map to now; the operator-assigned
// User.Roles are never touched (store.User.EffectiveRoles is the union).
// ApplyIdentity is idempotent.
func ApplyIdentity(u *store.User, id connector.Identity, now time.Time) {
	if id.Email != "" {
		u.Email = id.Email
	}
	if id.Name != "" {
		u.DisplayName = id.Name
	}
	u.Groups = slices.Clone(id.Groups)
	i := slices.IndexFunc(u.Identities, func(x store.Identity) bool {
		return x.ConnectorID == id.ConnectorID && x.Subject == id.Subject
	})
	if i < 0 {
		u.Identities = append(u.Identities, store.Identity{ConnectorID: id.ConnectorID, Subject: id.Subject})
		i = len(u.Identities) - 1
	}
	u.Identities[i].Email, u.Identities[i].LastLogin = id.Email, now
	u.Identities[i].Roles = sortedSet(id.Roles)
	u.Identities[i].Groups = sortedSet(id.UpstreamGroups)
	u.Updated = now
}

// ConnectorRoles narrows the roles u's identities of connectorID hold to
// what rolesFor (the connector's current mappings) gives their stored
// upstream groups; a nil rolesFor (connector disabled or deleted) clears
// them. It only takes roles away: a role a new mapping would give comes at
// the next sign-in, when the upstream asserts the groups afresh. It
// reports whether anything changed.
func ConnectorRoles(u *store.User, connectorID string, rolesFor func(upstreamGroups []string) []string) bool {
	changed := false
	for i := range u.Identities {
		id := &u.Identities[i]
		if id.ConnectorID != connectorID || len(id.Roles) == 0 {
			continue
		}
		var keep []string
		if rolesFor != nil {
			now := rolesFor(id.Groups)
			keep = slices.DeleteFunc(slices.Clone(id.Roles), func(r string) bool { return !slices.Contains(now, r) })
		}
		if !slices.Equal(keep, id.Roles) {
			id.Roles = keep
			if len(id.Roles) == 0 {
				id.Roles = nil
			}
			changed = true
		}
	}
	return changed
}

func sortedSet(ss []string) []string {
	if len(ss) == 0 {
		return nil
	}
	out := slices.Clone(ss)
	slices.Sort(out)
	return slices.Compact(out)
}

// RolesRemoved reports whether after lacks a role before had.
func RolesRemoved(before, after []string) bool {
	return slices.ContainsFunc(before, func(r string) bool { return !slices.Contains(after, r) })
}
