// Package effective merges a resource's two policy documents — the manifest
// its MCP server published and the operator policy — into the effective
// policy Check evaluates, its scope catalogue (what the token service shows
// on the consent page) and the drift report between the two layers.
//
// The merge follows the rules written on policyv1.Policy: the operator layer
// only adds requirements, and when the layers disagree the result fails
// closed and the difference is reported as drift. Merging never fails: any
// pair of stored documents yields a policy (possibly one that denies more).
package effective

import (
	"fmt"
	"slices"
	"sort"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	"github.com/mcpid/mcpid/services/policy/internal/condition"
)

// Resource is one resource's documents and everything derived from them.
// It is immutable once built and shared by concurrent checks.
type Resource struct {
	// Name is the canonical resource URI.
	Name string
	// Policy and Manifest are the stored documents with their output-only
	// fields; either may be nil (not both).
	Policy   *policyv1.Policy
	Manifest *policyv1.Manifest
	// Effective is the merged policy, as GetEffectivePolicy returns it.
	Effective *policyv1.EffectivePolicy
	// Catalog is the merged scope catalogue; nil unless the resource is
	// ACTIVE (only active resources are known to the token service).
	Catalog *policyv1.ScopeCatalog
	// Drift lists the differences between the layers.
	Drift *policyv1.DriftReport
	// Summary is the resource's row in ListPolicies.
	Summary *policyv1.PolicySummary

	tools   map[string]*Tool
	implied map[string][]string // scope → every scope it implies, transitively
}

// Active reports whether the resource has an operator policy.
func (r *Resource) Active() bool { return r.Policy != nil }

// Revision is EffectivePolicy.revision.
func (r *Resource) Revision() int64 { return r.Effective.GetRevision() }

// Tool returns the effective rule of a tool.
func (r *Resource) Tool(name string) (*Tool, bool) {
	t, ok := r.tools[name]
	return t, ok
}

// Tools returns the effective tools sorted by name.
func (r *Resource) Tools() []*Tool {
	out := make([]*Tool, 0, len(r.tools))
	for _, t := range r.tools {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Implied returns the scopes s implies (transitively, without s), sorted.
func (r *Resource) Implied(s string) []string { return r.implied[s] }

// Source names where a rule comes from, for Explain's trace.
type Source struct {
	Layer policyv1.Layer
	Field string
}

// Tool is one tool's effective rule, ready for decisions.
type Tool struct {
	Name  string
	Proto *policyv1.EffectiveTool
	// Required are the required scopes, sorted (Proto.required_scopes).
	Required        []string
	Denied          bool
	RequireVerified bool
	Destructive     bool
	Conditions      []Condition
	// ReadsNow: a condition reads `now`, so decisions about the tool are
	// not cacheable.
	ReadsNow bool
	// Input is the ConditionTool value conditions see.
	Input *policyv1.ConditionTool

	// Where each requirement comes from (Explain).
	Found          Source
	DenySource     Source
	VerifiedSource Source
	ScopeSources   map[string]Source
}

// Condition is one compiled condition of a tool.
type Condition struct {
	Proto   *policyv1.EffectiveCondition
	Program *condition.Program
	// Err is why a stored condition does not compile (an environment that
	// changed between releases); evaluating it is CONDITION_ERROR.
	Err error
}

// Build merges the stored documents of one resource and compiles its
// conditions in env. policy and manifest carry their output-only fields;
// either may be nil, not both.
func Build(name string, pol *policyv1.Policy, man *policyv1.Manifest, env *condition.Env) *Resource {
	r := &Resource{Name: name, Policy: pol, Manifest: man, tools: map[string]*Tool{}}
	r.merge()
	if env != nil {
		for _, t := range r.tools {
			for i := range t.Conditions {
				c := &t.Conditions[i]
				c.Program, c.Err = env.Compile(c.Proto.GetCondition().GetExpression())
				if c.Program != nil && c.Program.ReadsNow {
					t.ReadsNow = true
				}
			}
		}
	}
	return r
}

func (r *Resource) merge() {
	pol, man := r.Policy, r.Manifest
	state := policyv1.ResourceState_RESOURCE_STATE_PENDING
	if pol != nil {
		state = policyv1.ResourceState_RESOURCE_STATE_ACTIVE
	}
	display := pol.GetDisplayName()
	if display == "" {
		display = man.GetDisplayName()
	}
	if display == "" {
		display = r.Name
	}
	polRev, manRev := pol.GetRevision(), man.GetRevision()
	eff := &policyv1.EffectivePolicy{
		Resource:         r.Name,
		DisplayName:      display,
		State:            state,
		Revision:         max(polRev, manRev),
		PolicyRevision:   polRev,
		ManifestRevision: manRev,
	}
	d := &drift{}
	eff.Scopes = r.mergeScopes(d)
	r.mergeTools(d)
	for _, t := range r.Tools() {
		eff.Tools = append(eff.Tools, t.Proto)
	}
	r.Effective = eff
	if state == policyv1.ResourceState_RESOURCE_STATE_ACTIVE {
		r.Catalog = &policyv1.ScopeCatalog{Resource: r.Name, DisplayName: display, Scopes: eff.Scopes, Revision: eff.Revision}
	}
	if pol != nil && man == nil {
		d.add(policyv1.DriftKind_DRIFT_KIND_MANIFEST_MISSING, "", nil, "the MCP server has published no manifest: every tool comes from the operator policy")
	}
	if pol == nil && man != nil {
		d.add(policyv1.DriftKind_DRIFT_KIND_POLICY_MISSING, "", nil, "no operator policy: the resource is PENDING until an operator applies one")
	}
	r.Drift = &policyv1.DriftReport{
		Resource:         r.Name,
		State:            state,
		PolicyRevision:   polRev,
		ManifestRevision: manRev,
		ServerVersion:    man.GetServerVersion(),
		Items:            d.sorted(),
	}
	r.Summary = &policyv1.PolicySummary{
		Resource:         r.Name,
		DisplayName:      display,
		State:            state,
		Revision:         eff.Revision,
		PolicyRevision:   polRev,
		ManifestRevision: manRev,
		ServerVersion:    man.GetServerVersion(),
		ToolCount:        int32(len(eff.Tools)), //nolint:gosec // at most 2000 tools
		DriftCount:       int32(len(r.Drift.Items)),
		UpdateTime:       latest(pol.GetUpdateTime(), man.GetPublishTime()),
	}
}

func latest(a, b *timestamppb.Timestamp) *timestamppb.Timestamp {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	case b.AsTime().After(a.AsTime()):
		return b
	default:
		return a
	}
}

func (r *Resource) mergeScopes(d *drift) []*policyv1.CatalogScope {
	pol, man := r.Policy, r.Manifest
	manScopes := map[string]*policyv1.Scope{}
	for _, s := range man.GetScopes() {
		manScopes[s.GetName()] = s
	}
	polScopes := map[string]*policyv1.Scope{}
	for _, s := range pol.GetScopes() {
		polScopes[s.GetName()] = s
	}
	var names []string
	for n := range manScopes {
		names = append(names, n)
	}
	for n := range polScopes {
		if _, dup := manScopes[n]; !dup {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	defined := func(n string) bool {
		_, a := manScopes[n]
		_, b := polScopes[n]
		return a || b
	}

	byName := map[string]*policyv1.CatalogScope{}
	edges := map[string][]string{}
	for _, n := range names {
		ms, ps := manScopes[n], polScopes[n]
		cs := &policyv1.CatalogScope{Name: n, InManifest: ms != nil, InPolicy: ps != nil}
		cs.Description = ms.GetDescription()
		if ps.GetDescription() != "" {
			cs.Description = ps.GetDescription()
		}
		cs.Sensitive = ms.GetSensitive() || ps.GetSensitive()
		var implies []string
		if ms != nil {
			implies = ms.GetImplies()
			if man != nil && pol != nil && len(ps.GetImplies()) > 0 {
				d.add(policyv1.DriftKind_DRIFT_KIND_IMPLICATION_IGNORED, "", []string{n},
					fmt.Sprintf("the manifest now declares scope %s; the operator policy's implications on it are ignored", n))
			}
		} else {
			implies = ps.GetImplies()
		}
		for _, imp := range implies {
			if !defined(imp) {
				// An edge to a scope nobody defines any more grants nothing
				// (fail closed).
				if ms == nil {
					d.add(policyv1.DriftKind_DRIFT_KIND_SCOPE_UNDEFINED, "", []string{imp},
						fmt.Sprintf("operator scope %s implies %s, which neither layer defines", n, imp))
				}
				continue
			}
			cs.Implies = append(cs.Implies, imp)
		}
		cs.Implies = sortedUnique(cs.Implies)
		edges[n] = cs.Implies
		byName[n] = cs
		if man != nil && ms == nil {
			d.add(policyv1.DriftKind_DRIFT_KIND_SCOPE_NOT_IN_MANIFEST, "", []string{n},
				fmt.Sprintf("scope %s is defined by the operator policy only", n))
		}
		if ms != nil && ps != nil && ((ps.GetDescription() != "" && ps.GetDescription() != ms.GetDescription()) || (ps.GetSensitive() && !ms.GetSensitive())) {
			d.add(policyv1.DriftKind_DRIFT_KIND_SCOPE_OVERRIDDEN, "", []string{n},
				fmt.Sprintf("the operator policy overrides the manifest's description or sensitivity of scope %s", n))
		}
	}

	r.implied = make(map[string][]string, len(names))
	for _, n := range names {
		seen := map[string]bool{n: true}
		var out []string
		stack := slices.Clone(edges[n])
		for len(stack) > 0 {
			s := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if seen[s] {
				continue // also stops a cycle a corrupt record might hold
			}
			seen[s] = true
			out = append(out, s)
			stack = append(stack, edges[s]...)
		}
		sort.Strings(out)
		r.implied[n] = out
	}
	direct := make(map[string]bool, len(names))
	for _, n := range names {
		direct[n] = byName[n].GetSensitive()
	}
	out := make([]*policyv1.CatalogScope, 0, len(names))
	for _, n := range names {
		cs := byName[n]
		cs.ImpliedScopes = r.implied[n]
		// A scope implying a sensitive scope grants it: show it sensitive.
		for _, imp := range cs.ImpliedScopes {
			cs.Sensitive = cs.Sensitive || direct[imp]
		}
		out = append(out, cs)
	}
	return out
}

func (r *Resource) mergeTools(d *drift) {
	pol, man := r.Policy, r.Manifest
	defined := map[string]bool{}
	for _, s := range man.GetScopes() {
		defined[s.GetName()] = true
	}
	for _, s := range pol.GetScopes() {
		defined[s.GetName()] = true
	}
	type entry struct {
		t   *policyv1.Tool
		idx int
	}
	manTools := map[string]entry{}
	for i, t := range man.GetTools() {
		manTools[t.GetName()] = entry{t, i}
	}
	polTools := map[string]entry{}
	for i, t := range pol.GetTools() {
		polTools[t.GetName()] = entry{t, i}
	}
	defaults := pol.GetDefaults()

	build := func(name string, me, pe entry, inMan, inPol bool) {
		mt, pt := me.t, pe.t
		et := &policyv1.EffectiveTool{Name: name, InManifest: inMan, InPolicy: inPol}
		t := &Tool{Name: name, Proto: et, ScopeSources: map[string]Source{}}
		et.Description = mt.GetDescription()
		if pt.GetDescription() != "" {
			et.Description = pt.GetDescription()
		}
		if inMan {
			t.Found = Source{policyv1.Layer_LAYER_MANIFEST, fmt.Sprintf("tools[%d]", me.idx)}
		} else {
			t.Found = Source{policyv1.Layer_LAYER_POLICY, fmt.Sprintf("tools[%d]", pe.idx)}
		}
		var required []string
		for _, s := range mt.GetRequiredScopes() {
			required = append(required, s)
			if _, ok := t.ScopeSources[s]; !ok {
				t.ScopeSources[s] = Source{policyv1.Layer_LAYER_MANIFEST, fmt.Sprintf("tools[%d].required_scopes", me.idx)}
			}
		}
		var added []string
		manReq := map[string]bool{}
		for _, s := range mt.GetRequiredScopes() {
			manReq[s] = true
		}
		for _, s := range pt.GetRequiredScopes() {
			required = append(required, s)
			if _, ok := t.ScopeSources[s]; !ok {
				t.ScopeSources[s] = Source{policyv1.Layer_LAYER_POLICY, fmt.Sprintf("tools[%d].required_scopes", pe.idx)}
			}
			if inMan && !manReq[s] {
				added = append(added, s)
			}
			if !defined[s] {
				d.add(policyv1.DriftKind_DRIFT_KIND_SCOPE_UNDEFINED, name, []string{s},
					fmt.Sprintf("tool %s requires scope %s, which neither layer defines: the tool stays denied to new tokens", name, s))
			}
		}
		t.Required = sortedUnique(required)
		et.RequiredScopes = t.Required
		if inMan && inPol && len(added) > 0 {
			d.add(policyv1.DriftKind_DRIFT_KIND_TOOL_SCOPES_ADDED, name, sortedUnique(added),
				fmt.Sprintf("the operator policy adds required scopes to tool %s", name))
		}

		addConds := func(conds []*policyv1.Condition, layer policyv1.Layer, prefix string) {
			for j, c := range conds {
				t.Conditions = append(t.Conditions, Condition{Proto: &policyv1.EffectiveCondition{
					Condition: c, Layer: layer, Field: fmt.Sprintf("%s.conditions[%d]", prefix, j),
				}})
			}
		}
		if inMan {
			addConds(mt.GetConditions(), policyv1.Layer_LAYER_MANIFEST, fmt.Sprintf("tools[%d]", me.idx))
		}
		if inPol {
			addConds(pt.GetConditions(), policyv1.Layer_LAYER_POLICY, fmt.Sprintf("tools[%d]", pe.idx))
		}
		addConds(defaults.GetConditions(), policyv1.Layer_LAYER_POLICY_DEFAULTS, "defaults")
		for i := range t.Conditions {
			et.Conditions = append(et.Conditions, t.Conditions[i].Proto)
		}

		t.Destructive = mt.GetDestructive() || pt.GetDestructive()
		switch {
		case mt.GetRequireVerifiedClient():
			t.RequireVerified, t.VerifiedSource = true, Source{policyv1.Layer_LAYER_MANIFEST, fmt.Sprintf("tools[%d].require_verified_client", me.idx)}
		case pt.GetRequireVerifiedClient():
			t.RequireVerified, t.VerifiedSource = true, Source{policyv1.Layer_LAYER_POLICY, fmt.Sprintf("tools[%d].require_verified_client", pe.idx)}
		case defaults.GetRequireVerifiedClient():
			t.RequireVerified, t.VerifiedSource = true, Source{policyv1.Layer_LAYER_POLICY_DEFAULTS, "defaults.require_verified_client"}
		}
		switch {
		case pt.GetDeny():
			t.Denied, t.DenySource = true, Source{policyv1.Layer_LAYER_POLICY, fmt.Sprintf("tools[%d].deny", pe.idx)}
		case !inPol && pol != nil && defaults.GetDenyUnlistedTools():
			t.Denied, t.DenySource = true, Source{policyv1.Layer_LAYER_POLICY_DEFAULTS, "defaults.deny_unlisted_tools"}
		}
		et.Destructive, et.RequireVerifiedClient, et.Denied = t.Destructive, t.RequireVerified, t.Denied
		t.Input = &policyv1.ConditionTool{Name: name, Destructive: t.Destructive}
		r.tools[name] = t

		if man != nil && pol != nil && inMan && !inPol {
			d.add(policyv1.DriftKind_DRIFT_KIND_TOOL_NOT_REVIEWED, name, nil,
				fmt.Sprintf("manifest %s declares tool %s, which the operator policy has no entry for", man.GetServerVersion(), name))
		}
		if man != nil && inPol && !inMan {
			d.add(policyv1.DriftKind_DRIFT_KIND_TOOL_NOT_IN_MANIFEST, name, nil,
				fmt.Sprintf("manifest %s does not declare tool %s; the operator entry is enforced as written", man.GetServerVersion(), name))
		}
	}
	for name, me := range manTools {
		pe, inPol := polTools[name]
		build(name, me, pe, true, inPol)
	}
	for name, pe := range polTools {
		if _, inMan := manTools[name]; !inMan {
			build(name, entry{}, pe, false, true)
		}
	}
	// Operator scopes that imply something undefined were reported by
	// mergeScopes; nothing else references scopes.
}

func sortedUnique(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	out := slices.Clone(s)
	sort.Strings(out)
	return slices.Compact(out)
}

// drift collects drift items.
type drift struct {
	items []*policyv1.DriftItem
}

func (d *drift) add(kind policyv1.DriftKind, tool string, scopes []string, detail string) {
	d.items = append(d.items, &policyv1.DriftItem{Kind: kind, Tool: tool, Scopes: scopes, Detail: detail})
}

// sorted returns the items ordered by kind, then tool, then scope, without
// repeats (a scope undefined for two reasons is one item per tool).
func (d *drift) sorted() []*policyv1.DriftItem {
	sort.SliceStable(d.items, func(i, j int) bool {
		a, b := d.items[i], d.items[j]
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		if a.Tool != b.Tool {
			return a.Tool < b.Tool
		}
		return first(a.Scopes) < first(b.Scopes)
	})
	out := make([]*policyv1.DriftItem, 0, len(d.items))
	for i, it := range d.items {
		if i > 0 {
			p := d.items[i-1]
			if p.Kind == it.Kind && p.Tool == it.Tool && slices.Equal(p.Scopes, it.Scopes) {
				continue
			}
		}
		out = append(out, it)
	}
	return out
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// UpdateTime returns when either document last changed.
func (r *Resource) UpdateTime() time.Time {
	if ts := r.Summary.GetUpdateTime(); ts != nil {
		return ts.AsTime()
	}
	return time.Time{}
}
