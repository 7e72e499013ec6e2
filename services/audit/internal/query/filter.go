// Package query reads the retained chain for operators: QueryEvents (filters
// and pagination) and TailEvents (a resumable live stream).
package query

import (
	"fmt"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/lib/resource"
	"github.com/mcpid/mcpid/services/audit/internal/errs"
)

// maxValues bounds each repeated filter field (EventFilter).
const maxValues = 50

// Filter is a compiled EventFilter: alternatives within a field, all fields
// must match, an empty field matches everything.
type Filter struct {
	types      map[auditv1.EventType]bool
	clientIDs  map[string]bool
	userIDs    map[string]bool
	resources  map[string]bool
	tools      map[string]bool
	decision   auditv1.Decision
	actorKinds map[auditv1.ActorKind]bool
	actorIDs   map[string]bool
	sources    map[auditv1.SourceService]bool
	traceID    string
	grantIDs   map[string]bool
}

func set[T comparable](vals []T) map[T]bool {
	if len(vals) == 0 {
		return nil
	}
	m := make(map[T]bool, len(vals))
	for _, v := range vals {
		m[v] = true
	}
	return m
}

// CompileFilter validates f (field names in errors start with path) and
// compiles it; nil matches everything.
func CompileFilter(f *auditv1.EventFilter, path string) (*Filter, error) {
	c := &Filter{}
	if f == nil {
		return c, nil
	}
	for name, n := range map[string]int{
		"types": len(f.GetTypes()), "client_ids": len(f.GetClientIds()), "user_ids": len(f.GetUserIds()),
		"resources": len(f.GetResources()), "tools": len(f.GetTools()), "actor_kinds": len(f.GetActorKinds()),
		"actor_ids": len(f.GetActorIds()), "source_services": len(f.GetSourceServices()), "grant_ids": len(f.GetGrantIds()),
	} {
		if n > maxValues {
			return nil, errs.Field(path+"."+name, "at most %d values", maxValues)
		}
	}
	for i, t := range f.GetTypes() {
		if _, ok := auditv1.EventType_name[int32(t)]; !ok || t == auditv1.EventType_EVENT_TYPE_UNSPECIFIED {
			return nil, errs.Field(fmt.Sprintf("%s.types[%d]", path, i), "not an event type")
		}
	}
	for i, k := range f.GetActorKinds() {
		if _, ok := auditv1.ActorKind_name[int32(k)]; !ok || k == auditv1.ActorKind_ACTOR_KIND_UNSPECIFIED {
			return nil, errs.Field(fmt.Sprintf("%s.actor_kinds[%d]", path, i), "not an actor kind")
		}
	}
	for i, s := range f.GetSourceServices() {
		if _, ok := auditv1.SourceService_name[int32(s)]; !ok || s == auditv1.SourceService_SOURCE_SERVICE_UNSPECIFIED {
			return nil, errs.Field(fmt.Sprintf("%s.source_services[%d]", path, i), "not a source service")
		}
	}
	if _, ok := auditv1.Decision_name[int32(f.GetDecision())]; !ok {
		return nil, errs.Field(path+".decision", "not a decision")
	}
	var resources []string
	for i, r := range f.GetResources() {
		canon, err := resource.Canonicalize(r)
		if err != nil {
			return nil, errs.Field(fmt.Sprintf("%s.resources[%d]", path, i), "not a resource URI")
		}
		resources = append(resources, canon)
	}
	if t := f.GetTraceId(); t != "" && !isHex32(t) {
		return nil, errs.Field(path+".trace_id", "not 32 lower-case hex digits")
	}
	c.types = set(f.GetTypes())
	c.clientIDs = set(f.GetClientIds())
	c.userIDs = set(f.GetUserIds())
	c.resources = set(resources)
	c.tools = set(f.GetTools())
	c.decision = f.GetDecision()
	c.actorKinds = set(f.GetActorKinds())
	c.actorIDs = set(f.GetActorIds())
	c.sources = set(f.GetSourceServices())
	c.traceID = f.GetTraceId()
	c.grantIDs = set(f.GetGrantIds())
	return c, nil
}

func isHex32(s string) bool {
	if len(s) != 32 {
		return false
	}
	for i := range len(s) {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func in[T comparable](m map[T]bool, v T) bool { return m == nil || m[v] }

// Match reports whether ev passes the filter.
func (f *Filter) Match(ev *auditv1.Event) bool {
	if f.decision != auditv1.Decision_DECISION_UNSPECIFIED &&
		(ev.GetType() != auditv1.EventType_EVENT_TYPE_POLICY_DECISION || ev.GetDecision() != f.decision) {
		return false
	}
	return in(f.types, ev.GetType()) && in(f.clientIDs, ev.GetClientId()) && in(f.userIDs, ev.GetUserId()) &&
		in(f.resources, ev.GetResource()) && in(f.tools, ev.GetTool()) &&
		in(f.actorKinds, ev.GetActor().GetKind()) && in(f.actorIDs, ev.GetActor().GetId()) &&
		in(f.sources, ev.GetSourceService()) && (f.traceID == "" || f.traceID == ev.GetTraceId()) &&
		in(f.grantIDs, ev.GetGrantId())
}
