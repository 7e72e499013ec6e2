package oauth

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/lib/principal"
	"github.com/mcpid/mcpid/services/token/internal/accesstoken"
	"github.com/mcpid/mcpid/services/token/internal/events"
	"github.com/mcpid/mcpid/services/token/internal/revocation"
	"github.com/mcpid/mcpid/services/token/internal/store"
)

// RevokeInput is an RFC 7009 request.
type RevokeInput struct {
	Req           *tokenv1.RevokeTokenRequest
	Authorization string
}

// Revoke serves the revocation endpoint: a client revokes its own access
// token (by jti, until it expires) or refresh token (its whole grant).
// Unknown, expired, malformed or already revoked tokens succeed with no
// effect.
func (s *Service) Revoke(ctx context.Context, in RevokeInput) error {
	r := in.Req
	if r.GetToken() == "" {
		return oauthErr("invalid_request", "token is required")
	}
	cl, err := s.authenticate(ctx, in.Authorization, r.GetClientId(), r.GetClientSecret(), r.GetClientAssertionType(), r.GetClientAssertion(), PathRevoke)
	if err != nil {
		return err
	}
	clientID := cl.Client.GetClientId()
	if accesstoken.LooksLikeJWT(r.GetToken()) {
		c, err := s.d.Verifier.Verify(ctx, r.GetToken())
		if err != nil {
			return nil // not a live token of ours: nothing to revoke
		}
		if c.ClientID != clientID {
			return oauthErr("unauthorized_client", "the token was issued to another client")
		}
		if s.d.Revocations.GrantRevoked(c.GrantID) {
			return nil
		}
		op, err := s.d.Events.Op(ctx, events.TokenRevoked(clientID, userOf(c), c.Audience[0], c.GrantID, c.ID, "access_token"))
		if err != nil {
			return err
		}
		rev, err := s.d.Store.PutRevocation(ctx, &store.Revocation{
			Kind: store.RevokeToken, ID: c.ID, Resource: c.Audience[0], Expires: c.Expiry.Time().UTC().Add(time.Minute),
		}, op)
		if err != nil {
			return storeErr(err)
		}
		s.awaitRevocation(ctx, rev)
		return nil
	}
	grantID, ok := splitRefresh(r.GetToken())
	if !ok {
		return nil
	}
	vg, err := s.d.Store.GetGrant(ctx, grantID)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return storeErr(err)
	}
	g := vg.Value
	h := Hash(r.GetToken())
	if g.Refresh == nil || (!equalSecret(h, g.Refresh.Hash) && !slices.Contains(g.Refresh.Rotated, h)) {
		return nil
	}
	if g.ClientID != clientID {
		return oauthErr("unauthorized_client", "the token was issued to another client")
	}
	op, err := s.d.Events.Op(ctx, events.TokenRevoked(clientID, g.UserID, g.Resource, g.ID, "", "refresh_token"))
	if err != nil {
		return err
	}
	_, rev, err := s.d.Store.RevokeGrant(ctx, g.ID, s.revocationFor(g.ID, g.Resource), op)
	if err != nil {
		return storeErr(err)
	}
	s.awaitRevocation(ctx, rev)
	return nil
}

// userOf is the user of a token: its subject unless it is a client's own
// (client_credentials) token.
func userOf(c *accesstoken.Claims) string {
	if c.Subject == c.ClientID {
		return ""
	}
	return c.Subject
}

// IntrospectInput is an RFC 7662 request.
type IntrospectInput struct {
	Req           *tokenv1.IntrospectTokenRequest
	Authorization string
	// Caller is the principal the interceptor found (mTLS), if any.
	Caller principal.Principal
}

// introspector is who asks.
type introspector struct {
	operator bool
	resource string // MCP server's own resource
}

func inactive() *tokenv1.IntrospectTokenResponse {
	return &tokenv1.IntrospectTokenResponse{Active: proto.Bool(false)}
}

// Introspect serves the introspection endpoint.
func (s *Service) Introspect(ctx context.Context, in IntrospectInput) (*tokenv1.IntrospectTokenResponse, error) {
	r := in.Req
	if r.GetToken() == "" {
		return nil, oauthErr("invalid_request", "token is required")
	}
	who, err := s.introspector(ctx, in)
	if err != nil {
		return nil, err
	}
	if err := s.d.Revocations.Ready(ctx); err != nil {
		return nil, unavailable("the revocation set", err)
	}
	if !accesstoken.LooksLikeJWT(r.GetToken()) {
		return s.introspectRefresh(ctx, who, r.GetToken())
	}
	c, err := s.d.Verifier.Verify(ctx, r.GetToken())
	if err != nil {
		return inactive(), nil
	}
	revoked, err := s.d.Revocations.Revoked(tokenOf(c))
	if err != nil {
		return nil, unavailable("the revocation set", err)
	}
	if revoked {
		return inactive(), nil
	}
	if !who.operator && c.Audience[0] != who.resource {
		return inactive(), nil
	}
	resp := &tokenv1.IntrospectTokenResponse{
		Active: proto.Bool(true), Scope: c.Scope, ClientId: c.ClientID, TokenType: "Bearer",
		Exp: uint32(*c.Expiry), Iat: uint32(*c.IssuedAt), Sub: c.Subject, Aud: c.Audience[0], Iss: c.Issuer,
		Jti: c.ID, GrantId: c.GrantID, AuthTime: uint32(c.AuthTime), Groups: c.Groups, TokenUse: "access_token",
	}
	if c.NotBefore != nil {
		resp.Nbf = uint32(*c.NotBefore)
	}
	if uid := userOf(c); uid != "" {
		if u, err := s.d.Store.GetUser(ctx, uid); err == nil {
			resp.Username = u.Username
			if resp.Username == "" {
				resp.Username = u.Email
			}
		}
	}
	return resp, nil
}

func tokenOf(c *accesstoken.Claims) revocation.Token {
	t := revocation.Token{JTI: c.ID, GrantID: c.GrantID, Subject: c.Subject, ClientID: c.ClientID, Audience: c.Audience[0]}
	if c.IssuedAt != nil {
		t.IssuedAt = c.IssuedAt.Time()
	}
	return t
}

// introspector identifies the caller: an mTLS operator or MCP server, a
// bearer token of either, or a confidential client that registration binds
// to a resource as its MCP server.
func (s *Service) introspector(ctx context.Context, in IntrospectInput) (introspector, error) {
	switch in.Caller.Kind {
	case principal.KindOperator:
		return introspector{operator: true}, nil
	case principal.KindMCPServer:
		if in.Caller.Resource != "" {
			return introspector{resource: in.Caller.Resource}, nil
		}
	}
	r := in.Req
	if scheme, tok, ok := strings.Cut(in.Authorization, " "); ok && strings.EqualFold(scheme, "Bearer") {
		claims, err := s.VerifyCaller(ctx, strings.TrimSpace(tok))
		if err != nil {
			return introspector{}, oauthErr("invalid_client", "caller authentication failed")
		}
		switch {
		case len(claims.Audience) == 1 && claims.Audience[0] == principal.AdminAudience && len(claims.Roles) > 0:
			return introspector{operator: true}, nil
		case len(claims.Audience) == 1 && claims.Audience[0] == principal.PolicyAudience && claims.Resource != "":
			return introspector{resource: claims.Resource}, nil
		}
		return introspector{}, oauthErr("invalid_client", "the caller is neither an MCP server nor an operator")
	}
	if in.Authorization == "" && r.GetClientId() == "" && r.GetClientSecret() == "" && r.GetClientAssertion() == "" {
		return introspector{}, oauthErr("invalid_client", "caller authentication required")
	}
	cl, err := s.authenticate(ctx, in.Authorization, r.GetClientId(), r.GetClientSecret(), r.GetClientAssertionType(), r.GetClientAssertion(), PathIntrospect)
	if err != nil {
		return introspector{}, err
	}
	if cl.Client.GetResourceServer() == "" || cl.Method == registrationv1.TokenEndpointAuthMethod_TOKEN_ENDPOINT_AUTH_METHOD_NONE {
		return introspector{}, oauthErr("invalid_client", "the caller is not an MCP server")
	}
	return introspector{resource: cl.Client.GetResourceServer()}, nil
}

func (s *Service) introspectRefresh(ctx context.Context, who introspector, tok string) (*tokenv1.IntrospectTokenResponse, error) {
	if !who.operator {
		return inactive(), nil
	}
	grantID, ok := splitRefresh(tok)
	if !ok {
		return inactive(), nil
	}
	vg, err := s.d.Store.GetGrant(ctx, grantID)
	if errors.Is(err, store.ErrNotFound) {
		return inactive(), nil
	}
	if err != nil {
		return nil, storeErr(err)
	}
	g := vg.Value
	if g.Refresh == nil || !equalSecret(Hash(tok), g.Refresh.Hash) {
		return inactive(), nil
	}
	iat := g.Created
	if !g.LastRefresh.IsZero() {
		iat = g.LastRefresh
	}
	resp := &tokenv1.IntrospectTokenResponse{
		Active: proto.Bool(true), Scope: strings.Join(g.Scopes, " "), ClientId: g.ClientID, Sub: g.UserID,
		Aud: g.Resource, Iss: s.cfg.Issuer, GrantId: g.ID, Iat: uint32(iat.Unix()), TokenUse: "refresh_token",
	}
	if !g.Expires.IsZero() {
		resp.Exp = uint32(g.Expires.Unix())
	}
	if !g.AuthTime.IsZero() {
		resp.AuthTime = uint32(g.AuthTime.Unix())
	}
	if u, err := s.d.Store.GetUser(ctx, g.UserID); err == nil {
		resp.Username = u.Username
	}
	return resp, nil
}

// VerifyCaller verifies a bearer token presented to this service: signature,
// typ, issuer, expiry and revocation. Audience is the caller's business.
func (s *Service) VerifyCaller(ctx context.Context, tok string) (*accesstoken.Claims, error) {
	c, err := s.d.Verifier.Verify(ctx, tok)
	if err != nil {
		return nil, err
	}
	revoked, err := s.d.Revocations.Revoked(tokenOf(c))
	if err != nil {
		return nil, err
	}
	if revoked {
		return nil, errors.New("oauth: token revoked")
	}
	return c, nil
}

// PrincipalVerifier adapts VerifyCaller to lib/principal, for bearer tokens
// on the operator and MCP server gRPC methods.
type PrincipalVerifier struct{ S *Service }

// Verify implements principal.TokenVerifier.
func (v PrincipalVerifier) Verify(ctx context.Context, tok string) (principal.Claims, error) {
	c, err := v.S.VerifyCaller(ctx, tok)
	if err != nil {
		return principal.Claims{}, err
	}
	return principal.Claims{Audience: c.Audience, Subject: c.Subject, ClientID: c.ClientID, Scope: c.Scope, Roles: c.Roles, Resource: c.Resource}, nil
}
