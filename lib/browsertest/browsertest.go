// Package browsertest drives mcpid's browser pages in tests with headless
// Chromium (chromedp): start a browser, sign in with a username and
// password, approve the consent page, and read the redirect that ends an
// authorization at a loopback callback. It is test support: only tests
// import it, so chromedp is compiled into test binaries alone.
package browsertest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// ChromiumPath is Debian's chromium; `make test` installs it when missing.
const ChromiumPath = "/usr/bin/chromium"

// Start starts headless Chromium with a fresh profile for the rest of t,
// stopped at cleanup. Every host but 127.0.0.1 fails to resolve, so the
// browser can reach nothing else, and background networking is off.
//
// The browser is started on the returned long-lived context: chromedp
// allocates it on the first run, and a browser allocated under a step's
// timeout would close with that step. Derive per-step timeouts from it.
func Start(t testing.TB) context.Context {
	t.Helper()
	if _, err := os.Stat(ChromiumPath); err != nil {
		if p, lerr := exec.LookPath("chromium"); lerr == nil {
			t.Fatalf("chromium is at %s, expected %s", p, ChromiumPath)
		}
		t.Fatalf("headless Chromium is required (Debian package chromium; `make test` installs it): %v", err)
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(ChromiumPath),
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
	)
	ctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelCtx(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("starting Chromium: %v", err)
	}
	return ctx
}

// SignIn fills in and submits the token service's sign-in form (#login-form
// with #username, #password and #sign-in) once it is visible, then waits
// until an element matching the CSS selector next is visible: "#consent-form"
// when consent follows, or a list such as "#consent-form, #failed" when
// either may.
func SignIn(ctx context.Context, user, password, next string) error {
	return chromedp.Do(ctx,
		chromedp.WaitVisible(chromedp.ID("login-form")),
		chromedp.SendKeys(chromedp.ID("username"), user),
		chromedp.SendKeys(chromedp.ID("password"), password),
		chromedp.Click(chromedp.ID("sign-in")),
		chromedp.WaitVisible(chromedp.CSS(next)),
	)
}

// Approve approves the consent page (#approve) as it stands, then waits
// until an element matching the CSS selector next is visible on the page
// the redirect lands on ("#done" for a Callback).
func Approve(ctx context.Context, next string) error {
	return chromedp.Do(ctx,
		chromedp.Click(chromedp.ID("approve")),
		chromedp.WaitVisible(chromedp.CSS(next)),
	)
}

// RedirectWait bounds how long Callback.Redirect waits for a redirect.
const RedirectWait = 10 * time.Second

// Callback is a client's loopback redirect target (/callback on
// 127.0.0.1): it records the query of each redirect and answers with a page
// whose #done element Approve can wait for. Other paths, such as the
// /favicon.ico Chromium asks for, are not found and not recorded.
type Callback struct {
	// URL is the redirect URI to register.
	URL  string
	hits chan url.Values
}

// NewCallback starts a Callback, stopped at t's cleanup.
func NewCallback(t testing.TB) *Callback {
	t.Helper()
	var lc net.ListenConfig
	lis, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cb := &Callback{URL: "http://" + lis.Addr().String() + "/callback", hits: make(chan url.Values, 4)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /callback", func(w http.ResponseWriter, r *http.Request) {
		select {
		case cb.hits <- r.URL.Query():
		default: // nobody reads: a test that redirects more than it reads
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = fmt.Fprint(w, `<!DOCTYPE html><html><body><p id="done">You can close this window.</p></body></html>`)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { _ = srv.Close() })
	return cb
}

// ErrNoRedirect is returned when no redirect reached the Callback in time.
var ErrNoRedirect = errors.New("browsertest: the browser never reached the callback")

// Redirect returns the query of the next redirect that reached the
// Callback (code, state, iss or error), waiting until ctx ends or at most
// RedirectWait.
func (c *Callback) Redirect(ctx context.Context) (url.Values, error) {
	wait := time.NewTimer(RedirectWait)
	defer wait.Stop()
	select {
	case q := <-c.hits:
		return q, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %w", ErrNoRedirect, ctx.Err())
	case <-wait.C:
		return nil, ErrNoRedirect
	}
}
