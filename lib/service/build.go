package service

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"

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
	// Verifier, when set, verifies bearer tokens for the reserved audiences
	// (operators, MCP servers); without it bearer tokens are refused.
	Verifier principal.TokenVerifier
	// Setup builds the service's domain from what Open opened (etcd,
	// outbox, audit client) and says what to serve and run.
	Setup func(ctx context.Context, b *Base) (*Setup, error)
}

// Setup is what a service contributes to its server.
type Setup struct {
	// Register registers the gRPC service implementations.
	Register func(*grpc.Server)
	// Gateway registers the service's REST routes, if it has any.
	Gateway server.GatewayRegistrar
	// HTTPHandlers are extra HTTP handlers (pages) by mux pattern.
	HTTPHandlers map[string]http.Handler
	// Background tasks run while the service runs (caches, relays,
	// elected workers). Their context ends at shutdown, after the servers
	// stopped taking requests. A task returning an error before that stops
	// the service.
	Background []func(ctx context.Context) error
	// Ready are extra readiness checks (for example "cache synced").
	Ready []server.Check
	// Close releases what Setup opened; called after the background tasks
	// ended.
	Close func(ctx context.Context) error
}

// Server is a completed service: the lifecycle server plus what Open and
// Setup opened.
type Server struct {
	base  *Base
	setup *Setup
	srv   *server.Server
}

// New completes a service from its Spec: Open, the service's Setup, the
// principal interceptor with the service's allowlist (checked against what
// is registered), the OAuth edge in front of the gateway, then
// server.Config.Complete. On error it closes what it opened.
func New(ctx context.Context, spec Spec) (_ *Server, err error) {
	out := spec.LogOutput
	if out == nil {
		out = io.Discard
	}
	base, err := Open(ctx, spec.Name, spec.Flags, out)
	if err != nil {
		return nil, err
	}
	setup := &Setup{}
	defer func() {
		if err != nil {
			if setup.Close != nil {
				err = errors.Join(err, setup.Close(context.Background()))
			}
			err = errors.Join(err, base.Close(context.Background()))
		}
	}()
	if spec.Setup != nil {
		s, err := spec.Setup(ctx, base)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", spec.Name, err)
		}
		if s != nil {
			setup = s
		}
	}
	if relay := base.relayTask(); relay != nil {
		setup.Background = append(setup.Background, relay)
	}
	authz, err := principal.NewAuthorizer(principal.Config{
		Policy:           spec.Methods,
		Verifier:         spec.Verifier,
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
	if cfg.GatewayTLS == nil && base.tls != nil && base.tls.caFile != "" {
		// A service binary has no caller to hand it one: derive it from
		// the CA bundle, so the binaries serve their REST routes with TLS.
		cfg.GatewayTLS = base.gatewayTLS(spec.Name)
	}
	cfg.Allowlist = authz
	cfg.RegisterGRPC = setup.Register
	cfg.Gateway = setup.Gateway
	for pattern, h := range setup.HTTPHandlers {
		cfg.HTTPHandlers[pattern] = h
	}
	cfg.Ready = append(cfg.Ready, setup.Ready...)
	edge := oauthhttp.DefaultEdge()
	cfg.GatewayOptions = edge.GatewayOptions()
	instrument := cfg.WrapHTTP
	cfg.WrapHTTP = func(h http.Handler) http.Handler { return instrument(edge.Wrap(h)) }
	srv, err := cfg.Complete(ctx)
	if err != nil {
		return nil, err
	}
	return &Server{base: base, setup: setup, srv: srv}, nil
}

// Run serves until ctx ends (or a background task fails), then shuts down:
// the servers first (health down, drain, bounded graceful stop), then the
// background tasks, then what Setup and Open opened.
func (s *Server) Run(ctx context.Context) error {
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	bgCtx, stopBackground := context.WithCancel(context.Background())
	defer stopBackground()

	var wg sync.WaitGroup
	var mu sync.Mutex
	var bgErrs []error
	for _, task := range s.setup.Background {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := task(bgCtx); err != nil && bgCtx.Err() == nil {
				s.base.Logger.Error("background task failed, stopping", "error", err)
				mu.Lock()
				bgErrs = append(bgErrs, err)
				mu.Unlock()
				stopRun()
			}
		}()
	}

	err := s.srv.Run(runCtx)
	stopBackground()
	wg.Wait()
	if s.setup.Close != nil {
		err = errors.Join(err, s.setup.Close(context.Background()))
	}
	return errors.Join(err, errors.Join(bgErrs...), s.base.Close(context.Background()))
}

// GRPCAddr is the gRPC listen address.
func (s *Server) GRPCAddr() net.Addr { return s.srv.GRPCAddr() }

// HTTPAddr is the HTTP listen address, or nil.
func (s *Server) HTTPAddr() net.Addr { return s.srv.HTTPAddr() }
