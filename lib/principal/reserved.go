package principal

import "strings"

// Reserved audiences. Tokens with these audiences are the only bearer
// tokens mcpid's own APIs accept; no DCR or CIMD client and no ordinary
// consent may obtain them.
const (
	// AdminAudience is the audience of operator tokens from `mcpid login`.
	AdminAudience = "urn:mcpid:admin"
	// PolicyAudience is the audience of an MCP server's client_credentials
	// token for the policy service, bound to its one resource.
	PolicyAudience = "urn:mcpid:policy"
)

const (
	reservedScopePrefix    = "mcpid:"
	reservedAudiencePrefix = "urn:mcpid:"
)

// IsReservedScope reports whether s is in the reserved mcpid:* scope space.
// The comparison ignores case, so "MCPID:admin" cannot slip past a check
// that some other component might later compare case-insensitively.
func IsReservedScope(s string) bool {
	return hasPrefixFold(s, reservedScopePrefix)
}

// IsReservedAudience reports whether a is in the reserved urn:mcpid:*
// audience space. RFC 8141 makes the "urn" scheme and the namespace
// identifier case-insensitive, so "URN:MCPID:admin" is reserved too.
func IsReservedAudience(a string) bool {
	return hasPrefixFold(a, reservedAudiencePrefix)
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}
