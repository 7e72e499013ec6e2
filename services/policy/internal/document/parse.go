package document

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"gopkg.in/yaml.v3"

	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
)

// MaxDocumentBytes bounds a document given to ParsePolicy or ParseManifest:
// 1000 tools with 8 conditions of 4 KiB fit, and nothing larger can reach
// the YAML decoder.
const MaxDocumentBytes = 4 << 20

// ErrSyntax is wrapped by the parse errors.
var ErrSyntax = errors.New("document syntax")

// ParsePolicy reads an operator policy written as YAML (the `mcpid policies
// apply -f` format) or JSON (the proto JSON mapping, proto field names).
// Unknown fields are errors: a misspelt `require_verified_clients` must not
// silently drop a requirement. It does not validate; see Validator.
func ParsePolicy(data []byte) (*policyv1.Policy, error) {
	p := &policyv1.Policy{}
	if err := parseInto(data, p); err != nil {
		return nil, err
	}
	return p, nil
}

// ParseManifest is ParsePolicy for a tool manifest.
func ParseManifest(data []byte) (*policyv1.Manifest, error) {
	m := &policyv1.Manifest{}
	if err := parseInto(data, m); err != nil {
		return nil, err
	}
	return m, nil
}

func parseInto(data []byte, msg proto.Message) error {
	if len(data) > MaxDocumentBytes {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrSyntax, len(data), MaxDocumentBytes)
	}
	js, err := toJSON(data)
	if err != nil {
		return err
	}
	if err := (protojson.UnmarshalOptions{}).Unmarshal(js, msg); err != nil {
		return fmt.Errorf("%w: %w", ErrSyntax, err)
	}
	return nil
}

// toJSON turns a YAML or JSON document into JSON. JSON is YAML, but it is
// passed through as it is so that protojson, not the YAML decoder, judges
// it (YAML would accept duplicate keys and non-JSON numbers).
func toJSON(data []byte) ([]byte, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) > 0 && trimmed[0] == '{' {
		return trimmed, nil
	}
	var doc any
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%w: YAML: %w", ErrSyntax, err)
	}
	var extra any
	if err := dec.Decode(&extra); err == nil {
		return nil, fmt.Errorf("%w: more than one YAML document", ErrSyntax)
	}
	v, err := jsonValue(doc, 0)
	if err != nil {
		return nil, err
	}
	if _, ok := v.(map[string]any); !ok {
		return nil, fmt.Errorf("%w: the document must be a mapping", ErrSyntax)
	}
	out, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSyntax, err)
	}
	return out, nil
}

// maxDepth bounds nesting: the deepest legitimate path is
// tools[].conditions[].expression, five levels.
const maxDepth = 16

// jsonValue converts what yaml.v3 decoded into values encoding/json writes
// as the same JSON: mappings must have string keys.
func jsonValue(v any, depth int) (any, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("%w: nested deeper than %d", ErrSyntax, maxDepth)
	}
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			c, err := jsonValue(e, depth+1)
			if err != nil {
				return nil, err
			}
			out[k] = c
		}
		return out, nil
	case map[any]any:
		return nil, fmt.Errorf("%w: mapping keys must be strings", ErrSyntax)
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			c, err := jsonValue(e, depth+1)
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	default:
		return v, nil
	}
}
