package oauth

import (
	"errors"
	"net/url"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/lib/apierr"
	"github.com/mcpid/mcpid/lib/jose"
	"github.com/mcpid/mcpid/services/token/internal/catalog"
)

// Endpoint paths on the issuer origin.
const (
	PathAuthorize  = "/oauth2/authorize"
	PathToken      = "/oauth2/token"
	PathRegister   = "/oauth2/register"
	PathRevoke     = "/oauth2/revoke"
	PathIntrospect = "/oauth2/introspect"
	PathJWKS       = "/oauth2/jwks"
)

// clientAuthMethods are the token endpoint authentication methods (checked
// by the registration service).
var clientAuthMethods = []string{"none", "client_secret_basic", "client_secret_post", "private_key_jwt"}

// assertionAlgs are the private_key_jwt algorithms the registration service
// verifies.
var assertionAlgs = []string{jose.ES256, jose.ES384, jose.ES512, jose.EdDSA, jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512}

// Metadata returns the RFC 8414 document. issuerPath is the path-inserted
// suffix of the request ("" for the root URL).
func (s *Service) Metadata(issuerPath string) (*tokenv1.GetAuthorizationServerMetadataResponse, error) {
	u, err := url.Parse(s.cfg.Issuer)
	if err != nil {
		return nil, err
	}
	if strings.Trim(u.Path, "/") != strings.Trim(issuerPath, "/") {
		return nil, apierr.New(codes.NotFound, tokenv1.ErrorReason_ERROR_REASON_ISSUER_NOT_FOUND.String(),
			"no authorization server at this path")
	}
	scopes, err := s.d.Catalogs.AllScopes()
	if errors.Is(err, catalog.ErrNotReady) {
		return nil, unavailable("the scope catalogue", err)
	}
	if err != nil {
		return nil, err
	}
	md := &tokenv1.GetAuthorizationServerMetadataResponse{
		Issuer:                                             s.cfg.Issuer,
		AuthorizationEndpoint:                              s.URL(PathAuthorize),
		TokenEndpoint:                                      s.URL(PathToken),
		RevocationEndpoint:                                 s.URL(PathRevoke),
		IntrospectionEndpoint:                              s.URL(PathIntrospect),
		JwksUri:                                            s.URL(PathJWKS),
		ScopesSupported:                                    append([]string{OfflineAccess}, scopes...),
		ResponseTypesSupported:                             []string{"code"},
		ResponseModesSupported:                             []string{"query"},
		GrantTypesSupported:                                []string{"authorization_code", "refresh_token", "client_credentials"},
		CodeChallengeMethodsSupported:                      []string{"S256"},
		TokenEndpointAuthMethodsSupported:                  clientAuthMethods,
		TokenEndpointAuthSigningAlgValuesSupported:         assertionAlgs,
		RevocationEndpointAuthMethodsSupported:             clientAuthMethods,
		RevocationEndpointAuthSigningAlgValuesSupported:    assertionAlgs,
		IntrospectionEndpointAuthMethodsSupported:          []string{"client_secret_basic", "client_secret_post", "private_key_jwt"},
		IntrospectionEndpointAuthSigningAlgValuesSupported: assertionAlgs,
		ClientIdMetadataDocumentSupported:                  proto.Bool(true),
		AuthorizationResponseIssParameterSupported:         proto.Bool(true),
		ServiceDocumentation:                               s.cfg.ServiceDocumentation,
	}
	if s.cfg.AdvertiseRegistration {
		md.RegistrationEndpoint = s.URL(PathRegister)
	}
	return md, nil
}
