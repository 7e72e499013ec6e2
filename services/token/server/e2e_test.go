package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/mcpid/mcpid/lib/browsertest"
)

// newBrowser starts headless Chromium (lib/browsertest); the returned
// context bounds all of a test's browser steps.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(browsertest.Start(t), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
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
	cb := browsertest.NewCallback(t)
	cfg := &oauth2.Config{
		ClientID: p.nativeClient,
		Endpoint: oauth2.Endpoint{
			AuthURL: e.issuer + "/oauth2/authorize", TokenURL: e.issuer + "/oauth2/token", AuthStyle: oauth2.AuthStyleInParams,
		},
		RedirectURL: cb.URL,
		Scopes:      []string{"crm:read", "crm:write", "offline_access"},
	}
	verifier := oauth2.GenerateVerifier()
	state := "e2e-" + verifier[:8]
	authURL := cfg.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("resource", p.resource))

	// Sign in.
	if err := chromedp.Do(ctx, chromedp.Navigate(authURL)); err != nil {
		t.Fatalf("authorize page in Chromium: %v", err)
	}
	if err := browsertest.SignIn(ctx, p.user, p.password, "#consent-form"); err != nil {
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
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`input[value="crm:write"]`))); err != nil {
		t.Fatalf("consent in Chromium: %v", err)
	}
	if err := browsertest.Approve(ctx, "#done"); err != nil {
		t.Fatalf("consent in Chromium: %v", err)
	}
	q, err := cb.Redirect(ctx)
	if err != nil {
		t.Fatal(err)
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
