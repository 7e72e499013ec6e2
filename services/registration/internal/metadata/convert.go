package metadata

import (
	"encoding/json"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
)

// FromRegistration reads the metadata members of an RFC 7591 request body.
// Output-only members (client_id, client_secret, ...) and the software
// statement are the caller's business.
func FromRegistration(r *registrationv1.ClientRegistration) (Input, error) {
	in := Input{
		RedirectURIs:            r.GetRedirectUris(),
		TokenEndpointAuthMethod: r.GetTokenEndpointAuthMethod(),
		GrantTypes:              r.GetGrantTypes(),
		ResponseTypes:           r.GetResponseTypes(),
		ApplicationType:         r.GetApplicationType(),
		ClientName:              r.GetClientName(),
		ClientURI:               r.GetClientUri(),
		LogoURI:                 r.GetLogoUri(),
		Scope:                   r.GetScope(),
		Contacts:                r.GetContacts(),
		TOSURI:                  r.GetTosUri(),
		PolicyURI:               r.GetPolicyUri(),
		JWKSURI:                 r.GetJwksUri(),
		SoftwareID:              r.GetSoftwareId(),
		SoftwareVersion:         r.GetSoftwareVersion(),
	}
	if r.GetJwks() != nil {
		b, err := protojson.Marshal(r.GetJwks())
		if err != nil {
			return Input{}, fail(KindClientMetadata, "jwks", "not a JSON object")
		}
		in.JWKS = b
	}
	return in, nil
}

// ParseRegistrationJSON decodes an RFC 7591 JSON body exactly as the
// gateway does (proto field names, unknown members ignored).
func ParseRegistrationJSON(b []byte) (*registrationv1.ClientRegistration, error) {
	var r registrationv1.ClientRegistration
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(b, &r); err != nil {
		return nil, fail(KindClientMetadata, "body", "not a valid client metadata JSON object")
	}
	return &r, nil
}

// ParseCIMD decodes and checks a Client ID Metadata Document fetched from
// clientID (the URL, exactly as the client presents it): at most 5 KB, a
// JSON object, client_id identical to the URL, no client secret, and the
// CIMD policy (client_name and redirect_uris required, only none or
// private_key_jwt) on top of the usual rules.
func ParseCIMD(clientID string, doc []byte, p Policy) (*Metadata, error) {
	if len(doc) > MaxCIMDBytes {
		return nil, fail(KindClientMetadata, "document", "larger than %d bytes", MaxCIMDBytes)
	}
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(doc, &probe); err != nil || probe == nil {
		return nil, fail(KindClientMetadata, "document", "not a JSON object")
	}
	r, err := ParseRegistrationJSON(doc)
	if err != nil {
		return nil, err
	}
	if r.GetClientId() != clientID {
		return nil, fail(KindClientMetadata, "client_id", "the document's client_id is not the URL it was fetched from")
	}
	if _, ok := probe["client_secret"]; ok {
		return nil, fail(KindClientMetadata, "client_secret", "a metadata document cannot carry a client secret")
	}
	switch r.GetTokenEndpointAuthMethod() {
	case AuthClientSecretBasic, AuthClientSecretPost:
		return nil, fail(KindClientMetadata, "token_endpoint_auth_method", "a metadata document cannot use a client secret (use none or private_key_jwt)")
	}
	if r.GetSoftwareStatement() != "" {
		return nil, fail(KindClientMetadata, "software_statement", "not supported in metadata documents")
	}
	in, err := FromRegistration(r)
	if err != nil {
		return nil, err
	}
	p.DefaultAuthMethod = AuthNone
	p.AllowedAuthMethods = []string{AuthNone, AuthPrivateKeyJWT}
	p.RequireClientName = true
	p.RequireRedirectURIs = true
	return Validate(in, p)
}

// FromClientMetadata reads the typed operator API form.
func FromClientMetadata(m *registrationv1.ClientMetadata) (Input, error) {
	in := Input{
		RedirectURIs:    m.GetRedirectUris(),
		ClientName:      m.GetClientName(),
		ClientURI:       m.GetClientUri(),
		LogoURI:         m.GetLogoUri(),
		Scope:           m.GetScope(),
		Contacts:        m.GetContacts(),
		TOSURI:          m.GetTosUri(),
		PolicyURI:       m.GetPolicyUri(),
		JWKSURI:         m.GetJwksUri(),
		SoftwareID:      m.GetSoftwareId(),
		SoftwareVersion: m.GetSoftwareVersion(),
	}
	var err error
	if in.TokenEndpointAuthMethod, err = AuthMethodString(m.GetTokenEndpointAuthMethod()); err != nil {
		return Input{}, err
	}
	for _, g := range m.GetGrantTypes() {
		s, err := GrantTypeString(g)
		if err != nil {
			return Input{}, err
		}
		in.GrantTypes = append(in.GrantTypes, s)
	}
	switch m.GetApplicationType() {
	case registrationv1.ApplicationType_APPLICATION_TYPE_UNSPECIFIED:
	case registrationv1.ApplicationType_APPLICATION_TYPE_WEB:
		in.ApplicationType = AppWeb
	case registrationv1.ApplicationType_APPLICATION_TYPE_NATIVE:
		in.ApplicationType = AppNative
	default:
		return Input{}, fail(KindClientMetadata, "application_type", "unknown value %d", m.GetApplicationType())
	}
	if m.GetJwks() != nil {
		b, err := protojson.Marshal(m.GetJwks())
		if err != nil {
			return Input{}, fail(KindClientMetadata, "jwks", "not a JSON object")
		}
		in.JWKS = b
	}
	return in, nil
}

// ToClientMetadata is the typed view of m.
func (m *Metadata) ToClientMetadata() *registrationv1.ClientMetadata {
	out := &registrationv1.ClientMetadata{
		RedirectUris:            m.RedirectURIs,
		TokenEndpointAuthMethod: AuthMethodEnum(m.TokenEndpointAuthMethod),
		ApplicationType:         registrationv1.ApplicationType_APPLICATION_TYPE_WEB,
		ClientName:              m.ClientName,
		ClientUri:               m.ClientURI,
		LogoUri:                 m.LogoURI,
		Scope:                   m.Scope,
		Contacts:                m.Contacts,
		TosUri:                  m.TOSURI,
		PolicyUri:               m.PolicyURI,
		JwksUri:                 m.JWKSURI,
		Jwks:                    m.JWKSStruct(),
		SoftwareId:              m.SoftwareID,
		SoftwareVersion:         m.SoftwareVersion,
	}
	if m.ApplicationType == AppNative {
		out.ApplicationType = registrationv1.ApplicationType_APPLICATION_TYPE_NATIVE
	}
	for _, g := range m.GrantTypes {
		out.GrantTypes = append(out.GrantTypes, GrantTypeEnum(g))
	}
	return out
}

// JWKSStruct returns the jwks as a Struct, or nil.
func (m *Metadata) JWKSStruct() *structpb.Struct {
	if len(m.JWKS) == 0 {
		return nil
	}
	var s structpb.Struct
	if err := protojson.Unmarshal(m.JWKS, &s); err != nil {
		return nil // validated on write: cannot happen
	}
	return &s
}

// FillRegistration writes m's members into an RFC 7591 response body.
func (m *Metadata) FillRegistration(r *registrationv1.ClientRegistration) {
	r.RedirectUris = m.RedirectURIs
	r.TokenEndpointAuthMethod = m.TokenEndpointAuthMethod
	r.GrantTypes = m.GrantTypes
	r.ResponseTypes = m.ResponseTypes()
	r.ApplicationType = m.ApplicationType
	r.ClientName = m.ClientName
	r.ClientUri = m.ClientURI
	r.LogoUri = m.LogoURI
	r.Scope = m.Scope
	r.Contacts = m.Contacts
	r.TosUri = m.TOSURI
	r.PolicyUri = m.PolicyURI
	r.JwksUri = m.JWKSURI
	r.Jwks = m.JWKSStruct()
	r.SoftwareId = m.SoftwareID
	r.SoftwareVersion = m.SoftwareVersion
}

// AuthMethodString is the RFC name of a typed method ("" for UNSPECIFIED).
func AuthMethodString(a registrationv1.TokenEndpointAuthMethod) (string, error) {
	switch a {
	case registrationv1.TokenEndpointAuthMethod_TOKEN_ENDPOINT_AUTH_METHOD_UNSPECIFIED:
		return "", nil
	case registrationv1.TokenEndpointAuthMethod_TOKEN_ENDPOINT_AUTH_METHOD_NONE:
		return AuthNone, nil
	case registrationv1.TokenEndpointAuthMethod_TOKEN_ENDPOINT_AUTH_METHOD_CLIENT_SECRET_BASIC:
		return AuthClientSecretBasic, nil
	case registrationv1.TokenEndpointAuthMethod_TOKEN_ENDPOINT_AUTH_METHOD_CLIENT_SECRET_POST:
		return AuthClientSecretPost, nil
	case registrationv1.TokenEndpointAuthMethod_TOKEN_ENDPOINT_AUTH_METHOD_PRIVATE_KEY_JWT:
		return AuthPrivateKeyJWT, nil
	}
	return "", fail(KindClientMetadata, "token_endpoint_auth_method", "unknown value %d", a)
}

// AuthMethodEnum is the typed form of an RFC method name.
func AuthMethodEnum(s string) registrationv1.TokenEndpointAuthMethod {
	switch s {
	case AuthNone:
		return registrationv1.TokenEndpointAuthMethod_TOKEN_ENDPOINT_AUTH_METHOD_NONE
	case AuthClientSecretBasic:
		return registrationv1.TokenEndpointAuthMethod_TOKEN_ENDPOINT_AUTH_METHOD_CLIENT_SECRET_BASIC
	case AuthClientSecretPost:
		return registrationv1.TokenEndpointAuthMethod_TOKEN_ENDPOINT_AUTH_METHOD_CLIENT_SECRET_POST
	case AuthPrivateKeyJWT:
		return registrationv1.TokenEndpointAuthMethod_TOKEN_ENDPOINT_AUTH_METHOD_PRIVATE_KEY_JWT
	}
	return registrationv1.TokenEndpointAuthMethod_TOKEN_ENDPOINT_AUTH_METHOD_UNSPECIFIED
}

// GrantTypeString is the RFC name of a typed grant type.
func GrantTypeString(g registrationv1.GrantType) (string, error) {
	switch g {
	case registrationv1.GrantType_GRANT_TYPE_AUTHORIZATION_CODE:
		return GrantAuthorizationCode, nil
	case registrationv1.GrantType_GRANT_TYPE_REFRESH_TOKEN:
		return GrantRefreshToken, nil
	case registrationv1.GrantType_GRANT_TYPE_CLIENT_CREDENTIALS:
		return GrantClientCredentials, nil
	}
	return "", fail(KindClientMetadata, "grant_types", "unknown value %s", fmt.Sprint(g))
}

// GrantTypeEnum is the typed form of an RFC grant type name.
func GrantTypeEnum(s string) registrationv1.GrantType {
	switch s {
	case GrantAuthorizationCode:
		return registrationv1.GrantType_GRANT_TYPE_AUTHORIZATION_CODE
	case GrantRefreshToken:
		return registrationv1.GrantType_GRANT_TYPE_REFRESH_TOKEN
	case GrantClientCredentials:
		return registrationv1.GrantType_GRANT_TYPE_CLIENT_CREDENTIALS
	}
	return registrationv1.GrantType_GRANT_TYPE_UNSPECIFIED
}
