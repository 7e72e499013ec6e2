package service

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"

	"google.golang.org/grpc"

	"github.com/mcpid/mcpid/lib/oauthhttp"
	"github.com/mcpid/mcpid/lib/principal"
	"github.com/mcpid/mcpid/lib/server"
)

// Spec is what distinguishes one service from another; everything else is
// built the same way for all of them.
type Spec struct {
	// Name is the service name (health, logs, certificates).
	Name string
	// Flags are the common settings.
	Flags Flags
	// GatewayTLS is the in-process gateway's client TLS config when gRPC is
	// served with TLS (no client certificate).
	GatewayTLS *tls.Config
	// LogOutput receives JSON logs; default io.Discard.
	LogOutput io.Writer
	// Methods is the allowlist: every served method and who may call it.
	Methods principal.Policy
	// Register registers the gRPC service implementations.
	Register func(*grpc.Server)
	// Gateway registers the service's REST routes, if it has any.
	Gateway server.GatewayRegistrar
}

// Server is a completed service: the lifecycle server plus what Open opened.
type Server struct {
	base *Base
	srv  *server.Server
}

// New completes a service from its Spec: Open, the principal interceptor
// with the service's allowlist (checked against what is registered), the
// OAuth edge in front of the gateway, then server.Config.Complete. On error
// it closes what it opened.
func New(ctx context.Context, spec Spec) (_ *Server, err error) {
	out := spec.LogOutput
	if out == nil {
		out = io.Discard
	}
	base, err := Open(ctx, spec.Name, spec.Flags, out)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, base.Close(context.Background()))
		}
	}()
	authz, err := principal.NewAuthorizer(principal.Config{
		Policy:           spec.Methods,
		PublicHealth:     true,
		PublicReflection: true,
		Logger:           base.Logger,
	})
	if err != nil {
		return nil, err
	}
	cfg := base.ServerConfig(
		[]grpc.UnaryServerInterceptor{authz.UnaryServerInterceptor()},
		[]grpc.StreamServerInterceptor{authz.StreamServerInterceptor()},
	)
	cfg.GatewayTLS = spec.GatewayTLS
	cfg.Allowlist = authz
	cfg.RegisterGRPC = spec.Register
	cfg.Gateway = spec.Gateway
	edge := oauthhttp.DefaultEdge()
	cfg.GatewayOptions = edge.GatewayOptions()
	instrument := cfg.WrapHTTP
	cfg.WrapHTTP = func(h http.Handler) http.Handler { return instrument(edge.Wrap(h)) }
	srv, err := cfg.Complete(ctx)
	if err != nil {
		return nil, err
	}
	return &Server{base: base, srv: srv}, nil
}

// Run serves until ctx ends, then shuts down and closes everything.
func (s *Server) Run(ctx context.Context) error {
	err := s.srv.Run(ctx)
	return errors.Join(err, s.base.Close(context.Background()))
}

// GRPCAddr is the gRPC listen address.
func (s *Server) GRPCAddr() net.Addr { return s.srv.GRPCAddr() }

// HTTPAddr is the HTTP listen address, or nil.
func (s *Server) HTTPAddr() net.Addr { return s.srv.HTTPAddr() }
