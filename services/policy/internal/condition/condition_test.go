package condition_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	"github.com/mcpid/mcpid/services/policy/internal/condition"
)

func newEnv(t testing.TB) *condition.Env {
	t.Helper()
	env, err := condition.NewEnv(0)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func mustStruct(t testing.TB, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestEvaluatesEveryVariable(t *testing.T) {
	env := newEnv(t)
	in := &condition.Input{
		Token:     mustStruct(t, map[string]any{"sub": "u1", "auth_time": 1700000000.0}),
		Scopes:    []string{"crm:admin", "crm:read"},
		Groups:    []string{"sales"},
		Client:    &policyv1.ConditionClient{Id: "c1", Verified: true, ApplicationType: "web"},
		Tool:      &policyv1.ConditionTool{Name: "export", Destructive: true},
		Arguments: mustStruct(t, map[string]any{"limit": 500.0, "tags": []any{"a", "b"}}),
		Now:       time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC), // a Thursday
	}
	cases := map[string]bool{
		`token.sub == "u1"`:     true,
		`has(token.auth_time)`:  true,
		`has(token.email)`:      false,
		`"crm:admin" in scopes`: true,
		`"sales" in groups`:     true,
		`"eng" in groups`:       false,
		`client.verified && client.application_type == "web"`: true,
		`tool.destructive && tool.name == "export"`:           true,
		`arguments.limit <= 1000.0`:                           true,
		`arguments.limit <= 1000`:                             true, // cross-type numeric comparison
		`arguments.limit > 500`:                               false,
		`size(arguments.tags) == 2`:                           true,
		`now.getDayOfWeek("UTC") in [1, 2, 3, 4, 5]`:          true,
		`now.getHours("Europe/Berlin") == 11`:                 true,
		`token.sub.lowerAscii() == "u1"`:                      true,
	}
	for expr, want := range cases {
		p, err := env.Compile(expr)
		if err != nil {
			t.Errorf("%s: compile: %v", expr, err)
			continue
		}
		got, err := p.Eval(in)
		if err != nil {
			t.Errorf("%s: eval: %v", expr, err)
			continue
		}
		if got != want {
			t.Errorf("%s = %v, want %v", expr, got, want)
		}
	}
}

func TestReferenceFlags(t *testing.T) {
	env := newEnv(t)
	p, err := env.Compile(`now.getHours("UTC") < 18 && arguments.x == 1.0`)
	if err != nil {
		t.Fatal(err)
	}
	if !p.ReadsNow || !p.ReadsArguments {
		t.Errorf("flags = now %v args %v, want both", p.ReadsNow, p.ReadsArguments)
	}
	p, err = env.Compile(`client.verified`)
	if err != nil {
		t.Fatal(err)
	}
	if p.ReadsNow || p.ReadsArguments {
		t.Errorf("client.verified: flags = now %v args %v, want neither", p.ReadsNow, p.ReadsArguments)
	}
}

func TestCompileRefuses(t *testing.T) {
	env := newEnv(t)
	cases := map[string]string{
		"":                        "empty",
		`1 + 1`:                   "want bool",
		`unknown_var == 1`:        "line 1, column 1",
		`token.sub ==`:            "line 1",
		`client.nosuchfield`:      "undefined field",
		`"a" + 1 == "a1"`:         "no matching overload",
		strings.Repeat("a", 5000): "more than 4096",
		// Quadratic over bounded but large inputs: refused by the estimate.
		`arguments.items.all(a, arguments.items.all(b, a == b))`: "exceeds the limit",
	}
	for expr, want := range cases {
		_, err := env.Compile(expr)
		if err == nil {
			t.Errorf("%.40q compiled, want error containing %q", expr, want)
			continue
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%.40q: error %q, want it to contain %q", expr, err, want)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("%.40q: error %q spans lines", expr, err)
		}
	}
}

func TestEvalErrorsAreErrors(t *testing.T) {
	env := newEnv(t)
	in := &condition.Input{Arguments: mustStruct(t, map[string]any{"limit": "many"})}
	for _, expr := range []string{
		`arguments.missing == 1.0`, // missing key
		`arguments.limit > 3.0`,    // type error on a dyn value
	} {
		p, err := env.Compile(expr)
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		if got, err := p.Eval(in); err == nil {
			t.Errorf("%s = %v, want an evaluation error", expr, got)
		}
	}
}

func TestRuntimeCostLimit(t *testing.T) {
	// The estimate assumes strings of at most 64 KiB (what Check lets
	// through); a larger input is stopped by the runtime limit.
	p, err := newEnv(t).Compile(`arguments.s.contains("needle")`)
	if err != nil {
		t.Fatal(err)
	}
	small := mustStruct(t, map[string]any{"s": strings.Repeat("x", 1000)})
	if ok, err := p.Eval(&condition.Input{Arguments: small}); err != nil || ok {
		t.Fatalf("small input: %v, %v; want false", ok, err)
	}
	large := mustStruct(t, map[string]any{"s": strings.Repeat("x", 4<<20)})
	_, err = p.Eval(&condition.Input{Arguments: large})
	if err == nil || !strings.Contains(err.Error(), "cost limit") {
		t.Fatalf("4 MiB input: %v, want the runtime cost limit", err)
	}
}
