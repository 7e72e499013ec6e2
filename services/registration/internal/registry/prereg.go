package registry

import (
	"context"
	"errors"
	"slices"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/lib/etcdstore"
	"github.com/mcpid/mcpid/lib/principal"
	"github.com/mcpid/mcpid/services/registration/internal/metadata"
	"github.com/mcpid/mcpid/services/registration/internal/store"
)

// CLIClientID is the client_id of the pre-registered `mcpid` CLI: a native
// public client (PKCE, loopback redirect on any port) and the only client
// that may obtain the urn:mcpid:admin audience.
const CLIClientID = "mcpid"

func (s *Service) cliClient() *store.Client {
	now := s.Now()
	return &store.Client{
		ClientID: CLIClientID,
		Source:   store.SourcePreRegistered,
		Metadata: metadata.Metadata{
			RedirectURIs:            []string{"http://127.0.0.1/callback", "http://[::1]/callback"},
			TokenEndpointAuthMethod: metadata.AuthNone,
			GrantTypes:              []string{metadata.GrantAuthorizationCode, metadata.GrantRefreshToken},
			ApplicationType:         metadata.AppNative,
			ClientName:              "mcpid CLI",
		},
		Verification:      store.Verification{Status: store.StatusVerified, Method: store.MethodConfiguration, UpdatedBy: "config", UpdateTime: now, Reason: "built-in mcpid CLI client"},
		ReservedAudiences: []string{principal.AdminAudience},
		CreatedBy:         "config",
		CreateTime:        now,
		UpdateTime:        now,
	}
}

// EnsurePreRegistered writes the clients the configuration declares (the
// mcpid CLI client), at every start: created when missing, brought back to
// the declared metadata when it differs, left alone when it matches.
func (s *Service) EnsurePreRegistered(ctx context.Context) error {
	want := s.cliClient()
	cur, err := s.Store.GetClient(ctx, want.ClientID)
	if errors.Is(err, store.ErrNotFound) {
		ops, err := s.outboxOps(ctx, noCaller.event(auditv1.EventType_EVENT_TYPE_CLIENT_REGISTERED, actorConfig, want.ClientID, "", registeredDetails(want)))
		if err != nil {
			return err
		}
		_, err = s.Store.CreateClient(ctx, want, store.CreateOptions{Extra: ops})
		if errors.Is(err, store.ErrAlreadyExists) {
			return nil // another replica did it
		}
		return err
	}
	if err != nil {
		return err
	}
	if cur.Source != store.SourcePreRegistered {
		s.Logger.ErrorContext(ctx, "client id of the mcpid CLI is taken by another client; leaving it", "client_id", want.ClientID, "source", cur.Source)
		return nil
	}
	if cur.Metadata.Equal(&want.Metadata) && slices.Equal(cur.ReservedAudiences, want.ReservedAudiences) && cur.Verification.Status == store.StatusVerified {
		return nil
	}
	_, err = s.updateClient(ctx, want.ClientID, func(rec *store.Client) ([]etcdstore.Op, error) {
		evs, _ := s.applyMetadata(noCaller, rec, &want.Metadata, nil, false)
		for _, ev := range evs {
			ev.Actor = actorConfig
		}
		rec.ReservedAudiences = want.ReservedAudiences
		if rec.Verification.Status != store.StatusVerified {
			rec.Verification = want.Verification
			evs = append(evs, verificationEvent(noCaller, actorConfig, rec, "configuration"))
		}
		return s.outboxOps(ctx, evs...)
	})
	return err
}
