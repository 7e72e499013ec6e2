package api

import (
	"context"
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	"github.com/mcpid/mcpid/lib/principal"
	"github.com/mcpid/mcpid/services/policy/internal/decision"
	"github.com/mcpid/mcpid/services/policy/internal/effective"
)

// MaxBatchItems bounds BatchCheckRequest.items.
const MaxBatchItems = 100

// Check implements the hot path.
func (s *Server) Check(ctx context.Context, req *policyv1.CheckRequest) (*policyv1.CheckResponse, error) {
	res, err := canonical("resource", req.GetResource())
	if err != nil {
		return nil, err
	}
	if req.GetTool() == "" {
		return nil, invalidField("tool", "required")
	}
	if err := ownResource(ctx, res); err != nil {
		return nil, err
	}
	o := s.cfg.Engine.Check(ctx, req.GetAccessToken(), res, decision.Call{Tool: req.GetTool(), Arguments: req.GetArguments()})
	s.audit(ctx, res, o)
	return &policyv1.CheckResponse{Result: o.Result}, nil
}

// BatchCheck decides several calls with one token.
func (s *Server) BatchCheck(ctx context.Context, req *policyv1.BatchCheckRequest) (*policyv1.BatchCheckResponse, error) {
	res, err := canonical("resource", req.GetResource())
	if err != nil {
		return nil, err
	}
	items := req.GetItems()
	if len(items) == 0 || len(items) > MaxBatchItems {
		return nil, invalidField("items", "%d items, want 1 to %d", len(items), MaxBatchItems)
	}
	calls := make([]decision.Call, len(items))
	for i, it := range items {
		if it.GetTool() == "" {
			return nil, invalidField(fmt.Sprintf("items[%d].tool", i), "required")
		}
		calls[i] = decision.Call{Tool: it.GetTool(), Arguments: it.GetArguments()}
	}
	if err := ownResource(ctx, res); err != nil {
		return nil, err
	}
	outs := s.cfg.Engine.BatchCheck(ctx, req.GetAccessToken(), res, calls)
	resp := &policyv1.BatchCheckResponse{Results: make([]*policyv1.CheckResult, len(outs))}
	for i, o := range outs {
		s.audit(ctx, res, o)
		resp.Results[i] = o.Result
	}
	return resp, nil
}

// ListAllowedTools filters tools/list.
func (s *Server) ListAllowedTools(ctx context.Context, req *policyv1.ListAllowedToolsRequest) (*policyv1.ListAllowedToolsResponse, error) {
	res, err := canonical("resource", req.GetResource())
	if err != nil {
		return nil, err
	}
	if err := ownResource(ctx, res); err != nil {
		return nil, err
	}
	return s.cfg.Engine.ListAllowedTools(ctx, req.GetAccessToken(), res), nil
}

// Explain dry-runs a decision.
func (s *Server) Explain(ctx context.Context, req *policyv1.ExplainRequest) (*policyv1.ExplainResponse, error) {
	res, err := canonical("resource", req.GetResource())
	if err != nil {
		return nil, err
	}
	if req.GetTool() == "" {
		return nil, invalidField("tool", "required")
	}
	in := decision.ExplainInput{Resource: res, Tool: req.GetTool(), Arguments: req.GetArguments()}
	switch t := req.GetToken().(type) {
	case *policyv1.ExplainRequest_AccessToken:
		in.AccessToken = t.AccessToken
	case *policyv1.ExplainRequest_SimulatedToken:
		if t.SimulatedToken == nil {
			return nil, invalidField("simulated_token", "required")
		}
		in.Simulated = t.SimulatedToken
	default:
		return nil, invalidField("token", "give access_token or simulated_token")
	}
	if ts := req.GetTime(); ts != nil {
		if err := ts.CheckValid(); err != nil {
			return nil, invalidField("time", "%v", err)
		}
		in.Time = ts.AsTime()
	}
	if !s.cfg.Index.Ready() {
		return nil, notSynced()
	}
	if req.GetCandidatePolicy() != nil || req.GetCandidateManifest() != nil {
		cand, err := s.candidate(res, req.GetCandidatePolicy(), req.GetCandidateManifest())
		if err != nil {
			return nil, err
		}
		in.Candidate = cand
	}
	return s.cfg.Engine.Explain(ctx, in), nil
}

// candidate builds the effective policy of Explain's candidate documents,
// each replacing the stored one, validated as PutPolicy and PublishManifest
// validate.
func (s *Server) candidate(res string, candPol *policyv1.Policy, candMan *policyv1.Manifest) (*effective.Resource, error) {
	var pol *policyv1.Policy
	var man *policyv1.Manifest
	if stored, ok := s.cfg.Index.Get(res); ok {
		pol, man = stored.Policy, stored.Manifest
	}
	if candMan != nil {
		m := normalizeManifest(candMan)
		if m.GetResource() != res {
			return nil, invalidField("candidate_manifest.resource", "must be the explained resource %s", res)
		}
		if vs := s.cfg.Validator.ValidateManifest(m, "candidate_manifest"); len(vs) > 0 {
			return nil, invalidDocument(policyv1.ErrorReason_ERROR_REASON_MANIFEST_INVALID, "candidate manifest", vs)
		}
		man = m
	}
	if candPol != nil {
		p := normalizePolicy(candPol)
		if p.GetResource() != res {
			return nil, invalidField("candidate_policy.resource", "must be the explained resource %s", res)
		}
		if vs := s.cfg.Validator.ValidatePolicy(p, man, "candidate_policy"); len(vs) > 0 {
			return nil, invalidDocument(policyv1.ErrorReason_ERROR_REASON_POLICY_INVALID, "candidate policy", vs)
		}
		pol = p
	}
	return effective.Build(res, pol, man, s.cfg.Env), nil
}

// Audit field limits (mcpid.audit.v1.Event).
const (
	maxEventTool      = 256
	maxEventID        = 128
	maxEventUser      = 256
	maxEventClient    = 2048
	maxEventScopes    = 100
	maxEventArguments = 8 << 10
)

// audit sends a decision to the audit trail: denials always, allows of
// destructive tools always, other allows sampled. In strict mode an allow
// whose event was not acknowledged becomes a denial.
func (s *Server) audit(ctx context.Context, res string, o *decision.Outcome) {
	if s.cfg.Batcher == nil {
		return
	}
	r := o.Result
	allow := r.GetDecision() == policyv1.Decision_DECISION_ALLOW
	weight := uint64(1)
	if allow && (o.Tool == nil || !o.Tool.Destructive) {
		if n := s.allows.Add(1); n%s.sampleEvery != 0 {
			return
		}
		weight = s.sampleEvery
	}
	p, _ := principal.FromContext(ctx)
	ev := &auditv1.Event{
		Type:         auditv1.EventType_EVENT_TYPE_POLICY_DECISION,
		Actor:        actorOf(p),
		Resource:     res,
		Tool:         truncate(r.GetTool(), maxEventTool),
		Scopes:       r.GetRequiredScopes(),
		Decision:     auditv1.Decision_DECISION_DENY,
		DecisionId:   r.GetDecisionId(),
		SampleWeight: uint32(min(weight, 1<<31)), //nolint:gosec // bounded above
	}
	if len(ev.Scopes) > maxEventScopes {
		ev.Scopes = ev.Scopes[:maxEventScopes]
	}
	if allow {
		ev.Decision = auditv1.Decision_DECISION_ALLOW
	} else {
		ev.Reason = r.GetReason().String()
	}
	if t := o.Token; t != nil {
		ev.ClientId = truncate(t.ClientID, maxEventClient)
		if t.Subject != t.ClientID { // client_credentials tokens have sub = client_id
			ev.UserId = truncate(t.Subject, maxEventUser)
		}
		ev.GrantId = truncate(t.GrantID, maxEventID)
		ev.TokenId = truncate(t.JTI, maxEventID)
	}
	if o.Arguments != nil && len(o.Arguments.GetFields()) > 0 {
		if b, err := protojson.Marshal(o.Arguments); err == nil {
			v := truncate(string(b), maxEventArguments)
			ev.ToolArguments = &auditv1.Protected{Value: &v}
		}
	}
	details := map[string]any{}
	if len(r.GetMissingScopes()) > 0 {
		ms := make([]any, len(r.GetMissingScopes()))
		for i, m := range r.GetMissingScopes() {
			ms[i] = m
		}
		details["missing_scopes"] = ms
	}
	if o.ConditionResult != "" {
		details["condition_result"] = o.ConditionResult
	}
	if len(details) > 0 {
		ev.Details, _ = structpb.NewStruct(details)
	}
	err := s.cfg.Batcher.Emit(ctx, ev)
	if err != nil && s.cfg.StrictAudit && allow {
		s.log.WarnContext(ctx, "strict audit: decision not acknowledged; denying", "decision_id", r.GetDecisionId(), "error", err)
		r.Decision = policyv1.Decision_DECISION_DENY
		r.Reason = policyv1.DecisionReason_DECISION_REASON_NOT_READY
		r.ReasonText = "the policy service cannot record the decision; retry later"
		r.CacheTtl = nil
	}
}

// actorOf is the audit actor of a caller.
func actorOf(p principal.Principal) *auditv1.Actor {
	switch p.Kind {
	case principal.KindOperator:
		return &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_OPERATOR, Id: p.ID}
	case principal.KindMCPServer:
		return &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_MCP_SERVER, Id: p.Resource}
	case principal.KindService:
		return &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_SERVICE, Id: p.ID}
	default:
		return &auditv1.Actor{Kind: auditv1.ActorKind_ACTOR_KIND_ANONYMOUS}
	}
}

// truncate cuts s to at most n bytes on a UTF-8 boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
