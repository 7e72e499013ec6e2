package decision

import (
	"encoding/json"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/structpb"
)

func TestArgumentsMeasureTracksJSON(t *testing.T) {
	cases := []map[string]any{
		{},
		{"a": "b"},
		{"s": "quote\" backslash\\ newline\n tab\t ctrl\x01 é ☃", "n": 1.5e300, "b": true, "z": nil},
		{"list": []any{1.0, "two", []any{map[string]any{"x": false}}}},
	}
	for _, c := range cases {
		s, err := structpb.NewStruct(c)
		if err != nil {
			t.Fatal(err)
		}
		js, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		m := measurer{budget: 1 << 30}
		m.object(s.GetFields(), 1)
		measured := 1<<30 - m.budget
		// The measure may count a separator too many per member, never less
		// than the encoding.
		if measured < len(js) || measured > len(js)+2*len(js)/3+4 {
			t.Errorf("%s: measured %d, JSON %d", js, measured, len(js))
		}
	}
}

func TestArgumentsLimits(t *testing.T) {
	mk := func(m map[string]any) *structpb.Struct {
		s, err := structpb.NewStruct(m)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if !argumentsWithinLimits(nil) || !argumentsWithinLimits(mk(map[string]any{"s": strings.Repeat("x", 60<<10)})) {
		t.Error("within limits refused")
	}
	if argumentsWithinLimits(mk(map[string]any{"s": strings.Repeat("x", 64<<10)})) {
		t.Error("64 KiB string accepted")
	}
	// Escapes count: 12k control characters are 72 KiB of JSON.
	if argumentsWithinLimits(mk(map[string]any{"s": strings.Repeat("\x01", 12<<10)})) {
		t.Error("escaped size not counted")
	}
	nest := func(depth int) map[string]any {
		root := map[string]any{}
		cur := root
		for range depth - 1 {
			next := map[string]any{}
			cur["a"] = next
			cur = next
		}
		return root
	}
	if !argumentsWithinLimits(mk(nest(MaxArgumentsDepth))) {
		t.Errorf("depth %d refused", MaxArgumentsDepth)
	}
	if argumentsWithinLimits(mk(nest(MaxArgumentsDepth + 1))) {
		t.Errorf("depth %d accepted", MaxArgumentsDepth+1)
	}
	list := []any{}
	for range 40 {
		list = []any{list}
	}
	if argumentsWithinLimits(mk(map[string]any{"l": list})) {
		t.Error("deep lists accepted")
	}
}
