// Package condition compiles and evaluates the CEL conditions of tool rules.
//
// The environment is declared from the contract's ConditionInput message
// (each field a top-level variable: token, scopes, groups, client, tool,
// arguments, now), so a condition is type-checked on write against exactly
// what Check will give it. Compilation also estimates the worst-case cost of
// an expression against bounded input sizes and refuses expressions whose
// estimate exceeds the cost limit; evaluation is bounded by the same limit,
// so a condition can never run away with a request.
package condition

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/checker"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/ext"
	"github.com/google/cel-go/interpreter"
	"google.golang.org/protobuf/types/known/structpb"

	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
)

// DefaultCostLimit bounds both the estimated cost of a condition (on write)
// and its actual cost (at evaluation). CEL cost units are roughly one cheap
// operation each; 100 000 keeps the worst case around a millisecond.
const DefaultCostLimit = 100_000

// MaxExpressionLength is the longest expression accepted (characters).
const MaxExpressionLength = 4096

// Variable names: the ConditionInput field names.
const (
	VarToken     = "token"
	VarScopes    = "scopes"
	VarGroups    = "groups"
	VarClient    = "client"
	VarTool      = "tool"
	VarArguments = "arguments"
	VarNow       = "now"
)

// Size bounds the cost estimator assumes for inputs whose size CEL cannot
// know. They follow the limits Check enforces: tokens are at most 16 KiB,
// arguments at most 64 KiB of JSON.
const (
	maxTokenEntries    = 1024
	maxArgumentEntries = 16 << 10
	maxListEntries     = 1024
	maxStringSize      = 64 << 10
)

// Env compiles conditions. It is immutable and safe for concurrent use.
type Env struct {
	env       *cel.Env
	costLimit uint64
}

// NewEnv returns the condition environment with costLimit (0 means
// DefaultCostLimit).
func NewEnv(costLimit uint64) (*Env, error) {
	if costLimit == 0 {
		costLimit = DefaultCostLimit
	}
	env, err := cel.NewEnv(
		cel.DeclareContextProto((&policyv1.ConditionInput{}).ProtoReflect().Descriptor()),
		cel.Types(&policyv1.ConditionClient{}, &policyv1.ConditionTool{}),
		// `arguments.limit <= 1000` should mean what it says even though JSON
		// numbers are doubles.
		cel.CrossTypeNumericComparisons(true),
		ext.Strings(),
		cel.ParserExpressionSizeLimit(MaxExpressionLength),
		cel.ParserRecursionLimit(64),
	)
	if err != nil {
		return nil, fmt.Errorf("condition: environment: %w", err)
	}
	return &Env{env: env, costLimit: costLimit}, nil
}

// CostLimit returns the environment's cost limit.
func (e *Env) CostLimit() uint64 { return e.costLimit }

// Program is one compiled condition. It is safe for concurrent use.
type Program struct {
	prg cel.Program
	// ReadsNow: the expression refers to `now`, so its outcome may change
	// without any input changing (decisions are then not cacheable).
	ReadsNow bool
	// ReadsArguments: the expression refers to `arguments` (ListAllowedTools
	// assumes such a condition satisfiable).
	ReadsArguments bool
}

// CompileError describes why an expression was refused; Error() is
// suitable for a BadRequest violation (it names line and column).
type CompileError struct {
	Message string
}

func (e *CompileError) Error() string { return e.Message }

// Compile parses, type-checks and cost-checks expr. The error is a
// *CompileError.
func (e *Env) Compile(expr string) (*Program, error) {
	if strings.TrimSpace(expr) == "" {
		return nil, &CompileError{Message: "expression is empty"}
	}
	if n := len([]rune(expr)); n > MaxExpressionLength {
		return nil, &CompileError{Message: fmt.Sprintf("expression is %d characters, more than %d", n, MaxExpressionLength)}
	}
	ast, iss := e.env.Compile(expr)
	if iss != nil && iss.Err() != nil {
		return nil, &CompileError{Message: describeIssues(iss)}
	}
	if !ast.OutputType().IsExactType(types.BoolType) {
		return nil, &CompileError{Message: fmt.Sprintf("expression has type %s, want bool", ast.OutputType())}
	}
	est, err := e.env.EstimateCost(ast, estimator{})
	if err != nil {
		return nil, &CompileError{Message: "cost estimation failed: " + err.Error()}
	}
	if est.Max > e.costLimit {
		return nil, &CompileError{Message: fmt.Sprintf("worst-case evaluation cost %d exceeds the limit %d; bound the work (fewer comprehensions, smaller inputs)", est.Max, e.costLimit)}
	}
	prg, err := e.env.Program(ast, cel.CostLimit(e.costLimit), cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, &CompileError{Message: "cannot build program: " + err.Error()}
	}
	p := &Program{prg: prg}
	for _, ref := range ast.NativeRep().ReferenceMap() {
		switch ref.Name {
		case VarNow:
			p.ReadsNow = true
		case VarArguments:
			p.ReadsArguments = true
		}
	}
	return p, nil
}

// describeIssues formats compiler errors as "line L, column C: message",
// joined by "; ", without the multi-line source snippets CEL adds.
func describeIssues(iss *cel.Issues) string {
	var parts []string
	for _, e := range iss.Errors() {
		if e.Location != nil && e.Location.Line() > 0 {
			parts = append(parts, fmt.Sprintf("line %d, column %d: %s", e.Location.Line(), e.Location.Column()+1, e.Message))
		} else {
			parts = append(parts, e.Message)
		}
	}
	if len(parts) == 0 {
		return iss.Err().Error()
	}
	return strings.Join(parts, "; ")
}

// Input is what one evaluation sees: the ConditionInput variables.
type Input struct {
	Token     *structpb.Struct
	Scopes    []string
	Groups    []string
	Client    *policyv1.ConditionClient
	Tool      *policyv1.ConditionTool
	Arguments *structpb.Struct
	Now       time.Time
}

// Proto returns the input as the contract's ConditionInput (for Explain).
func (in *Input) Proto() *policyv1.ConditionInput {
	out := &policyv1.ConditionInput{
		Token:     in.Token,
		Scopes:    in.Scopes,
		Groups:    in.Groups,
		Client:    in.Client,
		Tool:      in.Tool,
		Arguments: in.Arguments,
	}
	if !in.Now.IsZero() {
		out.Now = timestampOf(in.Now)
	}
	return out
}

// ErrNotBool is wrapped when an expression evaluated to a non-bool value
// (possible only through dyn values the checker could not see through).
var ErrNotBool = errors.New("condition did not evaluate to a bool")

// Eval evaluates p on in. An error (missing key, type error, cost limit
// exceeded) means the condition could not be decided.
func (p *Program) Eval(in *Input) (bool, error) {
	out, _, err := p.prg.Eval(activation{in: in})
	if err != nil {
		return false, err
	}
	b, ok := out.Value().(bool)
	if !ok {
		return false, fmt.Errorf("%w (got %s)", ErrNotBool, out.Type())
	}
	return b, nil
}

var emptyStruct = &structpb.Struct{}

// activation resolves the ConditionInput variables without building a map
// per evaluation.
type activation struct{ in *Input }

func (a activation) ResolveName(name string) (any, bool) {
	in := a.in
	switch name {
	case VarToken:
		if in.Token == nil {
			return emptyStruct, true
		}
		return in.Token, true
	case VarScopes:
		return stringsOrEmpty(in.Scopes), true
	case VarGroups:
		return stringsOrEmpty(in.Groups), true
	case VarClient:
		if in.Client == nil {
			return &policyv1.ConditionClient{}, true
		}
		return in.Client, true
	case VarTool:
		if in.Tool == nil {
			return &policyv1.ConditionTool{}, true
		}
		return in.Tool, true
	case VarArguments:
		if in.Arguments == nil {
			return emptyStruct, true
		}
		return in.Arguments, true
	case VarNow:
		return in.Now, true
	}
	return nil, false
}

func (activation) Parent() interpreter.Activation { return nil }

func stringsOrEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// estimator gives the cost estimator upper bounds for inputs of unknown
// size, so that comprehensions over them have a finite worst case.
type estimator struct{}

func (estimator) EstimateSize(n checker.AstNode) *checker.SizeEstimate {
	path := n.Path()
	if len(path) == 0 {
		return nil
	}
	var maxEntries uint64
	switch path[0] {
	case VarToken:
		maxEntries = maxTokenEntries
	case VarArguments:
		maxEntries = maxArgumentEntries
	case VarScopes, VarGroups:
		maxEntries = maxListEntries
	default:
		maxEntries = maxStringSize
	}
	// Strings anywhere are bounded by the largest input.
	if t := n.Type(); t != nil && (t.IsExactType(types.StringType) || t.IsExactType(types.BytesType)) {
		maxEntries = maxStringSize
	}
	return &checker.SizeEstimate{Min: 0, Max: maxEntries}
}

func (estimator) EstimateCallCost(string, string, *checker.AstNode, []checker.AstNode) *checker.CallEstimate {
	return nil
}
