package decision

import (
	"strconv"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/structpb"
)

// Argument limits (CheckRequest.arguments).
const (
	MaxArgumentsBytes = 64 << 10
	MaxArgumentsDepth = 32
)

// argumentsWithinLimits reports whether args, encoded as JSON, fit in
// MaxArgumentsBytes and nest at most MaxArgumentsDepth levels. It measures
// without encoding (no allocation), stopping as soon as a limit is passed.
func argumentsWithinLimits(args *structpb.Struct) bool {
	if args == nil {
		return true
	}
	m := measurer{budget: MaxArgumentsBytes}
	m.object(args.GetFields(), 1)
	return !m.over
}

type measurer struct {
	budget int
	over   bool
}

func (m *measurer) spend(n int) {
	m.budget -= n
	if m.budget < 0 {
		m.over = true
	}
}

func (m *measurer) object(fields map[string]*structpb.Value, depth int) {
	if depth > MaxArgumentsDepth {
		m.over = true
		return
	}
	m.spend(2) // {}
	for k, v := range fields {
		if m.over {
			return
		}
		m.str(k)
		m.spend(2) // : and ,
		m.value(v, depth)
	}
}

func (m *measurer) value(v *structpb.Value, depth int) {
	switch k := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		m.str(k.StringValue)
	case *structpb.Value_NumberValue:
		var buf [32]byte
		m.spend(len(strconv.AppendFloat(buf[:0], k.NumberValue, 'g', -1, 64)))
	case *structpb.Value_BoolValue:
		m.spend(5)
	case *structpb.Value_StructValue:
		m.object(k.StructValue.GetFields(), depth+1)
	case *structpb.Value_ListValue:
		if depth+1 > MaxArgumentsDepth {
			m.over = true
			return
		}
		m.spend(2)
		for _, e := range k.ListValue.GetValues() {
			if m.over {
				return
			}
			m.spend(1)
			m.value(e, depth+1)
		}
	default: // null or unset
		m.spend(4)
	}
}

// str spends the JSON length of a quoted string: control characters, '"'
// and '\' are escaped, invalid UTF-8 becomes U+FFFD.
func (m *measurer) str(s string) {
	n := 2
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t':
				n += 2
			case c < 0x20:
				n += 6
			default:
				n++
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			n += 3
		} else {
			n += size
		}
		i += size
	}
	m.spend(n)
}
