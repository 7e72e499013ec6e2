package oauth

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"slices"
	"sort"
	"time"

	"github.com/mcpid/mcpid/lib/etcdstore"
	"github.com/mcpid/mcpid/services/token/internal/events"
	"github.com/mcpid/mcpid/services/token/internal/store"
)

// The "my agents" page's domain: what a signed-in user approved, and
// revoking one agent's access to one MCP server.

// Agent is one (client, resource) the user approved or holds a grant for.
type Agent struct {
	ClientID, ClientName, Resource, ResourceName string
	Scopes                                       []string
	Approved, LastUse                            time.Time
	Grants                                       int
}

// SignedInUser returns the user of a live session cookie, or nil (no
// session, expired, user disabled or deleted).
func (s *Service) SignedInUser(ctx context.Context, sessionCookie string) (*store.User, error) {
	if sessionCookie == "" {
		return nil, nil
	}
	_, u, err := s.liveSession(ctx, Hash(sessionCookie))
	return u, err
}

// MyAgentsCSRF is the CSRF token of the my-agents form for a session: bound
// to the session cookie (which scripts cannot read and other sites cannot
// send on a POST, SameSite=Lax), so it needs no storage.
func MyAgentsCSRF(sessionCookie string) string {
	sum := sha256.Sum256([]byte("mcpid-my-agents-csrf\x00" + sessionCookie))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// CheckMyAgentsCSRF compares a posted token in constant time.
func CheckMyAgentsCSRF(sessionCookie, posted string) bool {
	return sessionCookie != "" && posted != "" && equalSecret(MyAgentsCSRF(sessionCookie), posted)
}

// MyAgents lists the user's remembered consents and live authorization_code
// grants, one row per (client, resource).
func (s *Service) MyAgents(ctx context.Context, userID string) ([]*Agent, error) {
	rows := map[[2]string]*Agent{}
	row := func(clientID, res string) *Agent {
		k := [2]string{clientID, res}
		if a, ok := rows[k]; ok {
			return a
		}
		a := &Agent{ClientID: clientID, Resource: res}
		rows[k] = a
		return a
	}
	for token := ""; ; {
		cs, next, err := s.d.Store.ListConsents(ctx, store.ConsentFilter{UserID: userID}, etcdstore.MaxPageSize, token)
		if err != nil {
			return nil, storeErr(err)
		}
		for _, c := range cs {
			a := row(c.ClientID, c.Resource)
			a.Scopes = mergeScopes(a.Scopes, c.Scopes)
			a.Approved = c.Updated
		}
		if next == "" {
			break
		}
		token = next
	}
	for token := ""; ; {
		gs, next, err := s.d.Store.ListGrants(ctx, store.GrantFilter{UserID: userID, Type: store.GrantAuthorizationCode}, etcdstore.MaxPageSize, token)
		if err != nil {
			return nil, storeErr(err)
		}
		for _, g := range gs {
			a := row(g.ClientID, g.Resource)
			a.Scopes = mergeScopes(a.Scopes, g.Scopes)
			a.Grants++
			for _, t := range []time.Time{g.Created, g.LastRefresh, g.LastUse} {
				if t.After(a.LastUse) {
					a.LastUse = t
				}
			}
		}
		if next == "" {
			break
		}
		token = next
	}
	out := make([]*Agent, 0, len(rows))
	for _, a := range rows {
		a.ClientName = a.ClientID
		if cl, err := s.d.Clients.Resolve(ctx, a.ClientID); err == nil && cl.GetMetadata().GetClientName() != "" {
			a.ClientName = cl.GetMetadata().GetClientName()
		}
		a.ResourceName = a.Resource
		if cat, err := s.d.Catalogs.Lookup(a.Resource); err == nil && cat.DisplayName != "" {
			a.ResourceName = cat.DisplayName
		}
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].ClientName != out[j].ClientName {
			return out[i].ClientName < out[j].ClientName
		}
		return out[i].Resource < out[j].Resource
	})
	return out, nil
}

func mergeScopes(a, b []string) []string {
	out := slices.Clone(a)
	for _, s := range b {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

// RevokeAgent forgets the user's consent for (client, resource) and revokes
// the matching authorization_code grants, so the agent loses access at once.
// Nothing to revoke is not an error.
func (s *Service) RevokeAgent(ctx context.Context, userID, clientID, res string) (ConsentResult, error) {
	actor := events.UserActor(userID)
	var r ConsentResult
	if err := s.cutCodes(ctx, userID, clientID, res); err != nil {
		return r, err
	}
	op, err := s.d.Events.Op(ctx, events.ConsentRevoked(actor, userID, clientID, res, "my_agents", false))
	if err != nil {
		return r, err
	}
	found, err := s.d.Store.DeleteConsent(ctx, userID, clientID, res, op)
	if err != nil {
		return r, storeErr(err)
	}
	if found {
		r.Consents = 1
	}
	g, err := s.revokeTripleGrants(ctx, actor, ConsentSelector{UserID: userID, ClientID: clientID, Resource: res}, "my_agents")
	g.Consents = r.Consents
	return g, err
}
