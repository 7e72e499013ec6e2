package output

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestParse(t *testing.T) {
	for in, want := range map[string]Format{"": Table, "table": Table, "json": JSON, "yaml": YAML} {
		if got, err := Parse(in); err != nil || got != want {
			t.Errorf("Parse(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := Parse("xml"); err == nil || !strings.Contains(err.Error(), "table, json, yaml") {
		t.Errorf("Parse(xml) = %v, want an error listing the formats", err)
	}
}

func TestTable(t *testing.T) {
	var b bytes.Buffer
	tw := NewTable(&b, "NAME", "STATUS", "NOTE")
	tw.Row("a", "verified", "")
	tw.Row("longer-name", "", "two\twords\nand a line")
	if err := tw.Flush(); err != nil {
		t.Fatal(err)
	}
	want := "NAME         STATUS    NOTE\n" +
		"a            verified  -\n" +
		"longer-name  -         two words and a line\n"
	if b.String() != want {
		t.Errorf("table:\n%q\nwant\n%q", b.String(), want)
	}
}

func TestKV(t *testing.T) {
	var b bytes.Buffer
	if err := KV(&b, "id", "c1", "redirect uris", "", "odd"); err != nil {
		t.Fatal(err)
	}
	want := "id:            c1\nredirect uris: -\n"
	if b.String() != want {
		t.Errorf("KV:\n%q\nwant\n%q", b.String(), want)
	}
}

func TestStructured(t *testing.T) {
	msg, err := structpb.NewStruct(map[string]any{"client_id": "c1", "count": 2})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		v    any
		f    Format
		want string
	}{
		{"message json", msg, JSON, "{\n  \"client_id\": \"c1\",\n  \"count\": 2\n}\n"},
		{"message yaml", msg, YAML, "client_id: c1\ncount: 2\n"},
		{"list json", List([]*wrapperspb.StringValue{wrapperspb.String("a"), wrapperspb.String("b")}), JSON, "[\n  \"a\",\n  \"b\"\n]\n"},
		{"empty list json", List([]*wrapperspb.StringValue{}), JSON, "[]\n"},
		{"nested yaml", map[string]any{"result": "deleted", "client": msg}, YAML, "client:\n  client_id: c1\n  count: 2\nresult: deleted\n"},
		{"plain json", map[string]any{"result": "ok"}, JSON, "{\n  \"result\": \"ok\"\n}\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := Structured(&b, tc.f, tc.v); err != nil {
				t.Fatal(err)
			}
			if b.String() != tc.want {
				t.Errorf("got\n%s\nwant\n%s", b.String(), tc.want)
			}
		})
	}
}

func TestHelpers(t *testing.T) {
	if got := Time(timestamppb.New(time.Date(2026, 3, 4, 5, 6, 7, 8, time.FixedZone("x", 3600)))); got != "2026-03-04T04:06:07Z" {
		t.Errorf("Time = %s", got)
	}
	if Time(nil) != "" || Time(&timestamppb.Timestamp{}) != "" {
		t.Error("unset time not empty")
	}
	if got := Enum("VERIFICATION_STATUS_VERIFIED", "VERIFICATION_STATUS_"); got != "verified" {
		t.Errorf("Enum = %s", got)
	}
	if got := Enum("VERIFICATION_STATUS_UNSPECIFIED", "VERIFICATION_STATUS_"); got != "" {
		t.Errorf("Enum(UNSPECIFIED) = %s", got)
	}
	if got := Join([]string{"a", "b"}); got != "a,b" {
		t.Errorf("Join = %s", got)
	}
}
