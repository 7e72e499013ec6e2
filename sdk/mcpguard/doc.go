// Package mcpguard protects an MCP server built on the official MCP Go SDK
// (github.com/modelcontextprotocol/go-sdk, streamable HTTP) with mcpid.
//
// A Guard sits in front of the SDK's streamable HTTP handler and gives the
// server everything MCP Authorization (revision 2026-07-28, and clients of
// 2025-06-18 / 2025-11-25) asks of a resource server, plus tool-level checks:
//
//   - RFC 9728 protected resource metadata at the path-inserted well-known
//     URL of the canonical resource (and at the root only when the resource
//     has no path), with CORS;
//   - local access-token verification (JWKS cache, typ at+jwt, issuer,
//     audience = this resource, expiry, the token service's revocation feed
//     for this resource when Config.Token is set), answering 401
//     with `WWW-Authenticate: Bearer resource_metadata="…", scope="…"` (plus
//     `error="invalid_token"` when a token was presented); tokens in query
//     strings are refused;
//   - a policy check on every `tools/call` (one pooled gRPC connection to the
//     policy service authenticated as this resource, a timeout, a decision
//     cache honouring the returned lifetime, fail closed), answering a scope
//     denial with 403 `error="insufficient_scope"` so that MCP clients step
//     up, and other denials with a JSON-RPC error carrying the reason;
//   - `tools/list` filtered to the tools the token may call;
//   - `Mcp-Method` / `Mcp-Name` headers checked against the body;
//   - the body read strictly (no repeated keys, no case variants of the
//     keys the guard reads, nothing after the message), so that the guard
//     and the SDK read the same call, and an SDK middleware (Middleware)
//     that runs a tools/call only if it is exactly one the guard allowed;
//   - the caller (user, client, scopes) handed to the tool handler
//     (CallerFromRequest);
//   - the server's tool manifest published for its own resource at start-up,
//     and the revocation feed followed (Run).
//
// See docs/mcpguard.md for a walk-through.
package mcpguard
