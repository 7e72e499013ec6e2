package metadata

import (
	"bytes"
	"encoding/json"
	"net/mail"
	"net/url"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/mcpid/mcpid/lib/jose"
	"github.com/mcpid/mcpid/lib/principal"
)

// Input is client metadata as received, before validation. Empty strings
// and nil slices mean "absent".
type Input struct {
	RedirectURIs            []string
	TokenEndpointAuthMethod string
	GrantTypes              []string
	ResponseTypes           []string
	ApplicationType         string
	ClientName              string
	ClientURI               string
	LogoURI                 string
	Scope                   string
	Contacts                []string
	TOSURI                  string
	PolicyURI               string
	JWKSURI                 string
	JWKS                    json.RawMessage
	SoftwareID              string
	SoftwareVersion         string
}

// Policy is what differs between the sources of metadata and what the
// installation configures.
type Policy struct {
	// DefaultAuthMethod applies when the input names none; empty means the
	// method is required.
	DefaultAuthMethod string
	// AllowedAuthMethods, when set, restricts the methods (CIMD documents
	// may not declare a client_secret_* method).
	AllowedAuthMethods []string
	// RequireClientName and RequireRedirectURIs are CIMD's rules.
	RequireClientName   bool
	RequireRedirectURIs bool
	// RedirectHosts is the redirect host allowlist; empty allows any host.
	RedirectHosts HostPatterns
}

// Validate checks in against the rules and returns the normalized metadata,
// or an *Error.
func Validate(in Input, p Policy) (*Metadata, error) {
	m := &Metadata{}
	var err *Error

	if m.TokenEndpointAuthMethod, err = authMethod(in.TokenEndpointAuthMethod, p); err != nil {
		return nil, err
	}
	if m.GrantTypes, err = grantTypes(in.GrantTypes); err != nil {
		return nil, err
	}
	if err = responseTypes(in.ResponseTypes, m.GrantTypes); err != nil {
		return nil, err
	}
	if m.HasGrant(GrantClientCredentials) && m.TokenEndpointAuthMethod == AuthNone {
		return nil, fail(KindClientCredentials, "grant_types", "client_credentials needs a confidential token_endpoint_auth_method, not none")
	}
	if m.RedirectURIs, m.ApplicationType, err = redirectURIs(in.RedirectURIs, in.ApplicationType, p.RedirectHosts); err != nil {
		return nil, err
	}
	if m.HasGrant(GrantAuthorizationCode) && len(m.RedirectURIs) == 0 {
		return nil, fail(KindRedirectURI, "redirect_uris", "at least one redirect URI is required for authorization_code")
	}
	if p.RequireRedirectURIs && len(m.RedirectURIs) == 0 {
		return nil, fail(KindRedirectURI, "redirect_uris", "required")
	}
	if m.ClientName, err = text("client_name", in.ClientName, MaxNameLen); err != nil {
		return nil, err
	}
	if p.RequireClientName && m.ClientName == "" {
		return nil, fail(KindClientMetadata, "client_name", "required")
	}
	if m.SoftwareID, err = text("software_id", in.SoftwareID, MaxNameLen); err != nil {
		return nil, err
	}
	if m.SoftwareVersion, err = text("software_version", in.SoftwareVersion, MaxNameLen); err != nil {
		return nil, err
	}
	for _, f := range []struct {
		name string
		in   string
		out  *string
	}{
		{"client_uri", in.ClientURI, &m.ClientURI},
		{"logo_uri", in.LogoURI, &m.LogoURI},
		{"tos_uri", in.TOSURI, &m.TOSURI},
		{"policy_uri", in.PolicyURI, &m.PolicyURI},
		{"jwks_uri", in.JWKSURI, &m.JWKSURI},
	} {
		if *f.out, err = httpsURI(f.name, f.in); err != nil {
			return nil, err
		}
	}
	if m.Scope, err = scope(in.Scope); err != nil {
		return nil, err
	}
	if m.Contacts, err = contacts(in.Contacts); err != nil {
		return nil, err
	}
	if m.JWKS, err = jwks(in.JWKS); err != nil {
		return nil, err
	}
	if m.JWKSURI != "" && m.JWKS != nil {
		return nil, fail(KindClientMetadata, "jwks", "jwks and jwks_uri are mutually exclusive")
	}
	if m.TokenEndpointAuthMethod == AuthPrivateKeyJWT && m.JWKSURI == "" && m.JWKS == nil {
		return nil, fail(KindClientMetadata, "token_endpoint_auth_method", "private_key_jwt requires jwks or jwks_uri")
	}
	return m, nil
}

// Input returns m as an Input, so that stored metadata can be validated
// again (an operator's partial update, a software statement's claims
// overriding plain members).
func (m *Metadata) Input() Input {
	return Input{
		RedirectURIs:            slices.Clone(m.RedirectURIs),
		TokenEndpointAuthMethod: m.TokenEndpointAuthMethod,
		GrantTypes:              slices.Clone(m.GrantTypes),
		ApplicationType:         m.ApplicationType,
		ClientName:              m.ClientName,
		ClientURI:               m.ClientURI,
		LogoURI:                 m.LogoURI,
		Scope:                   m.Scope,
		Contacts:                slices.Clone(m.Contacts),
		TOSURI:                  m.TOSURI,
		PolicyURI:               m.PolicyURI,
		JWKSURI:                 m.JWKSURI,
		JWKS:                    bytes.Clone(m.JWKS),
		SoftwareID:              m.SoftwareID,
		SoftwareVersion:         m.SoftwareVersion,
	}
}

func authMethod(s string, p Policy) (string, *Error) {
	if s == "" {
		if p.DefaultAuthMethod == "" {
			return "", fail(KindClientMetadata, "token_endpoint_auth_method", "required")
		}
		s = p.DefaultAuthMethod
	}
	switch s {
	case AuthNone, AuthClientSecretBasic, AuthClientSecretPost, AuthPrivateKeyJWT:
	default:
		return "", fail(KindClientMetadata, "token_endpoint_auth_method", "%q is not supported (none, client_secret_basic, client_secret_post, private_key_jwt)", clip(s))
	}
	if len(p.AllowedAuthMethods) > 0 && !slices.Contains(p.AllowedAuthMethods, s) {
		return "", fail(KindClientMetadata, "token_endpoint_auth_method", "%q is not allowed here", s)
	}
	return s, nil
}

func grantTypes(in []string) ([]string, *Error) {
	if len(in) == 0 {
		return []string{GrantAuthorizationCode}, nil
	}
	seen := map[string]bool{}
	for _, g := range in {
		if !slices.Contains(grantOrder, g) {
			return nil, fail(KindClientMetadata, "grant_types", "%q is not supported (authorization_code, refresh_token, client_credentials)", clip(g))
		}
		if seen[g] {
			return nil, fail(KindClientMetadata, "grant_types", "%q listed twice", g)
		}
		seen[g] = true
	}
	if seen[GrantRefreshToken] && !seen[GrantAuthorizationCode] {
		return nil, fail(KindClientMetadata, "grant_types", "refresh_token requires authorization_code")
	}
	out := make([]string, 0, len(seen))
	for _, g := range grantOrder {
		if seen[g] {
			out = append(out, g)
		}
	}
	return out, nil
}

func responseTypes(in, grants []string) *Error {
	seen := false
	for _, r := range in {
		if r != ResponseTypeCode {
			return fail(KindClientMetadata, "response_types", "only \"code\" is supported, not %q", clip(r))
		}
		if seen {
			return fail(KindClientMetadata, "response_types", "\"code\" listed twice")
		}
		seen = true
	}
	if seen && !slices.Contains(grants, GrantAuthorizationCode) {
		return fail(KindClientMetadata, "response_types", "\"code\" requires the authorization_code grant type")
	}
	return nil
}

func redirectURIs(in []string, appType string, hosts HostPatterns) ([]string, string, *Error) {
	if len(in) > MaxRedirectURIs {
		return nil, "", fail(KindRedirectURI, "redirect_uris", "at most %d redirect URIs", MaxRedirectURIs)
	}
	switch appType {
	case "", AppWeb, AppNative:
	default:
		return nil, "", fail(KindClientMetadata, "application_type", "%q is not web or native", clip(appType))
	}
	kinds := make([]redirectKind, len(in))
	allLocal := len(in) > 0
	for i, u := range in {
		k, err := classifyRedirect(u)
		if err != nil {
			return nil, "", err
		}
		if slices.Contains(in[:i], u) {
			return nil, "", fail(KindRedirectURI, "redirect_uris", "%q listed twice", clip(u))
		}
		if !hosts.allows(redirectHost(u, k)) {
			return nil, "", fail(KindRedirectURI, "redirect_uris", "%q: host is not in the redirect host allowlist", clip(u))
		}
		kinds[i] = k
		allLocal = allLocal && k.local()
	}
	if appType == "" {
		// Clients before MCP 2026-07-28 do not send application_type: a
		// client whose redirect URIs only a local program can receive is
		// a native app (RFC 8252).
		appType = AppWeb
		if allLocal {
			appType = AppNative
		}
	}
	if appType == AppWeb {
		for i, k := range kinds {
			if k == redirectLoopbackHTTP || k == redirectPrivateUse {
				return nil, "", fail(KindRedirectURI, "redirect_uris", "%q: web clients need https redirect URIs (loopback http and private-use schemes are for native clients)", clip(in[i]))
			}
		}
	}
	return slices.Clone(in), appType, nil
}

// text checks a display string: at most limit characters, no control
// characters.
func text(field, s string, limit int) (string, *Error) {
	if utf8.RuneCountInString(s) > limit {
		return "", fail(KindClientMetadata, field, "longer than %d characters", limit)
	}
	if !utf8.ValidString(s) {
		return "", fail(KindClientMetadata, field, "not valid UTF-8")
	}
	for _, r := range s {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return "", fail(KindClientMetadata, field, "contains control characters")
		}
	}
	return s, nil
}

// httpsURI checks an informational URI member: absolute https with a host,
// no userinfo, at most MaxURILen.
func httpsURI(field, s string) (string, *Error) {
	if s == "" {
		return "", nil
	}
	if len(s) > MaxURILen {
		return "", fail(KindClientMetadata, field, "longer than %d characters", MaxURILen)
	}
	if hasSpaceOrControl(s) {
		return "", fail(KindClientMetadata, field, "contains whitespace or control characters")
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Opaque != "" || u.Hostname() == "" {
		return "", fail(KindClientMetadata, field, "must be an absolute https URL")
	}
	if u.User != nil {
		return "", fail(KindClientMetadata, field, "must not contain userinfo")
	}
	return s, nil
}

func scope(s string) (string, *Error) {
	if s == "" {
		return "", nil
	}
	if len(s) > MaxScopeLen {
		return "", fail(KindClientMetadata, "scope", "longer than %d characters", MaxScopeLen)
	}
	var out []string
	for _, tok := range strings.Split(s, " ") {
		if tok == "" {
			continue
		}
		for i := 0; i < len(tok); i++ {
			// RFC 6749 §3.3 scope-token: %x21 / %x23-5B / %x5D-7E.
			if c := tok[i]; c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
				return "", fail(KindClientMetadata, "scope", "%q is not a valid scope", clip(tok))
			}
		}
		if principal.IsReservedScope(tok) {
			return "", fail(KindReservedScope, "scope", "%q: scopes starting with %q are reserved", clip(tok), ReservedScopePref)
		}
		if !slices.Contains(out, tok) {
			out = append(out, tok)
		}
	}
	if len(out) > MaxScopes {
		return "", fail(KindClientMetadata, "scope", "more than %d scopes", MaxScopes)
	}
	return strings.Join(out, " "), nil
}

func contacts(in []string) ([]string, *Error) {
	if len(in) > MaxContacts {
		return nil, fail(KindClientMetadata, "contacts", "at most %d contacts", MaxContacts)
	}
	for _, c := range in {
		if len(c) > MaxContactLen || hasSpaceOrControl(c) {
			return nil, fail(KindClientMetadata, "contacts", "%q is not an e-mail address", clip(c))
		}
		a, err := mail.ParseAddress(c)
		if err != nil || a.Address != c || a.Name != "" {
			return nil, fail(KindClientMetadata, "contacts", "%q is not an e-mail address", clip(c))
		}
	}
	return slices.Clone(in), nil
}

// privateJWKMembers are the JWK members that only private (or symmetric)
// keys have; a client's jwks is published material and must not hold them.
var privateJWKMembers = []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

// jwks checks a JWK Set given by value and returns it compacted.
func jwks(raw json.RawMessage) (json.RawMessage, *Error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	if len(raw) > MaxJWKSBytes {
		return nil, fail(KindClientMetadata, "jwks", "larger than %d bytes", MaxJWKSBytes)
	}
	var doc struct {
		Keys []map[string]json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil || doc.Keys == nil {
		return nil, fail(KindClientMetadata, "jwks", "must be a JWK Set ({\"keys\":[...]})")
	}
	if len(doc.Keys) == 0 || len(doc.Keys) > MaxJWKSKeys {
		return nil, fail(KindClientMetadata, "jwks", "must hold 1 to %d keys", MaxJWKSKeys)
	}
	for _, k := range doc.Keys {
		for _, p := range privateJWKMembers {
			if _, ok := k[p]; ok {
				return nil, fail(KindClientMetadata, "jwks", "must hold public keys only (found %q)", p)
			}
		}
	}
	set, err := jose.ParseJWKS(raw)
	if err != nil {
		return nil, fail(KindClientMetadata, "jwks", "not a valid JWK Set")
	}
	if set.Len() == 0 {
		return nil, fail(KindClientMetadata, "jwks", "holds no usable signature key")
	}
	var out bytes.Buffer
	if err := json.Compact(&out, raw); err != nil {
		return nil, fail(KindClientMetadata, "jwks", "not valid JSON")
	}
	return out.Bytes(), nil
}

func hasSpaceOrControl(s string) bool {
	for _, r := range s {
		if r <= ' ' || r == 0x7f || unicode.IsSpace(r) || unicode.IsControl(r) {
			return true
		}
	}
	return false
}

// clip shortens a value quoted back in an error message.
func clip(s string) string {
	const n = 64
	if len(s) <= n {
		return s
	}
	for i := n; i > 0; i-- {
		if utf8.RuneStart(s[i]) {
			return s[:i] + "..."
		}
	}
	return ""
}
