package cli_test

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcpid/mcpid/lib/service/servicetest"

	"github.com/chromedp/chromedp"

	"github.com/mcpid/mcpid/cmd/mcpid/internal/cli"
	"github.com/mcpid/mcpid/cmd/mcpid/internal/cliconfig"
	"github.com/mcpid/mcpid/lib/browsertest"
)

// signIn is a Deps.OpenBrowser that does what a person does with the URL
// `mcpid login` prints: in a fresh browser profile (no session of an
// earlier sign-in), sign in as user and, when the consent page comes,
// approve the mcpid CLI. It returns once the browser reached the CLI's
// loopback page (or the flow failed: the test then fails, and the CLI's
// --wait ends the login).
func signIn(t *testing.T, browser context.Context, user, password string) func(context.Context, string) error {
	return func(_ context.Context, authURL string) error {
		ctx, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
		defer cancel()
		ctx, cancelT := context.WithTimeout(ctx, 45*time.Second)
		defer cancelT()
		if err := chromedp.Do(ctx, chromedp.Navigate(authURL)); err != nil {
			t.Errorf("authorize page in Chromium: %v", err)
			return err
		}
		// Either the consent page, or (a user without an operator role)
		// straight back to the CLI with error=access_denied.
		if err := browsertest.SignIn(ctx, user, password, "#consent-form, #failed"); err != nil {
			t.Errorf("sign-in as %s in Chromium: %v", user, err)
			return err
		}
		onConsent, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.getElementById("consent-form") !== null`))
		if err != nil {
			t.Errorf("reading the page: %v", err)
			return err
		}
		if !onConsent {
			return nil
		}
		if client, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("client-name"))); err != nil || !strings.Contains(client, "mcpid") {
			t.Errorf("consent page names client %q (%v), want the mcpid CLI", client, err)
		}
		if err := browsertest.Approve(ctx, "#signed-in, #failed"); err != nil {
			t.Errorf("consent as %s in Chromium: %v", user, err)
			return err
		}
		return nil
	}
}

// runWith runs the CLI with extra dependencies (browser opener, clock).
func runWith(t *testing.T, deps func(*cli.Deps), stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	d := cli.Deps{
		Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errb,
		Environ: []string{"MCPID_CONFIG=" + sys.CLIConfig},
		Cwd:     t.TempDir(),
	}
	if deps != nil {
		deps(&d)
	}
	code := cli.Execute(ctx, args, d)
	return result{code, out.String(), errb.String()}
}

// tokenConfig writes a configuration whose "dev" context has the services'
// addresses and CA but no bootstrap certificate: every call it makes is
// authenticated by the login token alone.
func tokenConfig(t *testing.T) string {
	t.Helper()
	f, err := cliconfig.Load(sys.CLIConfig)
	if err != nil {
		t.Fatal(err)
	}
	c := *f.Contexts[cliconfig.DevContext]
	c.CertFile, c.KeyFile, c.Login = "", "", nil
	path := filepath.Join(t.TempDir(), "cli.yaml")
	err = cliconfig.Save(path, &cliconfig.File{CurrentContext: cliconfig.DevContext, Contexts: map[string]*cliconfig.Context{cliconfig.DevContext: &c}})
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// storedLogin returns the login stored in the configuration's dev context.
func storedLogin(t *testing.T, path string) *cliconfig.Login {
	t.Helper()
	f, err := cliconfig.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return f.Contexts[cliconfig.DevContext].Login
}

// login runs `mcpid login` with the browser signing in as user.
func login(t *testing.T, browser context.Context, cfg, user, password string) result {
	t.Helper()
	return runWith(t, func(d *cli.Deps) { d.OpenBrowser = signIn(t, browser, user, password) }, "",
		"--config", cfg, "login", "--wait", "60s")
}

// TestLogin drives `mcpid login` for real: authorization code + PKCE as
// the pre-registered native client mcpid, sign-in and consent in headless
// Chromium, the code back on the CLI's loopback listener.
func TestLogin(t *testing.T) {
	browser := browsertest.Start(t)
	mustRun(t, "an auditor password\n", "users", "create", "login-auditor", "--role", "auditor", "--password-stdin")
	mustRun(t, "a plain user password\n", "users", "create", "login-plain", "--password-stdin")

	t.Run("admin", func(t *testing.T) {
		cfg := tokenConfig(t)
		// Without the login, the context has no credential at all.
		wantCode(t, cli.ExitAuth, run(t, "", "--config", cfg, "users", "list"), "users list before login")

		r := login(t, browser, cfg, "demo", sys.DemoPassword)
		wantCode(t, cli.ExitOK, r, "login as demo")
		if !strings.Contains(r.stdout, "Logged in as usr_") || !strings.Contains(r.stdout, "roles: admin") {
			t.Errorf("login output:\n%s", r.stdout)
		}
		if !strings.Contains(r.stderr, "/oauth2/authorize?") {
			t.Errorf("login did not print the URL:\n%s", r.stderr)
		}
		st, err := os.Stat(cfg)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("configuration with the token: %v, mode %v; want 0600", err, st.Mode())
		}
		l := storedLogin(t, cfg)
		if l == nil || l.RefreshToken == "" {
			t.Fatalf("stored login = %+v, want a token and a refresh token", l)
		}
		c := servicetest.JWTClaims(t, l.AccessToken)
		if aud := c["aud"]; aud != "urn:mcpid:admin" && !isOnly(aud, "urn:mcpid:admin") || c["client_id"] != "mcpid" {
			t.Errorf("token claims aud %v client_id %v, want urn:mcpid:admin and mcpid", c["aud"], c["client_id"])
		}

		// The token alone works for reads and writes.
		if out := mustRun(t, "", "--config", cfg, "users", "list"); !strings.Contains(out, "login-auditor") {
			t.Errorf("users list with the token:\n%s", out)
		}
		// Every service accepts the operator token: registration, policy
		// and audit through lib/admintoken, token itself.
		for _, args := range [][]string{{"clients", "list"}, {"policies", "list"}, {"audit", "verify"}, {"agents", "list"}, {"grants", "list"}} {
			mustRun(t, "", append([]string{"--config", cfg}, args...)...)
		}
		mustRun(t, "a password long enough\n", "--config", cfg, "users", "create", "login-made", "--password-stdin")
		mustRun(t, "", "--config", cfg, "users", "delete", "login-made")

		// Expired: the next command refreshes (rotating the refresh token),
		// stores the new pair and succeeds.
		later := func(d *cli.Deps) { d.Now = func() time.Time { return l.Expiry.Add(time.Second) } }
		r = runWith(t, later, "", "--config", cfg, "keys", "list")
		wantCode(t, cli.ExitOK, r, "keys list after expiry")
		l2 := storedLogin(t, cfg)
		if l2 == nil || l2.AccessToken == l.AccessToken || l2.RefreshToken == l.RefreshToken || l2.RefreshToken == "" {
			t.Fatalf("after refresh the stored login did not change: %+v", l2)
		}

		// A refresh that fails (the rotated-away refresh token: reuse
		// detection revokes the whole login) says to log in again.
		err = cliconfig.Update(cfg, func(f *cliconfig.File) error {
			f.Contexts[cliconfig.DevContext].Login.RefreshToken = l.RefreshToken
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		r = runWith(t, later, "", "--config", cfg, "keys", "list")
		wantCode(t, cli.ExitAuth, r, "keys list with a reused refresh token")
		if !strings.Contains(r.stderr, "run `mcpid login` again") {
			t.Errorf("no hint to log in again:\n%s", r.stderr)
		}

		// logout forgets the token.
		mustRun(t, "", "--config", cfg, "logout")
		if l := storedLogin(t, cfg); l != nil {
			t.Errorf("login still stored after logout: %+v", l)
		}
	})

	t.Run("auditor", func(t *testing.T) {
		cfg := tokenConfig(t)
		r := login(t, browser, cfg, "login-auditor", "an auditor password")
		wantCode(t, cli.ExitOK, r, "login as an auditor")
		if !strings.Contains(r.stdout, "roles: auditor") {
			t.Errorf("login output:\n%s", r.stdout)
		}
		mustRun(t, "", "--config", cfg, "users", "list")
		for _, args := range writes {
			full := append([]string{"--config", cfg}, args...)
			stdin := "a password long enough\n"
			if args[0] == "policies" && args[1] == "apply" {
				stdin = testPolicy
			}
			r := run(t, stdin, full...)
			wantCode(t, cli.ExitAuth, r, full...)
			if !strings.Contains(r.stderr, "role may not") {
				t.Errorf("%v: no hint about the role: %s", args, r.stderr)
			}
		}
	})

	t.Run("no operator role", func(t *testing.T) {
		cfg := tokenConfig(t)
		r := login(t, browser, cfg, "login-plain", "a plain user password")
		wantCode(t, cli.ExitAuth, r, "login as a user without an operator role")
		for _, want := range []string{"access_denied", "the user holds no operator role", "mcpid users set-roles"} {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("login error lacks %q:\n%s", want, r.stderr)
			}
		}
		if l := storedLogin(t, cfg); l != nil {
			t.Errorf("a refused login stored %+v", l)
		}
	})
}

// isOnly reports whether a JSON value is a list of exactly want.
func isOnly(v any, want string) bool {
	l, ok := v.([]any)
	return ok && len(l) == 1 && l[0] == want
}

// TestLoginCallbackRefused plays a hostile or broken authorization
// response to the CLI's loopback listener, in place of the browser: each is
// refused, exits 4 and stores nothing.
func TestLoginCallbackRefused(t *testing.T) {
	cases := []struct {
		name  string
		query func(state, issuer string) url.Values
		want  string
	}{
		{"wrong state", func(_, issuer string) url.Values {
			return url.Values{"code": {"x"}, "state": {"forged"}, "iss": {issuer}}
		}, "state does not match"},
		{"access denied", func(state, issuer string) url.Values {
			return url.Values{"error": {"access_denied"}, "error_description": {"the user denied the request"}, "state": {state}, "iss": {issuer}}
		}, "authorization refused: access_denied"},
		{"iss mismatch", func(state, _ string) url.Values {
			return url.Values{"code": {"x"}, "state": {state}, "iss": {"https://evil.example.com"}}
		}, `issuer "https://evil.example.com"`},
		{"iss missing", func(state, _ string) url.Values {
			return url.Values{"code": {"x"}, "state": {state}}
		}, "does not name its issuer"},
		{"no code", func(state, issuer string) url.Values {
			return url.Values{"state": {state}, "iss": {issuer}}
		}, "carries no code"},
		{"code the token service does not know", func(state, issuer string) url.Values {
			return url.Values{"code": {"forged-code"}, "state": {state}, "iss": {issuer}}
		}, "token endpoint refused: invalid_grant"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tokenConfig(t)
			answer := func(ctx context.Context, authURL string) error {
				u, err := url.Parse(authURL)
				if err != nil {
					return err
				}
				q := u.Query()
				cb, err := url.Parse(q.Get("redirect_uri"))
				if err != nil {
					return err
				}
				if cb.Hostname() != "127.0.0.1" || q.Get("code_challenge_method") != "S256" || q.Get("client_id") != "mcpid" || q.Get("resource") != "urn:mcpid:admin" {
					t.Errorf("authorization request: %v", q)
				}
				cb.RawQuery = tc.query(q.Get("state"), sys.Issuer).Encode()
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, cb.String(), nil)
				if err != nil {
					return err
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Errorf("calling the loopback redirect: %v", err)
					return err
				}
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusBadRequest && tc.name != "code the token service does not know" {
					t.Errorf("loopback answered %d, want 400", resp.StatusCode)
				}
				return nil
			}
			r := runWith(t, func(d *cli.Deps) { d.OpenBrowser = answer }, "", "--config", cfg, "login", "--wait", "30s")
			wantCode(t, cli.ExitAuth, r, "login with "+tc.name)
			if !strings.Contains(r.stderr, tc.want) {
				t.Errorf("error lacks %q:\n%s", tc.want, r.stderr)
			}
			if l := storedLogin(t, cfg); l != nil {
				t.Errorf("a refused login stored %+v", l)
			}
		})
	}
}
