package service_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/mcpid/mcpid/lib/config"
	"github.com/mcpid/mcpid/lib/devca"
	"github.com/mcpid/mcpid/lib/etcdauth"
	"github.com/mcpid/mcpid/lib/etcdtest"
	"github.com/mcpid/mcpid/lib/principal"
	"github.com/mcpid/mcpid/lib/service"
	"github.com/mcpid/mcpid/lib/service/servicetest"
)

const echoMethod = "/svc.Echo/Say"

// echo is a one-method service that records the serial number of each
// caller's client certificate.
type echo struct {
	mu      sync.Mutex
	serials []*big.Int
}

func (e *echo) last() *big.Int {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.serials) == 0 {
		return nil
	}
	return e.serials[len(e.serials)-1]
}

func (e *echo) register(s *grpc.Server) {
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: "svc.Echo",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Say",
			Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
				in := new(emptypb.Empty)
				if err := dec(in); err != nil {
					return nil, err
				}
				h := func(ctx context.Context, _ any) (any, error) {
					if p, ok := peer.FromContext(ctx); ok {
						if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
							e.mu.Lock()
							e.serials = append(e.serials, ti.State.PeerCertificates[0].SerialNumber)
							e.mu.Unlock()
						}
					}
					return &emptypb.Empty{}, nil
				}
				if interceptor == nil {
					return h(ctx, in)
				}
				return interceptor(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: echoMethod}, h)
			},
		}},
	}, struct{}{})
}

// startAudit runs a TLS service named audit whose one method only the
// registration service may call.
func startAudit(t *testing.T, pki *servicetest.PKI, etcd *etcdtest.Server) (*service.Server, *echo, service.Flags) {
	t.Helper()
	e := &echo{}
	flags := pki.ServeTLS(t, devca.ServiceAudit, servicetest.Flags(etcd.Endpoints()))
	srv, err := service.New(context.Background(), service.Spec{
		Name:       devca.ServiceAudit,
		Flags:      flags,
		GatewayTLS: pki.GatewayTLS(devca.ServiceAudit),
		Methods:    principal.Policy{echoMethod: principal.Rule{Services: []string{devca.ServiceRegistration}}},
		Setup: func(context.Context, *service.Base) (*service.Setup, error) {
			return &service.Setup{Register: e.register}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	servicetest.Run(t, srv)
	servicetest.WaitReady(t, srv, devca.ServiceAudit)
	return srv, e, flags
}

// openAs opens the Base of service name with its own certificate, as the
// service binary would, to call other services through Base.Dial.
func openAs(t *testing.T, pki *servicetest.PKI, etcd *etcdtest.Server, name string) (*service.Base, service.Flags) {
	t.Helper()
	flags := pki.ServeTLS(t, name, servicetest.Flags(etcd.Endpoints()))
	b, err := service.Open(context.Background(), name, flags, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	return b, flags
}

func call(t *testing.T, b *service.Base, addr string) error {
	t.Helper()
	conn, err := b.Dial(addr, devca.ServiceAudit)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return conn.Invoke(ctx, echoMethod, &emptypb.Empty{}, &emptypb.Empty{})
}

// TestServiceRefusedMethodOutsideItsIdentity: over real mTLS, a service
// whose certificate names it "token" is refused a method the allowlist
// grants only to "registration"; registration itself is served.
func TestServiceRefusedMethodOutsideItsIdentity(t *testing.T) {
	pki := servicetest.NewPKI(t)
	etcd := etcdtest.Start(t)
	srv, e, _ := startAudit(t, pki, etcd)
	addr := srv.GRPCAddr().String()

	token, _ := openAs(t, pki, etcd, devca.ServiceToken)
	if err := call(t, token, addr); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("token calling a registration-only method: %v, want PermissionDenied", err)
	}
	if e.last() != nil {
		t.Fatal("the handler ran for a refused caller")
	}
	reg, _ := openAs(t, pki, etcd, devca.ServiceRegistration)
	if err := call(t, reg, addr); err != nil {
		t.Fatalf("registration: %v", err)
	}
	// A certificate from another CA does not even complete the handshake.
	other := servicetest.NewPKI(t)
	stranger, _ := openAs(t, other, etcd, devca.ServiceRegistration)
	if err := call(t, stranger, addr); status.Code(err) != codes.Unavailable {
		t.Fatalf("certificate of a foreign CA: %v, want the handshake to fail", err)
	}
}

// renew issues a new certificate for name and writes it over the old files,
// as cert-manager or a renewal script would, with a later mtime.
func renew(t *testing.T, pki *servicetest.PKI, flags service.Flags, name string) *big.Int {
	t.Helper()
	leaf, err := pki.CA.IssueService(name)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(flags.TLSCertFile)
	if err := leaf.Save(dir, name); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Hour)
	for _, p := range []string{flags.TLSCertFile, flags.TLSKeyFile.Path} {
		if err := os.Chtimes(p, later, later); err != nil {
			t.Fatal(err)
		}
	}
	return leaf.Certificate.SerialNumber
}

func servedSerial(t *testing.T, pki *servicetest.PKI, addr string) *big.Int {
	t.Helper()
	cfg := devca.ClientTLSConfig(pki.CA.Pool(), nil, devca.ServiceAudit)
	cfg.NextProtos = []string{"h2"}
	d := tls.Dialer{Config: cfg}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber
}

// TestRenewedCertificatesUsedWithoutRestart: the server presents, and a
// calling service sends, the certificate written to disk after start-up.
func TestRenewedCertificatesUsedWithoutRestart(t *testing.T) {
	pki := servicetest.NewPKI(t)
	etcd := etcdtest.Start(t)
	srv, e, srvFlags := startAudit(t, pki, etcd)
	addr := srv.GRPCAddr().String()

	before := servedSerial(t, pki, addr)
	want := renew(t, pki, srvFlags, devca.ServiceAudit)
	if before.Cmp(want) == 0 {
		t.Fatal("renewal issued the same serial")
	}
	if got := servedSerial(t, pki, addr); got.Cmp(want) != 0 {
		t.Fatalf("served serial %v after renewal, want %v", got, want)
	}

	reg, regFlags := openAs(t, pki, etcd, devca.ServiceRegistration)
	if err := call(t, reg, addr); err != nil {
		t.Fatal(err)
	}
	first := e.last()
	wantClient := renew(t, pki, regFlags, devca.ServiceRegistration)
	if err := call(t, reg, addr); err != nil { // a new connection, a new handshake
		t.Fatal(err)
	}
	if got := e.last(); got.Cmp(wantClient) != 0 || got.Cmp(first) == 0 {
		t.Fatalf("client certificate serial %v after renewal, want %v", got, wantClient)
	}

	// A half-written renewal (key of another certificate) keeps the
	// previous, still valid material instead of failing handshakes.
	stray, err := pki.CA.IssueService(devca.ServiceAudit)
	if err != nil {
		t.Fatal(err)
	}
	key, err := stray.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(srvFlags.TLSKeyFile.Path, key, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := servedSerial(t, pki, addr); got.Cmp(want) != 0 {
		t.Fatalf("mismatched key file: served %v, want the previous %v", got, want)
	}
}

// TestRenewedCABundleVerifiesPeers: a calling service verifies the peer
// against the CA bundle on disk now, not the one read at start-up.
func TestRenewedCABundleVerifiesPeers(t *testing.T) {
	pki := servicetest.NewPKI(t)
	etcd := etcdtest.Start(t)
	srv, _, _ := startAudit(t, pki, etcd)
	reg, regFlags := openAs(t, pki, etcd, devca.ServiceRegistration)
	// Replace the caller's CA bundle with an unrelated CA: the audit
	// server no longer verifies.
	other := servicetest.NewPKI(t)
	if err := os.WriteFile(regFlags.TLSCAFile, other.CA.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(regFlags.TLSCAFile, later, later); err != nil {
		t.Fatal(err)
	}
	err := call(t, reg, srv.GRPCAddr().String())
	var uerr x509.UnknownAuthorityError
	if status.Code(err) != codes.Unavailable && !errors.As(err, &uerr) {
		t.Fatalf("peer verified against a replaced CA bundle: %v", err)
	}
}

// TestServiceUsesItsEtcdUser: with etcd auth on (lib/etcdauth), a service
// logged in as its own user becomes ready (its readiness key is in its
// prefix); another service's user cannot read that key.
func TestServiceUsesItsEtcdUser(t *testing.T) {
	etcd := etcdtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pw := map[string]string{}
	for _, s := range etcdauth.Services {
		pw[s] = "pw-" + s
	}
	if err := etcdauth.Setup(ctx, etcd.Client(t), etcdauth.Config{RootPassword: "root", Passwords: pw}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	flags := servicetest.Flags(etcd.Endpoints())
	flags.EtcdUsername = etcdauth.UserName("policy")
	flags.EtcdPasswordFile = config.SecretFile{Path: write("policy", "pw-policy")}
	srv, err := service.New(ctx, service.Spec{Name: "policy", Flags: flags, Methods: principal.Policy{}})
	if err != nil {
		t.Fatal(err)
	}
	servicetest.Run(t, srv)
	servicetest.WaitReady(t, srv, "policy")

	flags.EtcdUsername = etcdauth.UserName("token")
	flags.EtcdPasswordFile = config.SecretFile{Path: write("token", "pw-token")}
	b, err := service.Open(ctx, "token", flags, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	if err := service.EtcdCheckKey(b.Etcd, service.HealthKey("policy"))(ctx); err == nil {
		t.Fatal("token's etcd user read policy's readiness key")
	}
	if err := service.EtcdCheckKey(b.Etcd, service.HealthKey("token"))(ctx); err != nil {
		t.Fatalf("token's own readiness key: %v", err)
	}
}
