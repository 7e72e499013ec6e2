package web

import (
	"net/http"

	"github.com/mcpid/mcpid/services/token/internal/oauth"
)

// PathMyAgents is the "my agents" page: what the signed-in user approved,
// with a revoke button per agent and MCP server.
const PathMyAgents = "/oauth2/my-agents"

type myAgentsView struct {
	UserName string
	CSRF     string
	Agents   []*oauth.Agent
	Revoked  bool
}

// myAgentsPage is GET /oauth2/my-agents.
func (p *Pages) myAgentsPage(w http.ResponseWriter, r *http.Request) {
	cookie := cookieValue(r, SessionCookie)
	u, err := p.svc.SignedInUser(r.Context(), cookie)
	if err != nil {
		p.fail(w, r, err, http.StatusSeeOther)
		return
	}
	if u == nil {
		p.errorPage(w, http.StatusUnauthorized, "Sign in first: this page shows the agents you approved once you are signed in.")
		return
	}
	agents, err := p.svc.MyAgents(r.Context(), u.ID)
	if err != nil {
		p.fail(w, r, err, http.StatusSeeOther)
		return
	}
	name := u.DisplayName
	if name == "" {
		name = u.Username
	}
	p.render(w, http.StatusOK, "myagents", pageData{Title: "My agents", Action: p.svc.URL(PathMyAgents), View: myAgentsView{
		UserName: name, CSRF: oauth.MyAgentsCSRF(cookie), Agents: agents, Revoked: r.URL.Query().Get("revoked") == "1",
	}})
}

// myAgentsPost is POST /oauth2/my-agents: revoke one agent's access to one
// MCP server (consent and grants), then back to the page.
func (p *Pages) myAgentsPost(w http.ResponseWriter, r *http.Request) {
	form, ok := parseForm(w, r)
	if !ok {
		return
	}
	cookie := cookieValue(r, SessionCookie)
	u, err := p.svc.SignedInUser(r.Context(), cookie)
	if err != nil {
		p.fail(w, r, err, http.StatusSeeOther)
		return
	}
	if u == nil {
		p.errorPage(w, http.StatusUnauthorized, "Your session has ended. Sign in again.")
		return
	}
	if !oauth.CheckMyAgentsCSRF(cookie, form.Get("csrf")) {
		p.errorPage(w, http.StatusForbidden, "The form has expired or did not come from this page. Reload the page and try again.")
		return
	}
	clientID, res := form.Get("client_id"), form.Get("resource")
	if clientID == "" || res == "" || len(form["client_id"]) != 1 || len(form["resource"]) != 1 {
		p.errorPage(w, http.StatusBadRequest, "The request is incomplete.")
		return
	}
	if _, err := p.svc.RevokeAgent(r.Context(), u.ID, clientID, res); err != nil {
		p.fail(w, r, err, http.StatusSeeOther)
		return
	}
	p.redirect(w, r, p.svc.URL(PathMyAgents)+"?revoked=1", http.StatusSeeOther)
}
