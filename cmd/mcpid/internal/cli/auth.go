package cli

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/mcpid/mcpid/cmd/mcpid/internal/cliconfig"
	"github.com/mcpid/mcpid/cmd/mcpid/internal/oauthlogin"
)

var errLoginExpired = errors.New("your mcpid login expired and could not be refreshed: run `mcpid login` again")

// bearer presents the stored login token, refreshing it shortly before it
// expires (access tokens live minutes; the refresh token keeps the login).
type bearer struct {
	a  *app
	mu sync.Mutex
}

func (b *bearer) RequireTransportSecurity() bool { return true }

func (b *bearer) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	l := b.a.cfg.Login
	if b.a.d.Now().Add(30 * time.Second).After(l.Expiry) {
		if err := b.a.refresh(ctx); err != nil {
			return nil, err
		}
		l = b.a.cfg.Login
	}
	return map[string]string{"authorization": "Bearer " + l.AccessToken}, nil
}

func (a *app) httpClient() *http.Client {
	return &http.Client{Timeout: a.flags.timeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// refresh renews the stored login and saves it.
func (a *app) refresh(ctx context.Context) error {
	l := a.cfg.Login
	if l.RefreshToken == "" || a.cfg.Issuer == "" {
		return errLoginExpired
	}
	hc := a.httpClient()
	m, err := oauthlogin.Discover(ctx, hc, a.cfg.Issuer)
	if err != nil {
		return fmt.Errorf("refreshing the login: %w", err)
	}
	t, err := oauthlogin.Refresh(ctx, hc, m, l.RefreshToken)
	if err != nil {
		return fmt.Errorf("%w (%w)", errLoginExpired, err)
	}
	a.cfg.Login = loginOf(t)
	return a.saveLogin(a.cfg.Login)
}

func loginOf(t *oauthlogin.Token) *cliconfig.Login {
	return &cliconfig.Login{AccessToken: t.AccessToken, RefreshToken: t.RefreshToken, Expiry: t.Expiry.UTC(), Subject: t.Subject, Roles: t.Roles}
}

// saveLogin stores (or, with nil, removes) the login of the current context.
func (a *app) saveLogin(l *cliconfig.Login) error {
	name := a.ctxName
	return cliconfig.Update(a.cfgPath, func(f *cliconfig.File) error {
		if name == "" {
			name = "default"
			f.CurrentContext = name
		}
		c, ok := f.Contexts[name]
		if !ok {
			cp := *a.cfg
			c = &cp
			f.Contexts[name] = c
		}
		c.Login = l
		if l != nil && c.Issuer == "" {
			c.Issuer = a.cfg.Issuer
		}
		return nil
	})
}

func (a *app) loginCommand() *cobra.Command {
	var noBrowser bool
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Sign in as an operator (browser, authorization code + PKCE)",
		Long: `Sign in as an operator. mcpid login opens the issuer's sign-in page in a
browser as the pre-registered native client "mcpid" (authorization code with
PKCE, redirect to a loopback port on 127.0.0.1), and stores the resulting
token (audience urn:mcpid:admin) with its refresh token in the current
context of the configuration file (0600). Later commands present it instead
of the bootstrap certificate and refresh it when it expires.

Only users holding an operator role may log in: admin (everything) or auditor
(read-only; every write is refused by the services).`,
		Example: `  mcpid login
  mcpid login --no-browser          # print the URL instead of opening a browser
  mcpid --context prod login`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if a.cfg.Issuer == "" {
				return usagef("no issuer to sign in at: pass --issuer, set MCPID_ISSUER, or use a context that has one")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), wait)
			defer cancel()
			hc := a.httpClient()
			m, err := oauthlogin.Discover(ctx, hc, a.cfg.Issuer)
			if err != nil {
				return err
			}
			open := func(ctx context.Context, u string) error {
				a.note("Sign in at:\n\n  %s\n\n", u)
				if noBrowser || a.d.OpenBrowser == nil {
					return nil
				}
				if err := a.d.OpenBrowser(ctx, u); err != nil {
					a.note("(could not open a browser: %v; open the URL above)\n", err)
				}
				return nil
			}
			t, err := oauthlogin.Login(ctx, hc, m, open)
			if err != nil {
				return err
			}
			a.cfg.Login = loginOf(t)
			if err := a.saveLogin(a.cfg.Login); err != nil {
				return err
			}
			a.printf("Logged in as %s (roles: %s); token stored in %s.\n", t.Subject, joinOr(t.Roles, "none"), a.cfgPath)
			return nil
		},
	}
	cmd.Flags().BoolVar(&noBrowser, "no-browser", false, "print the sign-in URL instead of opening a browser")
	cmd.Flags().DurationVar(&wait, "wait", 5*time.Minute, "how long to wait for the sign-in to finish")
	return cmd
}

func (a *app) logoutCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "logout",
		Short: "Forget the token stored by mcpid login for the current context",
		Long: `Remove the operator token that mcpid login stored in the current context.
Later commands use the context's bootstrap certificate, if any. The token is
not revoked at the server; it expires within minutes, and its refresh token
is gone with the stored copy.`,
		Example: "  mcpid logout",
		Args:    cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := a.saveLogin(nil); err != nil {
				return err
			}
			a.printf("Logged out of context %q.\n", a.ctxName)
			return nil
		},
	}
}

func joinOr(ss []string, empty string) string {
	if len(ss) == 0 {
		return empty
	}
	out := ss[0]
	for _, s := range ss[1:] {
		out += "," + s
	}
	return out
}
