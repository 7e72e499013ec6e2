package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// chromiumPath is Debian's chromium; `make test` installs it when missing.
const chromiumPath = "/usr/bin/chromium"

// newBrowser starts headless Chromium with a fresh profile. Every host but
// 127.0.0.1 fails to resolve, so the browser can reach nothing else.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if p, lerr := exec.LookPath("chromium"); lerr == nil {
			t.Fatalf("chromium is at %s, expected %s", p, chromiumPath)
		}
		t.Fatalf("headless Chromium is required (Debian package chromium; `make test` installs it): %v", err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	return ctx
}

// callbackServer is the native client's loopback redirect target.
type callbackServer struct {
	url  string
	hits chan url.Values
}

func newCallbackServer(t *testing.T) *callbackServer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cs := &callbackServer{url: "http://" + lis.Addr().String() + "/callback", hits: make(chan url.Values, 4)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /callback", func(w http.ResponseWriter, r *http.Request) {
		cs.hits <- r.URL.Query()
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = fmt.Fprint(w, `<!DOCTYPE html><html><body><p id="done">You can close this window.</p></body></html>`)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { _ = srv.Close() })
	return cs
}

// e2eParams describe the clients of an end-to-end run.
type e2eParams struct {
	nativeClient          string
	machineID, machineKey string
	mcpID, mcpKey         string
	resource              string
	user, password        string
	// wantClientName is the consent page's client name.
	wantClientName string
	wantResource   string
}

// runEndToEnd drives golang.org/x/oauth2 through authorization code + PKCE
// with sign-in and consent in headless Chromium, then refresh, then
// client_credentials, and checks each token at the introspection endpoint.
func runEndToEnd(t *testing.T, e *env, p e2eParams) {
	ctx := newBrowser(t)
	cb := newCallbackServer(t)
	cfg := &oauth2.Config{
		ClientID: p.nativeClient,
		Endpoint: oauth2.Endpoint{
			AuthURL: e.issuer + "/oauth2/authorize", TokenURL: e.issuer + "/oauth2/token", AuthStyle: oauth2.AuthStyleInParams,
		},
		RedirectURL: cb.url,
		Scopes:      []string{"crm:read", "crm:write", "offline_access"},
	}
	verifier := oauth2.GenerateVerifier()
	state := "e2e-" + verifier[:8]
	authURL := cfg.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("resource", p.resource))

	// Sign in.
	if err := chromedp.Do(ctx,
		chromedp.Navigate(authURL),
		chromedp.WaitVisible(chromedp.ID("login-form")),
		chromedp.SendKeys(chromedp.ID("username"), p.user),
		chromedp.SendKeys(chromedp.ID("password"), p.password),
		chromedp.Click(chromedp.ID("sign-in")),
		chromedp.WaitVisible(chromedp.ID("consent-form")),
	); err != nil {
		t.Fatalf("sign-in in Chromium: %v", err)
	}
	// Consent: the page names the client, the MCP server and each scope;
	// the user unticks crm:write.
	name, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("client-name")))
	if err != nil || name != p.wantClientName {
		t.Fatalf("consent page client name %q (%v), want %q", name, err, p.wantClientName)
	}
	res, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("resource-name")))
	if err != nil || res != p.wantResource {
		t.Fatalf("consent page resource %q (%v), want %q", res, err, p.wantResource)
	}
	warning, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("local-warning")))
	if err != nil || !strings.Contains(warning, "program on this device") {
		t.Fatalf("consent page lacks the loopback warning: %q (%v)", warning, err)
	}
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`input[value="crm:write"]`)),
		chromedp.Click(chromedp.ID("approve")),
		chromedp.WaitVisible(chromedp.ID("done")),
	); err != nil {
		t.Fatalf("consent in Chromium: %v", err)
	}
	var q url.Values
	select {
	case q = <-cb.hits:
	case <-time.After(10 * time.Second):
		t.Fatal("the browser never reached the callback")
	}
	if q.Get("state") != state || q.Get("iss") != e.issuer || q.Get("code") == "" {
		t.Fatalf("callback query: %v", q)
	}

	// Code exchange with PKCE.
	octx := context.WithValue(context.Background(), oauth2.HTTPClient, &http.Client{Timeout: 30 * time.Second})
	tok, err := cfg.Exchange(octx, q.Get("code"), oauth2.VerifierOption(verifier), oauth2.SetAuthURLParam("resource", p.resource))
	if err != nil {
		t.Fatalf("code exchange: %v", err)
	}
	if tok.RefreshToken == "" || tok.Extra("scope") != "crm:read" || tok.TokenType != "Bearer" {
		t.Fatalf("token: scope %v refresh %q type %q", tok.Extra("scope"), tok.RefreshToken, tok.TokenType)
	}
	checkActive(t, e, p, tok.AccessToken, "crm:read", p.nativeClient)

	// Refresh (the library refreshes an expired token by itself).
	expired := &oauth2.Token{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, Expiry: time.Now().Add(-time.Minute)}
	refreshed, err := cfg.TokenSource(octx, expired).Token()
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if refreshed.AccessToken == tok.AccessToken || refreshed.RefreshToken == "" || refreshed.RefreshToken == tok.RefreshToken {
		t.Fatal("refresh did not rotate the tokens")
	}
	checkActive(t, e, p, refreshed.AccessToken, "crm:read", p.nativeClient)
	// The rotated refresh token is dead; presenting it revokes the grant.
	if _, err := cfg.TokenSource(octx, expired).Token(); err == nil {
		t.Fatal("the rotated refresh token still works")
	} else {
		var re *oauth2.RetrieveError
		if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
			t.Fatalf("reuse: %v", err)
		}
	}
	introspectsInactiveAs(t, e, p, refreshed.AccessToken)

	// client_credentials.
	cc := &clientcredentials.Config{
		ClientID: p.machineID, ClientSecret: p.machineKey, TokenURL: e.issuer + "/oauth2/token",
		EndpointParams: url.Values{"resource": {p.resource}}, AuthStyle: oauth2.AuthStyleInParams,
	}
	mtok, err := cc.Token(octx)
	if err != nil {
		t.Fatalf("client_credentials: %v", err)
	}
	checkActive(t, e, p, mtok.AccessToken, "crm:read", p.machineID)
}

func introspectAs(t *testing.T, e *env, p e2eParams, token string) map[string]any {
	t.Helper()
	r := e.post("/oauth2/introspect", url.Values{"token": {token}}, p.mcpID, p.mcpKey)
	if r.code != http.StatusOK {
		t.Fatalf("introspection: %d %s", r.code, r.body)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(r.body), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func checkActive(t *testing.T, e *env, p e2eParams, token, scope, clientID string) {
	t.Helper()
	m := introspectAs(t, e, p, token)
	if m["active"] != true || m["scope"] != scope || m["client_id"] != clientID || m["aud"] != p.resource || m["iss"] != e.issuer {
		t.Fatalf("introspection: %v", m)
	}
}

func introspectsInactiveAs(t *testing.T, e *env, p e2eParams, token string) {
	t.Helper()
	if m := introspectAs(t, e, p, token); m["active"] != false || len(m) != 1 {
		t.Fatalf("introspection: %v, want only active=false", m)
	}
}

// TestEndToEnd runs golang.org/x/oauth2 through authorization code + PKCE
// with sign-in and consent in headless Chromium, then refresh, then
// client_credentials, against the token, registration and policy services
// on real etcd.
func TestEndToEnd(t *testing.T) {
	e := startEnv(t)
	runEndToEnd(t, e, e2eParams{
		nativeClient: clientNative, machineID: clientMachine, machineKey: secretMachine,
		mcpID: clientMCP, mcpKey: secretMCP, resource: resCRM, user: testUser, password: testPassword,
		wantClientName: "App " + clientNative, wantResource: "Acme CRM",
	})
}
