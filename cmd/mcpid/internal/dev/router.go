package dev

import (
	"context"
	"errors"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"
)

// Router is the edge of the public origin (DESIGN: "One public origin"):
// /oauth2/register* goes to registration, everything else of the OAuth
// surface to token. In production an Ingress does this.
type Router struct {
	registration *httputil.ReverseProxy
	token        *httputil.ReverseProxy
	ready        func(ctx context.Context) error
}

// NewRouter proxies to the services' HTTP listeners. ready reports whether
// every service is ready; /readyz on the public origin reflects it.
func NewRouter(registrationURL, tokenURL *url.URL, ready func(ctx context.Context) error) *Router {
	return &Router{
		registration: proxyTo(registrationURL),
		token:        proxyTo(tokenURL),
		ready:        ready,
	}
}

func proxyTo(target *url.URL) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
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
}

// ServeHTTP routes one request.
func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch p := r.URL.Path; {
	case p == "/healthz":
		probe(w, http.StatusOK, "ok")
	case p == "/readyz":
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

// checkReady asks a service's /readyz.
func checkReady(ctx context.Context, client *http.Client, name, base string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return errors.New(name + " unreachable")
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errors.New(name + " not ready")
	}
	return nil
}
