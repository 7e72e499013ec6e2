package registry

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
	"github.com/mcpid/mcpid/lib/etcdstore"
	"github.com/mcpid/mcpid/services/registration/internal/secret"
	"github.com/mcpid/mcpid/services/registration/internal/store"
)

// Initial access token limits.
const (
	minIATTTL   = time.Minute
	maxIATTTL   = 90 * 24 * time.Hour
	maxIATUses  = 1_000_000
	maxIATNote  = 256
	iatMethodNS = "/mcpid.registration.v1.RegistrationService/"
)

// CreateIAT creates an initial access token; the value is returned once.
func (s *Service) CreateIAT(ctx context.Context, c Caller, req *registrationv1.CreateInitialAccessTokenRequest) (*registrationv1.InitialAccessToken, string, error) {
	if len([]rune(req.GetNote())) > maxIATNote {
		return nil, "", fieldErr("note", "at most %d characters", maxIATNote)
	}
	ttl := s.cfg.IATDefaultTTL
	if d := req.GetTtl(); d != nil {
		if err := d.CheckValid(); err != nil {
			return nil, "", fieldErr("ttl", "invalid duration")
		}
		ttl = d.AsDuration()
	}
	if ttl < minIATTTL || ttl > maxIATTTL {
		return nil, "", fieldErr("ttl", "must be between 1 minute and 90 days")
	}
	if req.GetMaxUses() < 1 || req.GetMaxUses() > maxIATUses {
		return nil, "", fieldErr("max_uses", "must be between 1 and %d", maxIATUses)
	}
	resources, err := allowedResources(req.GetClientCredentialsResources())
	if err != nil {
		return nil, "", err
	}
	id, err := s.ids.NewID()
	if err != nil {
		return nil, "", err
	}
	value := secret.Generate()
	now := s.Now()
	t := &store.IAT{
		ID: id, Note: req.GetNote(), MaxUses: req.GetMaxUses(), Resources: resources,
		CreatedBy: c.Who(), CreateTime: now, ExpireTime: now.Add(ttl), Hash: secret.Hash(value),
	}
	ops, err := s.outboxOps(ctx, adminAction(c, "CreateInitialAccessToken", id))
	if err != nil {
		return nil, "", err
	}
	if err := s.Store.CreateIAT(ctx, t, ops...); err != nil {
		return nil, "", err
	}
	return s.iatView(t), value, nil
}

func adminAction(c Caller, method, target string) *auditv1.Event {
	return c.event(auditv1.EventType_EVENT_TYPE_ADMIN_ACTION, c.actor(""), "", "",
		map[string]any{"method": iatMethodNS + method, "target": target})
}

func (s *Service) iatView(t *store.IAT) *registrationv1.InitialAccessToken {
	state := registrationv1.InitialAccessTokenState_INITIAL_ACCESS_TOKEN_STATE_ACTIVE
	switch {
	case !t.RevokeTime.IsZero():
		state = registrationv1.InitialAccessTokenState_INITIAL_ACCESS_TOKEN_STATE_REVOKED
	case t.UseCount >= t.MaxUses:
		state = registrationv1.InitialAccessTokenState_INITIAL_ACCESS_TOKEN_STATE_EXHAUSTED
	}
	return &registrationv1.InitialAccessToken{
		Id: t.ID, Note: t.Note, State: state, MaxUses: t.MaxUses, UseCount: t.UseCount,
		ClientCredentialsResources: allowedView(t.Resources), CreatedBy: t.CreatedBy,
		CreateTime: ts(t.CreateTime), ExpireTime: ts(t.ExpireTime), LastUsedTime: ts(t.LastUsedTime),
		RevokeTime: ts(t.RevokeTime), RevokedBy: t.RevokedBy,
	}
}

// ListIATs lists tokens, newest first; expired ones are left out.
func (s *Service) ListIATs(ctx context.Context, req *registrationv1.ListInitialAccessTokensRequest) ([]*registrationv1.InitialAccessToken, string, error) {
	size := int(req.GetPageSize())
	if size < 0 {
		return nil, "", fieldErr("page_size", "must not be negative")
	}
	ts, next, err := s.Store.ListIATs(ctx, size, req.GetPageToken())
	if errors.Is(err, store.ErrInvalidPageToken) {
		return nil, "", mcpidErr(codes.InvalidArgument, rPageToken, "page_token is invalid or expired")
	}
	if err != nil {
		return nil, "", err
	}
	now := s.Now()
	out := make([]*registrationv1.InitialAccessToken, 0, len(ts))
	for _, t := range ts {
		if now.Before(t.ExpireTime) {
			out = append(out, s.iatView(t))
		}
	}
	return out, next, nil
}

// errUnchanged stops a write that would change nothing.
var errUnchanged = errors.New("unchanged")

// RevokeIAT revokes a token; revoking it again changes nothing.
func (s *Service) RevokeIAT(ctx context.Context, c Caller, id string) (*registrationv1.InitialAccessToken, error) {
	notFound := mcpidErr(codes.NotFound, rIATNotFound, "no initial access token %q", clip(id))
	if id == "" {
		return nil, fieldErr("id", "required")
	}
	t, err := s.Store.UpdateIAT(ctx, id, func(t *store.IAT) ([]etcdstore.Op, error) {
		if !t.RevokeTime.IsZero() {
			return nil, errUnchanged
		}
		t.RevokeTime, t.RevokedBy = s.Now(), c.Who()
		return s.outboxOps(ctx, adminAction(c, "RevokeInitialAccessToken", id))
	})
	switch {
	case errors.Is(err, errUnchanged):
		if t, err = s.Store.GetIAT(ctx, id); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return nil, notFound
			}
			return nil, err
		}
	case errors.Is(err, store.ErrNotFound):
		return nil, notFound
	case err != nil:
		return nil, err
	}
	return s.iatView(t), nil
}
