// Package document validates the two policy documents of a resource — the
// tool Manifest an MCP server publishes and the operator Policy — and parses
// them from YAML or JSON.
//
// Validation collects every problem rather than stopping at the first, each
// as a Violation whose Field is the path of the offending value in the
// request (proto field names, zero-based indexes: `policy.tools[2].conditions[0].expression`),
// so that an operator fixing a policy file sees all of it at once.
package document

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	"github.com/mcpid/mcpid/lib/principal"
	"github.com/mcpid/mcpid/lib/resource"
	"github.com/mcpid/mcpid/services/policy/internal/condition"
)

// Limits of the contract (policy.proto).
const (
	MaxResourceLength    = 2048
	MaxDisplayName       = 100
	MaxServerVersion     = 64
	MaxScopes            = 500
	MaxTools             = 1000
	MaxScopeName         = 128
	MaxScopeDescription  = 300
	MaxImplies           = 32
	MaxToolName          = 128
	MaxToolDescription   = 1024
	MaxRequiredScopes    = 32
	MaxConditions        = 8
	MaxConditionMessage  = 200
	MaxDefaultConditions = 8
)

// offlineAccess is an authorization-server scope, never a resource's.
const offlineAccess = "offline_access"

// Violation is one problem in a document.
type Violation struct {
	// Field is the path of the offending value, e.g. "policy.scopes[1].implies[0]".
	Field string
	// Description says what is wrong.
	Description string
}

// Error is a document that failed validation.
type Error struct {
	Violations []Violation
}

func (e *Error) Error() string {
	if len(e.Violations) == 1 {
		return "invalid document: " + e.Violations[0].Field + ": " + e.Violations[0].Description
	}
	return fmt.Sprintf("invalid document: %d violations, first %s: %s", len(e.Violations), e.Violations[0].Field, e.Violations[0].Description)
}

// AsError returns nil for no violations, else an *Error.
func AsError(vs []Violation) error {
	if len(vs) == 0 {
		return nil
	}
	return &Error{Violations: vs}
}

// Validator validates documents; its conditions compile in env.
type Validator struct {
	env *condition.Env
}

// NewValidator returns a Validator compiling conditions in env.
func NewValidator(env *condition.Env) *Validator { return &Validator{env: env} }

// NormalizeManifest returns a copy of m without its output-only fields and
// with its resource canonicalized (left as written when it does not
// canonicalize; validation reports it).
func NormalizeManifest(m *policyv1.Manifest) *policyv1.Manifest {
	c := proto.CloneOf(m)
	if c == nil {
		c = &policyv1.Manifest{}
	}
	c.Revision, c.PublishTime, c.PublishedBy = 0, nil, ""
	if canon, err := resource.Canonicalize(c.GetResource()); err == nil {
		c.Resource = canon
	}
	return c
}

// NormalizePolicy is NormalizeManifest for an operator policy.
func NormalizePolicy(p *policyv1.Policy) *policyv1.Policy {
	c := proto.CloneOf(p)
	if c == nil {
		c = &policyv1.Policy{}
	}
	c.Revision, c.UpdateTime, c.UpdatedBy = 0, nil, ""
	if canon, err := resource.Canonicalize(c.GetResource()); err == nil {
		c.Resource = canon
	}
	if d := c.GetDefaults(); d != nil && !d.GetRequireVerifiedClient() && !d.GetDenyUnlistedTools() && len(d.GetConditions()) == 0 {
		// An empty defaults message means nothing; dropping it keeps
		// "identical content" comparisons honest.
		c.Defaults = nil
	}
	return c
}

// collector accumulates violations under a path prefix.
type collector struct {
	vs []Violation
}

func (c *collector) add(field, format string, args ...any) {
	c.vs = append(c.vs, Violation{Field: field, Description: fmt.Sprintf(format, args...)})
}

// ValidateManifest checks a normalized manifest on its own: a manifest is
// self-contained. prefix is the path of the manifest in the request
// ("manifest" or "candidate_manifest").
func (v *Validator) ValidateManifest(m *policyv1.Manifest, prefix string) []Violation {
	c := &collector{}
	checkResource(c, prefix+".resource", m.GetResource())
	checkText(c, prefix+".display_name", m.GetDisplayName(), MaxDisplayName, false)
	checkText(c, prefix+".server_version", m.GetServerVersion(), MaxServerVersion, false)

	declared := map[string]bool{}
	if n := len(m.GetScopes()); n > MaxScopes {
		c.add(prefix+".scopes", "%d scopes, at most %d", n, MaxScopes)
	}
	for i, s := range m.GetScopes() {
		path := fmt.Sprintf("%s.scopes[%d]", prefix, i)
		if checkScopeName(c, path+".name", s.GetName()) {
			if declared[s.GetName()] {
				c.add(path+".name", "scope %q is declared twice", s.GetName())
			}
			declared[s.GetName()] = true
		}
		if s.GetDescription() == "" {
			c.add(path+".description", "required: it is shown on the consent page")
		} else {
			checkText(c, path+".description", s.GetDescription(), MaxScopeDescription, false)
		}
	}
	edges := map[string][]string{}
	for i, s := range m.GetScopes() {
		path := fmt.Sprintf("%s.scopes[%d]", prefix, i)
		checkImplies(c, path, s, func(name string) bool { return declared[name] }, "the manifest does not declare it")
		edges[s.GetName()] = append(edges[s.GetName()], s.GetImplies()...)
	}
	checkAcyclic(c, prefix+".scopes", m.GetScopes(), edges)

	names := map[string]bool{}
	if n := len(m.GetTools()); n > MaxTools {
		c.add(prefix+".tools", "%d tools, at most %d", n, MaxTools)
	}
	for i, t := range m.GetTools() {
		path := fmt.Sprintf("%s.tools[%d]", prefix, i)
		v.checkTool(c, path, t, names, func(name string) bool { return declared[name] }, "the manifest does not declare it")
		if t.GetDeny() {
			c.add(path+".deny", "only the operator policy may deny a tool")
		}
	}
	return c.vs
}

// ValidatePolicy checks a normalized operator policy against the manifest
// stored for the same resource (nil when there is none). prefix is the path
// of the policy in the request ("policy" or "candidate_policy").
func (v *Validator) ValidatePolicy(p *policyv1.Policy, man *policyv1.Manifest, prefix string) []Violation {
	c := &collector{}
	checkResource(c, prefix+".resource", p.GetResource())
	checkText(c, prefix+".display_name", p.GetDisplayName(), MaxDisplayName, false)

	manifestScopes := map[string]*policyv1.Scope{}
	for _, s := range man.GetScopes() {
		manifestScopes[s.GetName()] = s
	}
	declared := map[string]bool{}
	if n := len(p.GetScopes()); n > MaxScopes {
		c.add(prefix+".scopes", "%d scopes, at most %d", n, MaxScopes)
	}
	for i, s := range p.GetScopes() {
		path := fmt.Sprintf("%s.scopes[%d]", prefix, i)
		if checkScopeName(c, path+".name", s.GetName()) {
			if declared[s.GetName()] {
				c.add(path+".name", "scope %q has two entries", s.GetName())
			}
			declared[s.GetName()] = true
		}
		_, inManifest := manifestScopes[s.GetName()]
		switch {
		case s.GetDescription() != "":
			checkText(c, path+".description", s.GetDescription(), MaxScopeDescription, false)
		case !inManifest:
			c.add(path+".description", "required for a scope the manifest does not declare (it is shown on the consent page)")
		}
		if inManifest && len(s.GetImplies()) > 0 {
			c.add(path+".implies", "scope %q is declared by the manifest: implications on it would widen what tokens already carrying it may do", s.GetName())
		}
	}
	inCatalogue := func(name string) bool {
		_, ok := manifestScopes[name]
		return ok || declared[name]
	}
	// The merged graph: manifest edges, plus the operator's on scopes the
	// manifest does not declare.
	edges := map[string][]string{}
	for _, s := range man.GetScopes() {
		edges[s.GetName()] = append(edges[s.GetName()], s.GetImplies()...)
	}
	for i, s := range p.GetScopes() {
		if _, inManifest := manifestScopes[s.GetName()]; inManifest {
			continue
		}
		checkImplies(c, fmt.Sprintf("%s.scopes[%d]", prefix, i), s, inCatalogue, "neither the policy nor the manifest defines it")
		edges[s.GetName()] = append(edges[s.GetName()], s.GetImplies()...)
	}
	checkAcyclic(c, prefix+".scopes", p.GetScopes(), edges)

	if d := p.GetDefaults(); d != nil {
		if n := len(d.GetConditions()); n > MaxDefaultConditions {
			c.add(prefix+".defaults.conditions", "%d conditions, at most %d", n, MaxDefaultConditions)
		}
		for i, cond := range d.GetConditions() {
			v.checkCondition(c, fmt.Sprintf("%s.defaults.conditions[%d]", prefix, i), cond)
		}
	}

	names := map[string]bool{}
	if n := len(p.GetTools()); n > MaxTools {
		c.add(prefix+".tools", "%d tools, at most %d", n, MaxTools)
	}
	for i, t := range p.GetTools() {
		v.checkTool(c, fmt.Sprintf("%s.tools[%d]", prefix, i), t, names, inCatalogue, "neither the policy nor the manifest defines it")
	}
	return c.vs
}

func (v *Validator) checkTool(c *collector, path string, t *policyv1.Tool, names map[string]bool, known func(string) bool, unknownWhy string) {
	if ValidToolName(t.GetName()) {
		if names[t.GetName()] {
			c.add(path+".name", "tool %q has two entries", t.GetName())
		}
		names[t.GetName()] = true
	} else {
		c.add(path+".name", "must be 1 to %d characters from A-Z a-z 0-9 _ - . /", MaxToolName)
	}
	checkText(c, path+".description", t.GetDescription(), MaxToolDescription, true)
	if n := len(t.GetRequiredScopes()); n > MaxRequiredScopes {
		c.add(path+".required_scopes", "%d scopes, at most %d", n, MaxRequiredScopes)
	}
	seen := map[string]bool{}
	for j, s := range t.GetRequiredScopes() {
		p := fmt.Sprintf("%s.required_scopes[%d]", path, j)
		switch {
		case !checkScopeName(c, p, s):
		case seen[s]:
			c.add(p, "scope %q is listed twice", s)
		case !known(s):
			c.add(p, "scope %q is not defined: %s", s, unknownWhy)
		}
		seen[s] = true
	}
	if n := len(t.GetConditions()); n > MaxConditions {
		c.add(path+".conditions", "%d conditions, at most %d", n, MaxConditions)
	}
	for j, cond := range t.GetConditions() {
		v.checkCondition(c, fmt.Sprintf("%s.conditions[%d]", path, j), cond)
	}
}

func (v *Validator) checkCondition(c *collector, path string, cond *policyv1.Condition) {
	if _, err := v.env.Compile(cond.GetExpression()); err != nil {
		c.add(path+".expression", "%s", err.Error())
	}
	checkText(c, path+".message", cond.GetMessage(), MaxConditionMessage, false)
}

func checkResource(c *collector, field, raw string) {
	if raw == "" {
		c.add(field, "required")
		return
	}
	if principal.IsReservedAudience(raw) {
		c.add(field, "urn:mcpid:* resources are reserved")
		return
	}
	canon, err := resource.Canonicalize(raw)
	if err != nil {
		c.add(field, "%s", strings.TrimPrefix(err.Error(), resource.ErrInvalid.Error()+": "))
		return
	}
	if len(canon) > MaxResourceLength {
		c.add(field, "longer than %d characters", MaxResourceLength)
	}
}

// checkText enforces a length in characters and plain text: valid UTF-8 and
// no control characters (tab and newline allowed when multiline).
func checkText(c *collector, field, s string, maxChars int, multiline bool) {
	if s == "" {
		return
	}
	if !utf8.ValidString(s) {
		c.add(field, "not valid UTF-8")
		return
	}
	if n := utf8.RuneCountInString(s); n > maxChars {
		c.add(field, "%d characters, at most %d", n, maxChars)
	}
	for _, r := range s {
		if multiline && (r == '\n' || r == '\t') {
			continue
		}
		if unicode.IsControl(r) {
			c.add(field, "contains a control character (U+%04X)", r)
			return
		}
	}
}

// checkScopeName reports whether name is an acceptable scope, adding a
// violation when it is not.
func checkScopeName(c *collector, field, name string) bool {
	switch {
	case !ValidScopeToken(name):
		c.add(field, "%q is not an OAuth scope token: 1 to %d printable ASCII characters without space, '\"' or '\\'", name, MaxScopeName)
	case name == offlineAccess:
		c.add(field, "offline_access is an authorization-server scope, not a resource's")
	case principal.IsReservedScope(name):
		c.add(field, "mcpid:* scopes are reserved")
	default:
		return true
	}
	return false
}

func checkImplies(c *collector, path string, s *policyv1.Scope, known func(string) bool, unknownWhy string) {
	if n := len(s.GetImplies()); n > MaxImplies {
		c.add(path+".implies", "%d implications, at most %d", n, MaxImplies)
	}
	seen := map[string]bool{}
	for j, imp := range s.GetImplies() {
		p := fmt.Sprintf("%s.implies[%d]", path, j)
		switch {
		case !checkScopeName(c, p, imp):
		case imp == s.GetName():
			c.add(p, "scope %q implies itself", imp)
		case seen[imp]:
			c.add(p, "scope %q is listed twice", imp)
		case !known(imp):
			c.add(p, "scope %q is not defined: %s", imp, unknownWhy)
		}
		seen[imp] = true
	}
}

// checkAcyclic reports the first cycle through each scope of doc (in
// document order) in the graph edges.
func checkAcyclic(c *collector, path string, doc []*policyv1.Scope, edges map[string][]string) {
	const (
		white = iota
		grey
		black
	)
	color := map[string]int{}
	var cycle []string
	var visit func(n string, stack []string) bool
	visit = func(n string, stack []string) bool {
		switch color[n] {
		case grey:
			// stack ends with the path to n; cut it at n's first occurrence.
			for i, s := range stack {
				if s == n {
					cycle = append(append([]string(nil), stack[i:]...), n)
					return true
				}
			}
			cycle = []string{n, n}
			return true
		case black:
			return false
		}
		color[n] = grey
		stack = append(stack, n)
		for _, m := range edges[n] {
			if visit(m, stack) {
				return true
			}
		}
		color[n] = black
		return false
	}
	for i, s := range doc {
		if color[s.GetName()] != white {
			continue
		}
		if visit(s.GetName(), nil) {
			c.add(fmt.Sprintf("%s[%d].implies", path, i), "implications form a cycle: %s", strings.Join(cycle, " → "))
			return
		}
	}
}

// ValidScopeToken reports whether s is an RFC 6749 §3.3 scope-token of at
// most MaxScopeName characters.
func ValidScopeToken(s string) bool {
	if s == "" || len(s) > MaxScopeName {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if b < 0x21 || b > 0x7e || b == '"' || b == '\\' {
			return false
		}
	}
	return true
}

// ValidToolName reports whether s follows the MCP tool-name rules: 1 to 128
// characters from A-Z a-z 0-9 _ - . /.
func ValidToolName(s string) bool {
	if s == "" || len(s) > MaxToolName {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		switch {
		case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9':
		case b == '_', b == '-', b == '.', b == '/':
		default:
			return false
		}
	}
	return true
}

// ValidResource reports whether s is a canonical resource URI a document
// may name.
func ValidResource(s string) bool {
	if s == "" || len(s) > MaxResourceLength || principal.IsReservedAudience(s) {
		return false
	}
	c, err := resource.Canonicalize(s)
	return err == nil && c == s
}
