package server

import (
	"github.com/mcpid/mcpid/services/token/internal/keyring"
)

// rotation is the signing key lifecycle the settings ask for: a successor is
// published one JWKS cache lifetime (jwks-max-age) before it signs, and a
// retired key stays published for the longest access token lifetime.
func (c Config) rotation(st *settings) keyring.Rotation {
	maxTTL := st.oauth.AccessTokenTTL
	for _, d := range st.oauth.ResourceTTL {
		maxTTL = max(maxTTL, d)
	}
	every := c.SigningKeyRotation
	if every == 0 {
		every = keyring.DefaultRotateEvery
	}
	return keyring.Rotation{Every: every, PublishLead: st.jwksMaxAge, MaxTokenTTL: maxTTL}
}
