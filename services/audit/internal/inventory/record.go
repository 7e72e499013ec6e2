// Package inventory is the agent inventory: a projection of the chain per
// client (activity, allow/deny counts, last known registration facts),
// maintained by the elected replica as events are chained and kept beyond
// the retention window, enriched on read from the registration and token
// services when they answer.
package inventory

import (
	"encoding/json"
	"slices"
	"sort"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
)

// Bounds that keep one record far below etcd's value limit.
const (
	maxResources = 200
	maxTools     = 200
)

// Record is the stored projection of one client.
type Record struct {
	ClientID     string                          `json:"client_id"`
	ClientName   string                          `json:"client_name,omitempty"`
	Source       auditv1.AgentSource             `json:"source,omitempty"`
	Verification auditv1.AgentVerificationStatus `json:"verification,omitempty"`
	State        auditv1.AgentState              `json:"state,omitempty"`
	RegisterTime *time.Time                      `json:"register_time,omitempty"`
	RemoveTime   *time.Time                      `json:"remove_time,omitempty"`
	FirstSeen    time.Time                       `json:"first_seen"`
	LastSeen     time.Time                       `json:"last_seen"`
	EventCount   uint64                          `json:"event_count"`
	Allow        uint64                          `json:"allow"`
	Deny         uint64                          `json:"deny"`
	Resources    map[string]*ResourceUse         `json:"resources,omitempty"`
	// AsOf is the last chain sequence applied: replaying a batch after a
	// crash skips what is already counted.
	AsOf uint64 `json:"as_of"`
}

// ResourceUse is a client's use of one resource.
type ResourceUse struct {
	Allow    uint64              `json:"allow"`
	Deny     uint64              `json:"deny"`
	LastUsed time.Time           `json:"last_used,omitzero"` // last policy decision
	LastSeen time.Time           `json:"last_seen"`          // last event naming it
	Tools    map[string]*ToolUse `json:"tools,omitempty"`
}

// ToolUse is a client's use of one tool.
type ToolUse struct {
	Allow    uint64    `json:"allow"`
	Deny     uint64    `json:"deny"`
	LastUsed time.Time `json:"last_used"`
}

func decodeRecord(b []byte) (*Record, error) {
	r := &Record{}
	if err := json.Unmarshal(b, r); err != nil {
		return nil, err
	}
	return r, nil
}

// apply adds one event (naming r's client) to the record.
func (r *Record) apply(ev *auditv1.Event) {
	t := ev.GetTime().AsTime()
	if r.FirstSeen.IsZero() || t.Before(r.FirstSeen) {
		r.FirstSeen = t
	}
	if t.After(r.LastSeen) {
		r.LastSeen = t
	}
	r.EventCount++
	r.AsOf = ev.GetSequence()
	details := ev.GetDetails().GetFields()
	str := func(k string) string { return details[k].GetStringValue() }

	switch ev.GetType() {
	case auditv1.EventType_EVENT_TYPE_CLIENT_REGISTERED:
		r.State, r.RegisterTime, r.RemoveTime = auditv1.AgentState_AGENT_STATE_ACTIVE, &t, nil
		if n := str("client_name"); n != "" {
			r.ClientName = n
		}
		if s, ok := sources[str("source")]; ok {
			r.Source = s
		}
		if v, ok := statuses[str("verification_status")]; ok {
			r.Verification = v
		}
	case auditv1.EventType_EVENT_TYPE_CLIENT_UPDATED:
		if n := str("client_name"); n != "" {
			r.ClientName = n
		}
	case auditv1.EventType_EVENT_TYPE_CLIENT_VERIFIED:
		r.Verification = auditv1.AgentVerificationStatus_AGENT_VERIFICATION_STATUS_VERIFIED
	case auditv1.EventType_EVENT_TYPE_CLIENT_UNVERIFIED:
		r.Verification = auditv1.AgentVerificationStatus_AGENT_VERIFICATION_STATUS_UNVERIFIED
	case auditv1.EventType_EVENT_TYPE_CLIENT_SUSPENDED:
		r.Verification = auditv1.AgentVerificationStatus_AGENT_VERIFICATION_STATUS_SUSPENDED
	case auditv1.EventType_EVENT_TYPE_CLIENT_DELETED:
		r.State, r.RemoveTime = auditv1.AgentState_AGENT_STATE_DELETED, &t
	case auditv1.EventType_EVENT_TYPE_CLIENT_EXPIRED:
		r.State, r.RemoveTime = auditv1.AgentState_AGENT_STATE_EXPIRED, &t
	}

	res := ev.GetResource()
	if res == "" {
		return
	}
	if r.Resources == nil {
		r.Resources = map[string]*ResourceUse{}
	}
	u := r.Resources[res]
	if u == nil {
		u = &ResourceUse{}
		r.Resources[res] = u
		trim(r.Resources, maxResources, func(u *ResourceUse) time.Time { return u.LastSeen })
	}
	if t.After(u.LastSeen) {
		u.LastSeen = t
	}
	if ev.GetType() != auditv1.EventType_EVENT_TYPE_POLICY_DECISION {
		return
	}
	w := uint64(max(ev.GetSampleWeight(), 1))
	allow := ev.GetDecision() == auditv1.Decision_DECISION_ALLOW
	if allow {
		r.Allow += w
		u.Allow += w
	} else {
		r.Deny += w
		u.Deny += w
	}
	if t.After(u.LastUsed) {
		u.LastUsed = t
	}
	if tool := ev.GetTool(); tool != "" {
		if u.Tools == nil {
			u.Tools = map[string]*ToolUse{}
		}
		tu := u.Tools[tool]
		if tu == nil {
			tu = &ToolUse{}
			u.Tools[tool] = tu
			trim(u.Tools, maxTools, func(t *ToolUse) time.Time { return t.LastUsed })
		}
		if allow {
			tu.Allow += w
		} else {
			tu.Deny += w
		}
		if t.After(tu.LastUsed) {
			tu.LastUsed = t
		}
	}
}

// trim drops the least recently used entries beyond limit.
func trim[T any](m map[string]T, limit int, last func(T) time.Time) {
	for len(m) > limit {
		oldest, first := "", true
		for k, v := range m {
			if first || last(v).Before(last(m[oldest])) {
				oldest, first = k, false
			}
		}
		delete(m, oldest)
	}
}

var sources = map[string]auditv1.AgentSource{
	"cimd": auditv1.AgentSource_AGENT_SOURCE_CIMD, "dcr": auditv1.AgentSource_AGENT_SOURCE_DCR,
	"operator": auditv1.AgentSource_AGENT_SOURCE_OPERATOR, "pre_registered": auditv1.AgentSource_AGENT_SOURCE_PRE_REGISTERED,
}

var statuses = map[string]auditv1.AgentVerificationStatus{
	"verified":   auditv1.AgentVerificationStatus_AGENT_VERIFICATION_STATUS_VERIFIED,
	"unverified": auditv1.AgentVerificationStatus_AGENT_VERIFICATION_STATUS_UNVERIFIED,
	"suspended":  auditv1.AgentVerificationStatus_AGENT_VERIFICATION_STATUS_SUSPENDED,
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// toProto renders the record (what audit knows by itself).
func (r *Record) toProto(full bool) *auditv1.Agent {
	a := &auditv1.Agent{
		ClientId: r.ClientID, ClientName: r.ClientName, Source: r.Source, VerificationStatus: r.Verification, State: r.State,
		Activity: &auditv1.AgentActivity{
			FirstSeenTime: ts(r.FirstSeen), LastSeenTime: ts(r.LastSeen), EventCount: r.EventCount,
			AllowCount: r.Allow, DenyCount: r.Deny, AsOfSequence: r.AsOf,
		},
	}
	if r.RegisterTime != nil {
		a.RegisterTime = timestamppb.New(*r.RegisterTime)
	}
	if r.RemoveTime != nil {
		a.RemoveTime = timestamppb.New(*r.RemoveTime)
	}
	if !full {
		return a
	}
	for res, u := range r.Resources {
		if u.Allow+u.Deny == 0 {
			continue // named by events, never decided on: not usage
		}
		ru := &auditv1.AgentResourceUsage{Resource: res, AllowCount: u.Allow, DenyCount: u.Deny, LastUsedTime: ts(u.LastUsed)}
		for tool, tu := range u.Tools {
			ru.Tools = append(ru.Tools, &auditv1.AgentToolUsage{Tool: tool, AllowCount: tu.Allow, DenyCount: tu.Deny, LastUsedTime: ts(tu.LastUsed)})
		}
		sort.SliceStable(ru.Tools, func(i, j int) bool {
			return laterFirst(ru.Tools[i].GetLastUsedTime(), ru.Tools[j].GetLastUsedTime(), ru.Tools[i].GetTool(), ru.Tools[j].GetTool())
		})
		a.Activity.Resources = append(a.Activity.Resources, ru)
	}
	slices.SortStableFunc(a.Activity.Resources, func(x, y *auditv1.AgentResourceUsage) int {
		if laterFirst(x.GetLastUsedTime(), y.GetLastUsedTime(), x.GetResource(), y.GetResource()) {
			return -1
		}
		return 1
	})
	return a
}

// laterFirst orders most recently used first, then by name.
func laterFirst(a, b *timestamppb.Timestamp, an, bn string) bool {
	at, bt := a.AsTime(), b.AsTime()
	if !at.Equal(bt) {
		return at.After(bt)
	}
	return an < bn
}
