// Package service is the bootstrap every mcpid service binary shares: the
// common settings (listen addresses, etcd, logging, telemetry, TLS), opening
// what they name, and a server.Config with the cross-cutting interceptors
// and probes already in place. A service adds its own settings and
// registrations on top.
package service

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/lib/apierr"
	"github.com/mcpid/mcpid/lib/auditemit"
	"github.com/mcpid/mcpid/lib/config"
	"github.com/mcpid/mcpid/lib/server"
	"github.com/mcpid/mcpid/lib/telemetry"
)

// Flags are the settings every service has.
type Flags struct {
	GRPCAddr        string
	HTTPAddr        string
	EtcdEndpoints   config.StringList
	EtcdDialTimeout time.Duration
	LogLevel        string
	OTLPEndpoint    string
	OTLPInsecure    bool
	ShutdownTimeout time.Duration
	DrainDelay      time.Duration
	TLSCertFile     string
	TLSKeyFile      config.SecretFile
	TLSCAFile       string
	AuditAddr       string
	// Etcd access control and transport security (production: see
	// lib/etcdauth for the per-service users and roles).
	EtcdUsername     string
	EtcdPasswordFile config.SecretFile
	EtcdCAFile       string
	EtcdCertFile     string
	EtcdKeyFile      config.SecretFile
}

// Defaults are per-service default listen addresses.
type Defaults struct {
	GRPCAddr string
	HTTPAddr string
}

// Register defines the common flags on fs.
func (f *Flags) Register(fs *flag.FlagSet, d Defaults) {
	fs.String(config.ConfigFlag, "", "optional YAML file of settings (flag names as keys)")
	fs.StringVar(&f.GRPCAddr, "grpc-addr", d.GRPCAddr, "gRPC listen address")
	fs.StringVar(&f.HTTPAddr, "http-addr", d.HTTPAddr, "HTTP listen address (REST gateway, probes, /metrics); empty disables")
	fs.Var(&f.EtcdEndpoints, "etcd-endpoints", "etcd client URLs, comma-separated (default http://127.0.0.1:2379)")
	fs.DurationVar(&f.EtcdDialTimeout, "etcd-dial-timeout", 5*time.Second, "etcd connection timeout")
	fs.StringVar(&f.LogLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&f.OTLPEndpoint, "otlp-endpoint", "", "OTLP/gRPC trace collector host:port; empty disables export")
	fs.BoolVar(&f.OTLPInsecure, "otlp-insecure", false, "connect to the OTLP collector without TLS")
	fs.DurationVar(&f.ShutdownTimeout, "shutdown-timeout", 10*time.Second, "bound on graceful shutdown before a hard stop")
	fs.DurationVar(&f.DrainDelay, "drain-delay", 0, "time health reports NOT_SERVING before connections close")
	fs.StringVar(&f.TLSCertFile, "tls-cert-file", "", "gRPC server certificate (PEM); with tls-key-file enables mTLS")
	fs.Var(&f.TLSKeyFile, "tls-key-file", "gRPC server private key file (PEM)")
	fs.StringVar(&f.TLSCAFile, "tls-ca-file", "", "CA bundle (PEM) that peer certificates must chain to (clients of this service, and services it calls)")
	fs.StringVar(&f.AuditAddr, "audit-addr", "", "audit service gRPC address; empty keeps events in this service's outbox until it is set")
	fs.StringVar(&f.EtcdUsername, "etcd-username", "", "etcd user (mcpid-<service>, created by `mcpid etcd-setup`); empty: no etcd authentication")
	fs.Var(&f.EtcdPasswordFile, "etcd-password-file", "file holding the etcd user's password")
	fs.StringVar(&f.EtcdCAFile, "etcd-ca-file", "", "CA bundle (PEM) etcd's server certificate must chain to; set it to reach etcd over TLS")
	fs.StringVar(&f.EtcdCertFile, "etcd-cert-file", "", "client certificate (PEM) presented to etcd, when etcd requires one")
	fs.Var(&f.EtcdKeyFile, "etcd-key-file", "private key file (PEM) of etcd-cert-file")
}

// Validate checks the settings; errors name the setting.
func (f *Flags) Validate() error {
	if len(f.EtcdEndpoints) == 0 {
		f.EtcdEndpoints = config.StringList{"http://127.0.0.1:2379"}
	}
	if f.GRPCAddr == "" {
		return errors.New("setting grpc-addr: must not be empty")
	}
	if f.EtcdDialTimeout <= 0 {
		return errors.New("setting etcd-dial-timeout: must be positive")
	}
	if f.ShutdownTimeout <= 0 {
		return errors.New("setting shutdown-timeout: must be positive")
	}
	if (f.TLSCertFile == "") != (f.TLSKeyFile.Path == "") {
		return errors.New("settings tls-cert-file and tls-key-file: give both or neither")
	}
	if f.TLSCAFile != "" && f.TLSCertFile == "" {
		return errors.New("setting tls-ca-file: needs tls-cert-file and tls-key-file")
	}
	if (f.EtcdUsername == "") != (f.EtcdPasswordFile.Path == "") {
		return errors.New("settings etcd-username and etcd-password-file: give both or neither")
	}
	if (f.EtcdCertFile == "") != (f.EtcdKeyFile.Path == "") {
		return errors.New("settings etcd-cert-file and etcd-key-file: give both or neither")
	}
	if f.EtcdCertFile != "" && f.EtcdCAFile == "" {
		return errors.New("setting etcd-cert-file: needs etcd-ca-file (client certificates only make sense over TLS)")
	}
	return nil
}

// Base is what a service opens before its own wiring.
type Base struct {
	Name      string
	Logger    *slog.Logger
	Telemetry *telemetry.Telemetry
	Etcd      *clientv3.Client
	TLS       *tls.Config
	// Outbox adds state-change audit events to the caller's etcd transaction.
	Outbox *auditemit.Outbox
	// Audit is the audit service client, nil unless audit-addr is set.
	Audit auditv1.AuditServiceClient
	flags Flags
	tls   *tlsMaterial // nil without TLS settings
	conns []*grpc.ClientConn
}

// Open builds the logger and telemetry and connects to etcd. On error it
// closes what it opened.
func Open(ctx context.Context, name string, f Flags, logOut io.Writer) (_ *Base, err error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	logger, err := telemetry.NewLogger(logOut, f.LogLevel)
	if err != nil {
		return nil, fmt.Errorf("setting log-level: %w", err)
	}
	b := &Base{Name: name, Logger: logger.With("service", name), flags: f}
	defer func() {
		if err != nil {
			_ = b.Close(context.Background())
		}
	}()
	b.Telemetry, err = telemetry.New(ctx, telemetry.Config{
		ServiceName:  "mcpid-" + name,
		OTLPEndpoint: f.OTLPEndpoint,
		OTLPInsecure: f.OTLPInsecure,
	})
	if err != nil {
		return nil, fmt.Errorf("setting otlp-endpoint: %w", err)
	}
	if f.TLSCertFile != "" {
		if b.tls, err = loadTLS(f); err != nil {
			return nil, err
		}
		b.TLS = b.tls.serverConfig()
	}
	// The client connects lazily; readiness (etcd answering) is what the
	// server's health reflects, so a slow etcd does not stop start-up.
	etcdCfg, err := etcdConfig(ctx, f)
	if err != nil {
		return nil, err
	}
	b.Etcd, err = clientv3.New(etcdCfg)
	if err != nil {
		return nil, fmt.Errorf("setting etcd-endpoints: %w", err)
	}
	if err := b.openAudit(); err != nil {
		return nil, err
	}
	return b, nil
}

// Close releases what Open opened, newest first.
func (b *Base) Close(ctx context.Context) error {
	var errs []error
	for i := len(b.conns) - 1; i >= 0; i-- {
		errs = append(errs, b.conns[i].Close())
	}
	b.conns = nil
	if b.Etcd != nil {
		errs = append(errs, b.Etcd.Close())
	}
	if b.Telemetry != nil {
		errs = append(errs, b.Telemetry.Shutdown(ctx))
	}
	return errors.Join(errs...)
}

// ServerConfig returns the service's server.Config with the common parts
// filled in: addresses, TLS, logging, telemetry, the error mapping
// interceptor (innermost, so it sees exactly what handlers return), the etcd
// readiness check and /metrics. extraUnary run outside the error mapping
// (authentication, for example).
func (b *Base) ServerConfig(extraUnary []grpc.UnaryServerInterceptor, extraStream []grpc.StreamServerInterceptor) server.Config {
	unary := append(append([]grpc.UnaryServerInterceptor(nil), extraUnary...), apierr.UnaryServerInterceptor(b.Logger))
	stream := append(append([]grpc.StreamServerInterceptor(nil), extraStream...), apierr.StreamServerInterceptor(b.Logger))
	return server.Config{
		Name:            b.Name,
		GRPCAddr:        b.flags.GRPCAddr,
		HTTPAddr:        b.flags.HTTPAddr,
		TLS:             b.TLS,
		Logger:          b.Logger,
		ShutdownTimeout: b.flags.ShutdownTimeout,
		DrainDelay:      b.flags.DrainDelay,
		ServerOptions: []grpc.ServerOption{
			b.Telemetry.GRPCServerOption(),
			grpc.ChainUnaryInterceptor(unary...),
			grpc.ChainStreamInterceptor(stream...),
		},
		Ready:        []server.Check{EtcdCheckKey(b.Etcd, HealthKey(b.Name))},
		HTTPHandlers: map[string]http.Handler{"GET /metrics": b.Telemetry.MetricsHandler()},
		WrapHTTP: func(h http.Handler) http.Handler {
			return b.Telemetry.HTTPHandler(h, "mcpid-"+b.Name)
		},
	}
}

// EtcdCheck is EtcdCheckKey on "/mcpid/health", a key outside every
// service's prefix: with etcd auth on (lib/etcdauth) it is refused. Services
// use EtcdCheckKey with HealthKey.
func EtcdCheck(cli *clientv3.Client) server.Check {
	return EtcdCheckKey(cli, "/mcpid/health")
}

// HealthKey is the key service name's readiness check reads: inside its own
// prefix, so its etcd role allows it.
func HealthKey(name string) string { return "/mcpid/" + name + "/health" }

// EtcdCheckKey is ready when etcd answers a linearizable read of key, which
// needs a quorum: a member cut off from its cluster does not count as ready.
// A permission error (wrong etcd user) keeps the service unready too.
func EtcdCheckKey(cli *clientv3.Client, key string) server.Check {
	return func(ctx context.Context) error {
		if _, err := cli.Get(ctx, key, clientv3.WithCountOnly()); err != nil {
			return fmt.Errorf("etcd: %w", err)
		}
		return nil
	}
}

// Main is a service binary's main: it loads the settings that register
// defines (flags, MCPID_* environment, optional YAML), completes the service
// and runs it until SIGINT/SIGTERM. A failure is printed and exits with
// status 1 — the only place a service exits. No log.Fatal anywhere else.
func Main(name string, register func(*flag.FlagSet), complete func(ctx context.Context, logs io.Writer) (*Server, error)) {
	ctx, stop := signalContext()
	err := run(ctx, name, os.Args[1:], os.Environ(), os.Stdout, os.Stderr, register, complete)
	stop()
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, name string, args, environ []string, stdout, stderr io.Writer,
	register func(*flag.FlagSet), complete func(context.Context, io.Writer) (*Server, error),
) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	check := fs.Bool(SelfCheckFlag, false, "print uid, gid and the number of system CA certificates as JSON and exit; fails as root or without CA certificates")
	register(fs)
	unknown, err := config.Load(fs, args, environ)
	if err != nil {
		return err
	}
	if *check {
		return selfCheck(name, stdout)
	}
	srv, err := complete(ctx, stderr)
	if err != nil {
		return err
	}
	if len(unknown) > 0 {
		srv.base.Logger.Warn("unknown settings in the environment", "variables", strings.Join(unknown, ", "))
	}
	return srv.Run(ctx)
}
