package decision

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	"github.com/mcpid/mcpid/services/policy/internal/effective"
)

// ExplainInput is a dry run.
type ExplainInput struct {
	// Resource is canonical.
	Resource  string
	Tool      string
	Arguments *structpb.Struct
	// Exactly one of AccessToken and Simulated.
	AccessToken string
	Simulated   *policyv1.SimulatedToken
	// Candidate replaces the stored documents when set.
	Candidate *effective.Resource
	// Time is the instant to evaluate at; zero means now.
	Time time.Time
}

// Explain runs Check's steps on in, recording every step and continuing
// after failures; the decision is the first failing step's. Nothing is
// emitted and no decision id is assigned.
func (e *Engine) Explain(ctx context.Context, in ExplainInput) *policyv1.ExplainResponse {
	now := in.Time
	if now.IsZero() {
		now = e.cfg.Now()
	}
	var trace []*policyv1.EvaluationStep
	h := e.head(ctx, &input{
		token: in.AccessToken, simulated: in.Simulated, resource: in.Resource, now: now,
		res: in.Candidate, explain: true,
	}, &trace)
	ev := &eval{engine: e, now: now, head: h}
	ev.decide(in.Tool, in.Arguments, false)
	o := ev.outcome()
	resp := &policyv1.ExplainResponse{Result: o.Result, Trace: trace}
	if ev.tool != nil {
		resp.EffectiveTool = ev.tool.Proto
	}
	if ev.input != nil {
		resp.ConditionInput = ev.input.Proto()
	}
	return resp
}
