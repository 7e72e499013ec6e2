// Package etcdtest starts a real, single-member etcd server inside a test, on
// loopback with kernel-chosen ports and a per-test data directory, and stops
// it when the test ends. Tests that need etcd call Start; they never skip for
// want of an external etcd.
package etcdtest

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/mcpid/mcpid/lib/etcdembed"
)

// Server is an embedded etcd started for one test.
type Server struct {
	srv *etcdembed.Server
}

type options struct {
	cfg etcdembed.Config
}

// Option adjusts the server Start launches.
type Option func(*options)

// WithAutoCompaction turns on auto-compaction (mode etcdembed.CompactionPeriodic
// or etcdembed.CompactionRevision, retention "1h" or "1000").
func WithAutoCompaction(mode, retention string) Option {
	return func(o *options) {
		o.cfg.AutoCompactionMode = mode
		o.cfg.AutoCompactionRetention = retention
	}
}

// WithQuota caps the backend size, to test "database space exceeded".
func WithQuota(bytes int64) Option {
	return func(o *options) { o.cfg.QuotaBackendBytes = bytes }
}

// WithLogger sends etcd's logs at level and above to l (discarded otherwise).
func WithLogger(l *slog.Logger, level slog.Leveler) Option {
	return func(o *options) {
		o.cfg.Logger = l
		o.cfg.LogLevel = level
	}
}

// startTimeout is generous: under -race on a loaded machine etcd's first
// election and backend open take seconds.
const startTimeout = 60 * time.Second

// Start starts etcd with its data in t.TempDir() and registers its shutdown
// with t.Cleanup. It fails the test if etcd does not become ready.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	o := options{cfg: etcdembed.Config{
		DataDir:       filepath.Join(t.TempDir(), "etcd"),
		ClientAddr:    "127.0.0.1:0",
		PeerAddr:      "127.0.0.1:0",
		UnsafeNoFsync: true, // the data dies with the test
		StartTimeout:  startTimeout,
	}}
	for _, opt := range opts {
		opt(&o)
	}
	srv, err := etcdembed.Start(context.Background(), o.cfg)
	if err != nil {
		t.Fatalf("etcdtest: %v", err)
	}
	// Registered before any Client, so it runs after the clients' cleanups
	// (LIFO): open watch streams would otherwise stall the shutdown.
	t.Cleanup(srv.Close)
	return &Server{srv: srv}
}

// Endpoints returns the server's client URLs.
func (s *Server) Endpoints() []string { return s.srv.Endpoints() }

// Client returns a new client connected to the server, closed when the test
// ends. Each call returns a separate connection.
func (s *Server) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	c := s.newClient(t)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func (s *Server) newClient(t testing.TB) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   s.srv.Endpoints(),
		DialTimeout: 10 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("etcdtest: client: %v", err)
	}
	return c
}

// Compact compacts the key history up to rev (0: the current revision) and
// waits until the compaction is physically applied, so that reading or
// watching from an older revision is answered with "compacted". It returns
// the revision compacted to.
func (s *Server) Compact(t testing.TB, rev int64) int64 {
	t.Helper()
	c := s.newClient(t)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if rev == 0 {
		// Any read's header carries the current revision.
		resp, err := c.Get(ctx, "\x00", clientv3.WithCountOnly())
		if err != nil {
			t.Fatalf("etcdtest: compact: read revision: %v", err)
		}
		rev = resp.Header.Revision
	}
	if _, err := c.Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
		t.Fatalf("etcdtest: compact to %d: %v", rev, err)
	}
	return rev
}
