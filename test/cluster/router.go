package cluster

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
)

// Router is the edge of the public origin with several replicas behind
// each route: /oauth2/register* goes to registration, everything else to
// token (DESIGN: "One public origin"). The routing and header rules are
// copied from cmd/mcpid/internal/dev/router.go, which is internal to the
// cmd/mcpid module and cannot be imported; what is added is round robin
// over replicas and failover to the next replica when one refuses the
// connection (a killed replica), as a production load balancer does.
type Router struct {
	registration *httputil.ReverseProxy
	token        *httputil.ReverseProxy
}

// NewRouter proxies to the replicas' HTTP listeners (host:port each).
func NewRouter(registration, token []string) *Router {
	return &Router{registration: proxyTo(registration), token: proxyTo(token)}
}

func proxyTo(replicas []string) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(&url.URL{Scheme: "http", Host: replicas[0]}) // the transport picks the replica
			r.Out.Header.Del("Forwarded")
			r.SetXForwarded()
			r.Out.Host = r.In.Host
		},
		Transport: &failover{replicas: replicas, next: http.DefaultTransport},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, _ error) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusBadGateway)
			_, _ = w.Write([]byte(`{"error":"temporarily_unavailable","error_description":"upstream service unavailable"}` + "\n"))
		},
	}
}

// failover sends each request to the next replica in turn and, when a
// replica refuses the connection, to the following one. Only a failed dial
// moves on: the request has then not been sent, so even a POST is safe to
// send elsewhere.
// maxBody bounds the request body the router buffers.
const maxBody = 1 << 20

type failover struct {
	replicas []string
	rr       atomic.Uint64
	next     http.RoundTripper
}

func (f *failover) RoundTrip(r *http.Request) (*http.Response, error) {
	// The transport closes a request's body even when the dial fails, so
	// the body is kept to be sent again (OAuth bodies are small).
	var body []byte
	if r.Body != nil && r.Body != http.NoBody {
		b, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
		_ = r.Body.Close()
		if err != nil {
			return nil, err
		}
		if len(b) > maxBody {
			return nil, errors.New("request body too large")
		}
		body = b
	}
	start := f.rr.Add(1)
	var errs []error
	for i := range f.replicas {
		host := f.replicas[(start+uint64(i))%uint64(len(f.replicas))]
		out := r.Clone(r.Context())
		out.URL.Host = host
		if body != nil {
			out.Body = io.NopCloser(bytes.NewReader(body))
			out.ContentLength = int64(len(body))
		}
		resp, err := f.next.RoundTrip(out)
		var op *net.OpError
		if err != nil && errors.As(err, &op) && op.Op == "dial" {
			errs = append(errs, err)
			continue
		}
		return resp, err
	}
	return nil, errors.Join(errs...)
}

// ServeHTTP routes one request.
func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p := r.URL.Path; p == "/oauth2/register" || strings.HasPrefix(p, "/oauth2/register/") {
		rt.registration.ServeHTTP(w, r)
		return
	}
	rt.token.ServeHTTP(w, r)
}
