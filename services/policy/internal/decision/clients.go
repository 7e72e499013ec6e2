package decision

import "github.com/mcpid/mcpid/services/policy/internal/tokens"

// ClientInfo is what the policy service knows of a client (agent).
type ClientInfo struct {
	// Verified: the client's verification status is VERIFIED.
	Verified bool
	// ApplicationType is "web", "native" or "" when unknown.
	ApplicationType string
}

// Clients tells a client's registration attributes for a verified token.
// Implementations answer from memory and are safe for concurrent use.
type Clients interface {
	// Client returns what is known of t's client; false when nothing is.
	Client(t *tokens.Token) (ClientInfo, bool)
}

// Claim names the token service puts the client's attributes in (see
// docs/token.md, "Access tokens").
const (
	ClaimClientVerified        = "client_verified"
	ClaimClientApplicationType = "client_application_type"
)

// TokenClaims reads the client's attributes from the access token itself:
// the token service writes the client's verification status and
// application type at issuance, and the registration service revokes a
// client's grants (a CLIENT watermark on the revocation feed) whenever the
// client loses VERIFIED, so a stale claim is rejected as TOKEN_REVOKED
// before it is ever read. Only a JSON true is verified and only "web" or
// "native" is an application type: anything else (absent, a string
// "true", a typo) is the contract's fail-closed default.
type TokenClaims struct{}

// Client implements Clients.
func (TokenClaims) Client(t *tokens.Token) (ClientInfo, bool) {
	if t == nil || t.Claims == nil {
		return ClientInfo{}, false
	}
	f := t.Claims.GetFields()
	v, has := f[ClaimClientVerified]
	if !has {
		return ClientInfo{}, false
	}
	info := ClientInfo{Verified: v.GetBoolValue()}
	switch at := f[ClaimClientApplicationType].GetStringValue(); at {
	case "web", "native":
		info.ApplicationType = at
	}
	return info, true
}
