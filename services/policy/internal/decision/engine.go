// Package decision answers "may this token call this tool?" from memory:
// the effective policies kept by the store's index, access tokens verified
// locally, the revocation set and what is known of clients.
//
// Every step runs in the order of DecisionReason and the first that fails
// decides, so the reason is always the earliest problem. Anything that
// cannot be decided is a DENY with a reason: the engine has no error path.
// Explain runs the same steps, records each, and keeps going after a
// failure.
package decision

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	"github.com/mcpid/mcpid/lib/auditemit"
	"github.com/mcpid/mcpid/services/policy/internal/condition"
	"github.com/mcpid/mcpid/services/policy/internal/document"
	"github.com/mcpid/mcpid/services/policy/internal/effective"
	"github.com/mcpid/mcpid/services/policy/internal/tokens"
)

// DefaultMaxCacheTTL bounds CheckResult.cache_ttl: policy changes and
// revocations reach callers' decision caches within it.
const DefaultMaxCacheTTL = 30 * time.Second

// Policies is the in-memory source of effective policies.
type Policies interface {
	// Ready reports whether the first list has been applied.
	Ready() bool
	// Get returns the canonical resource's effective policy.
	Get(resource string) (*effective.Resource, bool)
}

// Config configures an Engine.
type Config struct {
	Policies    Policies
	Tokens      *tokens.Verifier
	Revocations tokens.Revocations
	Clients     Clients
	// KeysReady reports whether verification keys are in memory; nil means
	// always.
	KeysReady func() bool
	// MaxCacheTTL bounds cache_ttl; 0 means DefaultMaxCacheTTL.
	MaxCacheTTL time.Duration
	// IDs generates decision ids.
	IDs *auditemit.IDGenerator
	Now func() time.Time
}

// Engine makes decisions. It is safe for concurrent use.
type Engine struct {
	cfg Config
}

// New returns an Engine.
func New(cfg Config) *Engine {
	if cfg.Revocations == nil {
		cfg.Revocations = tokens.NoRevocations{}
	}
	if cfg.Clients == nil {
		cfg.Clients = TokenClaims{}
	}
	if cfg.KeysReady == nil {
		cfg.KeysReady = func() bool { return true }
	}
	if cfg.MaxCacheTTL <= 0 {
		cfg.MaxCacheTTL = DefaultMaxCacheTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.IDs == nil {
		cfg.IDs = auditemit.NewIDGenerator(cfg.Now, nil)
	}
	return &Engine{cfg: cfg}
}

// Outcome is one decision and what audit records of it.
type Outcome struct {
	Result *policyv1.CheckResult
	// Token is the verified token (possibly revoked); nil when its
	// signature or claims did not verify.
	Token *tokens.Token
	// Tool is the effective rule; nil when the tool is unknown (or not
	// reached).
	Tool *effective.Tool
	// ConditionResult is "true", "false" or "error" when conditions were
	// evaluated, else "".
	ConditionResult string
	// Arguments are the call's arguments.
	Arguments *structpb.Struct
}

// Call is one tool call of a check.
type Call struct {
	Tool      string
	Arguments *structpb.Struct
}

// Check decides one tool call. resource is canonical.
func (e *Engine) Check(ctx context.Context, token, resource string, call Call) *Outcome {
	return e.BatchCheck(ctx, token, resource, []Call{call})[0]
}

// BatchCheck decides several calls with one token, verifying it once; one
// outcome per call, in order, each with its own decision id.
func (e *Engine) BatchCheck(ctx context.Context, token, resource string, calls []Call) []*Outcome {
	now := e.cfg.Now()
	h := e.head(ctx, &input{token: token, resource: resource, now: now}, nil)
	out := make([]*Outcome, len(calls))
	for i, c := range calls {
		ev := &eval{engine: e, now: now, head: h}
		ev.decide(c.Tool, c.Arguments, false)
		o := ev.outcome()
		o.Arguments = c.Arguments
		id, err := e.cfg.IDs.NewID()
		if err == nil {
			o.Result.DecisionId = id
		}
		out[i] = o
	}
	return out
}

// ListAllowedTools says which tools of resource the token may call.
func (e *Engine) ListAllowedTools(ctx context.Context, token, resource string) *policyv1.ListAllowedToolsResponse {
	now := e.cfg.Now()
	h := e.head(ctx, &input{token: token, resource: resource, now: now}, nil)
	resp := &policyv1.ListAllowedToolsResponse{}
	if h.res != nil && h.res.Active() {
		resp.PolicyRevision = h.res.Revision()
	}
	if h.failed {
		resp.Decision = policyv1.Decision_DECISION_DENY
		resp.Reason, resp.ReasonText = h.reason, h.text
		resp.CacheTtl = durationpb.New(h.ttl(e.cfg.MaxCacheTTL, now, false))
		return resp
	}
	resp.Decision = policyv1.Decision_DECISION_ALLOW
	resp.Reason = policyv1.DecisionReason_DECISION_REASON_ALLOWED
	resp.ReasonText = "the token is acceptable for this resource"
	resp.GrantedScopes = h.token.Scopes
	readsNow := false
	for _, t := range h.res.Tools() {
		ev := &eval{engine: e, now: now, head: h}
		ev.decide(t.Name, nil, true)
		readsNow = readsNow || t.ReadsNow
		if !ev.failed {
			resp.AllowedTools = append(resp.AllowedTools, t.Name)
			continue
		}
		resp.DeniedTools = append(resp.DeniedTools, &policyv1.ToolDenial{
			Tool:          t.Name,
			Reason:        ev.result.GetReason(),
			ReasonText:    ev.result.GetReasonText(),
			MissingScopes: ev.result.GetMissingScopes(),
		})
	}
	resp.CacheTtl = durationpb.New(h.ttl(e.cfg.MaxCacheTTL, now, readsNow))
	return resp
}

// input is what a decision is about.
type input struct {
	token     string
	simulated *policyv1.SimulatedToken
	resource  string
	now       time.Time
	// res replaces the stored policy (Explain with candidates); explain
	// marks Explain (no cache, claims kept on claim failures).
	res     *effective.Resource
	explain bool
}

// head is the outcome of the steps every tool of one check shares:
// readiness, resource, token.
type head struct {
	res    *effective.Resource
	token  *tokens.Token
	client *policyv1.ConditionClient
	// tokenOK: the token passed every token step (Explain may hold claims
	// of a token that did not).
	tokenOK  bool
	failed   bool
	reason   policyv1.DecisionReason
	text     string
	noCache  bool
	resource string
	trace    *[]*policyv1.EvaluationStep
	// candidate: the policy is Explain's candidate, not a stored one.
	candidate bool
}

func (h *head) fail(reason policyv1.DecisionReason, text string) {
	if !h.failed {
		h.failed, h.reason, h.text = true, reason, text
	}
}

// ttl is how long a decision may be reused.
func (h *head) ttl(maxTTL time.Duration, now time.Time, readsNow bool) time.Duration {
	if h.noCache || readsNow {
		return 0
	}
	d := maxTTL
	if h.token != nil {
		d = min(d, h.token.Expiry.Sub(now))
	}
	return max(d, 0).Truncate(time.Second)
}

func (h *head) step(kind policyv1.EvaluationStepKind, outcome policyv1.StepOutcome, reason policyv1.DecisionReason, src effective.Source, expr string, detail string) {
	if h.trace == nil {
		return
	}
	if outcome == policyv1.StepOutcome_STEP_OUTCOME_PASS || outcome == policyv1.StepOutcome_STEP_OUTCOME_SKIPPED {
		reason = policyv1.DecisionReason_DECISION_REASON_UNSPECIFIED
	}
	*h.trace = append(*h.trace, &policyv1.EvaluationStep{
		Kind: kind, Outcome: outcome, Reason: reason, Layer: src.Layer, Field: src.Field, Expression: expr, Detail: detail,
	})
}

func (h *head) explaining() bool { return h.trace != nil }

const (
	pass    = policyv1.StepOutcome_STEP_OUTCOME_PASS
	fail    = policyv1.StepOutcome_STEP_OUTCOME_FAIL
	errored = policyv1.StepOutcome_STEP_OUTCOME_ERROR
	skipped = policyv1.StepOutcome_STEP_OUTCOME_SKIPPED
)

var noSource effective.Source

// head runs readiness, resource and token steps. With trace set (Explain)
// it records each step and continues after failures.
func (e *Engine) head(ctx context.Context, in *input, trace *[]*policyv1.EvaluationStep) *head {
	h := &head{resource: in.resource, trace: trace, candidate: in.res != nil}

	// Readiness.
	var notReady []string
	if !e.cfg.Policies.Ready() {
		notReady = append(notReady, "policy cache not synced")
	}
	if !e.cfg.Revocations.Ready() {
		notReady = append(notReady, "revocation feed not current")
	}
	if in.simulated == nil && !e.cfg.KeysReady() {
		notReady = append(notReady, "signing keys not available")
	}
	if len(notReady) > 0 {
		h.fail(policyv1.DecisionReason_DECISION_REASON_NOT_READY, notReadyText)
		h.noCache = true
		h.step(policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_READINESS, errored, policyv1.DecisionReason_DECISION_REASON_NOT_READY, noSource, "", strings.Join(notReady, "; "))
		if !h.explaining() {
			return h
		}
	} else {
		h.step(policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_READINESS, pass, 0, noSource, "", "")
	}

	// Resource.
	res := in.res
	if res == nil {
		res, _ = e.cfg.Policies.Get(in.resource)
	}
	h.res = res
	if res == nil || !res.Active() {
		h.fail(policyv1.DecisionReason_DECISION_REASON_RESOURCE_UNKNOWN, "resource "+in.resource+" has no active policy")
		detail := "no policy or manifest for " + in.resource
		if res != nil {
			detail = in.resource + " is PENDING: it has a manifest but no operator policy"
		}
		h.step(policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_RESOURCE, fail, policyv1.DecisionReason_DECISION_REASON_RESOURCE_UNKNOWN, noSource, "", detail)
		if !h.explaining() {
			return h
		}
	} else {
		h.step(policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_RESOURCE, pass, 0, noSource, "", fmt.Sprintf("effective revision %d", res.Revision()))
	}

	if in.simulated != nil {
		e.simulatedToken(h, in)
	} else {
		e.realToken(ctx, h, in)
	}
	if h.token != nil {
		h.client = e.client(h.token)
		if in.simulated.GetClient() != nil {
			h.client = in.simulated.GetClient()
		}
	}
	return h
}

const notReadyText = "the policy service cannot decide yet; retry later"

func (e *Engine) client(t *tokens.Token) *policyv1.ConditionClient {
	info, _ := e.cfg.Clients.Client(t)
	return &policyv1.ConditionClient{Id: t.ClientID, Verified: info.Verified, ApplicationType: info.ApplicationType}
}

var tokenTexts = map[policyv1.DecisionReason]string{
	policyv1.DecisionReason_DECISION_REASON_NOT_READY:           notReadyText,
	policyv1.DecisionReason_DECISION_REASON_TOKEN_INVALID:       "the access token is invalid",
	policyv1.DecisionReason_DECISION_REASON_TOKEN_EXPIRED:       "the access token has expired",
	policyv1.DecisionReason_DECISION_REASON_TOKEN_NOT_YET_VALID: "the access token is not valid yet",
	policyv1.DecisionReason_DECISION_REASON_AUDIENCE_MISMATCH:   "the access token was not issued for this resource",
	policyv1.DecisionReason_DECISION_REASON_TOKEN_REVOKED:       "the access token has been revoked",
}

var tokenSteps = []policyv1.EvaluationStepKind{
	policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_TOKEN_SIGNATURE,
	policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_TOKEN_CLAIMS,
	policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_TOKEN_AUDIENCE,
}

func (e *Engine) realToken(ctx context.Context, h *head, in *input) {
	var t *tokens.Token
	var f *tokens.Failure
	if in.explain {
		t, f = e.cfg.Tokens.VerifyAt(ctx, in.token, in.resource, in.now)
	} else {
		t, f = e.cfg.Tokens.Verify(ctx, in.token, in.resource)
	}
	if f != nil {
		h.noCache = true
		h.fail(f.Reason, tokenTexts[f.Reason])
		outcome := fail
		if f.Reason == policyv1.DecisionReason_DECISION_REASON_NOT_READY {
			outcome = errored
		}
		for _, k := range tokenSteps {
			switch {
			case k < f.Step:
				h.step(k, pass, 0, noSource, "", "")
			case k == f.Step:
				h.step(k, outcome, f.Reason, noSource, "", f.Detail)
			case f.Token != nil && k == policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_TOKEN_AUDIENCE:
				// A claim failed but the signature held: the rest can
				// still be evaluated (Explain).
				if len(f.Token.Audience) == 1 && f.Token.Audience[0] == in.resource {
					h.step(k, pass, 0, noSource, "", "")
				} else {
					h.step(k, fail, policyv1.DecisionReason_DECISION_REASON_AUDIENCE_MISMATCH, noSource, "", fmt.Sprintf("aud %q is not exactly %s", f.Token.Audience, in.resource))
				}
			default:
				h.step(k, skipped, 0, noSource, "", "")
			}
		}
		if !h.explaining() || f.Token == nil {
			h.step(policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_TOKEN_REVOCATION, skipped, 0, noSource, "", "")
			return
		}
		t = f.Token
	} else {
		for _, k := range tokenSteps {
			h.step(k, pass, 0, noSource, "", "")
		}
	}
	h.token = t
	if e.cfg.Revocations.Revoked(t) {
		h.noCache = true
		h.fail(policyv1.DecisionReason_DECISION_REASON_TOKEN_REVOKED, tokenTexts[policyv1.DecisionReason_DECISION_REASON_TOKEN_REVOKED])
		h.step(policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_TOKEN_REVOCATION, fail, policyv1.DecisionReason_DECISION_REASON_TOKEN_REVOKED, noSource, "", "the revocation set matches the token")
		return
	}
	h.step(policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_TOKEN_REVOCATION, pass, 0, noSource, "", "")
	if f == nil {
		h.tokenOK = true
	}
}

// simulatedToken evaluates the token steps for Explain's simulated claims:
// no signature, issuer or revocation; exp and nbf only when present.
func (e *Engine) simulatedToken(h *head, in *input) {
	claims := in.simulated.GetClaims().AsMap()
	if _, has := claims["aud"]; !has {
		claims["aud"] = in.resource
	}
	h.step(policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_TOKEN_SIGNATURE, skipped, 0, noSource, "", "simulated token")
	t := &tokens.Token{}
	t.Subject, _ = claims["sub"].(string)
	t.ClientID, _ = claims["client_id"].(string)
	t.JTI, _ = claims["jti"].(string)
	t.GrantID, _ = claims["grant_id"].(string)
	t.Issuer, _ = claims["iss"].(string)
	if s, ok := claims["scope"].(string); ok {
		t.Scopes = sortedFields(s)
	}
	if gs, ok := claims["groups"].([]any); ok {
		for _, g := range gs {
			if s, ok := g.(string); ok {
				t.Groups = append(t.Groups, s)
			}
		}
	}
	switch aud := claims["aud"].(type) {
	case string:
		t.Audience = []string{aud}
	case []any:
		for _, a := range aud {
			if s, ok := a.(string); ok {
				t.Audience = append(t.Audience, s)
			}
		}
	}
	t.Claims, _ = structpb.NewStruct(claims)
	skew := e.cfg.Tokens.Skew()
	ok := true
	if exp, has := claims["exp"].(float64); has {
		t.Expiry = time.Unix(int64(exp), 0)
		if !in.now.Before(t.Expiry.Add(skew)) {
			ok = false
			h.fail(policyv1.DecisionReason_DECISION_REASON_TOKEN_EXPIRED, tokenTexts[policyv1.DecisionReason_DECISION_REASON_TOKEN_EXPIRED])
			h.step(policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_TOKEN_CLAIMS, fail, policyv1.DecisionReason_DECISION_REASON_TOKEN_EXPIRED, noSource, "", "exp "+t.Expiry.UTC().Format(time.RFC3339)+" has passed")
		}
	} else {
		t.Expiry = in.now.Add(time.Hour)
	}
	if nbf, has := claims["nbf"].(float64); has && ok && in.now.Add(skew).Before(time.Unix(int64(nbf), 0)) {
		ok = false
		h.fail(policyv1.DecisionReason_DECISION_REASON_TOKEN_NOT_YET_VALID, tokenTexts[policyv1.DecisionReason_DECISION_REASON_TOKEN_NOT_YET_VALID])
		h.step(policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_TOKEN_CLAIMS, fail, policyv1.DecisionReason_DECISION_REASON_TOKEN_NOT_YET_VALID, noSource, "", "nbf is in the future")
	}
	if ok {
		h.step(policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_TOKEN_CLAIMS, pass, 0, noSource, "", "")
	}
	if len(t.Audience) == 1 && t.Audience[0] == in.resource {
		h.step(policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_TOKEN_AUDIENCE, pass, 0, noSource, "", "")
	} else {
		ok = false
		h.fail(policyv1.DecisionReason_DECISION_REASON_AUDIENCE_MISMATCH, tokenTexts[policyv1.DecisionReason_DECISION_REASON_AUDIENCE_MISMATCH])
		h.step(policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_TOKEN_AUDIENCE, fail, policyv1.DecisionReason_DECISION_REASON_AUDIENCE_MISMATCH, noSource, "", fmt.Sprintf("aud %q is not exactly %s", t.Audience, in.resource))
	}
	h.step(policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_TOKEN_REVOCATION, skipped, 0, noSource, "", "simulated token")
	h.token = t
	h.tokenOK = ok
}

func sortedFields(s string) []string {
	out := strings.Fields(s)
	sort.Strings(out)
	return slices.Compact(out)
}

// eval is the decision about one tool on top of a head.
type eval struct {
	engine    *Engine
	now       time.Time
	head      *head
	result    *policyv1.CheckResult
	failed    bool
	tool      *effective.Tool
	condition string
	input     *condition.Input
}

func (ev *eval) fail(reason policyv1.DecisionReason, text string) {
	if !ev.failed {
		ev.failed = true
		ev.result.Decision = policyv1.Decision_DECISION_DENY
		ev.result.Reason = reason
		ev.result.ReasonText = text
	}
}

// decide runs the tool steps. listing: ListAllowedTools (no arguments;
// conditions reading arguments are assumed satisfiable).
func (ev *eval) decide(name string, args *structpb.Struct, listing bool) {
	h := ev.head
	ev.result = &policyv1.CheckResult{Tool: name}
	if h.res != nil && h.res.Active() && !h.candidate {
		ev.result.PolicyRevision = h.res.Revision()
	}
	if h.failed {
		ev.fail(h.reason, h.text)
		if !h.explaining() {
			return
		}
	}
	if h.token != nil && (h.tokenOK || h.explaining()) {
		ev.result.GrantedScopes = h.token.Scopes
	}

	// Arguments (a listing has none).
	switch {
	case listing:
	case argumentsWithinLimits(args):
		h.step(policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_ARGUMENTS, pass, 0, noSource, "", "")
	default:
		ev.fail(policyv1.DecisionReason_DECISION_REASON_ARGUMENTS_TOO_LARGE,
			fmt.Sprintf("the arguments exceed %d KiB of JSON or nest deeper than %d levels", MaxArgumentsBytes>>10, MaxArgumentsDepth))
		h.step(policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_ARGUMENTS, fail, policyv1.DecisionReason_DECISION_REASON_ARGUMENTS_TOO_LARGE, noSource, "", "")
		if !h.explaining() {
			return
		}
	}

	// Tool.
	var t *effective.Tool
	if h.res != nil && document.ValidToolName(name) {
		t, _ = h.res.Tool(name)
	}
	if t == nil {
		text := "tool " + name + " is unknown"
		if !document.ValidToolName(name) {
			text = "the tool name is not a valid MCP tool name"
		}
		ev.fail(policyv1.DecisionReason_DECISION_REASON_TOOL_UNKNOWN, text)
		h.step(policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_TOOL, fail, policyv1.DecisionReason_DECISION_REASON_TOOL_UNKNOWN, noSource, "", "neither layer declares the tool")
		for _, k := range []policyv1.EvaluationStepKind{
			policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_TOOL_DENY,
			policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_CLIENT_VERIFICATION,
			policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_SCOPES,
		} {
			h.step(k, skipped, 0, noSource, "", "unknown tool")
		}
		return
	}
	ev.tool = t
	h.step(policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_TOOL, pass, 0, t.Found, "", "")
	if h.token != nil && (h.tokenOK || h.explaining()) {
		ev.result.RequiredScopes = t.Required
	}

	// Deny.
	if t.Denied {
		ev.fail(policyv1.DecisionReason_DECISION_REASON_TOOL_DENIED, "tool "+name+" is denied by policy")
		h.step(policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_TOOL_DENY, fail, policyv1.DecisionReason_DECISION_REASON_TOOL_DENIED, t.DenySource, "", "")
		if !h.explaining() {
			return
		}
	} else {
		h.step(policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_TOOL_DENY, pass, 0, noSource, "", "")
	}

	if h.token == nil {
		// Nothing to evaluate the rest with (Explain of an unverifiable
		// token).
		for _, k := range []policyv1.EvaluationStepKind{
			policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_CLIENT_VERIFICATION,
			policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_SCOPES,
		} {
			h.step(k, skipped, 0, noSource, "", "no verified claims")
		}
		return
	}

	// Client verification.
	if t.RequireVerified {
		if h.client.GetVerified() {
			h.step(policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_CLIENT_VERIFICATION, pass, 0, t.VerifiedSource, "", "client "+h.client.GetId()+" is verified")
		} else {
			ev.fail(policyv1.DecisionReason_DECISION_REASON_CLIENT_NOT_VERIFIED, "tool "+name+" may only be called by verified clients")
			h.step(policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_CLIENT_VERIFICATION, fail, policyv1.DecisionReason_DECISION_REASON_CLIENT_NOT_VERIFIED, t.VerifiedSource, "", "client "+h.client.GetId()+" is not verified")
			if !h.explaining() {
				return
			}
		}
	} else {
		h.step(policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_CLIENT_VERIFICATION, pass, 0, noSource, "", "not required")
	}

	// Scopes.
	missing := missingScopes(h.res, h.token.Scopes, t.Required)
	if len(missing) > 0 {
		ev.result.MissingScopes = missing
		ev.fail(policyv1.DecisionReason_DECISION_REASON_SCOPE_MISSING,
			"tool "+name+" requires scopes "+strings.Join(t.Required, " ")+"; missing "+strings.Join(missing, " "))
		src := t.ScopeSources[missing[0]]
		h.step(policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_SCOPES, fail, policyv1.DecisionReason_DECISION_REASON_SCOPE_MISSING, src, "", ev.scopeDetail(missing))
		if !h.explaining() {
			return
		}
	} else if len(t.Required) > 0 {
		h.step(policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_SCOPES, pass, 0, t.ScopeSources[t.Required[0]], "", ev.scopeDetail(nil))
	} else {
		h.step(policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_SCOPES, pass, 0, noSource, "", "no scopes required")
	}

	// Conditions.
	ev.conditions(t, args, listing)
	if !ev.failed {
		ev.result.Decision = policyv1.Decision_DECISION_ALLOW
		ev.result.Reason = policyv1.DecisionReason_DECISION_REASON_ALLOWED
		ev.result.ReasonText = "tool " + name + " is allowed"
	}
}

func (ev *eval) scopeDetail(missing []string) string {
	if !ev.head.explaining() {
		return ""
	}
	var implied []string
	for _, g := range ev.head.token.Scopes {
		implied = append(implied, ev.head.res.Implied(g)...)
	}
	held := strings.Join(ev.head.token.Scopes, " ")
	imp := strings.Join(sortedUnique(implied), " ")
	if imp == "" {
		imp = "none"
	}
	d := "held " + held + " (implied: " + imp + ")"
	if len(missing) > 0 {
		d += "; missing " + strings.Join(missing, " ")
	}
	return d
}

func (ev *eval) conditions(t *effective.Tool, args *structpb.Struct, listing bool) {
	h := ev.head
	if len(t.Conditions) == 0 {
		return
	}
	in := &condition.Input{
		Token:     h.token.Claims,
		Scopes:    effectiveScopes(h.res, h.token.Scopes),
		Groups:    h.token.Groups,
		Client:    h.client,
		Tool:      t.Input,
		Arguments: args,
		Now:       ev.now,
	}
	ev.input = in
	result := "true"
	for i := range t.Conditions {
		c := &t.Conditions[i]
		src := effective.Source{Layer: c.Proto.GetLayer(), Field: c.Proto.GetField()}
		expr := c.Proto.GetCondition().GetExpression()
		if listing && c.Program != nil && c.Program.ReadsArguments {
			h.step(policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_CONDITION, skipped, 0, src, expr, "reads arguments: checked at the call")
			continue
		}
		var ok bool
		err := c.Err
		if err == nil {
			ok, err = c.Program.Eval(in)
		}
		switch {
		case err != nil:
			result = "error"
			ev.fail(policyv1.DecisionReason_DECISION_REASON_CONDITION_ERROR, "a condition of tool "+t.Name+" could not be evaluated")
			h.step(policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_CONDITION, errored, policyv1.DecisionReason_DECISION_REASON_CONDITION_ERROR, src, expr, err.Error())
		case !ok:
			if result == "true" {
				result = "false"
			}
			text := c.Proto.GetCondition().GetMessage()
			if text == "" {
				text = "a condition of tool " + t.Name + " does not hold"
			}
			ev.fail(policyv1.DecisionReason_DECISION_REASON_CONDITION_FALSE, text)
			h.step(policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_CONDITION, fail, policyv1.DecisionReason_DECISION_REASON_CONDITION_FALSE, src, expr, "evaluated to false")
		default:
			h.step(policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_CONDITION, pass, 0, src, expr, "evaluated to true")
			continue
		}
		if !h.explaining() {
			break
		}
	}
	ev.condition = result
}

// outcome returns the decision with its cache lifetime.
func (ev *eval) outcome() *Outcome {
	readsNow := ev.tool != nil && ev.tool.ReadsNow
	ev.result.CacheTtl = durationpb.New(ev.head.ttl(ev.engine.cfg.MaxCacheTTL, ev.now, readsNow))
	o := &Outcome{Result: ev.result, Tool: ev.tool, ConditionResult: ev.condition}
	if !ev.head.explaining() {
		// Outside Explain a head holds a token only once its signature and
		// claims verified (a revoked one included): audit records whose it was.
		o.Token = ev.head.token
	}
	return o
}

// missingScopes returns the required scopes that granted holds neither
// directly nor by implication, sorted (required is sorted).
func missingScopes(res *effective.Resource, granted, required []string) []string {
	var missing []string
	for _, r := range required {
		if !holds(res, granted, r) {
			missing = append(missing, r)
		}
	}
	return missing
}

func holds(res *effective.Resource, granted []string, scope string) bool {
	if _, ok := slices.BinarySearch(granted, scope); ok {
		return true
	}
	for _, g := range granted {
		if _, ok := slices.BinarySearch(res.Implied(g), scope); ok {
			return true
		}
	}
	return false
}

// effectiveScopes is granted plus everything it implies, sorted.
func effectiveScopes(res *effective.Resource, granted []string) []string {
	out := slices.Clone(granted)
	for _, g := range granted {
		out = append(out, res.Implied(g)...)
	}
	return sortedUnique(out)
}

func sortedUnique(s []string) []string {
	sort.Strings(s)
	return slices.Compact(s)
}
