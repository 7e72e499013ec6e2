package jose

import "time"

// AccessTokenType is the JWT "typ" of RFC 9068 access tokens.
const AccessTokenType = "at+jwt"

// AccessTokenOptions are the VerifierOptions for mcpid's RFC 9068 access
// tokens as the token service signs them: ES256 or EdDSA only (so "none"
// and HMAC key confusion are refused), typ at+jwt, the issuer, the clock
// skew and the clock. Audience is left to the caller, which knows which
// audiences it accepts.
func AccessTokenOptions(issuer string, skew time.Duration, now func() time.Time) VerifierOptions {
	return VerifierOptions{
		Algorithms: []string{ES256, EdDSA},
		Type:       AccessTokenType,
		Issuer:     issuer,
		ClockSkew:  skew,
		Now:        now,
	}
}
