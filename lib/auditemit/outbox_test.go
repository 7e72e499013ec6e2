package auditemit_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/lib/auditemit"
	"github.com/mcpid/mcpid/lib/etcdstore"
	"github.com/mcpid/mcpid/lib/etcdtest"
)

var registrationPrefix = etcdstore.MustPrefix("registration")

func newOutbox(t testing.TB, service string, now func() time.Time) *auditemit.Outbox {
	t.Helper()
	ob, err := auditemit.NewOutbox(auditemit.OutboxConfig{Service: service, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return ob
}

// outboxKeys lists the keys under p.
func outboxKeys(t testing.TB, ctx context.Context, c *clientv3.Client, p etcdstore.Prefix) []string {
	t.Helper()
	resp, err := c.Get(ctx, string(p), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]string, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		keys[i] = string(kv.Key)
	}
	return keys
}

func TestOutboxEventCommitsWithTheChange(t *testing.T) {
	ctx := testCtx(t)
	srv := etcdtest.Start(t)
	c := srv.Client(t)
	store := etcdstore.New(c)
	at := time.Date(2026, 7, 28, 12, 0, 0, 0, time.UTC)
	ob := newOutbox(t, "registration", fixedClock(at))
	if got, want := string(ob.Prefix()), "/mcpid/registration/outbox/"; got != want {
		t.Fatalf("prefix = %q, want %q", got, want)
	}
	recKey := registrationPrefix.Key("clients", "c1")

	// The change commits: its event is in the outbox, stamped.
	traceID := trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36}
	sctx := trace.ContextWithSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{TraceID: traceID, SpanID: trace.SpanID{1}}))
	ev := clientRegistered("c1")
	op, err := ob.Op(sctx, ev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Create(ctx, recKey, []byte("client c1"), op); err != nil {
		t.Fatal(err)
	}
	if _, err := auditemit.IDTime(ev.GetId()); err != nil {
		t.Fatalf("Op left id %q: %v", ev.GetId(), err)
	}
	if ev.GetSourceService() != auditv1.SourceService_SOURCE_SERVICE_REGISTRATION || !ev.GetTime().AsTime().Equal(at) || ev.GetTraceId() != traceID.String() {
		t.Fatalf("stamped event = %v", ev)
	}
	kv, err := store.Get(ctx, ob.Key(ev.GetId()))
	if err != nil {
		t.Fatalf("outbox event: %v", err)
	}
	stored := &auditv1.Event{}
	if err := proto.Unmarshal(kv.Value, stored); err != nil || !proto.Equal(stored, ev) {
		t.Fatalf("stored event = %v (%v), want %v", stored, err, ev)
	}

	// The change fails (the record exists): no event.
	ev2 := clientRegistered("c1")
	op2, err := ob.Op(ctx, ev2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Create(ctx, recKey, []byte("client c1 again"), op2); !errors.Is(err, etcdstore.ErrAlreadyExists) {
		t.Fatalf("second create: err = %v, want ErrAlreadyExists", err)
	}
	if _, err := store.Get(ctx, ob.Key(ev2.GetId())); !errors.Is(err, etcdstore.ErrNotFound) {
		t.Fatalf("event of the failed transaction: err = %v, want ErrNotFound", err)
	}
	if keys := outboxKeys(t, ctx, c, ob.Prefix()); len(keys) != 1 {
		t.Fatalf("outbox = %v, want only the first event", keys)
	}

	// An Update carries its event too.
	ev3 := &auditv1.Event{
		Type:     auditv1.EventType_EVENT_TYPE_CLIENT_SUSPENDED,
		Actor:    &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_SERVICE, Id: "registration"},
		ClientId: "c1",
		Reason:   "operator_request",
	}
	if _, err := store.Update(ctx, recKey, func(old []byte) ([]byte, []etcdstore.Op, error) {
		op, err := ob.Op(ctx, ev3)
		return []byte("suspended"), []etcdstore.Op{op}, err
	}); err != nil {
		t.Fatal(err)
	}
	if keys := outboxKeys(t, ctx, c, ob.Prefix()); len(keys) != 2 || keys[1] != ob.Key(ev3.GetId()) {
		t.Fatalf("outbox = %v, want the create's and the update's events in id order", keys)
	}
}

func TestOutboxEventOutlivesALeaseBoundRecord(t *testing.T) {
	ctx := testCtx(t)
	srv := etcdtest.Start(t)
	c := srv.Client(t)
	store := etcdstore.New(c)
	ob := newOutbox(t, "registration", nil)

	ev := clientRegistered("dcr-client")
	op, err := ob.Op(ctx, ev)
	if err != nil {
		t.Fatal(err)
	}
	recKey := registrationPrefix.Key("clients", "dcr-client")
	if _, _, err := store.CreateWithTTL(ctx, recKey, []byte("x"), time.Hour, op); err != nil {
		t.Fatal(err)
	}
	rec, err := store.Get(ctx, recKey)
	if err != nil || rec.Lease == 0 {
		t.Fatalf("record %v (%v): want a lease", rec, err)
	}
	kv, err := store.Get(ctx, ob.Key(ev.GetId()))
	if err != nil {
		t.Fatal(err)
	}
	if kv.Lease != 0 {
		t.Fatalf("outbox event is bound to lease %x: it would expire with the record", kv.Lease)
	}
}

func TestOutboxRejectsInvalidEvents(t *testing.T) {
	ctx := testCtx(t)
	ob := newOutbox(t, "registration", nil)
	big, err := structpb.NewStruct(map[string]any{"blob": strings.Repeat("x", auditemit.MaxEventSize)})
	if err != nil {
		t.Fatal(err)
	}
	withActor := func(ev *auditv1.Event, a *auditv1.Actor) *auditv1.Event { ev.Actor = a; return ev }
	for name, ev := range map[string]*auditv1.Event{
		"nil":                 nil,
		"no type":             {Actor: &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_SYSTEM}},
		"unknown type":        {Type: 999, Actor: &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_SYSTEM}},
		"type of another svc": policyDecision(1),
		"no actor":            withActor(clientRegistered("c"), nil),
		"no actor kind":       withActor(clientRegistered("c"), &auditv1.Actor{Id: "x"}),
		"other service actor": withActor(clientRegistered("c"), &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_SERVICE, Id: "token"}),
		"other source":        {Type: auditv1.EventType_EVENT_TYPE_CLIENT_DELETED, Actor: &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_SYSTEM}, SourceService: auditv1.SourceService_SOURCE_SERVICE_TOKEN},
		"malformed id":        {Id: "not-an-id", Type: auditv1.EventType_EVENT_TYPE_CLIENT_DELETED, Actor: &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_SYSTEM}},
		"lower-case id":       {Id: "01arz3ndektsv4rrffq69g5fav", Type: auditv1.EventType_EVENT_TYPE_CLIENT_DELETED, Actor: &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_SYSTEM}},
		"invalid time":        {Type: auditv1.EventType_EVENT_TYPE_CLIENT_DELETED, Actor: &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_SYSTEM}, Time: &timestamppb.Timestamp{Nanos: -1}},
		"too large":           {Type: auditv1.EventType_EVENT_TYPE_CLIENT_UPDATED, Actor: &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_OPERATOR, Id: "op"}, Details: big},
	} {
		t.Run(name, func(t *testing.T) {
			before := proto.Clone(ev)
			if _, err := ob.Op(ctx, ev); !errors.Is(err, auditemit.ErrInvalidEvent) {
				t.Fatalf("Op err = %v, want ErrInvalidEvent", err)
			}
			if ev != nil && !proto.Equal(ev, before) {
				t.Fatalf("a refused event was changed: %v", ev)
			}
		})
	}

	// What the producer set is kept.
	id, err := auditemit.NewIDGenerator(nil, nil).NewID()
	if err != nil {
		t.Fatal(err)
	}
	at := timestamppb.New(time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC))
	ev := &auditv1.Event{Id: id, Time: at, Type: auditv1.EventType_EVENT_TYPE_ADMIN_ACTION,
		Actor: &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_OPERATOR, Id: "op"}, SourceService: auditv1.SourceService_SOURCE_SERVICE_REGISTRATION}
	if _, err := ob.Op(ctx, ev); err != nil {
		t.Fatal(err)
	}
	if ev.GetId() != id || !proto.Equal(ev.GetTime(), at) {
		t.Fatalf("Op replaced the producer's id or time: %v", ev)
	}

	if _, err := auditemit.NewOutbox(auditemit.OutboxConfig{Service: "billing"}); err == nil {
		t.Fatal("NewOutbox accepted a service that is not an mcpid service")
	}
}

func TestMayEmit(t *testing.T) {
	reg := auditv1.SourceService_SOURCE_SERVICE_REGISTRATION
	tok := auditv1.SourceService_SOURCE_SERVICE_TOKEN
	pol := auditv1.SourceService_SOURCE_SERVICE_POLICY
	aud := auditv1.SourceService_SOURCE_SERVICE_AUDIT
	for _, tc := range []struct {
		svc  auditv1.SourceService
		typ  auditv1.EventType
		want bool
	}{
		{reg, auditv1.EventType_EVENT_TYPE_CLIENT_REGISTERED, true},
		{reg, auditv1.EventType_EVENT_TYPE_CLIENT_SECRET_ROTATED, true},
		{reg, auditv1.EventType_EVENT_TYPE_LOGIN_SUCCEEDED, false},
		{tok, auditv1.EventType_EVENT_TYPE_LOGIN_SUCCEEDED, true},
		{tok, auditv1.EventType_EVENT_TYPE_KEY_ROTATED, true},
		{tok, auditv1.EventType_EVENT_TYPE_POLICY_DECISION, false},
		{pol, auditv1.EventType_EVENT_TYPE_POLICY_DECISION, true},
		{pol, auditv1.EventType_EVENT_TYPE_TOOL_MANIFEST_PUBLISHED, true},
		{pol, auditv1.EventType_EVENT_TYPE_PERSONAL_DATA_ERASED, false},
		{aud, auditv1.EventType_EVENT_TYPE_KEY_ROTATED, true},
		{aud, auditv1.EventType_EVENT_TYPE_PERSONAL_DATA_ERASED, true},
		{aud, auditv1.EventType_EVENT_TYPE_TOKEN_ISSUED, false},
		{reg, auditv1.EventType_EVENT_TYPE_ADMIN_ACTION, true},
		{aud, auditv1.EventType_EVENT_TYPE_ADMIN_ACTION, true},
		{auditv1.SourceService_SOURCE_SERVICE_UNSPECIFIED, auditv1.EventType_EVENT_TYPE_ADMIN_ACTION, false},
		{tok, auditv1.EventType_EVENT_TYPE_UNSPECIFIED, false},
	} {
		if got := auditemit.MayEmit(tc.svc, tc.typ); got != tc.want {
			t.Errorf("MayEmit(%v, %v) = %v, want %v", tc.svc, tc.typ, got, tc.want)
		}
	}
}
