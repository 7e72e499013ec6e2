package mcpguard

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	"github.com/mcpid/mcpid/lib/revocationfeed"
)

// Guard protects one MCP server (one resource). It is safe for concurrent
// use.
type Guard struct {
	cfg          Config
	feed         *revocationfeed.Follower // nil unless Config.Token is used
	verifier     *tokenVerifier
	decider      *decider
	metaPath     string
	metaURL      string
	resourcePath string
}

// New checks cfg and builds a guard. It does not contact anything: call Run
// to publish the manifest and follow the revocation feed.
func New(cfg Config) (*Guard, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	var feed *revocationfeed.Follower
	if cfg.Token != nil && cfg.Revocations == nil {
		if feed, err = newFeed(cfg); err != nil {
			return nil, err
		}
		cfg.Revocations = feedRevocations{feed}
	}
	v, err := newTokenVerifier(cfg)
	if err != nil {
		return nil, err
	}
	metaPath, resourcePath := metadataPaths(cfg.Resource)
	return &Guard{
		cfg:          cfg,
		feed:         feed,
		verifier:     v,
		decider:      newDecider(cfg),
		metaPath:     metaPath,
		metaURL:      metadataURL(cfg.Resource),
		resourcePath: resourcePath,
	}, nil
}

// Close releases the JWKS fetcher's connections.
func (g *Guard) Close() { g.verifier.close() }

// callerKey carries the verified caller from the guard to the SDK's token
// hook within one HTTP request.
type callerKey struct{}

// checkedKey carries the tool calls the HTTP layer allowed (checkedCalls)
// from the guard to the SDK's token hook within one HTTP request.
type checkedKey struct{}

// Where the caller and the allowed calls sit in auth.TokenInfo.Extra.
const (
	tokenInfoExtraKey = "mcpguard.caller"
	checkedExtraKey   = "mcpguard.checked"
)

// checkedCall is a tools/call the policy service allowed for this request:
// the tool name and the raw arguments, exactly as the guard read them.
type checkedCall struct {
	name string
	args json.RawMessage
}

type checkedCalls []checkedCall

// has reports whether a call of tool with args (as the SDK decoded them)
// is one that was checked.
func (cs checkedCalls) has(tool string, args json.RawMessage) bool {
	args = bytes.TrimSpace(args)
	for _, c := range cs {
		if c.name == tool && bytes.Equal(bytes.TrimSpace(c.args), args) {
			return true
		}
	}
	return false
}

// CallerFromRequest returns the verified caller of a tool call (or of any
// request the guard let through). Tool handlers use it to learn the user,
// the client and the scopes.
func CallerFromRequest(req mcp.Request) (*Caller, bool) {
	if req == nil {
		return nil, false
	}
	extra := req.GetExtra()
	if extra == nil || extra.TokenInfo == nil {
		return nil, false
	}
	c, ok := extra.TokenInfo.Extra[tokenInfoExtraKey].(*Caller)
	return c, ok
}

// Handler returns the HTTP handler of the protected server: the protected
// resource metadata at its well-known path, the MCP endpoint (the
// resource's path) behind the guard, 404 elsewhere. It adds the guard's
// Middleware to server (the outermost receiving middleware at this point:
// add your own before calling Handler) and serves it with the SDK's
// streamable HTTP handler (stateless, so clients of every protocol
// revision, 2026-07-28 included, are served); opts, when not nil, are
// passed on with Stateless forced.
func (g *Guard) Handler(server *mcp.Server, opts *mcp.StreamableHTTPOptions) http.Handler {
	server.AddReceivingMiddleware(g.Middleware())
	o := mcp.StreamableHTTPOptions{}
	if opts != nil {
		o = *opts
	}
	o.Stateless = true
	mcpHandler := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &o)
	protected := g.Protect(mcpHandler)
	meta := g.MetadataHandler()
	endpoint := g.resourcePath
	if endpoint == "" {
		endpoint = "/"
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case g.isMetadataPath(r.URL.Path):
			meta.ServeHTTP(w, r)
		case r.URL.Path == endpoint:
			protected.ServeHTTP(w, r)
		default:
			http.NotFound(w, r)
		}
	})
}

// Protect wraps an MCP streamable HTTP handler: token verification, a strict
// reading of the JSON-RPC body, the header checks and the policy check of
// tools/call. Use Handler unless you assemble the server yourself: then add
// Middleware to the *mcp.Server (without it nothing confirms that the tool
// the SDK runs is the one checked here) and serve MetadataHandler at
// MetadataPath.
func (g *Guard) Protect(next http.Handler) http.Handler {
	// The SDK learns the caller through its own bearer hook, so that tool
	// handlers find it in the request's TokenInfo; the hook only hands on
	// what the guard verified.
	sdkHook := auth.RequireBearerToken(func(ctx context.Context, _ string, r *http.Request) (*auth.TokenInfo, error) {
		c, ok := r.Context().Value(callerKey{}).(*Caller)
		if !ok {
			return nil, auth.ErrInvalidToken
		}
		checked, _ := r.Context().Value(checkedKey{}).(checkedCalls)
		return &auth.TokenInfo{Scopes: c.Scopes, UserID: c.Subject,
			Extra: map[string]any{tokenInfoExtraKey: c, checkedExtraKey: checked}}, nil
	}, &auth.RequireBearerTokenOptions{AllowMissingExpiration: true})(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.serve(w, r, sdkHook)
	})
}

func (g *Guard) serve(w http.ResponseWriter, r *http.Request, next http.Handler) {
	// RFC 6750 §2.3 query tokens end up in logs and histories: refused
	// outright, even next to a header.
	if r.URL.Query().Has("access_token") {
		g.writeChallenge(w, http.StatusBadRequest, challenge{err: errInvalidRequest,
			description: "access tokens are accepted only in the Authorization header", scopes: g.cfg.ChallengeScopes})
		return
	}
	authz := r.Header.Values("Authorization")
	if len(authz) > 1 {
		g.writeChallenge(w, http.StatusBadRequest, challenge{err: errInvalidRequest,
			description: "more than one Authorization header", scopes: g.cfg.ChallengeScopes})
		return
	}
	token, ok := bearerToken(authz)
	if !ok {
		g.writeChallenge(w, http.StatusUnauthorized, challenge{scopes: g.cfg.ChallengeScopes})
		return
	}
	caller, err := g.verifier.verify(r.Context(), token)
	switch {
	case errors.Is(err, errUnavailable):
		g.cfg.Logger.Warn("mcpguard: cannot verify tokens", "error", err)
		w.Header().Set("Retry-After", "1")
		http.Error(w, "authorization temporarily unavailable", http.StatusServiceUnavailable)
		return
	case errors.Is(err, errTokenRevoked):
		g.writeChallenge(w, http.StatusUnauthorized, challenge{err: errInvalidToken, description: "the access token was revoked", scopes: g.cfg.ChallengeScopes})
		return
	case err != nil:
		g.cfg.Logger.Debug("mcpguard: token refused", "error", err)
		g.writeChallenge(w, http.StatusUnauthorized, challenge{err: errInvalidToken, description: "the access token is invalid or expired", scopes: g.cfg.ChallengeScopes})
		return
	}
	r = r.WithContext(context.WithValue(r.Context(), callerKey{}, caller))

	if r.Method != http.MethodPost {
		next.ServeHTTP(w, r)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, g.cfg.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "cannot read the request body", http.StatusBadRequest)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	msgs, batch, err := parseMessages(body)
	switch {
	case errors.Is(err, errInvalidMessage):
		writeRPCError(w, http.StatusBadRequest, nil, codeInvalidRequest, err.Error(), nil)
		return
	case err != nil:
		writeRPCError(w, http.StatusBadRequest, nil, codeParseError, "malformed JSON-RPC message", nil)
		return
	}
	// As the SDK: batches only before 2025-06-18 (its check, made here
	// before any policy call).
	if p := r.Header.Get(headerProtocol); batch && p != "" && p >= protocolNoBatches {
		writeRPCError(w, http.StatusBadRequest, nil, codeInvalidRequest, "JSON-RPC batching is not supported in "+protocolNoBatches+" and later", nil)
		return
	}
	if err := checkHeaders(r.Header, msgs, batch); err != nil {
		var id []byte
		if len(msgs) == 1 {
			id = msgs[0].ID
		}
		writeRPCError(w, http.StatusBadRequest, id, CodeHeaderMismatch, err.Error(), nil)
		return
	}
	var checked checkedCalls
	for _, m := range msgs {
		if m.Method != "tools/call" {
			continue
		}
		c, ok := g.allowCall(w, r, caller, m)
		if !ok {
			return
		}
		checked = append(checked, c)
	}
	next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), checkedKey{}, checked)))
}

// bearerToken extracts the token of an `Authorization: Bearer` header.
func bearerToken(values []string) (string, bool) {
	if len(values) != 1 {
		return "", false
	}
	scheme, token, ok := strings.Cut(strings.TrimSpace(values[0]), " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" || strings.ContainsAny(token, " \t") {
		return "", false
	}
	return token, true
}

// allowCall asks the policy service about one tools/call and, when it is
// refused, answers the request; it reports whether the call may go on, and
// what was allowed.
func (g *Guard) allowCall(w http.ResponseWriter, r *http.Request, caller *Caller, m rpcMessage) (checkedCall, bool) {
	var p nameParams
	if err := jsonUnmarshal(m.Params, &p); err != nil || p.Name == "" {
		writeRPCError(w, http.StatusBadRequest, m.ID, codeInvalidRequest, "tools/call needs params.name", nil)
		return checkedCall{}, false
	}
	res, err := g.decider.check(r.Context(), caller.token, p.Name, p.Arguments)
	if err != nil {
		if errors.Is(err, errBadRequest) {
			writeRPCError(w, http.StatusBadRequest, m.ID, codeInvalidRequest, "tools/call arguments must be an object", nil)
			return checkedCall{}, false
		}
		// Fail closed: no answer in time is a refusal.
		g.cfg.Logger.Warn("mcpguard: policy check failed; refusing the call", "tool", p.Name, "error", err)
		w.Header().Set("Retry-After", "1")
		writeRPCError(w, http.StatusServiceUnavailable, m.ID, CodePolicyUnavailable, "authorization service unavailable; try again", nil)
		return checkedCall{}, false
	}
	if res.GetDecision() == policyv1.Decision_DECISION_ALLOW {
		return checkedCall{name: p.Name, args: p.Arguments}, true
	}
	reason := res.GetReason()
	data := map[string]any{"reason": strings.TrimPrefix(reason.String(), "DECISION_REASON_"), "decision_id": res.GetDecisionId()}
	switch reason {
	case policyv1.DecisionReason_DECISION_REASON_SCOPE_MISSING:
		g.writeChallenge(w, http.StatusForbidden, challenge{
			err:         errInsufficientScope,
			description: res.GetReasonText(),
			scopes:      stepUpScopes(r.Header.Get(headerProtocol), res),
		})
	case policyv1.DecisionReason_DECISION_REASON_TOKEN_INVALID,
		policyv1.DecisionReason_DECISION_REASON_TOKEN_EXPIRED,
		policyv1.DecisionReason_DECISION_REASON_TOKEN_NOT_YET_VALID,
		policyv1.DecisionReason_DECISION_REASON_AUDIENCE_MISMATCH,
		policyv1.DecisionReason_DECISION_REASON_TOKEN_REVOKED:
		g.writeChallenge(w, http.StatusUnauthorized, challenge{err: errInvalidToken, description: res.GetReasonText(), scopes: g.cfg.ChallengeScopes})
	case policyv1.DecisionReason_DECISION_REASON_NOT_READY:
		w.Header().Set("Retry-After", "1")
		writeRPCError(w, http.StatusServiceUnavailable, m.ID, CodePolicyUnavailable, res.GetReasonText(), data)
	case policyv1.DecisionReason_DECISION_REASON_RESOURCE_UNKNOWN,
		policyv1.DecisionReason_DECISION_REASON_CLIENT_NOT_VERIFIED,
		policyv1.DecisionReason_DECISION_REASON_CONDITION_FALSE,
		policyv1.DecisionReason_DECISION_REASON_CONDITION_ERROR:
		writeRPCError(w, http.StatusForbidden, m.ID, CodeToolDenied, res.GetReasonText(), data)
	default:
		// ARGUMENTS_TOO_LARGE, TOOL_UNKNOWN, TOOL_DENIED and any reason
		// this version does not know: a JSON-RPC error the agent can read.
		writeRPCError(w, http.StatusOK, m.ID, CodeToolDenied, res.GetReasonText(), data)
	}
	return checkedCall{}, false
}

// stepUpScopes is the scope list of an insufficient_scope challenge. MCP
// 2026-07-28 clients replace their scopes with the challenge's, so it lists
// every scope the call needs; older clients (and those not saying) expect
// the scopes already granted plus the missing ones.
func stepUpScopes(protocol string, res *policyv1.CheckResult) []string {
	var out []string
	if protocol != "" && protocol >= protocolScopesAll {
		out = slices.Clone(res.GetRequiredScopes())
	} else {
		out = append(slices.Clone(res.GetGrantedScopes()), res.GetMissingScopes()...)
	}
	out = slices.DeleteFunc(out, func(s string) bool { return s == offlineAccess })
	slices.Sort(out)
	return slices.Compact(out)
}

// Middleware is the MCP server middleware that holds the guard's decisions
// to what the SDK decoded. Handler adds it; add it yourself when you use
// Protect.
//
//   - tools/call runs only when the SDK's tool name and raw arguments are
//     exactly those of a call the guard allowed for the same HTTP request.
//     Protect reads the body strictly, so the two agree; if they ever do
//     not (a parser difference the strict reading missed), the call is
//     refused with a JSON-RPC invalid request rather than run unchecked.
//     The decision itself stays in Protect, where a scope denial can still
//     be an HTTP 403 with the step-up challenge.
//   - tools/list lists only the tools the caller may call. When the policy
//     service cannot answer, tools/list fails (fail closed) rather than
//     list tools that would be refused.
func (g *Guard) Middleware() mcp.Middleware {
	return func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			switch method {
			case "tools/call":
				if err := g.confirmCall(req); err != nil {
					return nil, err
				}
				return next(ctx, method, req)
			case "tools/list":
				return g.filterTools(ctx, next, method, req)
			default:
				return next(ctx, method, req)
			}
		}
	}
}

// confirmCall refuses a tools/call that is not one the guard allowed.
func (g *Guard) confirmCall(req mcp.Request) error {
	call, ok := req.(*mcp.CallToolRequest)
	var checked checkedCalls
	if extra := req.GetExtra(); extra != nil && extra.TokenInfo != nil {
		checked, _ = extra.TokenInfo.Extra[checkedExtraKey].(checkedCalls)
	}
	if ok && call.Params != nil && checked.has(call.Params.Name, call.Params.Arguments) {
		return nil
	}
	tool := ""
	if ok && call.Params != nil {
		tool = call.Params.Name
	}
	g.cfg.Logger.Warn("mcpguard: refusing a tool call that is not the one authorized (request body read differently?)", "tool", tool)
	return &jsonrpc.Error{Code: codeInvalidRequest, Message: "mcpguard: this tool call was not authorized"}
}

// filterTools answers tools/list with the tools the caller may call.
func (g *Guard) filterTools(ctx context.Context, next mcp.MethodHandler, method string, req mcp.Request) (mcp.Result, error) {
	caller, ok := CallerFromRequest(req)
	if !ok {
		return nil, errors.New("mcpguard: tools/list without a verified caller")
	}
	allowed, err := g.decider.allowedTools(ctx, caller.token)
	if err != nil {
		g.cfg.Logger.Warn("mcpguard: tools/list filter failed", "error", err)
		return nil, errors.New("authorization service unavailable; try again")
	}
	res, err := next(ctx, method, req)
	if err != nil {
		return res, err
	}
	list, ok := res.(*mcp.ListToolsResult)
	if !ok {
		return res, nil
	}
	names := allowed.GetAllowedTools()
	if allowed.GetDecision() != policyv1.Decision_DECISION_ALLOW {
		names = nil
	}
	filtered := *list
	filtered.Tools = slices.DeleteFunc(slices.Clone(list.Tools), func(t *mcp.Tool) bool {
		return !slices.Contains(names, t.Name)
	})
	return &filtered, nil
}
