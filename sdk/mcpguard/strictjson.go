package mcpguard

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// The guard decides on a body that the MCP SDK then decodes again, so both
// must read the same message. They do not agree on every body: the SDK
// (go-sdk v1.8.0, internal/json: segmentio with
// DontMatchCaseInsensitiveStructFields) matches keys case-sensitively,
// encoding/json matches struct fields by Unicode case folding, and both let
// the last of duplicate keys win. The strict reader below therefore refuses
// every body on which a second reader could disagree with it: duplicate
// keys in any object, keys that fold to a field the guard reads without
// being it, more than one JSON value, nesting deeper than the SDK accepts.
// On what is left the two readers agree; the SDK-side middleware (see
// Guard.Middleware) still refuses any call that differs from what was
// checked here.

// maxJSONDepth is the SDK's nesting limit (internal/json defaultMaxDepth).
const maxJSONDepth = 1000

var (
	// errInvalidMessage marks well-formed JSON the guard will not read
	// (JSON-RPC invalid request); other parse errors are syntax errors.
	errInvalidMessage = errors.New("invalid JSON-RPC message")
	errTooDeep        = fmt.Errorf("JSON nests deeper than %d levels", maxJSONDepth)
)

// messageFields are the JSON-RPC message keys; nameFields are the params
// keys the guard reads on a request that carries an Mcp-Name. A key that
// folds to one of them without being it is refused.
var (
	messageFields = []string{"jsonrpc", "id", "method", "params", "result", "error"}
	nameFields    = []string{"name", "uri", "arguments"}
)

// strictReader reads a JSON-RPC body token by token.
type strictReader struct {
	dec  *json.Decoder
	body []byte
}

func newStrictReader(body []byte) *strictReader {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber() // numbers are only skipped: no float conversion to fail
	return &strictReader{dec: dec, body: body}
}

// peek returns the first byte of the next value (0 at the end).
func (s *strictReader) peek() byte {
	for _, b := range s.body[s.dec.InputOffset():] {
		switch b {
		case ' ', '\t', '\r', '\n', ':', ',':
		default:
			return b
		}
	}
	return 0
}

// raw returns the bytes of the value read since offset start.
func (s *strictReader) raw(start int64) json.RawMessage {
	return bytes.TrimLeft(s.body[start:s.dec.InputOffset()], " \t\r\n:,")
}

// skip reads one value, refusing duplicate keys in each of its objects.
func (s *strictReader) skip(depth int) error {
	switch s.peek() {
	case '{':
		return s.object(depth, func(string) error { return s.skip(depth + 1) })
	case '[':
		if depth > maxJSONDepth {
			return errTooDeep
		}
		if _, err := s.dec.Token(); err != nil {
			return err
		}
		for s.dec.More() {
			if err := s.skip(depth + 1); err != nil {
				return err
			}
		}
		_, err := s.dec.Token()
		return err
	default:
		_, err := s.dec.Token()
		return err
	}
}

// object reads an object whose opening brace is next. For each key, value
// must read the key's value (one value, exactly). A repeated key is
// refused.
func (s *strictReader) object(depth int, value func(key string) error) error {
	if depth > maxJSONDepth {
		return errTooDeep
	}
	tok, err := s.dec.Token()
	if err != nil {
		return err
	}
	if tok != json.Delim('{') {
		return fmt.Errorf("%w: not an object", errInvalidMessage)
	}
	seen := make(map[string]struct{})
	for s.dec.More() {
		tok, err := s.dec.Token()
		if err != nil {
			return err
		}
		key, ok := tok.(string)
		if !ok {
			return fmt.Errorf("%w: object key is not a string", errInvalidMessage)
		}
		if _, dup := seen[key]; dup {
			return fmt.Errorf("%w: duplicate key %q", errInvalidMessage, key)
		}
		seen[key] = struct{}{}
		if err := value(key); err != nil {
			return err
		}
	}
	_, err = s.dec.Token()
	return err
}

// foldedVariant reports the field of fields that key folds to (as
// encoding/json matches struct fields) without being equal to it.
func foldedVariant(key string, fields []string) (string, bool) {
	for _, f := range fields {
		if key != f && strings.EqualFold(key, f) {
			return f, true
		}
	}
	return "", false
}

// message reads one JSON-RPC message (an object).
func (s *strictReader) message(depth int) (rpcMessage, error) {
	if s.peek() != '{' {
		// Let the decoder report a syntax error, else it is a value that
		// is not a message.
		if _, err := s.dec.Token(); err != nil {
			return rpcMessage{}, err
		}
		return rpcMessage{}, fmt.Errorf("%w: a message must be an object", errInvalidMessage)
	}
	var (
		m         rpcMessage
		method    json.RawMessage
		paramKeys []string
	)
	err := s.object(depth, func(key string) error {
		if f, ok := foldedVariant(key, messageFields); ok {
			return fmt.Errorf("%w: key %q is not %q", errInvalidMessage, key, f)
		}
		start := s.dec.InputOffset()
		var err error
		if key == "params" && s.peek() == '{' {
			err = s.object(depth+1, func(k string) error {
				paramKeys = append(paramKeys, k)
				return s.skip(depth + 2)
			})
		} else {
			err = s.skip(depth + 1)
		}
		if err != nil {
			return err
		}
		switch key {
		case "id":
			m.ID = s.raw(start)
		case "method":
			method = s.raw(start)
		case "params":
			m.Params = s.raw(start)
		}
		return nil
	})
	if err != nil {
		return rpcMessage{}, err
	}
	if method != nil {
		if err := json.Unmarshal(method, &m.Method); err != nil {
			return rpcMessage{}, fmt.Errorf("%w: method is not a string", errInvalidMessage)
		}
	}
	if m.hasName() {
		for _, k := range paramKeys {
			if f, ok := foldedVariant(k, nameFields); ok {
				return rpcMessage{}, fmt.Errorf("%w: params key %q is not %q", errInvalidMessage, k, f)
			}
		}
	}
	return m, nil
}

// parseMessages reads a body holding one JSON-RPC message or a batch (an
// array of them, as the SDK reads it), strictly: see the comment at the top
// of this file. An error wrapping errInvalidMessage is well-formed JSON
// that is refused; any other error is a syntax error.
func parseMessages(body []byte) (msgs []rpcMessage, batch bool, err error) {
	s := newStrictReader(body)
	batch = s.peek() == '['
	if !batch {
		m, err := s.message(1)
		if err != nil {
			return nil, false, err
		}
		msgs = []rpcMessage{m}
	} else {
		if _, err := s.dec.Token(); err != nil {
			return nil, true, err
		}
		for s.dec.More() {
			m, err := s.message(2)
			if err != nil {
				return nil, true, err
			}
			msgs = append(msgs, m)
		}
		if _, err := s.dec.Token(); err != nil {
			return nil, true, err
		}
		if len(msgs) == 0 {
			return nil, true, fmt.Errorf("%w: empty batch", errInvalidMessage)
		}
	}
	// The SDK reads the first value and ignores what follows; the guard
	// refuses anything after it, so that no reader can take another value
	// for the message.
	switch _, err := s.dec.Token(); {
	case err == nil:
		return nil, batch, fmt.Errorf("%w: data after the message", errInvalidMessage)
	case !errors.Is(err, io.EOF):
		return nil, batch, err
	}
	return msgs, batch, nil
}
