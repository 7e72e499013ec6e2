// Package server is the lifecycle every mcpid service shares: Config →
// Complete → Run (SpiceDB's pattern).
//
//   - Complete opens everything (listeners, the in-process gateway
//     connection) and, if any step fails, closes what it had opened, in
//     reverse order.
//   - Run serves gRPC (with health and reflection) and HTTP (the grpc-gateway,
//     extra handlers, /healthz, /readyz, /metrics) until its context ends.
//     Health starts NOT_SERVING and turns SERVING once every readiness check
//     (etcd) passes. On shutdown health goes down first, so load balancers
//     drain, then GracefulStop runs bounded by ShutdownTimeout, then a hard
//     Stop; finally everything is closed in reverse order.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
)

// Check reports whether a dependency is ready; nil means ready.
type Check func(ctx context.Context) error

// GatewayRegistrar registers grpc-gateway handlers that forward to conn.
type GatewayRegistrar func(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error

// Config describes one service process. Zero values get defaults in Complete.
type Config struct {
	// Name is the service name ("token", "policy", ...); it names the gRPC
	// health service entry and log lines.
	Name string
	// GRPCAddr is the gRPC listen address; default "127.0.0.1:0".
	GRPCAddr string
	// HTTPAddr is the HTTP listen address; empty disables HTTP.
	HTTPAddr string
	// TLS, when set, serves gRPC with these credentials (mTLS between services).
	TLS *tls.Config
	// GatewayTLS is the client TLS config the in-process gateway uses when TLS
	// is set. It must carry no client certificate: HTTP callers would
	// otherwise act with the service's own identity.
	GatewayTLS *tls.Config
	// Logger receives lifecycle logs; default slog.Default().
	Logger *slog.Logger

	// RegisterGRPC registers the service implementations.
	RegisterGRPC func(*grpc.Server)
	// Allowlist, when set, must cover every registered method: Complete
	// fails naming the methods it forgot, rather than a caller finding out.
	Allowlist interface {
		Missing(map[string]grpc.ServiceInfo) []string
	}
	// Gateway, when set, registers REST routes on the HTTP listener.
	Gateway GatewayRegistrar
	// GatewayOptions configure the gateway mux (marshalers, error handler).
	GatewayOptions []runtime.ServeMuxOption
	// HTTPHandlers are extra handlers (pages, /metrics) by mux pattern.
	HTTPHandlers map[string]http.Handler
	// WrapHTTP wraps the whole HTTP handler (telemetry, CORS, size limits).
	WrapHTTP func(http.Handler) http.Handler

	// ServerOptions are passed to grpc.NewServer (interceptors, stats handlers).
	ServerOptions []grpc.ServerOption

	// Ready lists readiness checks; the service is SERVING only while all pass.
	Ready []Check
	// ReadyInterval is how often readiness is re-checked; default 2s.
	ReadyInterval time.Duration
	// DrainDelay is how long health stays NOT_SERVING before connections are
	// closed, so load balancers notice; default 0.
	DrainDelay time.Duration
	// ShutdownTimeout bounds the graceful part of shutdown; default 10s.
	ShutdownTimeout time.Duration
}

// Server is a completed Config, ready to Run.
type Server struct {
	cfg    Config
	log    *slog.Logger
	grpc   *grpc.Server
	health *health.Server
	// draining ends when shutdown begins (after health went down): every
	// long-lived stream (health Watch, audit Tail, revocation feeds) ends
	// with UNAVAILABLE then, so clients reconnect to another replica
	// instead of holding GracefulStop until its deadline.
	draining    context.Context
	stopStreams context.CancelFunc
	grpcLis     net.Listener
	httpLis     net.Listener
	http        *http.Server
	gwLis       *memListener
	closers     closerStack
	ready       readiness
	runOnce     sync.Once
	grpcAddr    net.Addr
	httpAddr    net.Addr
}

// Complete validates the config, opens listeners and connections, and returns
// a Server. On error everything opened so far is closed again.
func (c Config) Complete(ctx context.Context) (_ *Server, err error) {
	if c.Name == "" {
		return nil, errors.New("server: Name is required")
	}
	if c.GRPCAddr == "" {
		c.GRPCAddr = "127.0.0.1:0"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.ReadyInterval <= 0 {
		c.ReadyInterval = 2 * time.Second
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	s := &Server{cfg: c, log: c.Logger} // the caller names the service in its logger
	defer func() {
		if err != nil {
			if cerr := s.closers.close(context.Background()); cerr != nil {
				s.log.Warn("cleanup after failed start", "error", cerr)
			}
		}
	}()

	s.draining, s.stopStreams = context.WithCancel(context.Background())
	opts := append([]grpc.ServerOption{grpc.ChainStreamInterceptor(s.endStreamsOnDrain)}, c.ServerOptions...)
	if c.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(c.TLS)))
	}
	s.grpc = grpc.NewServer(opts...)
	s.health = health.NewServer()
	// NOT_SERVING until the readiness checks pass.
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	s.health.SetServingStatus(c.Name, healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	if c.RegisterGRPC != nil {
		c.RegisterGRPC(s.grpc)
	}
	if c.Allowlist != nil {
		if missing := c.Allowlist.Missing(s.grpc.GetServiceInfo()); len(missing) > 0 {
			return nil, fmt.Errorf("server: methods missing from the allowlist: %s", strings.Join(missing, ", "))
		}
	}

	s.grpcLis, err = listen(ctx, "gRPC", c.GRPCAddr)
	if err != nil {
		return nil, err
	}
	s.grpcAddr = s.grpcLis.Addr()
	s.closers.push("gRPC listener", func(context.Context) error { return ignoreClosed(s.grpcLis.Close()) })

	if c.HTTPAddr != "" {
		handler, err := s.buildHTTP(ctx)
		if err != nil {
			return nil, err
		}
		s.httpLis, err = listen(ctx, "HTTP", c.HTTPAddr)
		if err != nil {
			return nil, err
		}
		s.httpAddr = s.httpLis.Addr()
		s.closers.push("HTTP listener", func(context.Context) error { return ignoreClosed(s.httpLis.Close()) })
		s.http = &http.Server{
			Handler:           handler,
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      60 * time.Second,
			IdleTimeout:       120 * time.Second,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		}
	}
	return s, nil
}

// buildHTTP assembles the HTTP handler: gateway, extra handlers and probes.
func (s *Server) buildHTTP(ctx context.Context) (http.Handler, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeProbe(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := s.ready.get(); err != nil {
			writeProbe(w, http.StatusServiceUnavailable, "not ready")
			return
		}
		writeProbe(w, http.StatusOK, "ok")
	})
	for pattern, h := range s.cfg.HTTPHandlers {
		mux.Handle(pattern, h)
	}
	if s.cfg.Gateway != nil {
		s.gwLis = newMemListener()
		s.closers.push("gateway listener", func(context.Context) error { return s.gwLis.Close() })
		creds := insecure.NewCredentials()
		if s.cfg.TLS != nil {
			if s.cfg.GatewayTLS == nil {
				return nil, errors.New("server: GatewayTLS is required with TLS and a gateway")
			}
			if len(s.cfg.GatewayTLS.Certificates) > 0 || s.cfg.GatewayTLS.GetClientCertificate != nil {
				return nil, errors.New("server: GatewayTLS must not carry a client certificate")
			}
			creds = credentials.NewTLS(s.cfg.GatewayTLS)
		}
		conn, err := grpc.NewClient("passthrough:///gateway",
			grpc.WithContextDialer(s.gwLis.dial),
			grpc.WithTransportCredentials(creds),
		)
		if err != nil {
			return nil, fmt.Errorf("gateway connection: %w", err)
		}
		s.closers.push("gateway connection", func(context.Context) error { return conn.Close() })
		gw := runtime.NewServeMux(s.cfg.GatewayOptions...)
		if err := s.cfg.Gateway(ctx, gw, conn); err != nil {
			return nil, fmt.Errorf("register gateway: %w", err)
		}
		mux.Handle("/", gw)
	}
	var h http.Handler = mux
	if s.cfg.WrapHTTP != nil {
		h = s.cfg.WrapHTTP(h)
	}
	return h, nil
}

// GRPCAddr is the address gRPC listens on (useful with port 0).
func (s *Server) GRPCAddr() net.Addr { return s.grpcAddr }

// HTTPAddr is the address HTTP listens on, or nil without HTTP.
func (s *Server) HTTPAddr() net.Addr { return s.httpAddr }

// Health exposes the health server, e.g. for tests.
func (s *Server) Health() *health.Server { return s.health }

// Run serves until ctx is done or a listener fails, then shuts down. It
// returns nil after a clean shutdown caused by ctx.
func (s *Server) Run(ctx context.Context) error {
	ran := false
	s.runOnce.Do(func() { ran = true })
	if !ran {
		return errors.New("server: Run called twice")
	}
	serveErr := make(chan error, 3)
	var wg sync.WaitGroup
	serve := func(name string, fn func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(); err != nil {
				serveErr <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	serve("gRPC server", func() error { return ignoreServerClosed(s.grpc.Serve(s.grpcLis)) })
	if s.gwLis != nil {
		serve("gateway server", func() error { return ignoreServerClosed(s.grpc.Serve(s.gwLis)) })
	}
	if s.http != nil {
		serve("HTTP server", func() error { return ignoreServerClosed(s.http.Serve(s.httpLis)) })
	}
	s.log.Info("serving", "grpc", s.grpcAddr.String(), "http", addrString(s.httpAddr))

	readyCtx, stopReady := context.WithCancel(ctx)
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.watchReadiness(readyCtx)
	}()

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-serveErr:
		s.log.Error("serving failed, shutting down", "error", runErr)
	}
	stopReady()
	shutdownErr := s.shutdown()
	wg.Wait()
	return errors.Join(runErr, shutdownErr)
}

// shutdown takes health down first, waits DrainDelay, stops gRPC and HTTP
// gracefully within ShutdownTimeout, then forcibly, and closes the rest.
func (s *Server) shutdown() error {
	s.health.Shutdown() // every service NOT_SERVING, future updates ignored
	_ = s.ready.set(errors.New("shutting down"))
	if s.cfg.DrainDelay > 0 {
		time.Sleep(s.cfg.DrainDelay)
	}
	// Long-lived streams never end by themselves; left open they would hold
	// GracefulStop until its deadline on every shutdown.
	s.stopStreams()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()

	var errs []error
	var httpErr error
	var wg sync.WaitGroup
	if s.http != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.http.Shutdown(ctx); err != nil {
				httpErr = fmt.Errorf("HTTP shutdown: %w", err)
				_ = s.http.Close()
			}
		}()
	}
	stopped := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-ctx.Done():
		// Stop closes every connection and cancels every RPC context. It does
		// not wait for handlers that ignore their context (GracefulStop does,
		// which is why it cannot be the bound): such a handler is abandoned.
		s.log.Warn("graceful stop timed out, stopping hard", "timeout", s.cfg.ShutdownTimeout)
		s.grpc.Stop()
	}
	wg.Wait()
	if httpErr != nil {
		errs = append(errs, httpErr)
	}
	if err := s.closers.close(ctx); err != nil {
		errs = append(errs, err)
	}
	s.log.Info("stopped")
	return errors.Join(errs...)
}

// endStreamsOnDrain gives every stream a context that also ends when
// shutdown begins, and turns that ending into UNAVAILABLE (retry elsewhere).
func (s *Server) endStreamsOnDrain(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	stop := context.AfterFunc(s.draining, cancel)
	defer stop()
	err := handler(srv, &drainingStream{ServerStream: ss, ctx: ctx})
	if s.draining.Err() != nil && ss.Context().Err() == nil {
		return status.Error(codes.Unavailable, "server shutting down; reconnect to another replica")
	}
	return err
}

type drainingStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (d *drainingStream) Context() context.Context { return d.ctx }

// watchReadiness runs the checks now and every ReadyInterval, and flips
// health between SERVING and NOT_SERVING.
func (s *Server) watchReadiness(ctx context.Context) {
	t := time.NewTicker(s.cfg.ReadyInterval)
	defer t.Stop()
	for {
		err := s.check(ctx)
		if ctx.Err() != nil {
			return
		}
		prev := s.ready.set(err)
		st := healthpb.HealthCheckResponse_SERVING
		if err != nil {
			st = healthpb.HealthCheckResponse_NOT_SERVING
		}
		s.health.SetServingStatus("", st)
		s.health.SetServingStatus(s.cfg.Name, st)
		if (prev == nil) != (err == nil) || !s.ready.seen {
			s.ready.seen = true
			if err != nil {
				s.log.Warn("not ready", "error", err)
			} else {
				s.log.Info("ready")
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Server) check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ReadyInterval)
	defer cancel()
	for _, c := range s.cfg.Ready {
		if err := c(ctx); err != nil {
			return err
		}
	}
	return nil
}

// readiness is the latest readiness result, shared with /readyz.
type readiness struct {
	mu   sync.Mutex
	err  error
	init bool
	seen bool
}

func (r *readiness) set(err error) (prev error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	prev = r.err
	if !r.init {
		prev = errors.New("not checked")
	}
	r.err, r.init = err, true
	return prev
}

func (r *readiness) get() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.init {
		return errors.New("not checked yet")
	}
	return r.err
}

func listen(ctx context.Context, what, addr string) (net.Listener, error) {
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		if errors.Is(err, syscallEADDRINUSE) {
			return nil, fmt.Errorf("%s address %s is already in use (is another mcpid running? choose another port): %w", what, addr, err)
		}
		return nil, fmt.Errorf("listen %s on %s: %w", what, addr, err)
	}
	return l, nil
}

func writeProbe(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body + "\n"))
}

func ignoreClosed(err error) error {
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

func ignoreServerClosed(err error) error {
	if err == nil || errors.Is(err, http.ErrServerClosed) || errors.Is(err, grpc.ErrServerStopped) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, errListenerClosed) {
		return nil
	}
	return err
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
