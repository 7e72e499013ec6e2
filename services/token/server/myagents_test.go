package server_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/mcpid/mcpid/lib/browsertest"
)

// TestMyAgentsPageInChromium: a user signs in and approves the native app
// in headless Chromium; the "my agents" page lists it (application, MCP
// server, permissions, last use); a revoke with a forged CSRF token is
// refused and changes nothing; the real revoke button removes the agent
// and its tokens stop working. Without a session the page asks to sign in.
func TestMyAgentsPageInChromium(t *testing.T) {
	e := startEnv(t)
	ctx := newBrowser(t)
	cb := browsertest.NewCallback(t)
	a := authz{clientID: clientNative, redirect: cb.URL, scope: "crm:read", resource: resCRM, state: "ma-state", verifier: newVerifier()}
	if err := chromedp.Do(ctx, chromedp.Navigate(e.issuer+"/oauth2/authorize?"+a.query().Encode())); err != nil {
		t.Fatal(err)
	}
	if err := browsertest.SignIn(ctx, testUser, testPassword, "#consent-form"); err != nil {
		t.Fatal(err)
	}
	if err := browsertest.Approve(ctx, "#done"); err != nil {
		t.Fatalf("sign-in and consent in Chromium: %v", err)
	}
	q, err := cb.Redirect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tr := decodeToken(t, e.post("/oauth2/token", url.Values{"grant_type": {"authorization_code"}, "code": {q.Get("code")},
		"redirect_uri": {cb.URL}, "code_verifier": {a.verifier}, "client_id": {clientNative}}, "", ""))
	checkActive(t, e, mcpParams(), tr.AccessToken, "crm:read", clientNative)

	page := e.issuer + "/oauth2/my-agents"
	if err := chromedp.Do(ctx, chromedp.Navigate(page), chromedp.WaitVisible(chromedp.ID("agents"))); err != nil {
		t.Fatalf("my agents page: %v", err)
	}
	for sel, want := range map[string]string{
		".agent-client": "App " + clientNative, ".agent-client-id": clientNative,
		".agent-resource": "Acme CRM (" + resCRM + ")", ".agent-scopes": "crm:read",
	} {
		got, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil || !strings.Contains(got, want) {
			t.Fatalf("%s = %q (%v), want %q", sel, got, err, want)
		}
	}
	if got, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(".agent-last-use"))); err != nil || got == "never" || got == "" {
		t.Fatalf("last use %q (%v)", got, err)
	}

	// A forged CSRF token is refused; nothing is revoked.
	if err := chromedp.Do(ctx,
		chromedp.SetAttributeValue(chromedp.CSS(`form.revoke-form input[name="csrf"]`), "value", "forged"),
		chromedp.Click(chromedp.CSS("button.revoke")),
		chromedp.WaitVisible(chromedp.ID("error-message")),
	); err != nil {
		t.Fatalf("forged revoke: %v", err)
	}
	body, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("error-message")))
	if err != nil || !strings.Contains(body, "did not come from this page") {
		t.Fatalf("forged revoke answered %q (%v)", body, err)
	}
	checkActive(t, e, mcpParams(), tr.AccessToken, "crm:read", clientNative)

	// The real button revokes the agent's access at once.
	if err := chromedp.Do(ctx,
		chromedp.Navigate(page),
		chromedp.WaitVisible(chromedp.ID("agents")),
		chromedp.Click(chromedp.CSS("button.revoke")),
		chromedp.WaitVisible(chromedp.ID("revoked-notice")),
		chromedp.WaitVisible(chromedp.ID("no-agents")),
	); err != nil {
		t.Fatalf("revoke in Chromium: %v", err)
	}
	introspectsInactiveAs(t, e, mcpParams(), tr.AccessToken)

	// No session: the page asks to sign in, and a POST is refused.
	if code, _ := e.get("/oauth2/my-agents"); code != http.StatusUnauthorized {
		t.Fatalf("my agents without a session = %d", code)
	}
	if r := e.post("/oauth2/my-agents", url.Values{"csrf": {"x"}, "client_id": {clientNative}, "resource": {resCRM}}, "", ""); r.code != http.StatusUnauthorized {
		t.Fatalf("revoke without a session = %d %s", r.code, r.body)
	}
}
