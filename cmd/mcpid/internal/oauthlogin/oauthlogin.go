// Package oauthlogin is the OAuth client side of `mcpid login`: the
// authorization code flow with PKCE (S256) as the pre-registered native
// public client `mcpid`, with a loopback redirect on 127.0.0.1 and any port
// (RFC 8252), for the reserved audience urn:mcpid:admin; and the refresh
// of the stored token.
package oauthlogin

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// ClientID is the pre-registered native client of the CLI (registration's
// CLIClientID).
const ClientID = "mcpid"

// AdminAudience is the reserved audience of operator tokens.
const AdminAudience = "urn:mcpid:admin"

// Token is what the token endpoint answered, with claims read from the JWT
// for display (the services verify it; the CLI only shows who it is).
type Token struct {
	AccessToken  string
	RefreshToken string
	Expiry       time.Time
	Subject      string
	Roles        []string
}

// Metadata is the part of RFC 8414 metadata the flow needs.
type Metadata struct {
	Issuer                string `json:"issuer"`
	AuthorizationEndpoint string `json:"authorization_endpoint"`
	TokenEndpoint         string `json:"token_endpoint"`
	// IssParameterSupported (RFC 9207) makes iss mandatory in every
	// authorization response: an answer without it is refused.
	IssParameterSupported bool `json:"authorization_response_iss_parameter_supported"`
}

// RefusedError is a sign-in that did not produce a token: the authorization
// server refused (error=access_denied, invalid_grant, ...) or the answer
// that came back to the loopback redirect cannot be trusted (state, iss).
// Nothing is stored; the CLI exits with its "not authenticated" code.
type RefusedError struct{ msg string }

func (e *RefusedError) Error() string { return e.msg }

func refused(format string, args ...any) error {
	return &RefusedError{msg: fmt.Sprintf(format, args...)}
}

// noRoleHint is added when the token service says the user holds no
// operator role, whichever endpoint says it.
const noRoleHint = " (only users holding an operator role, admin or auditor, may log in to the CLI: ask an admin to run `mcpid users set-roles USER --role auditor`)"

// Discover fetches the issuer's metadata and checks it names the issuer.
func Discover(ctx context.Context, hc *http.Client, issuer string) (*Metadata, error) {
	issuer = strings.TrimRight(issuer, "/")
	u, err := url.Parse(issuer)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("issuer %q is not an absolute URL (set --issuer)", issuer)
	}
	metaURL := u.Scheme + "://" + u.Host + "/.well-known/oauth-authorization-server" + u.Path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metaURL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reading %s (is mcpid running at the issuer?): %w", metaURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("reading %s: HTTP %d", metaURL, resp.StatusCode)
	}
	var m Metadata
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&m); err != nil {
		return nil, fmt.Errorf("reading %s: %w", metaURL, err)
	}
	if m.Issuer != issuer {
		return nil, fmt.Errorf("metadata at %s names issuer %q, not %q", metaURL, m.Issuer, issuer)
	}
	if m.AuthorizationEndpoint == "" || m.TokenEndpoint == "" {
		return nil, fmt.Errorf("metadata at %s lacks the authorization or token endpoint", metaURL)
	}
	return &m, nil
}

// Login runs the authorization code flow. open is called with the URL the
// user must visit (it opens a browser, or prints the URL); Login returns
// once the browser came back to the loopback listener and the code was
// exchanged, or ctx ends.
func Login(ctx context.Context, hc *http.Client, m *Metadata, open func(ctx context.Context, url string) error) (*Token, error) {
	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("opening the loopback redirect listener: %w", err)
	}
	defer lis.Close()
	redirectURI := "http://" + lis.Addr().String() + "/callback"
	verifier := random(32)
	sum := sha256.Sum256([]byte(verifier))
	state := random(16)
	q := url.Values{
		"response_type":         {"code"},
		"client_id":             {ClientID},
		"redirect_uri":          {redirectURI},
		"scope":                 {"offline_access"},
		"resource":              {AdminAudience},
		"state":                 {state},
		"code_challenge":        {base64.RawURLEncoding.EncodeToString(sum[:])},
		"code_challenge_method": {"S256"},
	}
	authURL := m.AuthorizationEndpoint + "?" + q.Encode()

	type result struct {
		code string
		err  error
	}
	results := make(chan result, 1)
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/callback" {
			http.NotFound(w, r)
			return
		}
		res := callback(r.URL.Query(), state, m.Issuer, m.IssParameterSupported)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if res.err != nil {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, "<!doctype html><title>mcpid login</title><p id=\"failed\">Sign-in failed: %s</p><p>Return to the terminal.</p>", html.EscapeString(res.err.Error()))
		} else {
			fmt.Fprint(w, "<!doctype html><title>mcpid login</title><p id=\"signed-in\">Signed in. You can close this window and return to the terminal.</p>")
		}
		select {
		case results <- result(res):
		default: // a second callback (reload) changes nothing
		}
	})}
	go func() { _ = srv.Serve(lis) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()

	if err := open(ctx, authURL); err != nil {
		return nil, err
	}
	var res result
	select {
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the browser to come back: %w", ctx.Err())
	case res = <-results:
	}
	if res.err != nil {
		return nil, res.err
	}
	return exchange(ctx, hc, m.TokenEndpoint, url.Values{
		"grant_type":    {"authorization_code"},
		"code":          {res.code},
		"redirect_uri":  {redirectURI},
		"code_verifier": {verifier},
		"client_id":     {ClientID},
		"resource":      {AdminAudience},
	})
}

type callbackResult struct {
	code string
	err  error
}

// callback checks the authorization response: state (CSRF), iss (RFC 9207,
// mix-up defence; required when the metadata says it is always sent), then
// error or code.
func callback(q url.Values, state, issuer string, issRequired bool) callbackResult {
	if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(state)) != 1 {
		return callbackResult{err: refused("the answer's state does not match this login; nothing was stored (start `mcpid login` again)")}
	}
	iss, hasIss := q.Get("iss"), q.Has("iss")
	if !hasIss && issRequired {
		return callbackResult{err: refused("the answer does not name its issuer (iss, RFC 9207) although %s always does; nothing was stored", issuer)}
	}
	if hasIss && iss != issuer {
		return callbackResult{err: refused("the answer comes from issuer %q, not %q; nothing was stored (check --issuer or the context's issuer)", iss, issuer)}
	}
	if e := q.Get("error"); e != "" {
		msg := e
		if d := q.Get("error_description"); d != "" {
			msg += ": " + d
		}
		if e == "access_denied" {
			msg += noRoleHint
		}
		return callbackResult{err: refused("authorization refused: %s", msg)}
	}
	code := q.Get("code")
	if code == "" {
		return callbackResult{err: refused("the answer carries no code; nothing was stored (start `mcpid login` again)")}
	}
	return callbackResult{code: code}
}

// Refresh exchanges a refresh token for a new access token (and rotated
// refresh token).
func Refresh(ctx context.Context, hc *http.Client, m *Metadata, refreshToken string) (*Token, error) {
	return exchange(ctx, hc, m.TokenEndpoint, url.Values{
		"grant_type":    {"refresh_token"},
		"refresh_token": {refreshToken},
		"client_id":     {ClientID},
		"resource":      {AdminAudience},
	})
}

func exchange(ctx context.Context, hc *http.Client, endpoint string, form url.Values) (*Token, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("token endpoint: %w", err)
	}
	defer resp.Body.Close()
	var body struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
		ExpiresIn    int64  `json:"expires_in"`
		Error        string `json:"error"`
		Description  string `json:"error_description"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&body); err != nil {
		return nil, fmt.Errorf("token endpoint answered HTTP %d without JSON", resp.StatusCode)
	}
	if resp.StatusCode != http.StatusOK || body.AccessToken == "" {
		msg := body.Error
		if body.Description != "" {
			msg += ": " + body.Description
		}
		if strings.Contains(body.Description, "operator role") {
			msg += noRoleHint
		}
		return nil, refused("token endpoint refused: %s", msg)
	}
	t := &Token{AccessToken: body.AccessToken, RefreshToken: body.RefreshToken,
		Expiry: time.Now().Add(time.Duration(body.ExpiresIn) * time.Second)}
	t.Subject, t.Roles = claims(body.AccessToken)
	return t, nil
}

// claims reads sub and roles from a JWT without verifying it: only for
// showing the operator who they are; the services verify the token.
func claims(jwt string) (sub string, roles []string) {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", nil
	}
	var c struct {
		Sub   string   `json:"sub"`
		Roles []string `json:"roles"`
	}
	if json.Unmarshal(b, &c) != nil {
		return "", nil
	}
	return c.Sub, c.Roles
}

func random(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return base64.RawURLEncoding.EncodeToString(b)
}
