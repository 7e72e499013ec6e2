package grpcapi

import (
	"context"

	"google.golang.org/grpc/codes"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/lib/apierr"
)

// ConnectorAdmin is the identity connector administration (package sso).
type ConnectorAdmin interface {
	Create(ctx context.Context, actor *auditv1.Actor, c *tokenv1.Connector) (*tokenv1.Connector, error)
	Get(ctx context.Context, id string) (*tokenv1.Connector, error)
	List(ctx context.Context, pageSize int, pageToken string) ([]*tokenv1.Connector, string, error)
	Update(ctx context.Context, actor *auditv1.Actor, c *tokenv1.Connector, paths []string) (*tokenv1.Connector, error)
	Delete(ctx context.Context, actor *auditv1.Actor, id string) error
}

// WithConnectors serves the *Connector RPCs with a.
func (s *Server) WithConnectors(a ConnectorAdmin) *Server {
	s.connectors = a
	return s
}

func (s *Server) connectorAdmin() (ConnectorAdmin, error) {
	if s.connectors == nil {
		return nil, apierr.New(codes.Unimplemented, "", "identity connectors are not configured")
	}
	return s.connectors, nil
}

// CreateConnector implements tokenv1.TokenServiceServer.
func (s *Server) CreateConnector(ctx context.Context, req *tokenv1.CreateConnectorRequest) (*tokenv1.CreateConnectorResponse, error) {
	a, err := s.connectorAdmin()
	if err != nil {
		return nil, err
	}
	c, err := a.Create(ctx, actor(ctx), req.GetConnector())
	if err != nil {
		return nil, err
	}
	return &tokenv1.CreateConnectorResponse{Connector: c}, nil
}

// GetConnector implements tokenv1.TokenServiceServer.
func (s *Server) GetConnector(ctx context.Context, req *tokenv1.GetConnectorRequest) (*tokenv1.GetConnectorResponse, error) {
	a, err := s.connectorAdmin()
	if err != nil {
		return nil, err
	}
	c, err := a.Get(ctx, req.GetConnectorId())
	if err != nil {
		return nil, err
	}
	return &tokenv1.GetConnectorResponse{Connector: c}, nil
}

// ListConnectors implements tokenv1.TokenServiceServer.
func (s *Server) ListConnectors(ctx context.Context, req *tokenv1.ListConnectorsRequest) (*tokenv1.ListConnectorsResponse, error) {
	a, err := s.connectorAdmin()
	if err != nil {
		return nil, err
	}
	cs, next, err := a.List(ctx, int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	return &tokenv1.ListConnectorsResponse{Connectors: cs, NextPageToken: next}, nil
}

// UpdateConnector implements tokenv1.TokenServiceServer.
func (s *Server) UpdateConnector(ctx context.Context, req *tokenv1.UpdateConnectorRequest) (*tokenv1.UpdateConnectorResponse, error) {
	a, err := s.connectorAdmin()
	if err != nil {
		return nil, err
	}
	c, err := a.Update(ctx, actor(ctx), req.GetConnector(), req.GetUpdateMask().GetPaths())
	if err != nil {
		return nil, err
	}
	return &tokenv1.UpdateConnectorResponse{Connector: c}, nil
}

// DeleteConnector implements tokenv1.TokenServiceServer.
func (s *Server) DeleteConnector(ctx context.Context, req *tokenv1.DeleteConnectorRequest) (*tokenv1.DeleteConnectorResponse, error) {
	a, err := s.connectorAdmin()
	if err != nil {
		return nil, err
	}
	if err := a.Delete(ctx, actor(ctx), req.GetConnectorId()); err != nil {
		return nil, err
	}
	return &tokenv1.DeleteConnectorResponse{}, nil
}
