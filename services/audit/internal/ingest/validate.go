package ingest

import (
	"fmt"
	"math"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/lib/auditemit"
	"github.com/mcpid/mcpid/services/audit/internal/chain"
)

// Limits from the contract (Event field comments, AppendEventsRequest).
const (
	maxFutureSkew   = 5 * time.Minute
	maxUserID       = 256
	maxURI          = 2048
	maxShort        = 256
	maxIDField      = 128
	maxScopes       = 100
	maxProtected    = 8 << 10
	maxDetailsBytes = 8 << 10
	maxActorID      = 2048
)

// rejection is why one event is REJECTED.
type rejection struct {
	reason  auditv1.ErrorReason
	message string
}

func invalid(format string, args ...any) *rejection {
	return &rejection{reason: auditv1.ErrorReason_ERROR_REASON_INVALID_EVENT, message: fmt.Sprintf(format, args...)}
}

// validate checks one event from caller (a service name and its
// SourceService) as AppendEvents must, before anything is changed. The
// message names the field and never repeats a value (it could be personal
// data).
func validate(ev *auditv1.Event, callerName string, caller auditv1.SourceService, now time.Time) *rejection {
	if ev == nil {
		return invalid("event: missing")
	}
	if n := proto.Size(ev); n > auditemit.MaxEventSize {
		return &rejection{reason: auditv1.ErrorReason_ERROR_REASON_EVENT_TOO_LARGE,
			message: fmt.Sprintf("event: %d bytes encoded, more than %d", n, auditemit.MaxEventSize)}
	}
	if ev.GetId() == "" {
		return invalid("id: required")
	}
	if _, err := auditemit.IDTime(ev.GetId()); err != nil {
		return invalid("id: not a ULID (26 upper-case Crockford base32 characters)")
	}
	if src := ev.GetSourceService(); src != auditv1.SourceService_SOURCE_SERVICE_UNSPECIFIED && src != caller {
		return &rejection{reason: auditv1.ErrorReason_ERROR_REASON_SOURCE_SERVICE_MISMATCH,
			message: fmt.Sprintf("source_service: %v is not the caller %q", src, callerName)}
	}
	kind := ev.GetActor().GetKind()
	if _, known := auditv1.ActorKind_name[int32(kind)]; !known || kind == auditv1.ActorKind_ACTOR_KIND_UNSPECIFIED {
		return invalid("actor.kind: required")
	}
	if kind == auditv1.ActorKind_ACTOR_KIND_SERVICE && ev.GetActor().GetId() != callerName {
		return &rejection{reason: auditv1.ErrorReason_ERROR_REASON_SOURCE_SERVICE_MISMATCH,
			message: fmt.Sprintf("actor.id: a SERVICE actor must be the caller %q", callerName)}
	}
	if len(ev.GetActor().GetId()) > maxActorID {
		return invalid("actor.id: longer than %d bytes", maxActorID)
	}
	if len(ev.GetActor().GetDisplay()) > maxShort {
		return invalid("actor.display: longer than %d bytes", maxShort)
	}
	t := ev.GetType()
	if _, known := auditv1.EventType_name[int32(t)]; !known || t == auditv1.EventType_EVENT_TYPE_UNSPECIFIED {
		return invalid("type: required")
	}
	if !auditemit.MayEmit(caller, t) {
		return &rejection{reason: auditv1.ErrorReason_ERROR_REASON_EVENT_TYPE_NOT_ALLOWED,
			message: fmt.Sprintf("type: %q may not emit %v", callerName, t)}
	}
	if ev.GetTime() == nil {
		return invalid("time: required")
	}
	if err := ev.GetTime().CheckValid(); err != nil {
		return invalid("time: not a valid timestamp")
	}
	if ev.GetTime().AsTime().After(now.Add(maxFutureSkew)) {
		return invalid("time: more than %v ahead of the audit service's clock", maxFutureSkew)
	}
	for _, f := range []struct {
		name  string
		value string
		max   int
	}{
		{"user_id", ev.GetUserId(), maxUserID},
		{"client_id", ev.GetClientId(), maxURI},
		{"resource", ev.GetResource(), maxURI},
		{"tool", ev.GetTool(), maxShort},
		{"reason", ev.GetReason(), maxShort},
		{"grant_id", ev.GetGrantId(), maxIDField},
		{"token_id", ev.GetTokenId(), maxIDField},
		{"decision_id", ev.GetDecisionId(), maxIDField},
		{"connector_id", ev.GetConnectorId(), maxIDField},
	} {
		if len(f.value) > f.max {
			return invalid("%s: longer than %d bytes", f.name, f.max)
		}
	}
	if tr := ev.GetTraceId(); tr != "" && !isTraceID(tr) {
		return invalid("trace_id: not 32 lower-case hex digits")
	}
	if len(ev.GetScopes()) > maxScopes {
		return invalid("scopes: more than %d entries", maxScopes)
	}
	for i, s := range ev.GetScopes() {
		if s == "" || len(s) > maxShort {
			return invalid("scopes[%d]: empty or longer than %d bytes", i, maxShort)
		}
	}
	d := ev.GetDecision()
	if _, known := auditv1.Decision_name[int32(d)]; !known {
		return invalid("decision: unknown value")
	}
	if t == auditv1.EventType_EVENT_TYPE_POLICY_DECISION {
		if d == auditv1.Decision_DECISION_UNSPECIFIED {
			return invalid("decision: required for policy decisions")
		}
	} else if d != auditv1.Decision_DECISION_UNSPECIFIED {
		return invalid("decision: only policy decisions carry one")
	}
	for _, f := range chain.Fields {
		p := f.Get(ev)
		if p == nil {
			continue
		}
		if p.Value == nil {
			return invalid("%s.value: required when %s is present", f.Name, f.Name)
		}
		if len(p.GetValue()) > maxProtected {
			return invalid("%s.value: longer than %d bytes", f.Name, maxProtected)
		}
	}
	if det := ev.GetDetails(); det != nil {
		if n := proto.Size(det); n > maxDetailsBytes {
			return invalid("details: %d bytes encoded, more than %d", n, maxDetailsBytes)
		}
		if path := nonFinite(structpb.NewStructValue(det), "details", 0); path != "" {
			return invalid("%s: not a finite number or not a JSON value", path)
		}
	}
	return nil
}

func isTraceID(s string) bool {
	if len(s) != 32 {
		return false
	}
	zero := true
	for i := range len(s) {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
		zero = zero && c == '0'
	}
	return !zero
}

// nonFinite returns the path of the first number in v that JSON cannot
// carry (NaN, infinity) or of a value with no kind, or "".
func nonFinite(v *structpb.Value, path string, depth int) string {
	if depth > 64 {
		return path
	}
	switch k := v.GetKind().(type) {
	case *structpb.Value_NumberValue:
		if math.IsNaN(k.NumberValue) || math.IsInf(k.NumberValue, 0) {
			return path
		}
	case *structpb.Value_StructValue:
		for key, f := range k.StructValue.GetFields() {
			if p := nonFinite(f, path+"."+key, depth+1); p != "" {
				return p
			}
		}
	case *structpb.Value_ListValue:
		for i, e := range k.ListValue.GetValues() {
			if p := nonFinite(e, fmt.Sprintf("%s[%d]", path, i), depth+1); p != "" {
				return p
			}
		}
	case nil:
		return path
	}
	return ""
}

// normalize fills what audit decides (source_service) and clears what the
// producer may not set (output-only fields), as the contract says: they are
// ignored and overwritten.
func normalize(ev *auditv1.Event, caller auditv1.SourceService) {
	ev.SourceService = caller
	ev.Sequence, ev.AppendTime, ev.HashVersion, ev.PrevHash, ev.Hash, ev.EraseTime = 0, nil, 0, nil, nil, nil
	if ev.GetDetails() != nil && len(ev.GetDetails().GetFields()) == 0 {
		ev.Details = nil // "Audit stores an empty Struct as unset"
	}
	for _, f := range chain.Fields {
		if p := f.Get(ev); p != nil {
			f.Set(ev, &auditv1.Protected{Value: p.Value})
		}
	}
	ev.ProtoReflect().SetUnknown(nil)
	if a := ev.GetActor(); a != nil {
		a.ProtoReflect().SetUnknown(nil)
	}
}
