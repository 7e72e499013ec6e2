// Package events builds the token service's audit events and hands them to
// the audit producer side: state-change events as etcd operations for the
// change's own transaction (outbox), read-path events (client_credentials
// issuance) to the batched emitter.
package events

import (
	"context"
	"fmt"
	"log/slog"
	"unicode/utf8"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/lib/auditemit"
)

// Emitter turns events into outbox operations or batched emits.
type Emitter struct {
	outbox  *auditemit.Outbox
	batcher *auditemit.Batcher
	log     *slog.Logger
}

// New returns an emitter. batcher may be nil (no audit service configured):
// read-path events are then skipped.
func New(outbox *auditemit.Outbox, batcher *auditemit.Batcher, log *slog.Logger) *Emitter {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Emitter{outbox: outbox, batcher: batcher, log: log}
}

// Op validates and stamps ev and returns the etcd operation that writes it
// to the outbox, for the transaction of the change it records.
//
// auditemit.Outbox.Op returns an opaque etcdstore.Op; the token service's
// multi-key transactions need the etcd operation itself, so the event is
// stamped by Outbox.Op and written here under the outbox key in the same
// encoding (proto binary), which is what the relay reads.
func (e *Emitter) Op(ctx context.Context, ev *auditv1.Event) (clientv3.Op, error) {
	if _, err := e.outbox.Op(ctx, ev); err != nil {
		return clientv3.Op{}, err
	}
	b, err := proto.Marshal(ev)
	if err != nil {
		return clientv3.Op{}, fmt.Errorf("events: encode: %w", err)
	}
	return clientv3.OpPut(e.outbox.Key(ev.GetId()), string(b)), nil
}

// Ops is Op for several events.
func (e *Emitter) Ops(ctx context.Context, evs ...*auditv1.Event) ([]clientv3.Op, error) {
	out := make([]clientv3.Op, 0, len(evs))
	for _, ev := range evs {
		op, err := e.Op(ctx, ev)
		if err != nil {
			return nil, err
		}
		out = append(out, op)
	}
	return out, nil
}

// Emit sends a read-path event through the batcher; without one (no audit
// service) it does nothing. It never blocks a request (normal mode): a full
// queue drops the event, counted by the batcher's metrics.
func (e *Emitter) Emit(ctx context.Context, ev *auditv1.Event) {
	if e.batcher == nil {
		return
	}
	if err := e.batcher.Emit(ctx, ev); err != nil {
		e.log.DebugContext(ctx, "audit event not queued", "type", ev.GetType().String(), "error", err.Error())
	}
}

// Request is what the transport knows about who sent a request.
type Request struct {
	SourceAddress string
	UserAgent     string
	// ClientID is the client of the pending authorization request the
	// sign-in belongs to ("" when no request is known, e.g. a callback
	// whose state was unknown).
	ClientID string
}

// protect wraps personal data; empty values stay unset.
func protect(v string) *auditv1.Protected {
	if v == "" {
		return nil
	}
	return &auditv1.Protected{Value: proto.String(truncate(v, 512))}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for !utf8.ValidString(s) && len(s) > 0 {
		s = s[:len(s)-1]
	}
	return s
}

func details(m map[string]any) *structpb.Struct {
	if len(m) == 0 {
		return nil
	}
	st, err := structpb.NewStruct(m)
	if err != nil {
		return nil
	}
	return st
}

// Actor constructors.

// UserActor is a signed-in user.
func UserActor(userID string) *auditv1.Actor {
	return &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_USER, Id: userID}
}

// ClientActor is an OAuth client.
func ClientActor(clientID string) *auditv1.Actor {
	return &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_CLIENT, Id: clientID}
}

// AnonymousActor is an unauthenticated party.
func AnonymousActor() *auditv1.Actor {
	return &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_ANONYMOUS}
}

// OperatorActor is an operator (user id or certificate name).
func OperatorActor(id string) *auditv1.Actor {
	return &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_OPERATOR, Id: id}
}

// ServiceActor is this service acting on its own (for example replacing an
// unreadable signing key).
func ServiceActor() *auditv1.Actor {
	return &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_SERVICE, Id: "token"}
}

// SystemActor is a job.
func SystemActor(job string) *auditv1.Actor {
	return &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_SYSTEM, Id: job}
}

// LoginSucceeded is the event: a user signed in.
func LoginSucceeded(userID, email, connectorID string, r Request) *auditv1.Event {
	return &auditv1.Event{
		Type: auditv1.EventType_EVENT_TYPE_LOGIN_SUCCEEDED, Actor: UserActor(userID), UserId: userID,
		ConnectorId: connectorID, ClientId: r.ClientID, SourceAddress: protect(r.SourceAddress), UserAgent: protect(r.UserAgent),
		UserEmail: protect(email),
	}
}

// LoginFailed is the event: a sign-in failed. userID is empty when no user matched; the
// typed name is recorded (protected) then.
func LoginFailed(userID, loginName, reason string, r Request) *auditv1.Event {
	ev := &auditv1.Event{
		Type: auditv1.EventType_EVENT_TYPE_LOGIN_FAILED, Actor: AnonymousActor(), UserId: userID, Reason: reason,
		ClientId: r.ClientID, SourceAddress: protect(r.SourceAddress), UserAgent: protect(r.UserAgent),
	}
	if userID == "" {
		ev.LoginName = protect(loginName)
	}
	return ev
}

// ConsentGranted is the event: the user approved scopes for (client, resource).
func ConsentGranted(userID, clientID, resource string, granted, requested []string, remembered bool) *auditv1.Event {
	d := map[string]any{"remembered": remembered}
	if len(granted) != len(requested) {
		d["requested_scopes"] = toAny(requested)
	}
	return &auditv1.Event{
		Type: auditv1.EventType_EVENT_TYPE_CONSENT_GRANTED, Actor: UserActor(userID), UserId: userID,
		ClientId: clientID, Resource: resource, Scopes: granted, Details: details(d),
	}
}

// ConsentDenied is the event: the user denied the request.
func ConsentDenied(userID, clientID, resource string, requested []string) *auditv1.Event {
	return &auditv1.Event{
		Type: auditv1.EventType_EVENT_TYPE_CONSENT_DENIED, Actor: UserActor(userID), UserId: userID,
		ClientId: clientID, Resource: resource, Scopes: requested, Reason: "access_denied",
	}
}

// TokenIssued is the event: an access token (and maybe a refresh token) was issued.
func TokenIssued(grantType, userID, clientID, resource, grantID, jti string, scopes []string, expiresIn int, refresh bool) *auditv1.Event {
	return &auditv1.Event{
		Type: auditv1.EventType_EVENT_TYPE_TOKEN_ISSUED, Actor: ClientActor(clientID), UserId: userID,
		ClientId: clientID, Resource: resource, GrantId: grantID, TokenId: jti, Scopes: scopes,
		Details: details(map[string]any{"grant_type": grantType, "expires_in": float64(expiresIn), "refresh_token_issued": refresh}),
	}
}

// TokenRefreshed is the event: a refresh token was rotated.
func TokenRefreshed(userID, clientID, resource, grantID, jti string, scopes []string, expiresIn int) *auditv1.Event {
	return &auditv1.Event{
		Type: auditv1.EventType_EVENT_TYPE_TOKEN_REFRESHED, Actor: ClientActor(clientID), UserId: userID,
		ClientId: clientID, Resource: resource, GrantId: grantID, TokenId: jti, Scopes: scopes,
		Details: details(map[string]any{"expires_in": float64(expiresIn)}),
	}
}

// TokenRevoked is the event: a token was revoked through RFC 7009.
func TokenRevoked(clientID, userID, resource, grantID, jti, hint string) *auditv1.Event {
	return &auditv1.Event{
		Type: auditv1.EventType_EVENT_TYPE_TOKEN_REVOKED, Actor: ClientActor(clientID), UserId: userID,
		ClientId: clientID, Resource: resource, GrantId: grantID, TokenId: jti,
		Details: details(map[string]any{"token_type_hint": hint}),
	}
}

// GrantRevoked is the event: grants were revoked.
func GrantRevoked(actor *auditv1.Actor, by, reason, userID, clientID, resource, grantID string, count int) *auditv1.Event {
	return &auditv1.Event{
		Type: auditv1.EventType_EVENT_TYPE_GRANT_REVOKED, Actor: actor, UserId: userID, ClientId: clientID,
		Resource: resource, GrantId: grantID, Reason: reason,
		Details: details(map[string]any{"by": by, "count": float64(count)}),
	}
}

// RefreshReuse is the event: a rotated refresh token was presented again.
func RefreshReuse(userID, clientID, resource, grantID string) *auditv1.Event {
	return &auditv1.Event{
		Type: auditv1.EventType_EVENT_TYPE_REFRESH_TOKEN_REUSE_DETECTED, Actor: ClientActor(clientID), UserId: userID,
		ClientId: clientID, Resource: resource, GrantId: grantID, Reason: "refresh_token_reuse",
	}
}

// CodeReplayed is the event: a redeemed authorization code was presented again.
func CodeReplayed(userID, clientID, resource, grantID string) *auditv1.Event {
	return &auditv1.Event{
		Type: auditv1.EventType_EVENT_TYPE_AUTHORIZATION_CODE_REPLAYED, Actor: ClientActor(clientID), UserId: userID,
		ClientId: clientID, Resource: resource, GrantId: grantID, Reason: "authorization_code_replay",
	}
}

// UserCreated is the event: a user was created.
func UserCreated(actor *auditv1.Actor, userID, email string) *auditv1.Event {
	return &auditv1.Event{Type: auditv1.EventType_EVENT_TYPE_USER_CREATED, Actor: actor, UserId: userID, UserEmail: protect(email)}
}

// UserDeleted is the event: a user was deleted.
func UserDeleted(actor *auditv1.Actor, userID string) *auditv1.Event {
	return &auditv1.Event{Type: auditv1.EventType_EVENT_TYPE_USER_DELETED, Actor: actor, UserId: userID}
}

// AdminAction is the event: an operator changed something without a dedicated type.
func AdminAction(actor *auditv1.Actor, action, userID string) *auditv1.Event {
	return &auditv1.Event{
		Type: auditv1.EventType_EVENT_TYPE_ADMIN_ACTION, Actor: actor, UserId: userID,
		Details: details(map[string]any{"action": action}),
	}
}

// KeyRotated is the event: a signing key changed state.
func KeyRotated(actor *auditv1.Actor, kid, state, alg, reason string) *auditv1.Event {
	return &auditv1.Event{
		Type: auditv1.EventType_EVENT_TYPE_KEY_ROTATED, Actor: actor, Reason: reason,
		Details: details(map[string]any{"purpose": "access_token", "key_id": kid, "state": state, "algorithm": alg}),
	}
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// --- federated sign-in (SSO connectors) ---

// FederatedLoginSucceeded is the event: a user signed in through an identity
// connector. The upstream subject is the login name (protected personal
// data, like a typed username).
func FederatedLoginSucceeded(userID, email, connectorID, subject string, created bool, r Request) *auditv1.Event {
	ev := LoginSucceeded(userID, email, connectorID, r)
	ev.LoginName = protect(subject)
	ev.Details = details(map[string]any{"federated": true, "user_created": created})
	return ev
}

// FederatedLoginFailed is the event: a sign-in through an identity connector
// failed (reason: the connector package's failure reasons).
func FederatedLoginFailed(userID, connectorID, subject, reason string, r Request) *auditv1.Event {
	ev := LoginFailed(userID, "", reason, r)
	ev.ConnectorId = connectorID
	ev.LoginName = protect(subject)
	ev.Details = details(map[string]any{"federated": true})
	return ev
}

// ConnectorChanged is the event: an operator created, changed or deleted an
// identity connector (action connector.created / .updated / .deleted).
func ConnectorChanged(actor *auditv1.Actor, action, connectorID string) *auditv1.Event {
	return &auditv1.Event{
		Type: auditv1.EventType_EVENT_TYPE_ADMIN_ACTION, Actor: actor, ConnectorId: connectorID,
		Details: details(map[string]any{"action": action}),
	}
}

// ConsentRevoked is the event: a remembered consent was forgotten (issue 8:
// my-agents page, RevokeConsents).
func ConsentRevoked(actor *auditv1.Actor, userID, clientID, resource, reason string, keepGrants bool) *auditv1.Event {
	return &auditv1.Event{
		Type: auditv1.EventType_EVENT_TYPE_CONSENT_REVOKED, Actor: actor, UserId: userID, ClientId: clientID,
		Resource: resource, Reason: reason, Details: details(map[string]any{"keep_grants": keepGrants}),
	}
}
