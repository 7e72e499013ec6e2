package oauthhttp

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mcpid/mcpid/lib/apierr"
)

// ErrorBody is the RFC 6749 section 5.2 error response.
type ErrorBody struct {
	Error       string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

// oauthError is what an error becomes at an OAuth endpoint.
type oauthError struct {
	status int
	body   ErrorBody
	// authenticate is the WWW-Authenticate challenge, if any.
	authenticate string
}

// classify turns a gRPC error into the OAuth answer. Errors carrying
// ErrorInfo{Domain: "oauth2"} keep their RFC code; any other status (a bad
// form body the gateway could not decode, an internal error) is mapped from
// its gRPC code, so an OAuth endpoint never answers outside RFC 6749.
func classify(err error, basicAuthUsed bool) oauthError {
	st := status.Convert(err)
	code := ""
	if info := apierr.Info(err); info != nil && info.GetDomain() == apierr.DomainOAuth {
		code = info.GetReason()
	}
	desc := st.Message()
	e429 := false
	if code == "" {
		switch st.Code() {
		case codes.Internal, codes.Unknown, codes.DataLoss:
			code, desc = "server_error", "internal error"
		case codes.Unimplemented:
			code, desc = "server_error", "not implemented"
		case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted:
			code, desc = "temporarily_unavailable", "the service is temporarily unavailable"
		case codes.Unauthenticated:
			code = "invalid_client"
		case codes.PermissionDenied:
			code = "access_denied"
		case codes.ResourceExhausted:
			// No RFC code means "rate limited" outside the device flow
			// (whose slow_down would mislead); 429 + Retry-After says it.
			code = "temporarily_unavailable"
			e429 = true
		default:
			code = "invalid_request"
		}
	}
	e := oauthError{status: http.StatusBadRequest, body: ErrorBody{Error: code, Description: sanitizeDescription(desc)}}
	switch code {
	case "invalid_client":
		// RFC 6749 section 5.2: 401, with a challenge matching the scheme the
		// client used.
		e.status = http.StatusUnauthorized
		if basicAuthUsed {
			e.authenticate = `Basic realm="mcpid", charset="UTF-8"`
		}
	case "invalid_token":
		// RFC 6750 section 3.1 (registration access tokens, initial access
		// tokens).
		e.status = http.StatusUnauthorized
		e.authenticate = `Bearer error="invalid_token"`
		if e.body.Description != "" {
			e.authenticate += `, error_description="` + e.body.Description + `"`
		}
	case "insufficient_scope", "access_denied":
		e.status = http.StatusForbidden
	case "server_error":
		e.status = http.StatusInternalServerError
		if st.Code() == codes.Unimplemented {
			e.status = http.StatusNotImplemented
		}
	case "temporarily_unavailable":
		e.status = http.StatusServiceUnavailable
		if e429 {
			e.status = http.StatusTooManyRequests
		}
	case "slow_down":
		e.status = http.StatusBadRequest // RFC 8628: an ordinary token error
	}
	return e
}

// sanitizeDescription keeps error_description within the characters RFC 6749
// allows (%x20-21 / %x23-5B / %x5D-7E): no quotes or backslashes, which would
// also break the WWW-Authenticate header, and no control characters.
func sanitizeDescription(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\'')
		case r >= 0x20 && r <= 0x7e:
			b.WriteRune(r)
		default:
			b.WriteByte(' ')
		}
		if b.Len() >= 512 {
			break
		}
	}
	return b.String()
}

// WriteError writes an OAuth error response directly (for the edge's own
// checks and for plain net/http handlers such as the token service pages).
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	writeOAuthError(w, classify(err, basicAuthUsed(r)))
}

// WriteErrorCode writes an OAuth error with an explicit RFC code.
func WriteErrorCode(w http.ResponseWriter, r *http.Request, code, description string) {
	WriteError(w, r, apierr.OAuth(code, description))
}

func writeOAuthError(w http.ResponseWriter, e oauthError) {
	h := w.Header()
	noStore(h)
	h.Set("Content-Type", "application/json")
	if e.authenticate != "" {
		h.Set("WWW-Authenticate", e.authenticate)
	}
	h.Del("Location")
	w.WriteHeader(e.status)
	_ = json.NewEncoder(w).Encode(e.body)
}

func basicAuthUsed(r *http.Request) bool {
	if r == nil {
		return false
	}
	scheme, _, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	return strings.EqualFold(scheme, "basic")
}

// errorHandler answers OAuth paths in RFC 6749 form and everything else with
// the gateway's default (a JSON google.rpc.Status).
func errorHandler(isOAuth func(string) bool) runtime.ErrorHandlerFunc {
	return func(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
		// A handler may ask for Retry-After on an error (rate limits).
		if md, ok := runtime.ServerMetadataFromContext(ctx); ok {
			if v := last(md.HeaderMD, HeaderRetryAfter); v != "" {
				w.Header().Set("Retry-After", v)
			}
		}
		if isOAuth(r.URL.Path) {
			WriteError(w, r, err)
			return
		}
		noStore(w.Header())
		runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, err)
	}
}

// routingErrorHandler answers unknown routes and wrong methods. On OAuth
// paths the body is an RFC 6749 error; the HTTP status stays 404 or 405.
func routingErrorHandler(isOAuth func(string) bool) runtime.RoutingErrorHandlerFunc {
	return func(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, httpStatus int) {
		if !isOAuth(r.URL.Path) {
			runtime.DefaultRoutingErrorHandler(ctx, mux, m, w, r, httpStatus)
			return
		}
		desc := "no such endpoint"
		if httpStatus == http.StatusMethodNotAllowed {
			desc = "method not allowed"
		}
		writeOAuthError(w, oauthError{status: httpStatus, body: ErrorBody{Error: "invalid_request", Description: desc}})
	}
}
