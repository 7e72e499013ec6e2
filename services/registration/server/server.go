// Package server wires the registration service: who the clients (agents) are: CIMD, DCR (RFC 7591/7592) and operator-created clients.
// It follows the shared lifecycle: Config → Complete → Run.
package server

import (
	"context"
	"crypto/tls"
	"flag"
	"io"

	"google.golang.org/grpc"

	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
	"github.com/mcpid/mcpid/lib/service"
)

// Name is the service's name in health checks, logs and certificates.
const Name = "registration"

// Config is the registration service's configuration.
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
	c.Flags.Register(fs, service.Defaults{GRPCAddr: "127.0.0.1:7001", HTTPAddr: "127.0.0.1:7101"})
}

// Complete opens the service's dependencies and listeners.
func (c Config) Complete(ctx context.Context) (*service.Server, error) {
	return service.New(ctx, service.Spec{
		Name:       Name,
		Flags:      c.Flags,
		GatewayTLS: c.GatewayTLS,
		LogOutput:  c.LogOutput,
		Methods:    methodPolicy(),
		Setup:      setup,
	})
}

// setup builds the service's domain on what service.Open opened.
func setup(_ context.Context, _ *service.Base) (*service.Setup, error) {
	return &service.Setup{
		Register: func(s *grpc.Server) { registrationv1.RegisterRegistrationServiceServer(s, notImplemented{}) },
		Gateway:  registrationv1.RegisterRegistrationServiceHandler,
	}, nil
}

// notImplemented serves the contract while the service's domain logic is
// still to come: every method answers UNIMPLEMENTED (after the allowlist).
type notImplemented struct {
	registrationv1.UnimplementedRegistrationServiceServer
}
