package browsertest_test

import (
	"context"
	"errors"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/mcpid/mcpid/lib/browsertest"
)

// fakeAuthorizeServer stands in for the token service's sign-in and consent
// pages (the token service cannot be imported by lib): GET /authorize shows
// the sign-in form, a POST with the right password the consent form, and
// approving it redirects to redirect_uri with a code and the state.
func fakeAuthorizeServer(t *testing.T, user, password string) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /authorize", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		fmt.Fprintf(w, `<!DOCTYPE html><form id="login-form" method="post" action="/login">
<input type="hidden" name="redirect_uri" value="%s"><input type="hidden" name="state" value="%s">
<input id="username" name="username"><input id="password" name="password" type="password">
<button id="sign-in" type="submit">Sign in</button></form>`, html.EscapeString(q.Get("redirect_uri")), html.EscapeString(q.Get("state")))
	})
	mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) {
		if r.PostFormValue("username") != user || r.PostFormValue("password") != password {
			fmt.Fprint(w, `<!DOCTYPE html><p id="failed">wrong password</p>`)
			return
		}
		fmt.Fprintf(w, `<!DOCTYPE html><form id="consent-form" method="post" action="/consent">
<input type="hidden" name="redirect_uri" value="%s"><input type="hidden" name="state" value="%s">
<button id="approve" type="submit">Allow</button></form>`, html.EscapeString(r.PostFormValue("redirect_uri")), html.EscapeString(r.PostFormValue("state")))
	})
	mux.HandleFunc("POST /consent", func(w http.ResponseWriter, r *http.Request) {
		to := r.PostFormValue("redirect_uri") + "?" + url.Values{"code": {"c0de"}, "state": {r.PostFormValue("state")}}.Encode()
		http.Redirect(w, r, to, http.StatusFound)
	})
	s := httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

func step(t *testing.T, browser context.Context) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(browser, 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestSignInApproveRedirect: the whole flow, and what reached the callback.
func TestSignInApproveRedirect(t *testing.T) {
	srv := fakeAuthorizeServer(t, "alice", "correct horse")
	cb := browsertest.NewCallback(t)
	ctx := step(t, browsertest.Start(t))
	authURL := srv.URL + "/authorize?" + url.Values{"redirect_uri": {cb.URL}, "state": {"st4te"}}.Encode()
	if err := chromedp.Do(ctx, chromedp.Navigate(authURL)); err != nil {
		t.Fatal(err)
	}
	if err := browsertest.SignIn(ctx, "alice", "correct horse", "#consent-form, #failed"); err != nil {
		t.Fatal(err)
	}
	if err := browsertest.Approve(ctx, "#done"); err != nil {
		t.Fatal(err)
	}
	q, err := cb.Redirect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if q.Get("code") != "c0de" || q.Get("state") != "st4te" {
		t.Fatalf("redirect query %v", q)
	}
}

// TestSignInWrongPassword: next names what may follow; the failure page is
// one of them, and the consent page never comes.
func TestSignInWrongPassword(t *testing.T) {
	srv := fakeAuthorizeServer(t, "alice", "correct horse")
	ctx := step(t, browsertest.Start(t))
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/authorize?state=x")); err != nil {
		t.Fatal(err)
	}
	if err := browsertest.SignIn(ctx, "alice", "wrong", "#consent-form, #failed"); err != nil {
		t.Fatal(err)
	}
	onConsent, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.getElementById("consent-form") !== null`))
	if err != nil || onConsent {
		t.Fatalf("consent page after a wrong password (%v)", err)
	}
}

// TestSignInWithoutForm: a page without the sign-in form fails the step
// when its context ends, rather than hanging.
func TestSignInWithoutForm(t *testing.T) {
	srv := fakeAuthorizeServer(t, "alice", "correct horse")
	browser := browsertest.Start(t)
	if err := chromedp.Do(step(t, browser), chromedp.Navigate(srv.URL+"/nothing-here")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(browser, time.Second)
	defer cancel()
	if err := browsertest.SignIn(ctx, "alice", "correct horse", "#consent-form"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("SignIn on a page without the form: %v", err)
	}
}

// TestRedirectNone: no redirect is ErrNoRedirect once ctx ends; other
// paths of the callback server are not recorded.
func TestRedirectNone(t *testing.T) {
	cb := browsertest.NewCallback(t)
	resp, err := http.Get(cb.URL[:len(cb.URL)-len("/callback")] + "/favicon.ico")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("/favicon.ico: %d", resp.StatusCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := cb.Redirect(ctx); !errors.Is(err, browsertest.ErrNoRedirect) {
		t.Fatalf("Redirect with none: %v", err)
	}
}
