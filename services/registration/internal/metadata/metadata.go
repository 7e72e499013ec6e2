// Package metadata validates OAuth client metadata (RFC 7591 §2, RFC 8252,
// MCP 2026-07-28) from its three sources — a DCR request body, a CIMD
// document, an operator's request — and normalizes it into the Metadata the
// service stores.
//
// It is pure: no I/O, no clock. What needs the network (fetching a jwks_uri)
// or the service's state (whether client_credentials is permitted) is
// decided by the caller on the validated result.
package metadata

import (
	"encoding/json"
	"fmt"
	"slices"
)

// RFC 7591 values.
const (
	AuthNone              = "none"
	AuthClientSecretBasic = "client_secret_basic"
	AuthClientSecretPost  = "client_secret_post"
	AuthPrivateKeyJWT     = "private_key_jwt"

	GrantAuthorizationCode = "authorization_code"
	GrantRefreshToken      = "refresh_token"
	GrantClientCredentials = "client_credentials"

	ResponseTypeCode = "code"

	AppWeb    = "web"
	AppNative = "native"
)

// grantOrder is the canonical order of grant types in stored metadata, so
// that two requests listing the same grants in another order compare equal.
var grantOrder = []string{GrantAuthorizationCode, GrantRefreshToken, GrantClientCredentials}

// Limits (ClientMetadata in the contract).
const (
	MaxRedirectURIs   = 20
	MaxURILen         = 2048
	MaxNameLen        = 200 // client_name, software_id, software_version (characters)
	MaxScopeLen       = 2048
	MaxScopes         = 100
	MaxContacts       = 10
	MaxContactLen     = 320
	MaxJWKSBytes      = 16 << 10
	MaxJWKSKeys       = 10
	MaxCIMDBytes      = 5 << 10
	ReservedScopePref = "mcpid:"
)

// Metadata is validated, normalized client metadata: defaults applied,
// grant types in canonical order, application_type always set. Field names
// and values are the RFC 7591 ones.
type Metadata struct {
	RedirectURIs            []string        `json:"redirect_uris,omitempty"`
	TokenEndpointAuthMethod string          `json:"token_endpoint_auth_method"`
	GrantTypes              []string        `json:"grant_types"`
	ApplicationType         string          `json:"application_type"`
	ClientName              string          `json:"client_name,omitempty"`
	ClientURI               string          `json:"client_uri,omitempty"`
	LogoURI                 string          `json:"logo_uri,omitempty"`
	Scope                   string          `json:"scope,omitempty"`
	Contacts                []string        `json:"contacts,omitempty"`
	TOSURI                  string          `json:"tos_uri,omitempty"`
	PolicyURI               string          `json:"policy_uri,omitempty"`
	JWKSURI                 string          `json:"jwks_uri,omitempty"`
	JWKS                    json.RawMessage `json:"jwks,omitempty"`
	SoftwareID              string          `json:"software_id,omitempty"`
	SoftwareVersion         string          `json:"software_version,omitempty"`
}

// HasGrant reports whether the metadata lists grant g.
func (m *Metadata) HasGrant(g string) bool { return slices.Contains(m.GrantTypes, g) }

// Confidential reports whether the client authenticates at the token
// endpoint (any method but none).
func (m *Metadata) Confidential() bool { return m.TokenEndpointAuthMethod != AuthNone }

// UsesSecret reports whether the client authenticates with a client secret.
func (m *Metadata) UsesSecret() bool {
	return m.TokenEndpointAuthMethod == AuthClientSecretBasic || m.TokenEndpointAuthMethod == AuthClientSecretPost
}

// ResponseTypes is always [code] with authorization_code, else empty: it is
// derived, never stored.
func (m *Metadata) ResponseTypes() []string {
	if m.HasGrant(GrantAuthorizationCode) {
		return []string{ResponseTypeCode}
	}
	return nil
}

// LocalRedirectURIsOnly reports whether every redirect URI is one any
// program on the user's device can claim (loopback or a private-use
// scheme). False without redirect URIs.
func (m *Metadata) LocalRedirectURIsOnly() bool {
	if len(m.RedirectURIs) == 0 {
		return false
	}
	for _, u := range m.RedirectURIs {
		k, err := classifyRedirect(u)
		if err != nil || !k.local() {
			return false
		}
	}
	return true
}

// Equal reports whether two metadata are the same.
func (m *Metadata) Equal(o *Metadata) bool {
	a, _ := json.Marshal(m)
	b, _ := json.Marshal(o)
	return string(a) == string(b)
}

// ChangedFields lists the RFC names of the members that differ between m and
// o, in a fixed order.
func (m *Metadata) ChangedFields(o *Metadata) []string {
	var out []string
	add := func(name string, same bool) {
		if !same {
			out = append(out, name)
		}
	}
	add("redirect_uris", slices.Equal(m.RedirectURIs, o.RedirectURIs))
	add("token_endpoint_auth_method", m.TokenEndpointAuthMethod == o.TokenEndpointAuthMethod)
	add("grant_types", slices.Equal(m.GrantTypes, o.GrantTypes))
	add("application_type", m.ApplicationType == o.ApplicationType)
	add("client_name", m.ClientName == o.ClientName)
	add("client_uri", m.ClientURI == o.ClientURI)
	add("logo_uri", m.LogoURI == o.LogoURI)
	add("scope", m.Scope == o.Scope)
	add("contacts", slices.Equal(m.Contacts, o.Contacts))
	add("tos_uri", m.TOSURI == o.TOSURI)
	add("policy_uri", m.PolicyURI == o.PolicyURI)
	add("jwks_uri", m.JWKSURI == o.JWKSURI)
	add("jwks", string(m.JWKS) == string(o.JWKS))
	add("software_id", m.SoftwareID == o.SoftwareID)
	add("software_version", m.SoftwareVersion == o.SoftwareVersion)
	return out
}

// RedirectURIsChanged reports whether the redirect URIs differ (as sets:
// order carries no meaning for matching).
func RedirectURIsChanged(a, b []string) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	return !slices.Equal(x, y)
}

// Kind classifies a validation failure; the caller maps it to the error its
// API answers (RFC 7591 JSON, gRPC status, CIMD document error).
type Kind int

// Kinds of validation failure.
const (
	// KindClientMetadata: any rule of RFC 7591 §2 other than below.
	KindClientMetadata Kind = iota + 1
	// KindRedirectURI: a redirect URI violates the redirect URI policy.
	KindRedirectURI
	// KindReservedScope: a scope starting with "mcpid:".
	KindReservedScope
	// KindClientCredentials: client_credentials on a public client.
	KindClientCredentials
)

// Error is a validation failure. Message is safe to show to the client.
type Error struct {
	Kind    Kind
	Field   string // the RFC 7591 member name
	Message string
}

func (e *Error) Error() string { return e.Field + ": " + e.Message }

func fail(kind Kind, field, format string, args ...any) *Error {
	return &Error{Kind: kind, Field: field, Message: fmt.Sprintf(format, args...)}
}
