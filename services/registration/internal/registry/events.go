package registry

import (
	"context"
	"net/netip"

	"google.golang.org/protobuf/types/known/structpb"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/lib/etcdstore"
	"github.com/mcpid/mcpid/lib/principal"
	"github.com/mcpid/mcpid/services/registration/internal/store"
)

// Actors of events this service emits on its own account.
var (
	actorService = &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_SERVICE, Id: "registration"}
	actorExpiry  = &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_SYSTEM, Id: "client-expiry", Display: "client expiry"}
	actorConfig  = &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_SYSTEM, Id: "pre-registered-clients", Display: "service configuration"}
)

// maxUserAgent is the truncation the audit contract asks producers for.
const maxUserAgent = 512

// actor is who the caller is, for an event.
func (c Caller) actor(clientID string) *auditv1.Actor {
	switch c.Principal.Kind {
	case principal.KindOperator:
		return &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_OPERATOR, Id: c.Principal.ID}
	case principal.KindService:
		return &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_SERVICE, Id: c.Principal.ID}
	}
	if clientID != "" {
		return &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_CLIENT, Id: clientID}
	}
	return &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_ANONYMOUS}
}

// event builds an event of type t about clientID, with the caller's network
// facts (protected: they are personal data).
func (c Caller) event(t auditv1.EventType, actor *auditv1.Actor, clientID, reason string, details map[string]any) *auditv1.Event {
	ev := &auditv1.Event{Type: t, Actor: actor, ClientId: clientID, Reason: reason}
	if c.Source.IsValid() {
		ev.SourceAddress = protected(c.Source.String())
	}
	if c.UserAgent != "" {
		ua := c.UserAgent
		if len(ua) > maxUserAgent {
			ua = ua[:maxUserAgent]
		}
		ev.UserAgent = protected(ua)
	}
	if len(details) > 0 {
		if s, err := structpb.NewStruct(details); err == nil {
			ev.Details = s
		}
	}
	return ev
}

func protected(v string) *auditv1.Protected { return &auditv1.Protected{Value: &v} }

// outboxOps turns events into outbox operations for the change's
// transaction. An event audit would refuse stops the change: it could not
// be audited.
func (s *Service) outboxOps(ctx context.Context, evs ...*auditv1.Event) ([]etcdstore.Op, error) {
	ops := make([]etcdstore.Op, 0, len(evs))
	for _, ev := range evs {
		op, err := s.Outbox.Op(ctx, ev)
		if err != nil {
			return nil, err
		}
		ops = append(ops, op)
	}
	return ops, nil
}

// emitReadPath hands a read-path event (a refusal) to the batcher, never
// blocking the request; without an audit service there is nowhere to send
// it, and the refusal is logged instead.
func (s *Service) emitReadPath(ctx context.Context, ev *auditv1.Event) {
	if s.Batcher == nil {
		s.Logger.InfoContext(ctx, "client registration refused", "reason", ev.GetReason(), "client_id", ev.GetClientId())
		return
	}
	if err := s.Batcher.Emit(ctx, ev); err != nil {
		s.Logger.WarnContext(ctx, "audit event dropped", "type", ev.GetType().String(), "error", err)
	}
}

// rejected emits client.registration_rejected for a refused registration
// (actor: the anonymous caller) or CIMD document (actor: this service,
// which fetched it on the token service's behalf).
func (s *Service) rejected(ctx context.Context, c Caller, clientID string, source string, err error) {
	reason, rfc := eventReason(err)
	details := map[string]any{"source": source}
	if rfc != "" {
		details["error"] = rfc
	}
	actor := c.actor("")
	if source == store.SourceCIMD {
		actor = actorService
	}
	s.emitReadPath(ctx, c.event(auditv1.EventType_EVENT_TYPE_CLIENT_REGISTRATION_REJECTED, actor, clientID, reason, details))
}

// detailsURIBudget bounds the redirect URIs copied into an event: audit
// takes at most 8 KiB of details, and 20 URIs may take 40 KiB.
const detailsURIBudget = 6 << 10

// registeredDetails are client.registered's details.
func registeredDetails(rec *store.Client) map[string]any {
	d := map[string]any{
		"client_name":                rec.Metadata.ClientName,
		"source":                     rec.Source,
		"token_endpoint_auth_method": rec.Metadata.TokenEndpointAuthMethod,
		"grant_types":                anyList(rec.Metadata.GrantTypes),
		"verification_status":        rec.Verification.Status,
	}
	var uris []any
	size := 0
	for _, u := range rec.Metadata.RedirectURIs {
		if size+len(u) > detailsURIBudget {
			d["redirect_uris_truncated"] = true
			break
		}
		size += len(u)
		uris = append(uris, u)
	}
	d["redirect_uris"] = uris
	return d
}

func anyList(xs []string) []any {
	out := make([]any, len(xs))
	for i, x := range xs {
		out[i] = x
	}
	return out
}

// verificationEvent is the event of a verification change to status.
func verificationEvent(c Caller, actor *auditv1.Actor, rec *store.Client, reason string) *auditv1.Event {
	t := auditv1.EventType_EVENT_TYPE_CLIENT_UNVERIFIED
	details := map[string]any{}
	switch rec.Verification.Status {
	case store.StatusVerified:
		t = auditv1.EventType_EVENT_TYPE_CLIENT_VERIFIED
		details["method"] = rec.Verification.Method
	case store.StatusSuspended:
		t = auditv1.EventType_EVENT_TYPE_CLIENT_SUSPENDED
	}
	return c.event(t, actor, rec.ClientID, reason, details)
}

// noCaller is the caller of events the service raises on its own.
var noCaller = Caller{Source: netip.Addr{}}
