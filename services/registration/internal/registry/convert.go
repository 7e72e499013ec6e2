package registry

import (
	"net/url"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
	"github.com/mcpid/mcpid/lib/principal"
	"github.com/mcpid/mcpid/services/registration/internal/store"
)

var sourceEnum = map[string]registrationv1.ClientSource{
	store.SourceDCR:           registrationv1.ClientSource_CLIENT_SOURCE_DCR,
	store.SourceCIMD:          registrationv1.ClientSource_CLIENT_SOURCE_CIMD,
	store.SourceOperator:      registrationv1.ClientSource_CLIENT_SOURCE_OPERATOR,
	store.SourcePreRegistered: registrationv1.ClientSource_CLIENT_SOURCE_PRE_REGISTERED,
}

var statusEnum = map[string]registrationv1.VerificationStatus{
	store.StatusVerified:   registrationv1.VerificationStatus_VERIFICATION_STATUS_VERIFIED,
	store.StatusUnverified: registrationv1.VerificationStatus_VERIFICATION_STATUS_UNVERIFIED,
	store.StatusSuspended:  registrationv1.VerificationStatus_VERIFICATION_STATUS_SUSPENDED,
}

var methodEnum = map[string]registrationv1.VerificationMethod{
	store.MethodOperator:          registrationv1.VerificationMethod_VERIFICATION_METHOD_OPERATOR,
	store.MethodSoftwareStatement: registrationv1.VerificationMethod_VERIFICATION_METHOD_SOFTWARE_STATEMENT,
	store.MethodTrustedCIMDDomain: registrationv1.VerificationMethod_VERIFICATION_METHOD_TRUSTED_CIMD_DOMAIN,
	store.MethodConfiguration:     registrationv1.VerificationMethod_VERIFICATION_METHOD_CONFIGURATION,
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// epochSeconds is a JSON-number time (uint32 seconds, good until 2106).
func epochSeconds(t time.Time) uint32 {
	if t.IsZero() || t.Unix() < 0 {
		return 0
	}
	return uint32(min(t.Unix(), int64(^uint32(0))))
}

// clientView is the full view of a client for operators and services.
func (s *Service) clientView(c *store.Client) *registrationv1.Client {
	out := &registrationv1.Client{
		ClientId:                  c.ClientID,
		Source:                    sourceEnum[c.Source],
		Metadata:                  c.Metadata.ToClientMetadata(),
		ClientType:                registrationv1.ClientType_CLIENT_TYPE_PUBLIC,
		AllowedResources:          allowedView(c.AllowedResources),
		ResourceServer:            c.ResourceServer,
		ReservedAudiences:         reservedAudiences(c),
		RegistrationSourceAddress: c.RegistrationSourceAddress,
		InitialAccessTokenId:      c.InitialAccessTokenID,
		ConsentEpoch:              c.ConsentEpoch,
		LocalRedirectUrisOnly:     c.Metadata.LocalRedirectURIsOnly(),
		CreatedBy:                 c.CreatedBy,
		CreateTime:                ts(c.CreateTime),
		UpdateTime:                ts(c.UpdateTime),
		ExpireTime:                ts(c.ExpireTime),
		LastUsedTime:              ts(c.LastUsedTime),
		Etag:                      strconv.FormatInt(c.Revision, 10),
		Verification: &registrationv1.ClientVerification{
			Status:     statusEnum[c.Verification.Status],
			Method:     methodEnum[c.Verification.Method],
			UpdatedBy:  c.Verification.UpdatedBy,
			UpdateTime: ts(c.Verification.UpdateTime),
			Reason:     c.Verification.Reason,
		},
	}
	if c.Metadata.Confidential() {
		out.ClientType = registrationv1.ClientType_CLIENT_TYPE_CONFIDENTIAL
	}
	if c.Secret != nil && c.Metadata.UsesSecret() {
		now := s.Now()
		out.Secret = &registrationv1.ClientSecretInfo{
			HashPresent: len(c.Secret.Hash) > 0 && (c.Secret.ExpireTime.IsZero() || now.Before(c.Secret.ExpireTime)),
			CreateTime:  ts(c.Secret.CreateTime),
			ExpireTime:  ts(c.Secret.ExpireTime),
		}
		if len(c.Secret.PreviousHash) > 0 && now.Before(c.Secret.PreviousExpireTime) {
			out.Secret.PreviousExpireTime = ts(c.Secret.PreviousExpireTime)
		}
	}
	if ss := c.SoftwareStatement; ss != nil {
		out.SoftwareStatement = &registrationv1.SoftwareStatementInfo{Issuer: ss.Issuer, KeyId: ss.KeyID, PinsRedirectUris: ss.PinsRedirectURIs, Statement: ss.Statement}
	}
	if d := c.CIMD; d != nil {
		out.Cimd = &registrationv1.CimdDocumentInfo{FetchTime: ts(d.FetchTime), StaleTime: ts(d.StaleTime), DocumentSha256: d.DocumentSHA256}
	}
	return out
}

func reservedAudiences(c *store.Client) []string {
	var out []string
	if c.ResourceServer != "" {
		out = append(out, principal.PolicyAudience)
	}
	return append(out, c.ReservedAudiences...)
}

func allowedView(rs []store.AllowedResource) []*registrationv1.AllowedResource {
	out := make([]*registrationv1.AllowedResource, 0, len(rs))
	for _, r := range rs {
		out = append(out, &registrationv1.AllowedResource{Resource: r.Resource, Scopes: r.Scopes})
	}
	return out
}

// registrationView is the RFC 7591/7592 client information response.
// rat is the registration access token to echo (or the new one), newSecret
// the secret issued by this request, if any.
func (s *Service) registrationView(c *store.Client, rat, newSecret string) *registrationv1.ClientRegistration {
	issued := epochSeconds(c.CreateTime)
	r := &registrationv1.ClientRegistration{
		ClientId:                c.ClientID,
		ClientIdIssuedAt:        &issued,
		ClientSecret:            newSecret,
		RegistrationAccessToken: rat,
		RegistrationClientUri:   s.registrationClientURI(c.ClientID),
	}
	c.Metadata.FillRegistration(r)
	if c.Metadata.UsesSecret() && c.Secret != nil {
		exp := epochSeconds(c.Secret.ExpireTime)
		r.ClientSecretExpiresAt = &exp
	}
	if c.SoftwareStatement != nil {
		r.SoftwareStatement = c.SoftwareStatement.Statement
	}
	return r
}

func (s *Service) registrationClientURI(id string) string {
	return strings.TrimRight(s.cfg.Issuer, "/") + "/oauth2/register/" + url.PathEscape(id)
}
