package auditemit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
)

// Limits of AppendEvents (AppendEventsRequest.events).
const (
	// MaxEventSize is the largest encoded event audit accepts.
	MaxEventSize = 32 << 10
	// MaxBatchEvents is the most events one AppendEvents call may carry.
	MaxBatchEvents = 500
	// MaxBatchBytes is the largest encoded AppendEventsRequest.
	MaxBatchBytes = 4 << 20
)

// ErrInvalidEvent means the event is one the audit service would reject
// whatever the retries (the message says what is wrong). Nothing was written
// or queued.
var ErrInvalidEvent = errors.New("auditemit: invalid event")

// Appender is where events are delivered: the audit service's AppendEvents.
// The generated auditv1.AuditServiceClient satisfies it.
type Appender interface {
	AppendEvents(ctx context.Context, in *auditv1.AppendEventsRequest, opts ...grpc.CallOption) (*auditv1.AppendEventsResponse, error)
}

var _ Appender = auditv1.AuditServiceClient(nil)

// SourceServiceOf returns the SourceService of an mcpid service name
// ("registration", "token", "policy", "audit"), the name the service has in
// its etcd prefix and its mTLS identity.
func SourceServiceOf(name string) (auditv1.SourceService, error) {
	switch name {
	case "registration":
		return auditv1.SourceService_SOURCE_SERVICE_REGISTRATION, nil
	case "token":
		return auditv1.SourceService_SOURCE_SERVICE_TOKEN, nil
	case "policy":
		return auditv1.SourceService_SOURCE_SERVICE_POLICY, nil
	case "audit":
		return auditv1.SourceService_SOURCE_SERVICE_AUDIT, nil
	}
	return auditv1.SourceService_SOURCE_SERVICE_UNSPECIFIED, fmt.Errorf("auditemit: %q is not an mcpid service that emits audit events", name)
}

// MayEmit reports whether service may emit events of type t: the table the
// contract writes on each EventType value, which AppendEvents enforces with
// EVENT_TYPE_NOT_ALLOWED.
func MayEmit(service auditv1.SourceService, t auditv1.EventType) bool {
	if t == auditv1.EventType_EVENT_TYPE_ADMIN_ACTION {
		return service != auditv1.SourceService_SOURCE_SERVICE_UNSPECIFIED
	}
	switch service {
	case auditv1.SourceService_SOURCE_SERVICE_REGISTRATION:
		return t >= auditv1.EventType_EVENT_TYPE_CLIENT_REGISTERED && t <= auditv1.EventType_EVENT_TYPE_CLIENT_SECRET_ROTATED
	case auditv1.SourceService_SOURCE_SERVICE_TOKEN:
		return t >= auditv1.EventType_EVENT_TYPE_LOGIN_SUCCEEDED && t <= auditv1.EventType_EVENT_TYPE_KEY_ROTATED
	case auditv1.SourceService_SOURCE_SERVICE_POLICY:
		return t >= auditv1.EventType_EVENT_TYPE_POLICY_DECISION && t <= auditv1.EventType_EVENT_TYPE_TOOL_MANIFEST_PUBLISHED
	case auditv1.SourceService_SOURCE_SERVICE_AUDIT:
		return t == auditv1.EventType_EVENT_TYPE_KEY_ROTATED || t == auditv1.EventType_EVENT_TYPE_PERSONAL_DATA_ERASED
	}
	return false
}

// stamper validates events of one service and fills in what the producer
// may leave unset. Shared by Outbox and Batcher.
type stamper struct {
	name    string
	service auditv1.SourceService
	ids     *IDGenerator
	now     func() time.Time
}

func newStamper(name string, ids *IDGenerator, now func() time.Time) (stamper, error) {
	svc, err := SourceServiceOf(name)
	if err != nil {
		return stamper{}, err
	}
	if now == nil {
		now = time.Now
	}
	if ids == nil {
		ids = NewIDGenerator(now, nil)
	}
	return stamper{name: name, service: svc, ids: ids, now: now}, nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidEvent, fmt.Sprintf(format, args...))
}

// stamp validates ev and fills its id, time, source_service and trace_id when
// unset (trace_id from ctx's span). It returns the encoded size. On error ev
// is left as it was.
func (s *stamper) stamp(ctx context.Context, ev *auditv1.Event) (int, error) {
	if ev == nil {
		return 0, invalid("nil event")
	}
	if _, known := auditv1.EventType_name[int32(ev.GetType())]; !known || ev.GetType() == auditv1.EventType_EVENT_TYPE_UNSPECIFIED {
		return 0, invalid("type %v is not an event type", ev.GetType())
	}
	if !MayEmit(s.service, ev.GetType()) {
		return 0, invalid("service %q may not emit %v", s.name, ev.GetType())
	}
	kind := ev.GetActor().GetKind()
	if _, known := auditv1.ActorKind_name[int32(kind)]; !known || kind == auditv1.ActorKind_ACTOR_KIND_UNSPECIFIED {
		return 0, invalid("actor kind %v is not an actor kind", kind)
	}
	if kind == auditv1.ActorKind_ACTOR_KIND_SERVICE && ev.GetActor().GetId() != s.name {
		// Audit answers SOURCE_SERVICE_MISMATCH: a service actor is the
		// emitting service itself.
		return 0, invalid("service actor %q is not the emitting service %q", ev.GetActor().GetId(), s.name)
	}
	if src := ev.GetSourceService(); src != auditv1.SourceService_SOURCE_SERVICE_UNSPECIFIED && src != s.service {
		return 0, invalid("source_service %v is not %v", src, s.service)
	}
	if ev.GetId() != "" {
		if _, err := IDTime(ev.GetId()); err != nil {
			return 0, invalid("id: %v", err)
		}
	}
	if ev.GetTime() != nil {
		if err := ev.GetTime().CheckValid(); err != nil {
			return 0, invalid("time: %v", err)
		}
	}

	var filledID, filledTime, filledSource, filledTrace bool
	if ev.GetId() == "" {
		id, err := s.ids.NewID()
		if err != nil {
			return 0, err
		}
		ev.Id, filledID = id, true
	}
	if ev.GetTime() == nil {
		ev.Time, filledTime = timestamppb.New(s.now()), true
	}
	if ev.GetSourceService() == auditv1.SourceService_SOURCE_SERVICE_UNSPECIFIED {
		ev.SourceService, filledSource = s.service, true
	}
	if sc := trace.SpanContextFromContext(ctx); ev.GetTraceId() == "" && sc.HasTraceID() {
		ev.TraceId, filledTrace = sc.TraceID().String(), true
	}
	size := proto.Size(ev)
	if size > MaxEventSize {
		if filledID {
			ev.Id = ""
		}
		if filledTime {
			ev.Time = nil
		}
		if filledSource {
			ev.SourceService = auditv1.SourceService_SOURCE_SERVICE_UNSPECIFIED
		}
		if filledTrace {
			ev.TraceId = ""
		}
		return 0, invalid("%d bytes encoded, more than %d", size, MaxEventSize)
	}
	return size, nil
}

// checkResponse verifies that resp acknowledges every event of req, in
// order, with a known status. Anything else is treated as a failed call and
// retried: the events that were appended come back DUPLICATE.
func checkResponse(req *auditv1.AppendEventsRequest, resp *auditv1.AppendEventsResponse) error {
	if len(resp.GetResults()) != len(req.GetEvents()) {
		return fmt.Errorf("auditemit: audit answered %d results for %d events", len(resp.GetResults()), len(req.GetEvents()))
	}
	for i, r := range resp.GetResults() {
		if r.GetEventId() != req.GetEvents()[i].GetId() {
			return fmt.Errorf("auditemit: result %d is for event %q, sent %q", i, r.GetEventId(), req.GetEvents()[i].GetId())
		}
		switch r.GetStatus() {
		case auditv1.AppendEventStatus_APPEND_EVENT_STATUS_APPENDED,
			auditv1.AppendEventStatus_APPEND_EVENT_STATUS_DUPLICATE,
			auditv1.AppendEventStatus_APPEND_EVENT_STATUS_REJECTED:
		default:
			return fmt.Errorf("auditemit: result %d (event %q) has status %v", i, r.GetEventId(), r.GetStatus())
		}
	}
	return nil
}

// acknowledged reports whether audit holds the event (the producer may
// forget it).
func acknowledged(s auditv1.AppendEventStatus) bool {
	return s == auditv1.AppendEventStatus_APPEND_EVENT_STATUS_APPENDED ||
		s == auditv1.AppendEventStatus_APPEND_EVENT_STATUS_DUPLICATE
}

// requestEntrySize is how many bytes an event of size n adds to an
// AppendEventsRequest: its tag, length and body.
func requestEntrySize(n int) int {
	return protowire.SizeTag(1) + protowire.SizeBytes(n)
}
