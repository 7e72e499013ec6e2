// Package etcdembed runs a single-member etcd server inside the current
// process, for `mcpid dev` and for tests (through package etcdtest).
//
// It is the only package that links go.etcd.io/etcd/server; services talk to
// etcd through the client only, so importing etcdembed anywhere but cmd/mcpid
// and test helpers would put a database server into a service binary.
package etcdembed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"sync"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Compaction modes, as etcd names them.
const (
	// CompactionPeriodic keeps history for a duration (Retention "1h").
	CompactionPeriodic = "periodic"
	// CompactionRevision keeps a number of revisions (Retention "1000").
	CompactionRevision = "revision"
)

// DefaultStartTimeout bounds how long Start waits for the server to become
// ready when Config.StartTimeout is zero.
const DefaultStartTimeout = 30 * time.Second

// Config describes the server to start. The zero value, with DataDir set, is a
// server on loopback with kernel-chosen ports and no auto-compaction.
type Config struct {
	// DataDir holds the member's WAL and database. Required. Reusing a
	// directory restarts the same member with its data.
	DataDir string
	// ClientAddr is the host:port the client (gRPC) listener binds; default
	// "127.0.0.1:0". With port 0 the kernel picks the port: read it back
	// with Server.Endpoints.
	ClientAddr string
	// PeerAddr is the host:port of the raft peer listener; default
	// "127.0.0.1:0". A single member never dials it, but etcd requires one.
	PeerAddr string
	// AutoCompactionMode is CompactionPeriodic (default) or CompactionRevision.
	AutoCompactionMode string
	// AutoCompactionRetention is "" or "0" for no auto-compaction, a duration
	// ("1h") in periodic mode, or a revision count ("1000") in revision mode.
	AutoCompactionRetention string
	// QuotaBackendBytes caps the database size (0: etcd's default, 2 GiB).
	// Writes beyond it fail with "etcdserver: mvcc: database space exceeded".
	QuotaBackendBytes int64
	// UnsafeNoFsync skips fsync: faster, and loses data on a machine crash.
	// For tests and throwaway (ephemeral) development data only.
	UnsafeNoFsync bool
	// Logger receives etcd's logs; nil discards them.
	Logger *slog.Logger
	// LogLevel is the least severe etcd log level passed to Logger; nil means
	// slog.LevelWarn, since etcd is chatty at info.
	LogLevel slog.Leveler
	// StartTimeout bounds the wait for readiness; 0 means DefaultStartTimeout.
	StartTimeout time.Duration
}

// Server is a running embedded etcd member.
type Server struct {
	etcd      *embed.Etcd
	endpoints []string
	peerAddr  string
	closeOnce sync.Once
}

// Start starts the server and waits until it serves clients, the start
// timeout expires, or ctx ends. On any failure nothing is left running.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	ecfg, err := embedConfig(cfg)
	if err != nil {
		return nil, err
	}
	e, err := embed.StartEtcd(ecfg)
	if err != nil {
		// The usual cause is a taken port; etcd's message names it.
		return nil, fmt.Errorf("etcdembed: start etcd (client %s, peer %s, data %s): %w",
			ecfg.ListenClientUrls[0].Host, ecfg.ListenPeerUrls[0].Host, cfg.DataDir, err)
	}
	s := &Server{etcd: e}
	for _, l := range e.Clients {
		s.endpoints = append(s.endpoints, endpointOf(l.Addr()))
	}
	if len(e.Peers) > 0 {
		s.peerAddr = e.Peers[0].Addr().String()
	}

	timeout := cfg.StartTimeout
	if timeout <= 0 {
		timeout = DefaultStartTimeout
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
		return s, nil
	case err := <-e.Err():
		s.Close()
		if err == nil {
			err = errors.New("server stopped")
		}
		return nil, fmt.Errorf("etcdembed: etcd failed while starting: %w", err)
	case <-timer.C:
		s.Close()
		return nil, fmt.Errorf("etcdembed: etcd not ready after %v", timeout)
	case <-ctx.Done():
		s.Close()
		return nil, fmt.Errorf("etcdembed: waiting for etcd: %w", ctx.Err())
	}
}

func embedConfig(cfg Config) (*embed.Config, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("etcdembed: Config.DataDir is required")
	}
	// etcd insists on 0700 for a data directory it did not create itself.
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("etcdembed: data dir: %w", err)
	}
	clientURL, err := listenURL("ClientAddr", cfg.ClientAddr)
	if err != nil {
		return nil, err
	}
	peerURL, err := listenURL("PeerAddr", cfg.PeerAddr)
	if err != nil {
		return nil, err
	}

	ec := embed.NewConfig()
	ec.Name = "mcpid"
	ec.Dir = cfg.DataDir
	ec.ListenClientUrls = []url.URL{clientURL}
	ec.AdvertiseClientUrls = []url.URL{clientURL}
	ec.ListenPeerUrls = []url.URL{peerURL}
	// With port 0 the advertised peer URL says :0. That is harmless for a
	// single member (nobody dials it) and stays the same across restarts,
	// so a reused data dir always matches its membership record.
	ec.AdvertisePeerUrls = []url.URL{peerURL}
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	ec.EnableGRPCGateway = false
	ec.UnsafeNoFsync = cfg.UnsafeNoFsync
	if cfg.QuotaBackendBytes > 0 {
		ec.QuotaBackendBytes = cfg.QuotaBackendBytes
	}
	ec.AutoCompactionMode = CompactionPeriodic
	if cfg.AutoCompactionMode != "" {
		ec.AutoCompactionMode = cfg.AutoCompactionMode
	}
	ec.AutoCompactionRetention = cfg.AutoCompactionRetention

	var level slog.Leveler = slog.LevelWarn
	if cfg.LogLevel != nil {
		level = cfg.LogLevel
	}
	lg := zap.NewNop()
	if cfg.Logger != nil {
		lg = zap.New(newSlogCore(cfg.Logger.Handler(), level))
	}
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg)
	return ec, nil
}

func listenURL(setting, addr string) (url.URL, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return url.URL{}, fmt.Errorf("etcdembed: Config.%s %q: %w", setting, addr, err)
	}
	return url.URL{Scheme: "http", Host: addr}, nil
}

// endpointOf turns a listener address into a client endpoint; an unspecified
// bind address (0.0.0.0, ::) is reached through loopback.
func endpointOf(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return "http://" + a.String()
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		if ip.To4() != nil {
			host = "127.0.0.1"
		} else {
			host = "::1"
		}
	}
	return "http://" + net.JoinHostPort(host, port)
}

// Endpoints returns the client URLs ("http://127.0.0.1:PORT") with the real,
// kernel-chosen ports.
func (s *Server) Endpoints() []string {
	return append([]string(nil), s.endpoints...)
}

// PeerAddr returns the bound address of the peer listener.
func (s *Server) PeerAddr() string { return s.peerAddr }

// Err reports a fatal error of a running server; it is closed once the
// server has stopped.
func (s *Server) Err() <-chan error { return s.etcd.Err() }

// Close stops the server and waits until it has released its listeners and
// data directory. Clients should be closed first: open watch streams hold a
// graceful shutdown until etcd's request timeout. Close is idempotent.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.etcd.Close()
		if s.etcd.Server != nil {
			<-s.etcd.Server.StopNotify()
		}
	})
}
