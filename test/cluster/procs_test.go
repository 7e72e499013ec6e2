package cluster

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// proc is one child process of the harness (an etcd member or a service
// replica). Its output goes to a log file in the test's temporary folder,
// printed when the test fails.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	mu   sync.Mutex
	err  error
	// killed is set when the harness killed it on purpose.
	killed bool
}

func startProc(t *testing.T, dir, name, bin string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	out, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...) //nolint:gosec // the harness runs the binaries it built
	cmd.Stdout, cmd.Stderr = out, out
	// MCPID_* variables are settings to a service: the harness's own
	// (MCPID_BIN) must not reach the children.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MCPID_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		_ = out.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.done)
	}()
	t.Cleanup(func() { p.stop(t) })
	return p
}

// kill sends SIGKILL: no graceful shutdown, no goodbye to etcd or peers.
func (p *proc) kill() {
	p.mu.Lock()
	p.killed = true
	p.mu.Unlock()
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// exited reports whether the process ended by itself.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		p.mu.Lock()
		defer p.mu.Unlock()
		return !p.killed
	default:
		return false
	}
}

// stop ends the process with SIGTERM, then SIGKILL after a bound, and shows
// its log when the test failed.
func (p *proc) stop(t *testing.T) {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Signal(syscall.SIGKILL)
			<-p.done
		}
	}
	if t.Failed() {
		b, _ := os.ReadFile(p.log)
		if len(b) > 4000 {
			b = b[len(b)-4000:]
		}
		t.Logf("--- %s log (tail) ---\n%s", p.name, bytes.TrimSpace(b))
	}
}

// freePorts reserves n loopback ports: all listeners are held until every
// port is chosen, so the n are distinct. Another process could still take
// one before its user binds it; the start-up then fails naming the port.
func freePorts(t *testing.T, n int) []string {
	t.Helper()
	var lc net.ListenConfig
	var ls []net.Listener
	var addrs []string
	for range n {
		l, err := lc.Listen(t.Context(), "tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		addrs = append(addrs, l.Addr().String())
	}
	for _, l := range ls {
		_ = l.Close()
	}
	return addrs
}

// waitHTTPReady polls a replica's /readyz until it answers 200.
func waitHTTPReady(t *testing.T, p *proc, httpAddr string, within time.Duration) {
	t.Helper()
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(within)
	for {
		if p.exited() {
			t.Fatalf("%s exited while starting", p.name)
		}
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+httpAddr+"/readyz", nil)
		resp, err := client.Do(req)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready at %s after %v (last: %v)", p.name, httpAddr, within, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func waitFor(ctx context.Context, within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
	return true
}

func binPath(t *testing.T, name string) string {
	t.Helper()
	dir := os.Getenv("MCPID_BIN")
	if dir == "" {
		t.Fatal("MCPID_BIN is not set: run the harness with `make test-cluster`, which builds the binaries into bin/")
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("binary %s: %v (run `make test-cluster`)", p, err)
	}
	return p
}

func joinAddrs(addrs ...string) string { return strings.Join(addrs, ",") }
