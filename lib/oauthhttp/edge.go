// Package oauthhttp is the OAuth HTTP edge shared by the services that serve
// OAuth endpoints through grpc-gateway (token, registration): request
// marshalers (forms in, JSON out), RFC 6749/6750/7591 error bodies and status
// codes, no-store caching, redirects, body limits, content-type checks and
// CORS for the endpoints browser-based MCP clients call.
//
// Handlers stay plain gRPC: they return apierr.OAuth errors and may shape the
// HTTP answer through response metadata (SetHTTPStatus, SetCacheControl,
// Redirect). Everything HTTP-specific happens here, once.
package oauthhttp

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
)

// Edge configures the OAuth HTTP edge.
type Edge struct {
	// OAuthPrefixes are the paths answered with RFC 6749 errors and no-store.
	OAuthPrefixes []string
	// FormPaths take application/x-www-form-urlencoded POST bodies.
	FormPaths []string
	// JSONPrefixes take application/json bodies on POST and PUT.
	JSONPrefixes []string
	// CORSPaths (exact) and CORSPrefixes allow cross-origin calls from
	// browser-based MCP clients. Never the login or consent pages.
	CORSPaths    []string
	CORSPrefixes []string
	// MaxFormBytes and MaxJSONBytes bound request bodies.
	MaxFormBytes int64
	MaxJSONBytes int64
}

// DefaultEdge is the edge of the mcpid public origin (DESIGN: "One public
// origin").
func DefaultEdge() Edge {
	return Edge{
		OAuthPrefixes: []string{"/oauth2/", "/.well-known/oauth-authorization-server"},
		FormPaths:     []string{"/oauth2/token", "/oauth2/revoke", "/oauth2/introspect"},
		JSONPrefixes:  []string{"/oauth2/register"},
		CORSPaths:     []string{"/oauth2/token", "/oauth2/jwks", "/oauth2/register"},
		CORSPrefixes:  []string{"/.well-known/oauth-authorization-server", "/oauth2/register/"},
		MaxFormBytes:  64 << 10,
		MaxJSONBytes:  64 << 10,
	}
}

func (e Edge) isOAuth(path string) bool { return hasPrefixAny(path, e.OAuthPrefixes) }

func (e Edge) isForm(path string) bool {
	for _, p := range e.FormPaths {
		if path == p {
			return true
		}
	}
	return false
}

func (e Edge) isCORS(path string) bool {
	for _, p := range e.CORSPaths {
		if path == p {
			return true
		}
	}
	return hasPrefixAny(path, e.CORSPrefixes)
}

// GatewayOptions configure a grpc-gateway mux for the edge: marshalers, error
// handlers, response shaping and header filtering, with method override and
// the path-length fallback disabled (a form POST to a GET-only path must not
// fall through to it).
func (e Edge) GatewayOptions() []runtime.ServeMuxOption {
	jsonM := JSONMarshaler()
	return []runtime.ServeMuxOption{
		runtime.WithMarshalerOption(runtime.MIMEWildcard, jsonM),
		runtime.WithMarshalerOption("application/json", jsonM),
		runtime.WithMarshalerOption(MIMEForm, &FormMarshaler{JSON: jsonM}),
		runtime.WithErrorHandler(errorHandler(e.isOAuth)),
		runtime.WithRoutingErrorHandler(routingErrorHandler(e.isOAuth)),
		runtime.WithForwardResponseOption(forwardResponse),
		runtime.WithOutgoingHeaderMatcher(outgoingHeaders),
		runtime.WithOutgoingTrailerMatcher(outgoingHeaders),
		runtime.WithIncomingHeaderMatcher(incomingHeaders),
		runtime.WithDisablePathLengthFallback(),
		runtime.WithDisableHTTPMethodOverride(),
	}
}

// Wrap puts the edge's request checks and response defaults in front of h.
func (e Edge) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Del("X-Http-Method-Override")
		path := r.URL.Path
		if e.isCORS(path) {
			allowCORS(w.Header())
			if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
		if !e.isOAuth(path) {
			h.ServeHTTP(w, r)
			return
		}
		noStore(w.Header())
		switch {
		case e.isForm(path) && r.Method == http.MethodPost:
			if !e.checkForm(w, r) {
				return
			}
		case hasPrefixAny(path, e.JSONPrefixes) && (r.Method == http.MethodPost || r.Method == http.MethodPut):
			if !e.checkJSON(w, r) {
				return
			}
		}
		h.ServeHTTP(&bodylessWriter{ResponseWriter: w}, r)
	})
}

// checkForm enforces RFC 6749 section 3.2 on form endpoints: the form content
// type, parameters in the body only (never secrets in the URL), a bounded
// body, and no repeated parameter. It answers the error itself and reports
// whether the request may continue.
func (e Edge) checkForm(w http.ResponseWriter, r *http.Request) bool {
	if !hasMediaType(r, MIMEForm) {
		WriteErrorCode(w, r, "invalid_request", "Content-Type must be "+MIMEForm)
		return false
	}
	if r.URL.RawQuery != "" {
		WriteErrorCode(w, r, "invalid_request", "parameters must be sent in the request body, not the URL")
		return false
	}
	body, ok := readBody(w, r, e.MaxFormBytes)
	if !ok {
		return false
	}
	if _, err := ParseForm(string(body)); err != nil {
		var rep *RepeatedParameterError
		if errors.As(err, &rep) && rep.Name == "resource" {
			// RFC 8707 allows several resources; mcpid binds a token to one.
			WriteErrorCode(w, r, "invalid_target", "only one resource may be requested")
			return false
		}
		WriteErrorCode(w, r, "invalid_request", err.Error())
		return false
	}
	return true
}

// checkJSON enforces the JSON content type (RFC 7591 section 3.1) and a
// bounded body.
func (e Edge) checkJSON(w http.ResponseWriter, r *http.Request) bool {
	if !hasMediaType(r, "application/json") {
		WriteErrorCode(w, r, "invalid_request", "Content-Type must be application/json")
		return false
	}
	_, ok := readBody(w, r, e.MaxJSONBytes)
	return ok
}

// readBody reads at most limit bytes and replaces r.Body with them.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeOAuthError(w, oauthError{
				status: http.StatusRequestEntityTooLarge,
				body:   ErrorBody{Error: "invalid_request", Description: "request body too large"},
			})
			return nil, false
		}
		WriteErrorCode(w, r, "invalid_request", "could not read the request body")
		return nil, false
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	return body, true
}

func hasMediaType(r *http.Request, want string) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && strings.EqualFold(mt, want)
}

// allowCORS lets any origin call the endpoint without credentials: these
// endpoints authenticate by bearer tokens, client credentials or PKCE, never
// by cookies, so a wildcard origin grants nothing.
func allowCORS(h http.Header) {
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, MCP-Protocol-Version, DPoP")
	h.Set("Access-Control-Expose-Headers", "WWW-Authenticate, Location, Retry-After")
	h.Set("Access-Control-Max-Age", "600")
}
