package oauthhttp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// MIMEForm is the content type of OAuth form requests (RFC 6749 section 3.2).
const MIMEForm = "application/x-www-form-urlencoded"

// JSONMarshaler is the gateway's JSON: proto field names (the RFC names, set
// once here instead of json_name per field), unknown request fields ignored
// (RFC 7591 section 2 and RFC 6749 section 3.1 say so), unset fields omitted
// while set `optional` fields are always written ("active": false,
// "client_secret_expires_at": 0).
//
// Output is compact and byte-stable: protojson deliberately varies its
// whitespace between builds, which would make responses differ for no reason
// and golden tests impossible.
func JSONMarshaler() *StableJSON {
	return &StableJSON{JSONPb: &runtime.JSONPb{
		MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: false},
		UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: true},
	}}
}

// StableJSON is runtime.JSONPb with compact, deterministic output.
type StableJSON struct {
	*runtime.JSONPb
}

// Marshal writes compact JSON.
func (m *StableJSON) Marshal(v any) ([]byte, error) {
	b, err := m.JSONPb.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// NewEncoder writes compact JSON values, one per Encode.
func (m *StableJSON) NewEncoder(w io.Writer) runtime.Encoder {
	return runtime.EncoderFunc(func(v any) error {
		b, err := m.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	})
}

// FormMarshaler decodes application/x-www-form-urlencoded request bodies into
// request messages and answers in JSON (saying so in Content-Type), since
// OAuth endpoints take forms and answer JSON. It fills singular scalar fields
// by their proto name, ignores unknown parameters, and rejects a parameter
// given twice (RFC 6749 section 3.1: "MUST NOT be included more than once").
type FormMarshaler struct {
	JSON *StableJSON
}

var _ runtime.Marshaler = (*FormMarshaler)(nil)

// ErrRepeatedParameter is returned for a form parameter given more than once.
var ErrRepeatedParameter = errors.New("parameter included more than once")

// ContentType is JSON: responses are JSON whatever the request was.
func (m *FormMarshaler) ContentType(v any) string { return m.JSON.ContentType(v) }

// Marshal writes JSON.
func (m *FormMarshaler) Marshal(v any) ([]byte, error) { return m.JSON.Marshal(v) }

// Unmarshal decodes a form body into a proto message.
func (m *FormMarshaler) Unmarshal(data []byte, v any) error {
	msg, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("form: cannot decode into %T", v)
	}
	values, err := ParseForm(string(data))
	if err != nil {
		return err
	}
	return fillMessage(msg.ProtoReflect(), values)
}

// NewDecoder reads the whole (already size-limited) body and decodes it.
func (m *FormMarshaler) NewDecoder(r io.Reader) runtime.Decoder {
	return runtime.DecoderFunc(func(v any) error {
		data, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		return m.Unmarshal(data, v)
	})
}

// NewEncoder writes JSON.
func (m *FormMarshaler) NewEncoder(w io.Writer) runtime.Encoder { return m.JSON.NewEncoder(w) }

// ParseForm parses a form body, rejecting repeated parameters. The error
// names the parameter.
func ParseForm(body string) (url.Values, error) {
	values, err := url.ParseQuery(body)
	if err != nil {
		return nil, fmt.Errorf("malformed form body: %w", err)
	}
	for k, v := range values {
		if len(v) > 1 {
			return nil, &RepeatedParameterError{Name: k}
		}
	}
	return values, nil
}

// RepeatedParameterError names the parameter that was given twice.
type RepeatedParameterError struct{ Name string }

func (e *RepeatedParameterError) Error() string {
	return fmt.Sprintf("parameter %q included more than once", e.Name)
}

// Is makes errors.Is(err, ErrRepeatedParameter) true.
func (e *RepeatedParameterError) Is(target error) bool { return target == ErrRepeatedParameter }

func fillMessage(msg protoreflect.Message, values url.Values) error {
	fields := msg.Descriptor().Fields()
	for name, vs := range values {
		fd := fields.ByName(protoreflect.Name(name))
		if fd == nil || fd.IsList() || fd.IsMap() || fd.Message() != nil {
			continue // unknown or non-scalar parameters are ignored
		}
		v, err := scalar(fd, vs[0])
		if err != nil {
			return fmt.Errorf("parameter %q: %w", name, err)
		}
		msg.Set(fd, v)
	}
	return nil
}

func scalar(fd protoreflect.FieldDescriptor, s string) (protoreflect.Value, error) {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(s), nil
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes(bytes.Clone([]byte(s))), nil
	case protoreflect.BoolKind:
		b, err := strconv.ParseBool(s)
		return protoreflect.ValueOfBool(b), err
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		n, err := strconv.ParseInt(s, 10, 32)
		return protoreflect.ValueOfInt32(int32(n)), err
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		n, err := strconv.ParseUint(s, 10, 32)
		return protoreflect.ValueOfUint32(uint32(n)), err
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		n, err := strconv.ParseInt(s, 10, 64)
		return protoreflect.ValueOfInt64(n), err
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		n, err := strconv.ParseUint(s, 10, 64)
		return protoreflect.ValueOfUint64(n), err
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByName(protoreflect.Name(s)); ev != nil {
			return protoreflect.ValueOfEnum(ev.Number()), nil
		}
		return protoreflect.Value{}, fmt.Errorf("unknown value %q", s)
	default:
		return protoreflect.Value{}, fmt.Errorf("unsupported field kind %s", fd.Kind())
	}
}
