package server_test

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/lib/apierr"
	"github.com/mcpid/mcpid/lib/devca"
	"github.com/mcpid/mcpid/services/audit/internal/chain"
)

func reasonOf(err error) string {
	if info := apierr.Info(err); info != nil {
		return info.GetReason()
	}
	return ""
}

func wantErr(t *testing.T, what string, err error, code codes.Code, reason auditv1.ErrorReason) {
	t.Helper()
	if status.Code(err) != code || reasonOf(err) != reason.String() {
		t.Fatalf("%s: %v (reason %q), want %v / %v", what, err, reasonOf(err), code, reason)
	}
}

func TestAppendOnlyByServices(t *testing.T) {
	e := newEnv(t)
	r := e.start(t, nil)
	ev := e.decision(t, "c1", "search", auditv1.Decision_DECISION_ALLOW)

	_, err := e.as(t, r, nil).AppendEvents(testCtx(t), &auditv1.AppendEventsRequest{Events: []*auditv1.Event{ev}})
	wantErr(t, "anonymous", err, codes.Unauthenticated, auditv1.ErrorReason_ERROR_REASON_CALLER_UNAUTHENTICATED)
	_, err = e.as(t, r, e.operator(t, devca.RoleAdmin)).AppendEvents(testCtx(t), &auditv1.AppendEventsRequest{Events: []*auditv1.Event{ev}})
	wantErr(t, "operator", err, codes.PermissionDenied, auditv1.ErrorReason_ERROR_REASON_CALLER_NOT_ALLOWED)
	_, err = e.as(t, r, e.service(t, devca.ServicePolicy)).QueryEvents(testCtx(t), &auditv1.QueryEventsRequest{})
	wantErr(t, "service reading", err, codes.PermissionDenied, auditv1.ErrorReason_ERROR_REASON_CALLER_NOT_ALLOWED)

	res := appendOK(t, e.as(t, r, e.service(t, devca.ServicePolicy)), ev)
	if res[0].GetSequence() == 0 || len(res[0].GetHash()) != 32 {
		t.Fatalf("first event: %v", res[0])
	}
}

func TestAppendResultsPerEvent(t *testing.T) {
	e := newEnv(t)
	r := e.start(t, nil)
	policy := e.as(t, r, e.service(t, devca.ServicePolicy))
	ctx := testCtx(t)

	first := e.decision(t, "c1", "search", auditv1.Decision_DECISION_DENY)
	firstRes := appendOK(t, policy, proto.Clone(first).(*auditv1.Event))

	mk := func(mod func(ev *auditv1.Event)) *auditv1.Event {
		ev := e.decision(t, "c1", "tool", auditv1.Decision_DECISION_ALLOW)
		mod(ev)
		return ev
	}
	conflict := proto.Clone(first).(*auditv1.Event)
	conflict.Tool = "something else"
	big := strings.Repeat("x", 8<<10)
	huge := mk(func(ev *auditv1.Event) {
		ev.ToolArguments.Value = &big
		ev.UserAgent = &auditv1.Protected{Value: &big}
		ev.UserEmail = &auditv1.Protected{Value: &big}
		ev.UserName = &auditv1.Protected{Value: &big}
	})
	nan, _ := structpb.NewValue(1.0)
	nan.Kind = &structpb.Value_NumberValue{NumberValue: math.NaN()}
	good := mk(func(*auditv1.Event) {})
	cases := []struct {
		name   string
		ev     *auditv1.Event
		status auditv1.AppendEventStatus
		reason auditv1.ErrorReason
	}{
		{"valid", good, auditv1.AppendEventStatus_APPEND_EVENT_STATUS_APPENDED, 0},
		{"resend", proto.Clone(first).(*auditv1.Event), auditv1.AppendEventStatus_APPEND_EVENT_STATUS_DUPLICATE, 0},
		{"same id again in the call", proto.Clone(good).(*auditv1.Event), auditv1.AppendEventStatus_APPEND_EVENT_STATUS_DUPLICATE, 0},
		{"reused id", conflict, auditv1.AppendEventStatus_APPEND_EVENT_STATUS_REJECTED, auditv1.ErrorReason_ERROR_REASON_EVENT_ID_CONFLICT},
		{"other service's source", mk(func(ev *auditv1.Event) { ev.SourceService = auditv1.SourceService_SOURCE_SERVICE_TOKEN }),
			auditv1.AppendEventStatus_APPEND_EVENT_STATUS_REJECTED, auditv1.ErrorReason_ERROR_REASON_SOURCE_SERVICE_MISMATCH},
		{"other service as actor", mk(func(ev *auditv1.Event) {
			ev.Actor = &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_SERVICE, Id: "token"}
		}),
			auditv1.AppendEventStatus_APPEND_EVENT_STATUS_REJECTED, auditv1.ErrorReason_ERROR_REASON_SOURCE_SERVICE_MISMATCH},
		{"type policy may not emit", mk(func(ev *auditv1.Event) {
			ev.Type, ev.Decision = auditv1.EventType_EVENT_TYPE_LOGIN_SUCCEEDED, auditv1.Decision_DECISION_UNSPECIFIED
		}), auditv1.AppendEventStatus_APPEND_EVENT_STATUS_REJECTED, auditv1.ErrorReason_ERROR_REASON_EVENT_TYPE_NOT_ALLOWED},
		{"no id", mk(func(ev *auditv1.Event) { ev.Id = "" }), auditv1.AppendEventStatus_APPEND_EVENT_STATUS_REJECTED, auditv1.ErrorReason_ERROR_REASON_INVALID_EVENT},
		{"id not a ULID", mk(func(ev *auditv1.Event) { ev.Id = "not-an-id" }), auditv1.AppendEventStatus_APPEND_EVENT_STATUS_REJECTED, auditv1.ErrorReason_ERROR_REASON_INVALID_EVENT},
		{"no time", mk(func(ev *auditv1.Event) { ev.Time = nil }), auditv1.AppendEventStatus_APPEND_EVENT_STATUS_REJECTED, auditv1.ErrorReason_ERROR_REASON_INVALID_EVENT},
		{"time in the future", mk(func(ev *auditv1.Event) { ev.Time = timestamppb.New(time.Now().Add(time.Hour)) }),
			auditv1.AppendEventStatus_APPEND_EVENT_STATUS_REJECTED, auditv1.ErrorReason_ERROR_REASON_INVALID_EVENT},
		{"no actor", mk(func(ev *auditv1.Event) { ev.Actor = nil }), auditv1.AppendEventStatus_APPEND_EVENT_STATUS_REJECTED, auditv1.ErrorReason_ERROR_REASON_INVALID_EVENT},
		{"no type", mk(func(ev *auditv1.Event) { ev.Type = 0 }), auditv1.AppendEventStatus_APPEND_EVENT_STATUS_REJECTED, auditv1.ErrorReason_ERROR_REASON_INVALID_EVENT},
		{"decision missing", mk(func(ev *auditv1.Event) { ev.Decision = 0 }), auditv1.AppendEventStatus_APPEND_EVENT_STATUS_REJECTED, auditv1.ErrorReason_ERROR_REASON_INVALID_EVENT},
		{"protected without cleartext", mk(func(ev *auditv1.Event) { ev.UserAgent = &auditv1.Protected{} }),
			auditv1.AppendEventStatus_APPEND_EVENT_STATUS_REJECTED, auditv1.ErrorReason_ERROR_REASON_INVALID_EVENT},
		{"field too long", mk(func(ev *auditv1.Event) { ev.Tool = strings.Repeat("t", 300) }), auditv1.AppendEventStatus_APPEND_EVENT_STATUS_REJECTED, auditv1.ErrorReason_ERROR_REASON_INVALID_EVENT},
		{"bad trace id", mk(func(ev *auditv1.Event) { ev.TraceId = "XYZ" }), auditv1.AppendEventStatus_APPEND_EVENT_STATUS_REJECTED, auditv1.ErrorReason_ERROR_REASON_INVALID_EVENT},
		{"non-finite detail", mk(func(ev *auditv1.Event) { ev.Details = &structpb.Struct{Fields: map[string]*structpb.Value{"x": nan}} }),
			auditv1.AppendEventStatus_APPEND_EVENT_STATUS_REJECTED, auditv1.ErrorReason_ERROR_REASON_INVALID_EVENT},
		{"too large", huge, auditv1.AppendEventStatus_APPEND_EVENT_STATUS_REJECTED, auditv1.ErrorReason_ERROR_REASON_EVENT_TOO_LARGE},
	}
	req := &auditv1.AppendEventsRequest{}
	for _, c := range cases {
		req.Events = append(req.Events, c.ev)
	}
	resp, err := policy.AppendEvents(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetResults()) != len(cases) {
		t.Fatalf("%d results for %d events", len(resp.GetResults()), len(cases))
	}
	for i, c := range cases {
		r := resp.GetResults()[i]
		if r.GetStatus() != c.status || r.GetReason() != c.reason || r.GetEventId() != c.ev.GetId() {
			t.Errorf("%s: %v %v %q, want %v %v", c.name, r.GetStatus(), r.GetReason(), r.GetMessage(), c.status, c.reason)
		}
		if c.status == auditv1.AppendEventStatus_APPEND_EVENT_STATUS_REJECTED && (r.GetSequence() != 0 || r.GetMessage() == "") {
			t.Errorf("%s: rejected with sequence %d, message %q", c.name, r.GetSequence(), r.GetMessage())
		}
	}
	if d := resp.GetResults()[1]; d.GetSequence() != firstRes[0].GetSequence() || !bytes.Equal(d.GetHash(), firstRes[0].GetHash()) {
		t.Errorf("duplicate answered %d, want the original %d", d.GetSequence(), firstRes[0].GetSequence())
	}
	if d := resp.GetResults()[2]; d.GetSequence() != resp.GetResults()[0].GetSequence() {
		t.Errorf("in-call duplicate answered %d, want %d", d.GetSequence(), resp.GetResults()[0].GetSequence())
	}

	// Only the two new events were chained, once each.
	evs := producedEvents(t, e.as(t, r, e.operator(t, devca.RoleAuditor)))
	if len(evs) != 2 {
		t.Fatalf("chain holds %d events, want 2", len(evs))
	}
	stored := evs[1]
	if stored.GetSourceService() != auditv1.SourceService_SOURCE_SERVICE_POLICY || stored.GetHashVersion() != 1 ||
		stored.GetToolArguments().GetValue() == "" || len(stored.GetToolArguments().GetSalt()) != 16 ||
		!bytes.Equal(stored.GetToolArguments().GetDigest(), chain.Digest(stored.GetToolArguments().GetSalt(), stored.GetToolArguments().GetValue())) {
		t.Fatalf("stored event lacks what audit fills in: %v", stored)
	}
}

func TestAppendBatchLimits(t *testing.T) {
	e := newEnv(t)
	r := e.start(t, nil)
	policy := e.as(t, r, e.service(t, devca.ServicePolicy))
	_, err := policy.AppendEvents(testCtx(t), &auditv1.AppendEventsRequest{})
	wantErr(t, "empty batch", err, codes.InvalidArgument, auditv1.ErrorReason_ERROR_REASON_INVALID_FIELD)
	req := &auditv1.AppendEventsRequest{}
	for range 501 {
		req.Events = append(req.Events, e.decision(t, "c", "t", auditv1.Decision_DECISION_ALLOW))
	}
	_, err = policy.AppendEvents(testCtx(t), req)
	wantErr(t, "501 events", err, codes.InvalidArgument, auditv1.ErrorReason_ERROR_REASON_BATCH_TOO_LARGE)
	if n := len(producedEvents(t, e.as(t, r, e.operator(t, devca.RoleAuditor)))); n != 0 {
		t.Fatalf("a refused batch chained %d events", n)
	}
}

// A call larger than one etcd request is chained as several batch keys
// under the append lock, still contiguously and in request order.
func TestLargeCallSpansSeveralBatches(t *testing.T) {
	e := newEnv(t)
	r := e.start(t, nil)
	policy := e.as(t, r, e.service(t, devca.ServicePolicy))
	args := strings.Repeat("a", 7<<10)
	req := &auditv1.AppendEventsRequest{}
	for range 400 { // about 3 MiB
		ev := e.decision(t, "c", "t", auditv1.Decision_DECISION_ALLOW)
		ev.ToolArguments.Value = &args
		req.Events = append(req.Events, ev)
	}
	res := appendOK(t, policy, req.Events...)
	for i, x := range res {
		if x.GetSequence() != res[0].GetSequence()+uint64(i) {
			t.Fatalf("event %d chained at %d", i, x.GetSequence())
		}
	}
	if v := verifyChain(t, e.as(t, r, e.operator(t, devca.RoleAuditor)), nil); !v.GetIntact() || v.GetEventsChecked() < 400 {
		t.Fatalf("verify: %v", v)
	}
}
