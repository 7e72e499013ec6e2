package mcpguard

import (
	"encoding/json"
	"net/http"
	"strings"
)

// Bearer error codes (RFC 6750 §3.1).
const (
	errInvalidRequest    = "invalid_request"
	errInvalidToken      = "invalid_token"
	errInsufficientScope = "insufficient_scope"
)

// challenge is one `WWW-Authenticate: Bearer` challenge.
type challenge struct {
	err         string // empty: no error (no token was presented)
	description string
	scopes      []string
}

// quote makes s an RFC 9110 quoted-string: backslash and double quote are
// escaped, control characters dropped (they cannot appear in a header).
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// header renders the challenge. The order follows the issue text: for a scope
// denial error first (MCP clients look for error="insufficient_scope"), else
// resource_metadata first.
func (c challenge) header(metadataURL string) string {
	var parts []string
	scope := ""
	if len(c.scopes) > 0 {
		scope = "scope=" + quote(strings.Join(c.scopes, " "))
	}
	if c.err == errInsufficientScope {
		parts = append(parts, "error="+quote(c.err))
		if scope != "" {
			parts = append(parts, scope)
		}
		parts = append(parts, "resource_metadata="+quote(metadataURL))
	} else {
		parts = append(parts, "resource_metadata="+quote(metadataURL))
		if scope != "" {
			parts = append(parts, scope)
		}
		if c.err != "" {
			parts = append(parts, "error="+quote(c.err))
		}
	}
	if c.description != "" {
		parts = append(parts, "error_description="+quote(c.description))
	}
	return "Bearer " + strings.Join(parts, ", ")
}

// writeChallenge answers status with the challenge and a small JSON body.
func (g *Guard) writeChallenge(w http.ResponseWriter, status int, c challenge) {
	h := w.Header()
	h.Set("WWW-Authenticate", c.header(g.metaURL))
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	body := map[string]string{"error": c.err}
	if c.err == "" {
		body["error"] = "unauthorized"
	}
	if c.description != "" {
		body["error_description"] = c.description
	}
	_ = json.NewEncoder(w).Encode(body)
}
