// Package output prints CLI results: aligned tables for people, and JSON or
// YAML (protobuf JSON with the proto field names, as the HTTP APIs use) for
// scripts. Tables are the only format whose layout is for reading; JSON and
// YAML are stable for tooling.
package output

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"
)

// Format is an output format.
type Format string

// Output formats.
const (
	Table Format = "table"
	JSON  Format = "json"
	YAML  Format = "yaml"
)

// Formats lists the accepted values of -o, for help and completion.
var Formats = []string{string(Table), string(JSON), string(YAML)}

// Parse validates an -o value.
func Parse(s string) (Format, error) {
	switch Format(s) {
	case Table, JSON, YAML:
		return Format(s), nil
	case "":
		return Table, nil
	}
	return "", fmt.Errorf("unknown output format %q: use one of %s", s, strings.Join(Formats, ", "))
}

var marshal = protojson.MarshalOptions{UseProtoNames: true, Indent: "  "}

// MessageJSON returns a message as protobuf JSON with proto field names.
func MessageJSON(m proto.Message) (json.RawMessage, error) {
	b, err := marshal.Marshal(m)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// Structured writes v — a proto.Message, a slice of them, or any value
// encoding/json accepts — as JSON or YAML.
func Structured(w io.Writer, f Format, v any) error {
	b, err := toJSON(v)
	if err != nil {
		return err
	}
	switch f {
	case YAML:
		y, err := yaml.JSONToYAML(b)
		if err != nil {
			return err
		}
		_, err = w.Write(y)
		return err
	default:
		var buf bytes.Buffer
		if err := json.Indent(&buf, b, "", "  "); err != nil {
			return err
		}
		buf.WriteByte('\n')
		_, err = w.Write(buf.Bytes())
		return err
	}
}

func toJSON(v any) ([]byte, error) {
	switch m := v.(type) {
	case proto.Message:
		return protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	}
	return json.Marshal(convert(v))
}

// convert turns proto messages nested in slices and maps into raw JSON.
func convert(v any) any {
	switch x := v.(type) {
	case proto.Message:
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(x)
		if err != nil {
			return nil
		}
		return json.RawMessage(b)
	case []proto.Message:
		out := make([]any, len(x))
		for i, m := range x {
			out[i] = convert(m)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, m := range x {
			out[k] = convert(m)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, m := range x {
			out[i] = convert(m)
		}
		return out
	}
	return v
}

// List converts a typed slice of messages for Structured. Lists are written
// as a JSON array, so `-o json | jq '.[]'` works on every list command.
func List[M proto.Message](ms []M) []any {
	out := make([]any, len(ms))
	for i, m := range ms {
		out[i] = m
	}
	return out
}

// TableWriter writes an aligned table: a header row in capitals, then rows.
type TableWriter struct {
	tw *tabwriter.Writer
}

// NewTable starts a table with the given column headers.
func NewTable(w io.Writer, headers ...string) *TableWriter {
	t := &TableWriter{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	t.Row(headers...)
	return t
}

// Row adds a row; empty cells print as "-" so columns stay readable.
func (t *TableWriter) Row(cells ...string) {
	for i, c := range cells {
		if c == "" {
			c = "-"
		}
		// Tabs and newlines would break the alignment.
		c = strings.NewReplacer("\t", " ", "\n", " ").Replace(c)
		if i > 0 {
			_, _ = io.WriteString(t.tw, "\t")
		}
		_, _ = io.WriteString(t.tw, c)
	}
	_, _ = io.WriteString(t.tw, "\n")
}

// Flush writes the table.
func (t *TableWriter) Flush() error { return t.tw.Flush() }

// KV writes "key: value" lines aligned on the colon, for one object.
func KV(w io.Writer, pairs ...string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	for i := 0; i+1 < len(pairs); i += 2 {
		v := pairs[i+1]
		if v == "" {
			v = "-"
		}
		fmt.Fprintf(tw, "%s:\t%s\n", pairs[i], v)
	}
	return tw.Flush()
}

// Time formats a timestamp in UTC, seconds precision; "-" when unset.
func Time(ts *timestamppb.Timestamp) string {
	if ts == nil || (ts.GetSeconds() == 0 && ts.GetNanos() == 0) {
		return ""
	}
	return ts.AsTime().UTC().Format(time.RFC3339)
}

// Enum strips an enum value's type prefix and lowercases it:
// VERIFICATION_STATUS_VERIFIED with prefix "VERIFICATION_STATUS_" is
// "verified".
func Enum(name, prefix string) string {
	s := strings.TrimPrefix(name, prefix)
	if strings.HasSuffix(s, "UNSPECIFIED") {
		return ""
	}
	return strings.ToLower(s)
}

// Join joins values with commas.
func Join(ss []string) string { return strings.Join(ss, ",") }
