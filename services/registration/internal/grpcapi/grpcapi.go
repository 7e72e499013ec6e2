// Package grpcapi serves RegistrationService: it reads what the transport
// knows (principal, source address, Authorization, User-Agent), calls the
// domain, and shapes the HTTP answer of the OAuth routes (201, 204). Errors
// come back from the domain already as caller-visible statuses; the
// interceptor maps anything else to INTERNAL.
package grpcapi

import (
	"context"
	"net/http"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
	"github.com/mcpid/mcpid/lib/apierr"
	"github.com/mcpid/mcpid/lib/oauthhttp"
	"github.com/mcpid/mcpid/lib/principal"
	"github.com/mcpid/mcpid/lib/server"
	"github.com/mcpid/mcpid/lib/srcaddr"
	"github.com/mcpid/mcpid/services/registration/internal/registry"
)

// Server implements registrationv1.RegistrationServiceServer.
type Server struct {
	registrationv1.UnimplementedRegistrationServiceServer
	svc     *registry.Service
	sources *srcaddr.Resolver
}

// New returns the gRPC server of svc.
func New(svc *registry.Service, sources *srcaddr.Resolver) *Server {
	return &Server{svc: svc, sources: sources}
}

// caller collects what the transport knows about the request.
func (s *Server) caller(ctx context.Context) registry.Caller {
	p, _ := principal.FromContext(ctx)
	c := registry.Caller{Principal: p, Source: s.sources.FromContext(ctx)}
	md, _ := metadata.FromIncomingContext(ctx)
	if viaGateway(ctx) {
		c.UserAgent = first(md.Get("x-user-agent"))
	}
	switch auth := md.Get("authorization"); {
	case len(auth) == 0:
	case len(auth) > 1:
		c.BadAuthorization = true
	default:
		scheme, token, ok := strings.Cut(auth[0], " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" || strings.ContainsAny(token, " \t\r\n") {
			c.BadAuthorization = true
		} else {
			c.Bearer = token
		}
	}
	return c
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func viaGateway(ctx context.Context) bool {
	p, ok := peer.FromContext(ctx)
	return ok && server.IsGatewayPeer(p.Addr)
}

// oauthRoute refuses RFC 7591/7592 calls that do not come through the
// public origin's gateway (the contract: reached only that way), so the
// source address rules always see an HTTP request.
func oauthRoute(ctx context.Context) error {
	if !viaGateway(ctx) {
		return apierr.New(codes.PermissionDenied, apierr.ReasonNotAllowed, "this method is served over HTTP at the public origin only")
	}
	return nil
}

// RegisterClient implements RFC 7591 registration.
func (s *Server) RegisterClient(ctx context.Context, req *registrationv1.RegisterClientRequest) (*registrationv1.RegisterClientResponse, error) {
	if err := oauthRoute(ctx); err != nil {
		return nil, err
	}
	reg, err := s.svc.Register(ctx, s.caller(ctx), req.GetRegistration())
	if err != nil {
		return nil, err
	}
	if err := oauthhttp.SetHTTPStatus(ctx, http.StatusCreated); err != nil {
		return nil, err
	}
	return &registrationv1.RegisterClientResponse{Registration: reg}, nil
}

// GetClientRegistration implements RFC 7592 read.
func (s *Server) GetClientRegistration(ctx context.Context, req *registrationv1.GetClientRegistrationRequest) (*registrationv1.GetClientRegistrationResponse, error) {
	if err := oauthRoute(ctx); err != nil {
		return nil, err
	}
	reg, err := s.svc.GetRegistration(ctx, s.caller(ctx), req.GetClientId())
	if err != nil {
		return nil, err
	}
	return &registrationv1.GetClientRegistrationResponse{Registration: reg}, nil
}

// UpdateClientRegistration implements RFC 7592 update.
func (s *Server) UpdateClientRegistration(ctx context.Context, req *registrationv1.UpdateClientRegistrationRequest) (*registrationv1.UpdateClientRegistrationResponse, error) {
	if err := oauthRoute(ctx); err != nil {
		return nil, err
	}
	reg, err := s.svc.UpdateRegistration(ctx, s.caller(ctx), req.GetClientId(), req.GetRegistration())
	if err != nil {
		return nil, err
	}
	return &registrationv1.UpdateClientRegistrationResponse{Registration: reg}, nil
}

// DeleteClientRegistration implements RFC 7592 delete.
func (s *Server) DeleteClientRegistration(ctx context.Context, req *registrationv1.DeleteClientRegistrationRequest) (*registrationv1.DeleteClientRegistrationResponse, error) {
	if err := oauthRoute(ctx); err != nil {
		return nil, err
	}
	if err := s.svc.DeleteRegistration(ctx, s.caller(ctx), req.GetClientId()); err != nil {
		return nil, err
	}
	if err := oauthhttp.SetHTTPStatus(ctx, http.StatusNoContent); err != nil {
		return nil, err
	}
	return &registrationv1.DeleteClientRegistrationResponse{}, nil
}

// AuthenticateClient authenticates a client for the token service.
func (s *Server) AuthenticateClient(ctx context.Context, req *registrationv1.AuthenticateClientRequest) (*registrationv1.AuthenticateClientResponse, error) {
	c, prev, err := s.svc.Authenticate(ctx, s.caller(ctx), req)
	if err != nil {
		return nil, err
	}
	return &registrationv1.AuthenticateClientResponse{Client: c, PreviousSecretUsed: prev}, nil
}

// ResolveClient resolves a client_id for the token service.
func (s *Server) ResolveClient(ctx context.Context, req *registrationv1.ResolveClientRequest) (*registrationv1.ResolveClientResponse, error) {
	c, err := s.svc.Resolve(ctx, s.caller(ctx), req.GetClientId())
	if err != nil {
		return nil, err
	}
	return &registrationv1.ResolveClientResponse{Client: c}, nil
}

// CreateClient creates an operator client.
func (s *Server) CreateClient(ctx context.Context, req *registrationv1.CreateClientRequest) (*registrationv1.CreateClientResponse, error) {
	c, sec, err := s.svc.CreateClient(ctx, s.caller(ctx), req)
	if err != nil {
		return nil, err
	}
	return &registrationv1.CreateClientResponse{Client: c, ClientSecret: sec}, nil
}

// GetClient returns a client.
func (s *Server) GetClient(ctx context.Context, req *registrationv1.GetClientRequest) (*registrationv1.GetClientResponse, error) {
	c, err := s.svc.GetClient(ctx, req.GetClientId())
	if err != nil {
		return nil, err
	}
	return &registrationv1.GetClientResponse{Client: c}, nil
}

// ListClients lists clients.
func (s *Server) ListClients(ctx context.Context, req *registrationv1.ListClientsRequest) (*registrationv1.ListClientsResponse, error) {
	cs, next, err := s.svc.ListClients(ctx, req)
	if err != nil {
		return nil, err
	}
	return &registrationv1.ListClientsResponse{Clients: cs, NextPageToken: next}, nil
}

// UpdateClient updates a client.
func (s *Server) UpdateClient(ctx context.Context, req *registrationv1.UpdateClientRequest) (*registrationv1.UpdateClientResponse, error) {
	c, sec, err := s.svc.UpdateClient(ctx, s.caller(ctx), req)
	if err != nil {
		return nil, err
	}
	return &registrationv1.UpdateClientResponse{Client: c, ClientSecret: sec}, nil
}

// DeleteClient deletes a client.
func (s *Server) DeleteClient(ctx context.Context, req *registrationv1.DeleteClientRequest) (*registrationv1.DeleteClientResponse, error) {
	if err := s.svc.DeleteClient(ctx, s.caller(ctx), req.GetClientId(), req.GetEtag()); err != nil {
		return nil, err
	}
	return &registrationv1.DeleteClientResponse{}, nil
}

// SetClientVerification sets a client's verification status.
func (s *Server) SetClientVerification(ctx context.Context, req *registrationv1.SetClientVerificationRequest) (*registrationv1.SetClientVerificationResponse, error) {
	c, err := s.svc.SetVerification(ctx, s.caller(ctx), req)
	if err != nil {
		return nil, err
	}
	return &registrationv1.SetClientVerificationResponse{Client: c}, nil
}

// RotateClientSecret rotates a client secret.
func (s *Server) RotateClientSecret(ctx context.Context, req *registrationv1.RotateClientSecretRequest) (*registrationv1.RotateClientSecretResponse, error) {
	c, sec, err := s.svc.RotateSecret(ctx, s.caller(ctx), req)
	if err != nil {
		return nil, err
	}
	return &registrationv1.RotateClientSecretResponse{Client: c, ClientSecret: sec}, nil
}

// CreateInitialAccessToken creates an initial access token.
func (s *Server) CreateInitialAccessToken(ctx context.Context, req *registrationv1.CreateInitialAccessTokenRequest) (*registrationv1.CreateInitialAccessTokenResponse, error) {
	t, tok, err := s.svc.CreateIAT(ctx, s.caller(ctx), req)
	if err != nil {
		return nil, err
	}
	return &registrationv1.CreateInitialAccessTokenResponse{InitialAccessToken: t, Token: tok}, nil
}

// ListInitialAccessTokens lists initial access tokens.
func (s *Server) ListInitialAccessTokens(ctx context.Context, req *registrationv1.ListInitialAccessTokensRequest) (*registrationv1.ListInitialAccessTokensResponse, error) {
	ts, next, err := s.svc.ListIATs(ctx, req)
	if err != nil {
		return nil, err
	}
	return &registrationv1.ListInitialAccessTokensResponse{InitialAccessTokens: ts, NextPageToken: next}, nil
}

// RevokeInitialAccessToken revokes an initial access token.
func (s *Server) RevokeInitialAccessToken(ctx context.Context, req *registrationv1.RevokeInitialAccessTokenRequest) (*registrationv1.RevokeInitialAccessTokenResponse, error) {
	t, err := s.svc.RevokeIAT(ctx, s.caller(ctx), req.GetId())
	if err != nil {
		return nil, err
	}
	return &registrationv1.RevokeInitialAccessTokenResponse{InitialAccessToken: t}, nil
}
