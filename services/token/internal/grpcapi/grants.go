package grpcapi

import (
	"context"

	"google.golang.org/grpc/codes"

	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/lib/apierr"
	"github.com/mcpid/mcpid/lib/resource"
	"github.com/mcpid/mcpid/services/token/internal/revocation"
	"github.com/mcpid/mcpid/services/token/internal/store"
)

// Lifecycle is what the token lifecycle RPCs need besides the OAuth domain.
type Lifecycle struct {
	// Feed serves ListRevocations and WatchRevocations.
	Feed *revocation.Feed
	// Rotator rotates signing keys (RotateSigningKey).
	Rotator Rotator
}

// WithLifecycle enables the lifecycle RPCs.
func (s *Server) WithLifecycle(l Lifecycle) *Server {
	s.lifecycle = l
	return s
}

const maxReasonLen = 256

func checkReason(r string) error {
	if len([]rune(r)) > maxReasonLen {
		return invalidField("reason", "reason must be at most %d characters", maxReasonLen)
	}
	return nil
}

// canonicalField canonicalizes an optional resource field.
func canonicalField(field, v string) (string, error) {
	if v == "" {
		return "", nil
	}
	c, err := resource.Canonicalize(v)
	if err != nil {
		return "", invalidField(field, "%s is not an absolute resource URI", field)
	}
	return c, nil
}

func grantTypeName(t tokenv1.GrantType) (string, error) {
	switch t {
	case tokenv1.GrantType_GRANT_TYPE_UNSPECIFIED:
		return "", nil
	case tokenv1.GrantType_GRANT_TYPE_AUTHORIZATION_CODE:
		return store.GrantAuthorizationCode, nil
	case tokenv1.GrantType_GRANT_TYPE_CLIENT_CREDENTIALS:
		return store.GrantClientCredentials, nil
	}
	return "", invalidField("grant_type", "unknown grant_type %v", t)
}

// GrantProto converts a stored grant.
func GrantProto(g *store.Grant) *tokenv1.Grant {
	out := &tokenv1.Grant{
		GrantId: g.ID, UserId: g.UserID, ClientId: g.ClientID, Resource: g.Resource, Scopes: g.Scopes,
		ClientAuthMethod: g.ClientAuthMethod, ConnectorId: g.ConnectorID, AuthTime: ts(g.AuthTime),
		CreateTime: ts(g.Created), LastRefreshTime: ts(g.LastRefresh), LastUseTime: ts(g.LastUse),
		ExpireTime: ts(g.Expires), HasRefreshToken: g.Refresh != nil && g.Refresh.Hash != "",
	}
	switch g.Type {
	case store.GrantAuthorizationCode:
		out.GrantType = tokenv1.GrantType_GRANT_TYPE_AUTHORIZATION_CODE
	case store.GrantClientCredentials:
		out.GrantType = tokenv1.GrantType_GRANT_TYPE_CLIENT_CREDENTIALS
	}
	return out
}

// GetGrant implements tokenv1.TokenServiceServer.
func (s *Server) GetGrant(ctx context.Context, req *tokenv1.GetGrantRequest) (*tokenv1.GetGrantResponse, error) {
	if req.GetGrantId() == "" {
		return nil, invalidField("grant_id", "grant_id is required")
	}
	g, err := s.svc.GetGrant(ctx, req.GetGrantId())
	if err != nil {
		return nil, err
	}
	return &tokenv1.GetGrantResponse{Grant: GrantProto(g)}, nil
}

// ListGrants implements tokenv1.TokenServiceServer.
func (s *Server) ListGrants(ctx context.Context, req *tokenv1.ListGrantsRequest) (*tokenv1.ListGrantsResponse, error) {
	if req.GetPageSize() < 0 {
		return nil, invalidField("page_size", "page_size must not be negative")
	}
	res, err := canonicalField("resource", req.GetResource())
	if err != nil {
		return nil, err
	}
	typ, err := grantTypeName(req.GetGrantType())
	if err != nil {
		return nil, err
	}
	gs, next, err := s.svc.ListGrants(ctx, store.GrantFilter{UserID: req.GetUserId(), ClientID: req.GetClientId(), Resource: res, Type: typ},
		int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	resp := &tokenv1.ListGrantsResponse{NextPageToken: next}
	for _, g := range gs {
		resp.Grants = append(resp.Grants, GrantProto(g))
	}
	return resp, nil
}

// RevokeGrants implements tokenv1.TokenServiceServer.
func (s *Server) RevokeGrants(ctx context.Context, req *tokenv1.RevokeGrantsRequest) (*tokenv1.RevokeGrantsResponse, error) {
	if err := checkReason(req.GetReason()); err != nil {
		return nil, err
	}
	if err := onlyClientSelectorForServices(ctx, req.GetClientId() != ""); err != nil {
		return nil, err
	}
	var sel oauthSelector
	switch v := req.GetSelector().(type) {
	case *tokenv1.RevokeGrantsRequest_GrantId:
		if v.GrantId == "" {
			return nil, invalidField("grant_id", "grant_id must not be empty")
		}
		sel.GrantID = v.GrantId
	case *tokenv1.RevokeGrantsRequest_UserId:
		if v.UserId == "" {
			return nil, invalidField("user_id", "user_id must not be empty")
		}
		sel.UserID = v.UserId
	case *tokenv1.RevokeGrantsRequest_ClientId:
		if v.ClientId == "" {
			return nil, invalidField("client_id", "client_id must not be empty")
		}
		sel.ClientID = v.ClientId
	case *tokenv1.RevokeGrantsRequest_Resource:
		res, err := canonicalField("resource", v.Resource)
		if err != nil {
			return nil, err
		}
		if res == "" {
			return nil, invalidField("resource", "resource must not be empty")
		}
		sel.Resource = res
	default:
		return nil, invalidField("selector", "one of grant_id, user_id, client_id or resource is required")
	}
	r, err := s.svc.RevokeGrants(ctx, actor(ctx), sel, req.GetReason())
	if err != nil {
		return nil, err
	}
	return &tokenv1.RevokeGrantsResponse{Revision: r.Revision, IssuedBefore: ts(r.IssuedBefore), RevokedGrantCount: int32(r.Grants)}, nil
}

// ListConsents implements tokenv1.TokenServiceServer.
func (s *Server) ListConsents(ctx context.Context, req *tokenv1.ListConsentsRequest) (*tokenv1.ListConsentsResponse, error) {
	if req.GetPageSize() < 0 {
		return nil, invalidField("page_size", "page_size must not be negative")
	}
	res, err := canonicalField("resource", req.GetResource())
	if err != nil {
		return nil, err
	}
	cs, next, err := s.svc.ListConsents(ctx, store.ConsentFilter{UserID: req.GetUserId(), ClientID: req.GetClientId(), Resource: res},
		int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	resp := &tokenv1.ListConsentsResponse{NextPageToken: next}
	for _, c := range cs {
		resp.Consents = append(resp.Consents, &tokenv1.Consent{UserId: c.UserID, ClientId: c.ClientID, Resource: c.Resource,
			Scopes: c.Scopes, CreateTime: ts(c.Created), UpdateTime: ts(c.Updated)})
	}
	return resp, nil
}

// RevokeConsents implements tokenv1.TokenServiceServer.
func (s *Server) RevokeConsents(ctx context.Context, req *tokenv1.RevokeConsentsRequest) (*tokenv1.RevokeConsentsResponse, error) {
	if err := checkReason(req.GetReason()); err != nil {
		return nil, err
	}
	if err := onlyClientSelectorForServices(ctx, req.GetClientId() != ""); err != nil {
		return nil, err
	}
	var sel consentSelector
	switch v := req.GetSelector().(type) {
	case *tokenv1.RevokeConsentsRequest_Consent:
		k := v.Consent
		if k.GetUserId() == "" || k.GetClientId() == "" || k.GetResource() == "" {
			return nil, invalidField("consent", "consent needs user_id, client_id and resource")
		}
		res, err := canonicalField("consent.resource", k.GetResource())
		if err != nil {
			return nil, err
		}
		sel = consentSelector{UserID: k.GetUserId(), ClientID: k.GetClientId(), Resource: res}
	case *tokenv1.RevokeConsentsRequest_UserId:
		if v.UserId == "" {
			return nil, invalidField("user_id", "user_id must not be empty")
		}
		sel.UserID = v.UserId
	case *tokenv1.RevokeConsentsRequest_ClientId:
		if v.ClientId == "" {
			return nil, invalidField("client_id", "client_id must not be empty")
		}
		sel.ClientID = v.ClientId
	default:
		return nil, invalidField("selector", "one of consent, user_id or client_id is required")
	}
	r, err := s.svc.RevokeConsents(ctx, actor(ctx), sel, req.GetKeepGrants(), req.GetReason())
	if err != nil {
		return nil, err
	}
	return &tokenv1.RevokeConsentsResponse{RevokedConsentCount: int32(r.Consents), RevokedGrantCount: int32(r.Grants), Revision: r.Revision}, nil
}

// onlyClientSelectorForServices enforces the contract: the registration
// service may revoke by client_id only.
func onlyClientSelectorForServices(ctx context.Context, clientSelector bool) error {
	if isService(ctx) && !clientSelector {
		return apierr.New(codes.PermissionDenied, tokenv1.ErrorReason_ERROR_REASON_CALLER_NOT_ALLOWED.String(),
			"services may revoke by client_id only")
	}
	return nil
}
