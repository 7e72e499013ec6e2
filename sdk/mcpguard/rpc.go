package mcpguard

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// MCP header names (MCP 2026-07-28 standard headers).
const (
	headerMethod   = "Mcp-Method"
	headerName     = "Mcp-Name"
	headerProtocol = "Mcp-Protocol-Version"
	// protocolScopesAll is the first protocol revision whose clients expect
	// every scope an operation needs in an insufficient_scope challenge;
	// older clients expect the granted scopes plus the missing ones.
	protocolScopesAll = "2026-07-28"
	// protocolNoBatches is the first revision without JSON-RPC batches.
	protocolNoBatches = "2025-06-18"
)

// JSON-RPC error codes the guard answers with. -32020 is the MCP SDK's
// header-mismatch code; the others are in the server-defined range.
const (
	CodeHeaderMismatch    = -32020
	CodeToolDenied        = -32003
	CodePolicyUnavailable = -32004
	codeParseError        = -32700
	codeInvalidRequest    = -32600
)

var (
	errBadRequest        = errors.New("mcpguard: bad request")
	errPolicyUnavailable = errors.New("mcpguard: policy service unavailable")
)

// rpcMessage is the part of a JSON-RPC message the guard reads, as
// parseMessages reads it.
type rpcMessage struct {
	ID     json.RawMessage
	Method string
	Params json.RawMessage
}

// nameParams are the params fields that carry an Mcp-Name. parseMessages
// has refused params with repeated or case-folded variants of these keys,
// so encoding/json reads them as the SDK does.
type nameParams struct {
	Name      string          `json:"name"`
	URI       string          `json:"uri"`
	Arguments json.RawMessage `json:"arguments"`
}

// hasName reports whether the method's params carry an Mcp-Name.
func (m rpcMessage) hasName() bool {
	return m.Method == "tools/call" || m.Method == "prompts/get" || m.Method == "resources/read"
}

// name returns the Mcp-Name of a request: the tool or prompt name, or the
// resource URI.
func (m rpcMessage) name() (string, bool) {
	if !m.hasName() {
		return "", false
	}
	var p nameParams
	if err := json.Unmarshal(m.Params, &p); err != nil {
		return "", false
	}
	if m.Method == "resources/read" {
		return p.URI, true
	}
	return p.Name, true
}

// decodeHeaderValue undoes the SDK's "=?base64?…?=" encoding of values that
// are not plain ASCII.
func decodeHeaderValue(v string) (string, error) {
	if s, ok := strings.CutPrefix(v, "=?base64?"); ok {
		s, ok = strings.CutSuffix(s, "?=")
		if !ok {
			return "", errors.New("malformed base64 header value")
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return "", err
		}
		return string(b), nil
	}
	return v, nil
}

// checkHeaders enforces that Mcp-Method and Mcp-Name, when present, say
// what the body says: an intermediary (or the guard itself) may route or
// decide on the headers, so a body that disagrees could smuggle a call past
// a check made on the header.
func checkHeaders(h http.Header, msgs []rpcMessage, batch bool) error {
	method, hasMethod := h[headerMethod]
	name, hasName := h[headerName]
	if !hasMethod && !hasName {
		return nil
	}
	if len(method) > 1 || len(name) > 1 {
		return errors.New("repeated Mcp-Method or Mcp-Name header")
	}
	if batch || len(msgs) != 1 {
		return errors.New("Mcp-Method and Mcp-Name are not allowed on a batch")
	}
	m := msgs[0]
	if hasMethod && method[0] != m.Method {
		return fmt.Errorf("header mismatch: Mcp-Method %q does not match body method %q", method[0], m.Method)
	}
	if hasName {
		want, ok := m.name()
		got, err := decodeHeaderValue(name[0])
		if err != nil {
			return fmt.Errorf("Mcp-Name: %w", err)
		}
		if !ok || got != want {
			return fmt.Errorf("header mismatch: Mcp-Name %q does not match the body", got)
		}
	}
	return nil
}

// rpcError is a JSON-RPC error response.
type rpcError struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Error   rpcErrorBody    `json:"error"`
}

type rpcErrorBody struct {
	Code    int            `json:"code"`
	Message string         `json:"message"`
	Data    map[string]any `json:"data,omitempty"`
}

// writeRPCError answers with a JSON-RPC error for the request id (null when
// unknown) and the given HTTP status.
func writeRPCError(w http.ResponseWriter, status int, id json.RawMessage, code int, msg string, data map[string]any) {
	if len(id) == 0 {
		id = json.RawMessage("null")
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(rpcError{JSONRPC: "2.0", ID: id, Error: rpcErrorBody{Code: code, Message: msg, Data: data}})
}
