package oauthhttp

import (
	"context"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// Response metadata keys a gRPC handler sets (grpc.SetHeader) to shape the
// HTTP answer. They are consumed here and never leak as Grpc-Metadata-*.
const (
	// HeaderHTTPStatus sets the HTTP status code (201 for RFC 7591, 204, 303).
	HeaderHTTPStatus = "x-http-status"
	// HeaderLocation sets Location for redirects.
	HeaderLocation = "x-http-location"
	// HeaderCacheControl replaces the default Cache-Control: no-store (for
	// cacheable documents: metadata, JWKS).
	HeaderCacheControl = "x-http-cache-control"
	// HeaderRetryAfter sets Retry-After (rate limits).
	HeaderRetryAfter = "x-http-retry-after"
)

// SetHTTPStatus asks the edge to answer with code (for example 201).
func SetHTTPStatus(ctx context.Context, code int) error {
	return grpc.SetHeader(ctx, metadata.Pairs(HeaderHTTPStatus, strconv.Itoa(code)))
}

// SetCacheControl replaces the default no-store with value (for example
// "public, max-age=300" on JWKS).
func SetCacheControl(ctx context.Context, value string) error {
	return grpc.SetHeader(ctx, metadata.Pairs(HeaderCacheControl, value))
}

// Redirect asks the edge to answer with a redirect (302 or 303) to location.
// The caller must have validated location (never an unvalidated redirect_uri).
func Redirect(ctx context.Context, code int, location string) error {
	return grpc.SetHeader(ctx, metadata.Pairs(HeaderHTTPStatus, strconv.Itoa(code), HeaderLocation, location))
}

// forwardResponse applies the x-http-* metadata: status, Location and
// Cache-Control. It runs after the gateway copied allowed headers and before
// the body is written.
func forwardResponse(ctx context.Context, w http.ResponseWriter, _ proto.Message) error {
	md, ok := runtime.ServerMetadataFromContext(ctx)
	if !ok {
		return nil
	}
	h := w.Header()
	if v := last(md.HeaderMD, HeaderCacheControl); v != "" {
		h.Set("Cache-Control", v)
		h.Del("Pragma")
	}
	if v := last(md.HeaderMD, HeaderRetryAfter); v != "" {
		h.Set("Retry-After", v)
	}
	code := 0
	if v := last(md.HeaderMD, HeaderHTTPStatus); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n >= 200 && n <= 599 {
			code = n
		}
	}
	if loc := last(md.HeaderMD, HeaderLocation); loc != "" && (code == http.StatusFound || code == http.StatusSeeOther) {
		h.Set("Location", loc)
	}
	if code != 0 {
		if code == http.StatusNoContent || code == http.StatusFound || code == http.StatusSeeOther {
			h.Del("Content-Type")
			if bw, ok := w.(*bodylessWriter); ok {
				bw.discard = true
			}
		}
		w.WriteHeader(code)
	}
	return nil
}

func last(md metadata.MD, key string) string {
	v := md.Get(key)
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// outgoingHeaders forwards no gRPC response metadata as HTTP headers: what
// the edge may set is exactly the x-http-* keys above, applied by
// forwardResponse. This keeps Grpc-Metadata-* (and any internal metadata)
// off the wire.
func outgoingHeaders(string) (string, bool) { return "", false }

// incomingHeaders forwards only the request headers handlers need. Notably
// Grpc-Metadata-* headers from the internet are NOT forwarded: they would let
// an HTTP caller forge gRPC metadata.
func incomingHeaders(key string) (string, bool) {
	// Authorization is always forwarded by the gateway itself.
	switch textproto.CanonicalMIMEHeaderKey(key) {
	case "User-Agent":
		return "x-user-agent", true
	case "Dpop":
		return "dpop", true
	case "Mcp-Protocol-Version":
		return "mcp-protocol-version", true
	}
	return "", false
}

// bodylessWriter drops the body of responses that must not have one (204,
// redirects): the gateway writes the marshalled message regardless.
type bodylessWriter struct {
	http.ResponseWriter
	discard bool
}

func (w *bodylessWriter) Write(b []byte) (int, error) {
	if w.discard {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

// Flush supports streaming responses.
func (w *bodylessWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *bodylessWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func noStore(h http.Header) {
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
}

func hasPrefixAny(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
