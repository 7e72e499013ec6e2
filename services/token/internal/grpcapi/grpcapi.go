// Package grpcapi serves TokenService: it reads what the transport knows
// (principal, the Authorization metadata), calls the OAuth domain, and
// shapes the HTTP answer of the OAuth routes (cache headers). Errors come
// back from the domain as caller-visible apierr values; the interceptor maps
// anything else to INTERNAL.
package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/lib/apierr"
	"github.com/mcpid/mcpid/lib/oauthhttp"
	"github.com/mcpid/mcpid/lib/principal"
	libserver "github.com/mcpid/mcpid/lib/server"
	"github.com/mcpid/mcpid/services/token/internal/directory"
	"github.com/mcpid/mcpid/services/token/internal/events"
	"github.com/mcpid/mcpid/services/token/internal/keyring"
	"github.com/mcpid/mcpid/services/token/internal/oauth"
	"github.com/mcpid/mcpid/services/token/internal/store"
)

// Server implements tokenv1.TokenServiceServer. Methods of the grant
// inventory, revocation feed, key rotation and connectors (issues 8 and 9)
// answer UNIMPLEMENTED through the embedded type.
type Server struct {
	tokenv1.UnimplementedTokenServiceServer
	svc        *oauth.Service
	users      *directory.Directory
	keys       *keyring.Ring
	jwksMaxAge time.Duration
	// connectors serves the identity connector administration (issue 9;
	// see connectors.go).
	connectors ConnectorAdmin
	// lifecycle serves the grant inventory, the revocation feed and key
	// rotation (issue 8; see grants.go).
	lifecycle Lifecycle
}

// New returns the server.
func New(svc *oauth.Service, users *directory.Directory, keys *keyring.Ring, jwksMaxAge time.Duration) *Server {
	return &Server{svc: svc, users: users, keys: keys, jwksMaxAge: jwksMaxAge}
}

// authorization returns the one Authorization metadata value, if any.
func authorization(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	switch len(vals) {
	case 0:
		return "", nil
	case 1:
		return vals[0], nil
	default:
		return "", apierr.OAuth("invalid_request", "more than one Authorization header")
	}
}

// GetAuthorizationServerMetadata implements tokenv1.TokenServiceServer.
func (s *Server) GetAuthorizationServerMetadata(ctx context.Context, req *tokenv1.GetAuthorizationServerMetadataRequest) (*tokenv1.GetAuthorizationServerMetadataResponse, error) {
	md, err := s.svc.Metadata(req.GetIssuerPath())
	var ae *apierr.Error
	if errors.As(err, &ae) && ae.Code == codes.NotFound && viaGateway(ctx) {
		// A well-known URL that names no issuer is an HTTP 404 (RFC 8414
		// section 3); the edge would turn an error into a 400.
		if err := oauthhttp.SetHTTPStatus(ctx, http.StatusNotFound); err != nil {
			return nil, err
		}
		return &tokenv1.GetAuthorizationServerMetadataResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	// Short caching: scopes_supported follows the policy catalogues.
	_ = oauthhttp.SetCacheControl(ctx, "public, max-age=60")
	return md, nil
}

// viaGateway reports whether the call came through the in-process REST
// gateway.
func viaGateway(ctx context.Context) bool {
	p, ok := peer.FromContext(ctx)
	return ok && libserver.IsGatewayPeer(p.Addr)
}

// GetJwks implements tokenv1.TokenServiceServer.
func (s *Server) GetJwks(ctx context.Context, _ *tokenv1.GetJwksRequest) (*tokenv1.GetJwksResponse, error) {
	keys, err := s.keys.JWKS()
	if err != nil {
		return nil, apierr.New(codes.Unavailable, tokenv1.ErrorReason_ERROR_REASON_STORE_UNAVAILABLE.String(),
			"signing keys are not loaded yet").WithCause(err)
	}
	_ = oauthhttp.SetCacheControl(ctx, fmt.Sprintf("public, max-age=%d", int(s.jwksMaxAge/time.Second)))
	return &tokenv1.GetJwksResponse{Keys: keys}, nil
}

// Token implements tokenv1.TokenServiceServer.
func (s *Server) Token(ctx context.Context, req *tokenv1.TokenRequest) (*tokenv1.TokenResponse, error) {
	authz, err := authorization(ctx)
	if err != nil {
		return nil, err
	}
	return s.svc.Token(ctx, oauth.TokenInput{Req: req, Authorization: authz})
}

// RevokeToken implements tokenv1.TokenServiceServer.
func (s *Server) RevokeToken(ctx context.Context, req *tokenv1.RevokeTokenRequest) (*tokenv1.RevokeTokenResponse, error) {
	authz, err := authorization(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.svc.Revoke(ctx, oauth.RevokeInput{Req: req, Authorization: authz}); err != nil {
		return nil, err
	}
	return &tokenv1.RevokeTokenResponse{}, nil
}

// IntrospectToken implements tokenv1.TokenServiceServer.
func (s *Server) IntrospectToken(ctx context.Context, req *tokenv1.IntrospectTokenRequest) (*tokenv1.IntrospectTokenResponse, error) {
	authz, err := authorization(ctx)
	if err != nil {
		return nil, err
	}
	p, _ := principal.FromContext(ctx)
	return s.svc.Introspect(ctx, oauth.IntrospectInput{Req: req, Authorization: authz, Caller: p})
}

// actor is the audit actor of an operator or service caller.
func actor(ctx context.Context) *auditv1.Actor {
	p, _ := principal.FromContext(ctx)
	switch p.Kind {
	case principal.KindOperator:
		return events.OperatorActor(p.ID)
	default:
		return events.ServiceActor()
	}
}

// CreateUser implements tokenv1.TokenServiceServer.
func (s *Server) CreateUser(ctx context.Context, req *tokenv1.CreateUserRequest) (*tokenv1.CreateUserResponse, error) {
	if req.GetUser() == nil {
		return nil, invalidField("user", "user is required")
	}
	roles, err := roleNames(req.GetUser().GetRoles())
	if err != nil {
		return nil, err
	}
	u, err := s.users.CreateUser(ctx, actor(ctx), directory.NewUser{
		Username: req.GetUser().GetUsername(), Email: req.GetUser().GetEmail(), DisplayName: req.GetUser().GetDisplayName(),
		Roles: roles, Password: req.GetPassword(),
	})
	if err != nil {
		return nil, err
	}
	return &tokenv1.CreateUserResponse{User: userProto(u)}, nil
}

// GetUser implements tokenv1.TokenServiceServer.
func (s *Server) GetUser(ctx context.Context, req *tokenv1.GetUserRequest) (*tokenv1.GetUserResponse, error) {
	if req.GetUserId() == "" {
		return nil, invalidField("user_id", "user_id is required")
	}
	u, err := s.svc.GetUser(ctx, req.GetUserId())
	if err != nil {
		return nil, err
	}
	return &tokenv1.GetUserResponse{User: userProto(u)}, nil
}

// ListUsers implements tokenv1.TokenServiceServer.
func (s *Server) ListUsers(ctx context.Context, req *tokenv1.ListUsersRequest) (*tokenv1.ListUsersResponse, error) {
	role := ""
	if req.GetRole() != tokenv1.OperatorRole_OPERATOR_ROLE_UNSPECIFIED {
		names, err := roleNames([]tokenv1.OperatorRole{req.GetRole()})
		if err != nil {
			return nil, err
		}
		role = names[0]
	}
	users, next, err := s.svc.ListUsers(ctx, int(req.GetPageSize()), req.GetPageToken(), role, req.GetConnectorId())
	if err != nil {
		return nil, err
	}
	resp := &tokenv1.ListUsersResponse{NextPageToken: next}
	for _, u := range users {
		resp.Users = append(resp.Users, userProto(u))
	}
	return resp, nil
}

// UpdateUser implements tokenv1.TokenServiceServer.
func (s *Server) UpdateUser(ctx context.Context, req *tokenv1.UpdateUserRequest) (*tokenv1.UpdateUserResponse, error) {
	in := req.GetUser()
	if in.GetUserId() == "" {
		return nil, invalidField("user.user_id", "user.user_id is required")
	}
	if len(req.GetUpdateMask().GetPaths()) == 0 {
		return nil, invalidField("update_mask", "update_mask is required")
	}
	var up oauth.UserUpdate
	for _, p := range req.GetUpdateMask().GetPaths() {
		switch p {
		case "email":
			v := in.GetEmail()
			up.Email = &v
		case "display_name":
			v := in.GetDisplayName()
			up.DisplayName = &v
		case "roles":
			roles, err := roleNames(in.GetRoles())
			if err != nil {
				return nil, err
			}
			up.Roles = &roles
		case "disabled":
			v := in.GetDisabled()
			up.Disabled = &v
		case "username":
			return nil, apierr.New(codes.InvalidArgument, tokenv1.ErrorReason_ERROR_REASON_FIELD_IMMUTABLE.String(),
				"username cannot be changed").WithMetadata("field", "user.username")
		default:
			return nil, invalidField("update_mask", "unknown or output-only path %q", p)
		}
	}
	if up.Email != nil && len(*up.Email) > 254 {
		return nil, invalidField("user.email", "email must be at most 254 characters")
	}
	if up.DisplayName != nil && len([]rune(*up.DisplayName)) > 128 {
		return nil, invalidField("user.display_name", "display_name must be at most 128 characters")
	}
	u, err := s.svc.UpdateUser(ctx, actor(ctx), in.GetUserId(), up)
	if err != nil {
		return nil, err
	}
	return &tokenv1.UpdateUserResponse{User: userProto(u)}, nil
}

// DeleteUser implements tokenv1.TokenServiceServer.
func (s *Server) DeleteUser(ctx context.Context, req *tokenv1.DeleteUserRequest) (*tokenv1.DeleteUserResponse, error) {
	if req.GetUserId() == "" {
		return nil, invalidField("user_id", "user_id is required")
	}
	if err := s.svc.DeleteUser(ctx, actor(ctx), req.GetUserId()); err != nil {
		return nil, err
	}
	return &tokenv1.DeleteUserResponse{}, nil
}

// SetUserPassword implements tokenv1.TokenServiceServer.
func (s *Server) SetUserPassword(ctx context.Context, req *tokenv1.SetUserPasswordRequest) (*tokenv1.SetUserPasswordResponse, error) {
	if req.GetUserId() == "" {
		return nil, invalidField("user_id", "user_id is required")
	}
	u, err := s.users.SetPassword(ctx, actor(ctx), req.GetUserId(), req.GetPassword())
	if err != nil {
		return nil, err
	}
	return &tokenv1.SetUserPasswordResponse{User: userProto(u)}, nil
}

// ListSigningKeys implements tokenv1.TokenServiceServer.
func (s *Server) ListSigningKeys(_ context.Context, req *tokenv1.ListSigningKeysRequest) (*tokenv1.ListSigningKeysResponse, error) {
	resp := &tokenv1.ListSigningKeysResponse{}
	for _, k := range s.keys.Keys() {
		pk := &tokenv1.SigningKey{
			Kid: k.Kid, Alg: algProto(k.Alg), State: stateProto(k.State), CreateTime: ts(k.Created),
			ActivateTime: ts(k.Activate), RetireTime: ts(k.Retire), RemoveTime: ts(k.Remove), KekVersion: k.Private.Version,
		}
		if req.GetState() != tokenv1.SigningKeyState_SIGNING_KEY_STATE_UNSPECIFIED && pk.GetState() != req.GetState() {
			continue
		}
		resp.Keys = append(resp.Keys, pk)
	}
	return resp, nil
}

func invalidField(field, format string, args ...any) error {
	return apierr.New(codes.InvalidArgument, apierr.ReasonInvalidField, format, args...).WithMetadata("field", field)
}

func roleNames(roles []tokenv1.OperatorRole) ([]string, error) {
	out := make([]string, 0, len(roles))
	for _, r := range roles {
		switch r {
		case tokenv1.OperatorRole_OPERATOR_ROLE_ADMIN:
			out = append(out, string(principal.RoleAdmin))
		case tokenv1.OperatorRole_OPERATOR_ROLE_AUDITOR:
			out = append(out, string(principal.RoleAuditor))
		default:
			return nil, invalidField("user.roles", "unknown or unspecified role %v", r)
		}
	}
	return out, nil
}

func roleProtos(roles []string) []tokenv1.OperatorRole {
	var out []tokenv1.OperatorRole
	for _, r := range roles {
		switch r {
		case string(principal.RoleAdmin):
			out = append(out, tokenv1.OperatorRole_OPERATOR_ROLE_ADMIN)
		case string(principal.RoleAuditor):
			out = append(out, tokenv1.OperatorRole_OPERATOR_ROLE_AUDITOR)
		}
	}
	return out
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func userProto(u *store.User) *tokenv1.User {
	out := &tokenv1.User{
		UserId: u.ID, Username: u.Username, Email: u.Email, DisplayName: u.DisplayName, Roles: roleProtos(u.Roles),
		Disabled: u.Disabled, HasPassword: u.PasswordHash != "", Groups: u.Groups,
		CreateTime: ts(u.Created), UpdateTime: ts(u.Updated), LastLoginTime: ts(u.LastLogin),
	}
	if time.Now().Before(u.LockedUntil) {
		out.LockedUntil = ts(u.LockedUntil)
	}
	for _, id := range u.Identities {
		out.Identities = append(out.Identities, &tokenv1.UserIdentity{
			ConnectorId: id.ConnectorID, Subject: id.Subject, Email: id.Email, LastLoginTime: ts(id.LastLogin),
		})
	}
	return out
}

func algProto(alg string) tokenv1.SigningAlgorithm {
	switch alg {
	case "ES256":
		return tokenv1.SigningAlgorithm_SIGNING_ALGORITHM_ES256
	case "EdDSA":
		return tokenv1.SigningAlgorithm_SIGNING_ALGORITHM_EDDSA
	case "RS256":
		return tokenv1.SigningAlgorithm_SIGNING_ALGORITHM_RS256
	}
	return tokenv1.SigningAlgorithm_SIGNING_ALGORITHM_UNSPECIFIED
}

func stateProto(s string) tokenv1.SigningKeyState {
	switch s {
	case store.KeyPending:
		return tokenv1.SigningKeyState_SIGNING_KEY_STATE_PENDING
	case store.KeyActive:
		return tokenv1.SigningKeyState_SIGNING_KEY_STATE_ACTIVE
	case store.KeyRetiring:
		return tokenv1.SigningKeyState_SIGNING_KEY_STATE_RETIRING
	case store.KeyRetired:
		return tokenv1.SigningKeyState_SIGNING_KEY_STATE_RETIRED
	}
	return tokenv1.SigningKeyState_SIGNING_KEY_STATE_UNSPECIFIED
}
