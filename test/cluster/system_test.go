package cluster

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/mcpid/mcpid/lib/devca"
	"github.com/mcpid/mcpid/lib/edgerouter"
	"github.com/mcpid/mcpid/lib/service"
)

const (
	demoUser     = "demo"
	demoPassword = "cluster-harness-password"
	// resource is the MCP server the load asks tokens for; no traffic goes
	// to it (policy checks are made by the harness as that server).
	resource = "https://crm.cluster.test/mcp"
)

var services = []string{"audit", "policy", "registration", "token"}

// system is the running cluster.
type system struct {
	dir      string
	issuer   string
	etcd     []*proc
	etcdURLs []string
	// replicas[service] are the two replicas; grpc/http their addresses.
	replicas map[string][]*proc
	grpc     map[string][]string
	http     map[string][]string
	ca       *devca.CA
	operator tls.Certificate
	mcp      tls.Certificate
	etcdCli  *clientv3.Client
}

func startSystem(t *testing.T) *system {
	t.Helper()
	dir := t.TempDir()
	s := &system{dir: dir, replicas: map[string][]*proc{}, grpc: map[string][]string{}, http: map[string][]string{}}

	// Ports: 3 etcd members × 2, 4 services × 2 replicas × 2, the edge.
	ports := freePorts(t, 6+16+1)
	next := func() string { p := ports[0]; ports = ports[1:]; return p }

	// etcd: three members, each its own process.
	names := []string{"m1", "m2", "m3"}
	var clientAddrs, peerAddrs []string
	cluster := ""
	for i, n := range names {
		clientAddrs = append(clientAddrs, next())
		peerAddrs = append(peerAddrs, next())
		if i > 0 {
			cluster += ","
		}
		cluster += n + "=http://" + peerAddrs[i]
	}
	etcdBin := binPath(t, "etcdmember")
	for i, n := range names {
		s.etcd = append(s.etcd, startProc(t, dir, "etcd-"+n, etcdBin,
			"-name", n, "-data-dir", filepath.Join(dir, "etcd-"+n),
			"-client-addr", clientAddrs[i], "-peer-addr", peerAddrs[i], "-initial-cluster", cluster))
		s.etcdURLs = append(s.etcdURLs, "http://"+clientAddrs[i])
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: s.etcdURLs, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	s.etcdCli = cli
	t.Cleanup(func() { _ = s.etcdCli.Close() })
	if !waitFor(t.Context(), 60*time.Second, func() bool { _, err := s.leader(t.Context()); return err == nil }) {
		t.Fatal("etcd cluster elected no leader within 60s")
	}

	// mTLS material from the development CA, written to the temp folder.
	pki := filepath.Join(dir, "pki")
	if s.ca, err = devca.LoadOrCreate(filepath.Join(dir, "ca"), time.Now); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(pki, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pki, "ca.crt"), s.ca.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, name := range services {
		leaf, err := s.ca.IssueService(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := leaf.Save(pki, name); err != nil {
			t.Fatal(err)
		}
	}
	op, err := s.ca.IssueOperator("harness", devca.RoleAdmin)
	if err != nil {
		t.Fatal(err)
	}
	s.operator = op.TLSCertificate()
	mcp, err := s.ca.IssueMCPServer(resource)
	if err != nil {
		t.Fatal(err)
	}
	s.mcp = mcp.TLSCertificate()

	// Shared secrets of the replicas: the token KEK and the audit
	// checkpoint key are the same for both replicas of a service.
	kek := make([]byte, 32)
	_, _ = rand.Read(kek)
	writeSecret(t, filepath.Join(dir, "kek"), "1:"+base64.StdEncoding.EncodeToString(kek)+"\n")
	writeSecret(t, filepath.Join(dir, "demo-password"), demoPassword+"\n")

	for _, name := range services {
		for range 2 {
			s.grpc[name] = append(s.grpc[name], next())
			s.http[name] = append(s.http[name], next())
		}
	}
	edge := next()
	s.issuer = "http://" + edge

	// Start order: audit first (everyone sends it events), the first audit
	// replica alone (it creates the checkpoint key the second one reads).
	for _, name := range services {
		for i := range 2 {
			args := s.serviceArgs(name, i, pki)
			p := startProc(t, dir, fmt.Sprintf("%s-%d", name, i+1), binPath(t, "mcpid-"+name), args...)
			s.replicas[name] = append(s.replicas[name], p)
			if name == "audit" && i == 0 {
				waitHTTPReady(t, p, s.http[name][0], 60*time.Second)
			}
		}
	}
	for _, name := range services {
		for i, p := range s.replicas[name] {
			waitHTTPReady(t, p, s.http[name][i], 60*time.Second)
		}
	}

	// The edge router on the public origin.
	var lc net.ListenConfig
	lis, err := lc.Listen(t.Context(), "tcp", edge)
	if err != nil {
		t.Fatal(err)
	}
	// No readiness function: /readyz on the edge is a token replica's.
	router, err := edgerouter.New(s.http["registration"], s.http["token"], nil)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: router, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(lis) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(ctx)
	})
	return s
}

func writeSecret(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// serviceArgs are the flags of replica i of a service: every etcd member,
// the peers as lists of both replicas' addresses, mTLS from the dev CA.
func (s *system) serviceArgs(name string, i int, pki string) []string {
	args := []string{
		"--grpc-addr", s.grpc[name][i],
		"--http-addr", s.http[name][i],
		"--etcd-endpoints", joinAddrs(s.etcdURLs...),
		"--tls-cert-file", filepath.Join(pki, name+".crt"),
		"--tls-key-file", filepath.Join(pki, name+".key"),
		"--tls-ca-file", filepath.Join(pki, "ca.crt"),
		"--issuer", s.issuer,
		"--log-level", "warn",
		"--shutdown-timeout", "5s",
	}
	if name != "audit" {
		args = append(args, "--audit-addr", joinAddrs(s.grpc["audit"]...))
	}
	switch name {
	case "audit":
		args = append(args,
			"--checkpoint-key-file", filepath.Join(s.dir, "checkpoint-key.jwk"),
			"--checkpoint-interval", "5s",
			"--registration-addr", joinAddrs(s.grpc["registration"]...),
			"--token-addr", joinAddrs(s.grpc["token"]...))
		if i == 0 {
			args = append(args, "--checkpoint-key-create")
		}
	case "policy":
		args = append(args, "--token-addr", joinAddrs(s.grpc["token"]...))
	case "registration":
		args = append(args,
			"--token-addr", joinAddrs(s.grpc["token"]...),
			"--trusted-proxy-cidrs", "127.0.0.1/32",
			"--dcr-rate-per-minute", "-1",
			"--dcr-duplicate-limit", "-1")
	case "token":
		args = append(args,
			"--kek-file", filepath.Join(s.dir, "kek"),
			"--registration-addr", joinAddrs(s.grpc["registration"]...),
			"--policy-addr", joinAddrs(s.grpc["policy"]...),
			"--trusted-proxy-cidrs", "127.0.0.1/32",
			"--seed-user", demoUser,
			"--seed-password-file", filepath.Join(s.dir, "demo-password"),
			"--login-rate-per-minute", "-1",
			"--login-account-rate-per-minute", "-1",
			"--login-lockout-threshold", "-1")
	}
	return args
}

// leader returns the index of the etcd leader, asking each live member's
// maintenance Status.
func (s *system) leader(ctx context.Context) (int, error) {
	for i, u := range s.etcdURLs {
		if s.etcd[i].exited() || isDone(s.etcd[i]) {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := s.etcdCli.Status(sctx, u)
		cancel()
		if err != nil {
			continue
		}
		if st.Leader == 0 {
			continue
		}
		if st.Header.GetMemberId() == st.Leader {
			return i, nil
		}
	}
	return -1, fmt.Errorf("no member reports itself leader")
}

func isDone(p *proc) bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// dial connects the harness to every replica of a service with the same
// balancing, health checking and retry rules the services use
// (service.ServiceConfigJSON), presenting cert.
func (s *system) dial(t *testing.T, name string, cert tls.Certificate) *grpc.ClientConn {
	t.Helper()
	r := manual.NewBuilderWithScheme("harness")
	var addrs []resolver.Address
	for _, a := range s.grpc[name] {
		addrs = append(addrs, resolver.Address{Addr: a})
	}
	r.InitialState(resolver.State{Addresses: addrs})
	conn, err := grpc.NewClient("harness:///"+name,
		grpc.WithResolvers(r),
		grpc.WithDefaultServiceConfig(service.ServiceConfigJSON()),
		grpc.WithTransportCredentials(credentials.NewTLS(devca.ClientTLSConfig(s.ca.Pool(), &cert, name))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}
