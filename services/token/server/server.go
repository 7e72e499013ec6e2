// Package server wires the token service: the OAuth 2.1 authorization server: metadata, authorize, token, revocation, introspection, consent and grants.
// It follows the shared lifecycle: Config → Complete → Run.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"

	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/lib/oauthhttp"
	"github.com/mcpid/mcpid/lib/principal"
	libserver "github.com/mcpid/mcpid/lib/server"
	"github.com/mcpid/mcpid/lib/service"
)

// Name is the service's name in health checks, logs and certificates.
const Name = "token"

// Config is the token service's configuration.
type Config struct {
	service.Flags
	// GatewayTLS is the client TLS config of the in-process REST gateway when
	// gRPC is served with TLS (no client certificate).
	GatewayTLS *tls.Config
	// LogOutput receives JSON logs; default io.Discard.
	LogOutput io.Writer
}

// RegisterFlags defines the service's settings on fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.Flags.Register(fs, service.Defaults{GRPCAddr: "127.0.0.1:7002", HTTPAddr: "127.0.0.1:7102"})
}

// Server is a completed token service.
type Server struct {
	base *service.Base
	srv  *libserver.Server
}

// Complete opens the service's dependencies and listeners.
func (c Config) Complete(ctx context.Context) (_ *Server, err error) {
	out := c.LogOutput
	if out == nil {
		out = io.Discard
	}
	base, err := service.Open(ctx, Name, c.Flags, out)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, base.Close(context.Background()))
		}
	}()
	authz, err := principal.NewAuthorizer(principal.Config{
		Policy:           methodPolicy(),
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
	cfg.GatewayTLS = c.GatewayTLS
	cfg.Allowlist = authz
	cfg.RegisterGRPC = func(s *grpc.Server) { tokenv1.RegisterTokenServiceServer(s, notImplemented{}) }
	edge := oauthhttp.DefaultEdge()
	cfg.GatewayOptions = edge.GatewayOptions()
	telemetryWrap := cfg.WrapHTTP
	cfg.WrapHTTP = func(h http.Handler) http.Handler { return telemetryWrap(edge.Wrap(h)) }
	cfg.Gateway = func(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error {
		return tokenv1.RegisterTokenServiceHandler(ctx, mux, conn)
	}
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

// notImplemented serves the contract while the service's domain logic is
// still to come: every method answers UNIMPLEMENTED (after the allowlist).
type notImplemented struct {
	tokenv1.UnimplementedTokenServiceServer
}
