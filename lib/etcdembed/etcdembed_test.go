package etcdembed_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/mcpid/mcpid/lib/etcdembed"
)

func start(t *testing.T, cfg etcdembed.Config) *etcdembed.Server {
	t.Helper()
	cfg.UnsafeNoFsync = true
	s, err := etcdembed.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func client(t *testing.T, s *etcdembed.Server) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: s.Endpoints(), DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRestartOnSameDataDirKeepsData(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	s1 := start(t, etcdembed.Config{DataDir: dir})
	c1 := client(t, s1)
	if _, err := c1.Put(ctx, "survives", "yes"); err != nil {
		t.Fatal(err)
	}
	c1.Close()
	s1.Close()
	s1.Close() // idempotent

	s2 := start(t, etcdembed.Config{DataDir: dir})
	defer s2.Close()
	c2 := client(t, s2)
	defer c2.Close()
	resp, err := c2.Get(ctx, "survives")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "yes" {
		t.Fatalf("after restart Get = %v", resp.Kvs)
	}
}

func TestTakenPortIsAClearError(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = etcdembed.Start(context.Background(), etcdembed.Config{
		DataDir:    t.TempDir(),
		ClientAddr: l.Addr().String(),
	})
	if err == nil {
		t.Fatal("Start on a taken port succeeded")
	}
	if !strings.Contains(err.Error(), l.Addr().String()) || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("error %q should name the address and the cause", err)
	}
}

func TestConfigErrorsNameTheSetting(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  etcdembed.Config
		want string
	}{
		{"no data dir", etcdembed.Config{}, "DataDir"},
		{"bad client addr", etcdembed.Config{DataDir: t.TempDir(), ClientAddr: "nonsense"}, "ClientAddr"},
		{"bad peer addr", etcdembed.Config{DataDir: t.TempDir(), PeerAddr: "127.0.0.1"}, "PeerAddr"},
		{"bad compaction", etcdembed.Config{DataDir: t.TempDir(), AutoCompactionMode: "sometimes"}, "sometimes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := etcdembed.Start(context.Background(), tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want mention of %q", err, tc.want)
			}
		})
	}
}

func TestCancelledContextStopsStart(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := etcdembed.Start(ctx, etcdembed.Config{DataDir: t.TempDir(), UnsafeNoFsync: true})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestLogsGoToSlogAtTheChosenLevel(t *testing.T) {
	var buf syncBuffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := start(t, etcdembed.Config{DataDir: t.TempDir(), Logger: logger, LogLevel: slog.LevelInfo})
	s.Close()
	out := buf.String()
	if !strings.Contains(out, `"msg":"closing etcd server"`) {
		t.Fatalf("etcd info logs missing from slog output:\n%.2000s", out)
	}
	if strings.Contains(out, `"level":"DEBUG"`) {
		t.Fatal("debug entries passed although LogLevel is info")
	}

	buf = syncBuffer{}
	quiet := slog.New(slog.NewJSONHandler(&buf, nil))
	s = start(t, etcdembed.Config{DataDir: t.TempDir(), Logger: quiet}) // default: warn and above
	s.Close()
	if strings.Contains(buf.String(), `"level":"INFO"`) {
		t.Fatalf("info entries passed at the default level:\n%.2000s", buf.String())
	}
}

func TestAutoCompactionIsApplied(t *testing.T) {
	s := start(t, etcdembed.Config{
		DataDir:                 t.TempDir(),
		AutoCompactionMode:      etcdembed.CompactionPeriodic,
		AutoCompactionRetention: "1s",
	})
	defer s.Close()
	c := client(t, s)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	first, err := c.Put(ctx, "k", "1")
	if err != nil {
		t.Fatal(err)
	}
	// The compactor runs on its own schedule (every 1s here): poll, bounded.
	for i := 0; ; i++ {
		if _, err := c.Put(ctx, "k", "again"); err != nil {
			t.Fatal(err)
		}
		_, err := c.Get(ctx, "k", clientv3.WithRev(first.Header.Revision))
		if errors.Is(err, rpctypes.ErrCompacted) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if i == 600 {
			t.Fatal("history never auto-compacted")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
