package server

import (
	"context"
	"errors"
	"slices"

	"github.com/mcpid/mcpid/lib/admintoken"
	"github.com/mcpid/mcpid/lib/principal"
	"github.com/mcpid/mcpid/lib/revocationfeed"
	"github.com/mcpid/mcpid/services/policy/internal/tokens"
)

// callerVerifier is the policy service's principal.TokenVerifier: operator
// tokens (aud=urn:mcpid:admin) go to lib/admintoken, as in every service;
// everything else to the CallerVerifier of MCP servers' tokens
// (aud=urn:mcpid:policy). Each token's signature is checked once, by the
// verifier its audience picks.
type callerVerifier struct {
	operators *admintoken.Verifier
	servers   *tokens.CallerVerifier
}

var errAdminElsewhere = errors.New("an operator token must be verified as one")

func (v callerVerifier) Verify(ctx context.Context, raw string) (principal.Claims, error) {
	if admintoken.ClaimsAdminAudience(raw) {
		return v.operators.Verify(ctx, raw)
	}
	c, err := v.servers.Verify(ctx, raw)
	if err != nil {
		return principal.Claims{}, err
	}
	if slices.Contains(c.Audience, principal.AdminAudience) {
		// Unreachable unless the routing above and the verified payload
		// disagree; never let the weaker path vouch for an operator.
		return principal.Claims{}, errAdminElsewhere
	}
	return c, nil
}

// adminRevocations lets lib/admintoken read the revocation set this service
// already follows (the whole feed), instead of following it twice.
type adminRevocations struct{ r tokens.Revocations }

func (a adminRevocations) Ready() bool { return a.r.Ready() }

func (a adminRevocations) Revoked(t revocationfeed.Token) bool {
	return a.r.Revoked(&tokens.Token{
		JTI: t.JTI, GrantID: t.GrantID, Subject: t.Subject, ClientID: t.ClientID, Audience: t.Audience, IssuedAt: t.IssuedAt,
	})
}
