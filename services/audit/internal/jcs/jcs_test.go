package jcs_test

import (
	"errors"
	"math"
	"testing"

	"github.com/mcpid/mcpid/services/audit/internal/jcs"
)

// The examples of RFC 8785 (sections 3.2.2, 3.2.3 and appendix B).
func TestRFC8785Examples(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{
			name: "section 3.2.2",
			in: `{
  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}`,
			want: `{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}`,
		},
		{
			name: "section 3.2.3 sorting by UTF-16 code units",
			in: `{
  "\u20ac": "Euro Sign",
  "\r": "Carriage Return",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "1": "One",
  "\ud83d\ude00": "Emoji: Grinning Face",
  "\u0080": "Control",
  "\u00f6": "Latin Small Letter O With Diaeresis"
}`,
			want: "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u0080\":\"Control\",\"ö\":\"Latin Small Letter O With Diaeresis\",\"€\":\"Euro Sign\",\"😀\":\"Emoji: Grinning Face\",\"דּ\":\"Hebrew Letter Dalet With Dagesh\"}",
		},
		{name: "nested and empty", in: ` { "b" : [ {}, [] , {"z":1,"a":-0} ], "a": "" } `, want: `{"a":"","b":[{},[],{"a":0,"z":1}]}`},
	}
	for _, c := range cases {
		got, err := jcs.Transform([]byte(c.in))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if string(got) != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.name, got, c.want)
		}
	}
}

func TestNumbers(t *testing.T) {
	cases := map[uint64]string{
		0x0000000000000000: "0",
		0x8000000000000000: "0",
		0x0000000000000001: "5e-324",
		0x8000000000000001: "-5e-324",
		0x7fefffffffffffff: "1.7976931348623157e+308",
		0xffefffffffffffff: "-1.7976931348623157e+308",
		0x4340000000000000: "9007199254740992",
		0xc340000000000000: "-9007199254740992",
		0x4430000000000000: "295147905179352830000",
		0x44b52d02c7e14af5: "9.999999999999997e+22",
		0x44b52d02c7e14af6: "1e+23",
		0x44b52d02c7e14af7: "1.0000000000000001e+23",
		0x444b1ae4d6e2ef4e: "999999999999999700000",
		0x444b1ae4d6e2ef50: "1e+21",
		0x3eb0c6f7a0b5ed8c: "9.999999999999997e-7",
		0x3eb0c6f7a0b5ed8d: "0.000001",
		0x41b3de4355555553: "333333333.3333332",
		0x41b3de4355555555: "333333333.3333333",
		0x4037000000000000: "23",
	}
	for bits, want := range cases {
		got, err := jcs.AppendNumber(nil, math.Float64frombits(bits))
		if err != nil {
			t.Fatalf("%#x: %v", bits, err)
		}
		if string(got) != want {
			t.Errorf("%#x: got %s, want %s", bits, got, want)
		}
	}
	for _, f := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		if _, err := jcs.AppendNumber(nil, f); !errors.Is(err, jcs.ErrInvalid) {
			t.Errorf("%v: err = %v, want ErrInvalid", f, err)
		}
	}
}

func TestRejectsInvalidJSON(t *testing.T) {
	for _, in := range []string{
		``, `{`, `{"a":1,}`, `[1,]`, `{"a":1}x`, `01`, `1.`, `1e`, `"\x"`, "\"a\x01\"",
		`"\ud800"`, `{"a":1,"a":2}`, `tru`, `1e400`, "\"\xff\"", `{"a" 1}`, `[1 2]`,
	} {
		if _, err := jcs.Transform([]byte(in)); !errors.Is(err, jcs.ErrInvalid) {
			t.Errorf("%q: err = %v, want ErrInvalid", in, err)
		}
	}
}

func TestDepthBound(t *testing.T) {
	deep := make([]byte, 0, 1000)
	for range 500 {
		deep = append(deep, '[')
	}
	for range 500 {
		deep = append(deep, ']')
	}
	if _, err := jcs.Transform(deep); !errors.Is(err, jcs.ErrInvalid) {
		t.Fatalf("deep nesting: err = %v, want ErrInvalid", err)
	}
}
