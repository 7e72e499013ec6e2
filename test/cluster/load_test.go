package cluster

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
)

const redirectURI = "http://127.0.0.1:9/cb"

// op is one client-visible operation: what it was, when, and whether the
// client was told it succeeded.
type op struct {
	kind       string
	start, end time.Time
	err        error
}

// grant is what a client was told about one authorization code grant.
type grant struct {
	clientID string
	grantID  string
	// refresh are the refresh tokens in issue order; the last one is
	// current, every earlier one was rotated away.
	refresh []string
	// uncertain: a rotation got no answer (the client cannot know whether
	// it happened), so the grant is left out of the rotation checks.
	uncertain bool
}

// ledger is everything acknowledged to clients, checked afterwards.
type ledger struct {
	mu        sync.Mutex
	ops       []op
	clients   []string // acknowledged DCR registrations
	grants    []*grant
	rotations int
}

func (l *ledger) record(ctx context.Context, kind string, start time.Time, err error) {
	if err != nil && ctx.Err() != nil {
		return // the run ended under it: not the system's failure
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ops = append(l.ops, op{kind: kind, start: start, end: time.Now(), err: err})
}

// retry runs an operation that is safe to repeat until it succeeds or
// attempts run out, recording every attempt, as a well-behaved client does.
func (l *ledger) retry(ctx context.Context, kind string, f func() error) error {
	var err error
	for attempt := 0; attempt < 40 && ctx.Err() == nil; attempt++ {
		start := time.Now()
		err = f()
		l.record(ctx, kind, start, err)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s gave up: %w", kind, err)
}

// oauthClient drives the public origin with a plain HTTP client and a
// cookie jar, no browser.
type oauthClient struct {
	issuer string
	http   *http.Client
}

func newOAuthClient(issuer string) *oauthClient {
	jar, _ := cookiejar.New(nil)
	return &oauthClient{issuer: issuer, http: &http.Client{
		Jar:     jar,
		Timeout: 15 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // followed by hand: the last hop is the client's redirect URI
		},
	}}
}

type statusError struct {
	code int
	body string
}

func (e *statusError) Error() string { return fmt.Sprintf("HTTP %d: %.200s", e.code, e.body) }

func (c *oauthClient) do(ctx context.Context, method, u string, form url.Values, basic [2]string) (*http.Response, string, error) {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, "", err
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if basic[0] != "" {
		req.SetBasicAuth(url.QueryEscape(basic[0]), url.QueryEscape(basic[1]))
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp, string(b), err
}

func (c *oauthClient) register(ctx context.Context) (string, error) {
	doc := `{"redirect_uris":["` + redirectURI + `"],"token_endpoint_auth_method":"none",` +
		`"grant_types":["authorization_code","refresh_token"],"response_types":["code"],"client_name":"cluster load"}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.issuer+"/oauth2/register", strings.NewReader(doc))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusCreated {
		return "", &statusError{resp.StatusCode, string(b)}
	}
	var out struct {
		ClientID string `json:"client_id"`
	}
	if err := json.Unmarshal(b, &out); err != nil || out.ClientID == "" {
		return "", fmt.Errorf("registration response %q: %w", b, err)
	}
	return out.ClientID, nil
}

var (
	formRE   = regexp.MustCompile(`<form id="(login-form|consent-form)" method="post" action="([^"]*)">`)
	hiddenRE = regexp.MustCompile(`<input type="hidden" name="([a-z_]+)" value="([^"]*)">`)
	scopeRE  = regexp.MustCompile(`<input type="checkbox" name="scope" value="([^"]*)" checked>`)
)

// authorize runs /oauth2/authorize through the login and consent forms and
// returns the code. The whole walk is safe to repeat: it starts a new
// authorization request each time.
func (c *oauthClient) authorize(ctx context.Context, clientID, challenge string) (string, error) {
	q := url.Values{
		"response_type": {"code"}, "client_id": {clientID}, "redirect_uri": {redirectURI},
		"code_challenge": {challenge}, "code_challenge_method": {"S256"},
		"resource": {resource}, "scope": {"crm:read offline_access"}, "state": {"s1"},
	}
	method, target, form := http.MethodGet, c.issuer+"/oauth2/authorize?"+q.Encode(), url.Values(nil)
	for range 10 {
		resp, body, err := c.do(ctx, method, target, form, [2]string{})
		if err != nil {
			return "", err
		}
		switch {
		case resp.StatusCode >= 300 && resp.StatusCode < 400:
			loc, err := resp.Location()
			if err != nil {
				return "", err
			}
			if strings.HasPrefix(loc.String(), redirectURI) {
				if e := loc.Query().Get("error"); e != "" {
					return "", fmt.Errorf("authorization error %s: %s", e, loc.Query().Get("error_description"))
				}
				return loc.Query().Get("code"), nil
			}
			method, target, form = http.MethodGet, loc.String(), nil
		case resp.StatusCode == http.StatusOK:
			m := formRE.FindStringSubmatch(body)
			if m == nil {
				return "", fmt.Errorf("page without login or consent form: %.300s", body)
			}
			form = url.Values{}
			for _, h := range hiddenRE.FindAllStringSubmatch(body, -1) {
				form.Set(h[1], html.UnescapeString(h[2]))
			}
			if m[1] == "login-form" {
				form.Set("username", demoUser)
				form.Set("password", demoPassword)
			} else {
				for _, s := range scopeRE.FindAllStringSubmatch(body, -1) {
					form.Add("scope", html.UnescapeString(s[1]))
				}
				form.Set("action", "approve")
			}
			action, err := url.Parse(html.UnescapeString(m[2]))
			if err != nil {
				return "", err
			}
			base, _ := url.Parse(target)
			method, target = http.MethodPost, base.ResolveReference(action).String()
		default:
			return "", &statusError{resp.StatusCode, body}
		}
	}
	return "", errors.New("authorization did not finish in 10 steps")
}

type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
}

func (c *oauthClient) token(ctx context.Context, form url.Values, basic [2]string) (tokenResponse, error) {
	resp, body, err := c.do(ctx, http.MethodPost, c.issuer+"/oauth2/token", form, basic)
	if err != nil {
		return tokenResponse{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return tokenResponse{}, &statusError{resp.StatusCode, body}
	}
	var tr tokenResponse
	if err := json.Unmarshal([]byte(body), &tr); err != nil || tr.AccessToken == "" {
		return tokenResponse{}, fmt.Errorf("token response %.200q: %w", body, err)
	}
	return tr, nil
}

func pkce() (verifier, challenge string) {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	verifier = base64.RawURLEncoding.EncodeToString(b)
	sum := sha256.Sum256([]byte(verifier))
	return verifier, base64.RawURLEncoding.EncodeToString(sum[:])
}

func grantIDOf(jwt string) string {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var c struct {
		GrantID string `json:"grant_id"`
	}
	_ = json.Unmarshal(b, &c)
	return c.GrantID
}

// authCodeFlow is one user journey: register (DCR), authorize through the
// forms, exchange the code, refresh twice. Repeatable steps are retried;
// the code exchange and the rotations are not (a second use of a code or a
// refresh token is a replay), so their failure ends the journey.
func (l *ledger) authCodeFlow(ctx context.Context, c *oauthClient) error {
	var clientID string
	if err := l.retry(ctx, "register", func() (err error) { clientID, err = c.register(ctx); return err }); err != nil {
		return err
	}
	l.mu.Lock()
	l.clients = append(l.clients, clientID)
	l.mu.Unlock()

	verifier, challenge := pkce()
	var code string
	if err := l.retry(ctx, "authorize", func() (err error) { code, err = c.authorize(ctx, clientID, challenge); return err }); err != nil {
		return err
	}
	start := time.Now()
	tr, err := c.token(ctx, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirectURI},
		"client_id": {clientID}, "code_verifier": {verifier}, "resource": {resource}}, [2]string{})
	l.record(ctx, "code_exchange", start, err)
	if err != nil {
		return nil // not acknowledged: nothing to check; a new journey starts
	}
	g := &grant{clientID: clientID, grantID: grantIDOf(tr.AccessToken), refresh: []string{tr.RefreshToken}}
	l.mu.Lock()
	l.grants = append(l.grants, g)
	l.mu.Unlock()
	for range 2 {
		start := time.Now()
		cur := g.refresh[len(g.refresh)-1]
		nt, err := c.token(ctx, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {cur}, "client_id": {clientID}}, [2]string{})
		l.record(ctx, "refresh", start, err)
		l.mu.Lock()
		if err != nil {
			g.uncertain = true
			l.mu.Unlock()
			return nil
		}
		g.refresh = append(g.refresh, nt.RefreshToken)
		l.rotations++
		l.mu.Unlock()
	}
	return nil
}

// machineFlow is a machine agent: client_credentials, then the MCP server
// asks policy whether the token may call a tool.
func (l *ledger) machineFlow(ctx context.Context, c *oauthClient, id, secret string, pol policyv1.PolicyServiceClient) error {
	var access string
	if err := l.retry(ctx, "client_credentials", func() error {
		tr, err := c.token(ctx, url.Values{"grant_type": {"client_credentials"}, "resource": {resource}, "scope": {"crm:read"}}, [2]string{id, secret})
		access = tr.AccessToken
		return err
	}); err != nil {
		return err
	}
	return l.retry(ctx, "policy_check", func() error {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		resp, err := pol.Check(cctx, &policyv1.CheckRequest{AccessToken: access, Resource: resource, Tool: "list_contacts"})
		if err != nil {
			return err
		}
		if d := resp.GetResult().GetDecision(); d != policyv1.Decision_DECISION_ALLOW {
			return fmt.Errorf("check: %v (%s)", d, resp.GetResult().GetReasonText())
		}
		return nil
	})
}
