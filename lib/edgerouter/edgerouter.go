// Package edgerouter is the edge of the public origin (DESIGN: "One public
// origin"): /oauth2/register* goes to registration, everything else of the
// OAuth surface to token. In production an Ingress does this; `mcpid dev`
// runs it in front of one replica of each service and the cluster harness
// (test/cluster) in front of several, with round robin over the replicas
// and failover to the next one when a replica refuses the connection (a
// killed replica), as a production load balancer does.
package edgerouter

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// MaxBody bounds the request body the router buffers to send it again to
// another replica (OAuth bodies are small). With one replica the body is
// streamed and not bounded here.
const MaxBody = 1 << 20

// Router routes the public origin. Safe for concurrent use.
type Router struct {
	registration *httputil.ReverseProxy
	token        *httputil.ReverseProxy
	ready        func(ctx context.Context) error
}

// New proxies to the replicas' plain-http listeners (host:port each, at
// least one per service). ready, if not nil, reports whether every service
// is ready: the router then answers /healthz itself and /readyz from it;
// with nil ready those paths go to token like the rest.
func New(registration, token []string, ready func(ctx context.Context) error) (*Router, error) {
	if len(registration) == 0 || len(token) == 0 {
		return nil, errors.New("edgerouter: at least one registration and one token replica are required")
	}
	return &Router{registration: proxyTo(registration), token: proxyTo(token), ready: ready}, nil
}

func proxyTo(replicas []string) *httputil.ReverseProxy {
	target := &url.URL{Scheme: "http", Host: replicas[0]} // with several, the transport picks the replica
	p := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			// Replace, never trust, client-sent forwarding headers: the
			// services see the address this edge saw.
			r.Out.Header.Del("Forwarded")
			r.SetXForwarded()
			// Keep the Host the client used: URLs are built from the issuer,
			// never from Host, but logs should show it.
			r.Out.Host = r.In.Host
		},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, _ error) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusBadGateway)
			_, _ = w.Write([]byte(`{"error":"temporarily_unavailable","error_description":"upstream service unavailable"}` + "\n"))
		},
	}
	if len(replicas) > 1 {
		p.Transport = &failover{replicas: replicas, next: http.DefaultTransport}
	}
	return p
}

// failover sends each request to the next replica in turn and, when a
// replica refuses the connection, to the following one. Only a failed dial
// moves on: the request has then not been sent, so even a POST is safe to
// send elsewhere.
type failover struct {
	replicas []string
	rr       atomic.Uint64
	next     http.RoundTripper
}

func (f *failover) RoundTrip(r *http.Request) (*http.Response, error) {
	// The transport closes a request's body even when the dial fails, so
	// the body is kept to be sent again.
	var body []byte
	if r.Body != nil && r.Body != http.NoBody {
		b, err := io.ReadAll(io.LimitReader(r.Body, MaxBody+1))
		_ = r.Body.Close()
		if err != nil {
			return nil, err
		}
		if len(b) > MaxBody {
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
	switch p := r.URL.Path; {
	case rt.ready != nil && p == "/healthz":
		probe(w, http.StatusOK, "ok")
	case rt.ready != nil && p == "/readyz":
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := rt.ready(ctx); err != nil {
			probe(w, http.StatusServiceUnavailable, "not ready: "+err.Error())
			return
		}
		probe(w, http.StatusOK, "ok")
	case p == "/oauth2/register" || strings.HasPrefix(p, "/oauth2/register/"):
		rt.registration.ServeHTTP(w, r)
	default:
		rt.token.ServeHTTP(w, r)
	}
}

func probe(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body + "\n"))
}
