package oauth

import (
	"context"
	"errors"
	"slices"
	"time"

	"google.golang.org/grpc/codes"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/lib/apierr"
	"github.com/mcpid/mcpid/lib/etcdstore"
	"github.com/mcpid/mcpid/lib/principal"
	"github.com/mcpid/mcpid/services/token/internal/directory"
	"github.com/mcpid/mcpid/services/token/internal/events"
	"github.com/mcpid/mcpid/services/token/internal/store"
)

// User administration for operators. Changes that take authority away
// (delete, disable, role change) revoke what the user holds in the same
// call: a USER watermark for every token, or the admin-audience grants.

func userNotFound(id string) error {
	return apierr.New(codes.NotFound, tokenv1.ErrorReason_ERROR_REASON_USER_NOT_FOUND.String(), "no user %q", id)
}

func lastAdmin() error {
	return apierr.New(codes.FailedPrecondition, tokenv1.ErrorReason_ERROR_REASON_LAST_ADMIN.String(),
		"the change would leave no enabled user with the admin role")
}

func userStoreErr(id string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return userNotFound(id)
	}
	return storeErr(err)
}

// GetUser returns a user.
func (s *Service) GetUser(ctx context.Context, id string) (*store.User, error) {
	u, err := s.d.Store.GetUser(ctx, id)
	if err != nil {
		return nil, userStoreErr(id, err)
	}
	return u, nil
}

// ListUsers lists users, optionally only those with role or linked to a
// connector (filters applied to each page).
func (s *Service) ListUsers(ctx context.Context, pageSize int, pageToken, role, connectorID string) ([]*store.User, string, error) {
	users, next, err := s.d.Store.ListUsers(ctx, pageSize, pageToken)
	if errors.Is(err, etcdstore.ErrInvalidPageToken) || errors.Is(err, etcdstore.ErrPageTokenExpired) {
		return nil, "", apierr.New(codes.InvalidArgument, apierr.ReasonPageTokenInvalid, "page_token is invalid or expired")
	}
	if err != nil {
		return nil, "", storeErr(err)
	}
	out := users[:0]
	for _, u := range users {
		if role != "" && !slices.Contains(u.Roles, role) {
			continue
		}
		if connectorID != "" && !slices.ContainsFunc(u.Identities, func(i store.Identity) bool { return i.ConnectorID == connectorID }) {
			continue
		}
		out = append(out, u)
	}
	return out, next, nil
}

// otherEnabledAdmins reports whether an enabled admin other than id exists.
func (s *Service) otherEnabledAdmins(ctx context.Context, id string) (bool, error) {
	token := ""
	for {
		users, next, err := s.d.Store.ListUsers(ctx, etcdstore.MaxPageSize, token)
		if err != nil {
			return false, storeErr(err)
		}
		for _, u := range users {
			if u.ID != id && !u.Disabled && slices.Contains(u.Roles, string(principal.RoleAdmin)) {
				return true, nil
			}
		}
		if next == "" {
			return false, nil
		}
		token = next
	}
}

func isEnabledAdmin(u *store.User) bool {
	return !u.Disabled && slices.Contains(u.Roles, string(principal.RoleAdmin))
}

// UserUpdate names the fields to change.
type UserUpdate struct {
	Email       *string
	DisplayName *string
	Roles       *[]string
	Disabled    *bool
}

// UpdateUser changes a user. Disabling revokes every token of the user
// (USER watermark); a role change revokes the user's admin-audience grants.
func (s *Service) UpdateUser(ctx context.Context, actor *auditv1.Actor, id string, up UserUpdate) (*store.User, error) {
	cur, err := s.d.Store.GetUser(ctx, id)
	if err != nil {
		return nil, userStoreErr(id, err)
	}
	if up.Roles != nil {
		if err := directory.ValidateRoles(*up.Roles); err != nil {
			return nil, err
		}
	}
	next := *cur
	if up.Roles != nil {
		next.Roles = dedupeSorted(*up.Roles)
	}
	if up.Disabled != nil {
		next.Disabled = *up.Disabled
	}
	if isEnabledAdmin(cur) && !isEnabledAdmin(&next) {
		ok, err := s.otherEnabledAdmins(ctx, id)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, lastAdmin()
		}
	}
	var disabledNow, rolesChanged bool
	u, err := s.d.Store.UpdateUser(ctx, id, func(u *store.User) ([]store.Op, error) {
		disabledNow = up.Disabled != nil && *up.Disabled && !u.Disabled
		rolesChanged = up.Roles != nil && !slices.Equal(dedupeSorted(*up.Roles), dedupeSorted(u.Roles))
		if up.Email != nil {
			u.Email = *up.Email
		}
		if up.DisplayName != nil {
			u.DisplayName = *up.DisplayName
		}
		if up.Roles != nil {
			u.Roles = dedupeSorted(*up.Roles)
		}
		if up.Disabled != nil {
			u.Disabled = *up.Disabled
		}
		u.Updated = s.d.Now().UTC()
		op, err := s.d.Events.Op(ctx, events.AdminAction(actor, "user.updated", u.ID))
		if err != nil {
			return nil, err
		}
		return []store.Op{op}, nil
	})
	if err != nil {
		return nil, userStoreErr(id, err)
	}
	if disabledNow {
		if err := s.revokeUser(ctx, actor, u.ID, "user_disabled"); err != nil {
			return nil, err
		}
	} else if rolesChanged {
		if err := s.revokeUserGrants(ctx, actor, u.ID, "roles_changed", func(g *store.Grant) bool { return g.Resource == principal.AdminAudience }); err != nil {
			return nil, err
		}
	}
	return u, nil
}

// DeleteUser deletes a user, its consents, and revokes everything it holds.
func (s *Service) DeleteUser(ctx context.Context, actor *auditv1.Actor, id string) error {
	cur, err := s.d.Store.GetUser(ctx, id)
	if err != nil {
		return userStoreErr(id, err)
	}
	if isEnabledAdmin(cur) {
		ok, err := s.otherEnabledAdmins(ctx, id)
		if err != nil {
			return err
		}
		if !ok {
			return lastAdmin()
		}
	}
	op, err := s.d.Events.Op(ctx, events.UserDeleted(actor, id))
	if err != nil {
		return err
	}
	if _, err := s.d.Store.DeleteUser(ctx, id, op); err != nil {
		return userStoreErr(id, err)
	}
	if _, err := s.d.Store.DeleteUserConsents(ctx, id); err != nil {
		return storeErr(err)
	}
	return s.revokeUser(ctx, actor, id, "user_deleted")
}

// revokeUser revokes every grant of the user and sets a USER watermark for
// the tokens already issued.
func (s *Service) revokeUser(ctx context.Context, actor *auditv1.Actor, userID, reason string) error {
	if err := s.revokeUserGrants(ctx, actor, userID, reason, nil); err != nil {
		return err
	}
	now := s.d.Now().UTC()
	// Rounded up to the next whole second: a token issued in the same
	// second (iat has second precision) is rejected too.
	before := now.Truncate(time.Second).Add(time.Second)
	op, err := s.d.Events.Op(ctx, events.GrantRevoked(actor, "user", reason, userID, "", "", "", 0))
	if err != nil {
		return err
	}
	rev, err := s.d.Store.PutRevocation(ctx, &store.Revocation{
		Kind: store.RevokeUser, ID: userID, IssuedBefore: before, Expires: before.Add(s.maxTokTTL + time.Minute),
	}, op)
	if err != nil {
		return storeErr(err)
	}
	s.awaitRevocation(ctx, rev)
	return nil
}

func (s *Service) revokeUserGrants(ctx context.Context, actor *auditv1.Actor, userID, reason string, match func(*store.Grant) bool) error {
	ids, err := s.d.Store.ListGrantIDs(ctx, store.ByUser, userID)
	if err != nil {
		return storeErr(err)
	}
	for _, id := range ids {
		vg, err := s.d.Store.GetGrant(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return storeErr(err)
		}
		if match != nil && !match(vg.Value) {
			continue
		}
		g := vg.Value
		op, err := s.d.Events.Op(ctx, events.GrantRevoked(actor, "grant", reason, g.UserID, g.ClientID, g.Resource, g.ID, 1))
		if err != nil {
			return err
		}
		_, rev, err := s.d.Store.RevokeGrant(ctx, g.ID, s.revocationFor(g.ID, g.Resource), op)
		if err != nil {
			return storeErr(err)
		}
		s.awaitRevocation(ctx, rev)
	}
	return nil
}
