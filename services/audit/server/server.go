// Package server wires the audit service: the hash-chained audit trail, queries, live tail and agent inventory.
// It follows the shared lifecycle: Config → Complete → Run.
package server

import (
	"context"
	"crypto/tls"
	"flag"
	"io"

	"google.golang.org/grpc"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/lib/service"
)

// Name is the service's name in health checks, logs and certificates.
const Name = "audit"

// Config is the audit service's configuration.
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
	c.Flags.Register(fs, service.Defaults{GRPCAddr: "127.0.0.1:7004", HTTPAddr: "127.0.0.1:7104"})
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
		Register: func(s *grpc.Server) { auditv1.RegisterAuditServiceServer(s, notImplemented{}) },
		Gateway:  auditv1.RegisterAuditServiceHandler,
	}, nil
}

// notImplemented serves the contract while the service's domain logic is
// still to come: every method answers UNIMPLEMENTED (after the allowlist).
type notImplemented struct {
	auditv1.UnimplementedAuditServiceServer
}
