// Package dev is `mcpid dev`: the whole system in one process on one
// machine — embedded etcd (the real etcd server, data in a local folder,
// auto-compaction on), a development CA issuing each service its mTLS
// certificate, every service, and the edge router serving the issuer's OAuth
// surface on one public origin.
package dev

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/mcpid/mcpid/cmd/mcpid/internal/cliconfig"
	"github.com/mcpid/mcpid/cmd/mcpid/internal/etcdsetup"
	"github.com/mcpid/mcpid/lib/config"
	"github.com/mcpid/mcpid/lib/devca"
	"github.com/mcpid/mcpid/lib/edgerouter"
	"github.com/mcpid/mcpid/lib/etcdauth"
	"github.com/mcpid/mcpid/lib/etcdembed"
	"github.com/mcpid/mcpid/lib/service"
	auditserver "github.com/mcpid/mcpid/services/audit/server"
	policyserver "github.com/mcpid/mcpid/services/policy/server"
	registrationserver "github.com/mcpid/mcpid/services/registration/server"
	tokenserver "github.com/mcpid/mcpid/services/token/server"
)

// Options are the settings of `mcpid dev`.
type Options struct {
	Addr            string
	Issuer          string
	DataDir         string
	Ephemeral       bool
	EtcdAddr        string
	LogLevel        string
	ShutdownTimeout time.Duration
	// CRMAddr is where the example CRM MCP server listens ("" or "off":
	// not started).
	CRMAddr string
	// ConnectorsFile seeds SSO connectors (token service --connectors-file).
	ConnectorsFile string
	// NoPasswordLogin turns the built-in password form off.
	NoPasswordLogin bool
	// EtcdAuth turns etcd access control on (lib/etcdauth): each service
	// connects as its own etcd user, allowed only its /mcpid/<service>/
	// prefix, as in production. Once on for a data folder it stays on.
	EtcdAuth bool
}

func (o *Options) register(fs *flag.FlagSet) {
	fs.StringVar(&o.Addr, "addr", "127.0.0.1:8080", "public origin listen address (the issuer's OAuth surface)")
	fs.StringVar(&o.Issuer, "issuer", "", "issuer URL (default http://<addr>)")
	fs.StringVar(&o.DataDir, "data-dir", ".mcpid", "folder for etcd data and the development CA")
	fs.BoolVar(&o.Ephemeral, "ephemeral", false, "keep nothing: use a temporary folder, removed on exit")
	fs.StringVar(&o.EtcdAddr, "etcd-addr", "127.0.0.1:2379", "embedded etcd client listen address")
	fs.StringVar(&o.LogLevel, "log-level", "warn", "service log level: debug, info, warn, error")
	fs.DurationVar(&o.ShutdownTimeout, "shutdown-timeout", 10*time.Second, "bound on graceful shutdown")
	fs.StringVar(&o.CRMAddr, "crm-addr", "127.0.0.1:8090", `listen address of the example CRM MCP server ("off": do not start it)`)
	fs.StringVar(&o.ConnectorsFile, "connectors-file", "", "YAML file of SSO connectors to create at start-up (docs/sso.md)")
	fs.BoolVar(&o.NoPasswordLogin, "no-password-login", false, "turn the built-in password sign-in off (SSO connectors only)")
	fs.BoolVar(&o.EtcdAuth, "etcd-auth", false, "per-service etcd users, each allowed only its own key prefix (as in production; stays on for the data folder)")
}

// Main parses the dev flags and runs until ctx ends.
func Main(ctx context.Context, args, environ []string, stdout, stderr io.Writer) error {
	var o Options
	fs := flag.NewFlagSet("mcpid dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.String(config.ConfigFlag, "", "optional YAML file of settings")
	o.register(fs)
	if _, err := config.Load(fs, args, environ); err != nil {
		return err
	}
	env, err := Start(ctx, o, stderr)
	if err != nil {
		return err
	}
	// The quick-start's commands must work the moment they are printed:
	// wait until every service is ready (keys created, caches filled).
	if err := env.WaitReady(ctx, readyTimeout); err != nil {
		_ = env.Stop()
		return err
	}
	env.PrintQuickStart(stdout)
	return env.Wait()
}

// readyTimeout bounds how long `mcpid dev` waits for the services to
// become ready before giving up with what is not ready.
const readyTimeout = 2 * time.Minute

// WaitReady polls the public origin's /readyz (every service ready) until
// it answers 200, the environment stops, or timeout passes.
func (e *Env) WaitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hc := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.Issuer+"/readyz", nil)
		if err != nil {
			return err
		}
		if resp, err := hc.Do(req); err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("HTTP %d %s", resp.StatusCode, strings.TrimSpace(string(b)))
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("mcpid dev did not become ready within %s (%s/readyz: %s); run with --log-level info to see why", timeout, e.Issuer, last)
		case <-e.done:
			return fmt.Errorf("mcpid dev stopped before it was ready: %w", e.Wait())
		case <-tick.C:
		}
	}
}

// Env is a running development environment.
type Env struct {
	Issuer string
	Public net.Addr
	Etcd   []string
	// EtcdUsers is the folder of the per-service etcd passwords when etcd
	// access control is on (--etcd-auth), else "".
	EtcdUsers string
	DataDir   string
	// CLIConfig is the CLI configuration file written for this
	// environment (context "dev", bootstrap admin certificate).
	CLIConfig string
	// MCPServers are the example MCP servers running in this environment
	// (the CRM example, examples/crm), shown in the quick-start.
	MCPServers []MCPServer
	Services   map[string]ServiceAddrs
	// DemoPassword is the demo user's password (development only).
	DemoPassword string

	cancel   context.CancelFunc
	done     chan struct{}
	err      error
	cleanups []func()
}

// MCPServer is an example MCP server of the dev environment.
type MCPServer struct {
	Name string // e.g. "CRM"
	URL  string // the MCP endpoint, the resource URI clients use
}

// ServiceAddrs are a service's listen addresses.
type ServiceAddrs struct {
	GRPC, HTTP net.Addr
}

type runnable interface {
	Run(ctx context.Context) error
	GRPCAddr() net.Addr
	HTTPAddr() net.Addr
}

// Start brings everything up and returns once the public origin listens.
// Failures name what failed; whatever started is stopped again.
func Start(ctx context.Context, o Options, logOut io.Writer) (_ *Env, err error) {
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = 10 * time.Second
	}
	env := &Env{Services: map[string]ServiceAddrs{}, done: make(chan struct{})}
	defer func() {
		if err != nil {
			env.cleanup()
		}
	}()

	dataDir := o.DataDir
	if o.Ephemeral {
		dataDir, err = os.MkdirTemp("", "mcpid-dev-")
		if err != nil {
			return nil, fmt.Errorf("ephemeral data folder: %w", err)
		}
		env.cleanups = append(env.cleanups, func() { _ = os.RemoveAll(dataDir) })
	}
	if dataDir, err = filepath.Abs(dataDir); err != nil {
		return nil, fmt.Errorf("setting data-dir: %w", err)
	}
	env.DataDir = dataDir
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("setting data-dir: %w", err)
	}

	// The public origin first: a taken port is the most common failure, and
	// it should be reported before anything else starts.
	var lc net.ListenConfig
	publicLis, err := lc.Listen(ctx, "tcp", o.Addr)
	if err != nil {
		return nil, fmt.Errorf("setting addr: cannot listen on %s (is another mcpid dev running? choose another with --addr): %w", o.Addr, err)
	}
	env.cleanups = append(env.cleanups, func() { _ = publicLis.Close() })
	env.Public = publicLis.Addr()
	env.Issuer = o.Issuer
	if env.Issuer == "" {
		env.Issuer = "http://" + env.Public.String()
	}

	etcd, err := etcdembed.Start(ctx, etcdembed.Config{
		DataDir:                 filepath.Join(dataDir, "etcd"),
		ClientAddr:              o.EtcdAddr,
		AutoCompactionMode:      etcdembed.CompactionPeriodic,
		AutoCompactionRetention: "1h",
		UnsafeNoFsync:           o.Ephemeral,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded etcd on %s (setting etcd-addr): %w", o.EtcdAddr, err)
	}
	env.cleanups = append(env.cleanups, etcd.Close)
	env.Etcd = etcd.Endpoints()

	etcdUsers, err := setupEtcdAuth(ctx, o.EtcdAuth, dataDir, env.Etcd)
	if err != nil {
		return nil, err
	}
	env.EtcdUsers = etcdUsers

	ca, err := devca.LoadOrCreate(filepath.Join(dataDir, "ca"), time.Now)
	if err != nil {
		return nil, fmt.Errorf("development CA: %w", err)
	}
	pkiDir := filepath.Join(dataDir, "pki")

	runCtx, cancel := context.WithCancel(context.Background())
	env.cancel = cancel
	type started struct {
		name string
		srv  runnable
	}
	var services []started
	// gRPC ports are chosen up front: services name each other (audit asks
	// registration and token for its inventory; everyone sends events to
	// audit) before all of them have started.
	demoPassword, demoPasswordFile, err := demoCredentials(dataDir)
	if err != nil {
		return nil, err
	}
	env.DemoPassword = demoPassword
	plan := devPlan{dataDir: dataDir, issuer: env.Issuer, demoPasswordFile: demoPasswordFile, grpc: map[string]string{},
		connectorsFile: o.ConnectorsFile, noPasswordLogin: o.NoPasswordLogin}
	order := []string{auditserver.Name, policyserver.Name, registrationserver.Name, tokenserver.Name}
	for _, name := range order {
		addr, err := freeLoopbackAddr(ctx)
		if err != nil {
			return nil, fmt.Errorf("choosing a port for %s: %w", name, err)
		}
		plan.grpc[name] = addr
	}
	for _, name := range order {
		leaf, err := ca.IssueService(name)
		if err != nil {
			return nil, fmt.Errorf("certificate for %s: %w", name, err)
		}
		if err := leaf.Save(pkiDir, name); err != nil {
			return nil, fmt.Errorf("certificate for %s: %w", name, err)
		}
		if err := os.WriteFile(filepath.Join(pkiDir, "ca.crt"), ca.CertPEM(), 0o644); err != nil {
			return nil, fmt.Errorf("CA bundle: %w", err)
		}
		flags := service.Flags{
			GRPCAddr:        plan.grpc[name],
			HTTPAddr:        "127.0.0.1:0",
			EtcdEndpoints:   config.StringList(env.Etcd),
			EtcdDialTimeout: 5 * time.Second,
			LogLevel:        o.LogLevel,
			ShutdownTimeout: o.ShutdownTimeout,
			TLSCertFile:     filepath.Join(pkiDir, name+".crt"),
			TLSKeyFile:      config.SecretFile{Path: filepath.Join(pkiDir, name+".key")},
			TLSCAFile:       filepath.Join(pkiDir, "ca.crt"),
			AuditAddr:       plan.grpc[auditserver.Name],
		}
		if etcdUsers != "" {
			flags.EtcdUsername = etcdauth.UserName(name)
			flags.EtcdPasswordFile = config.SecretFile{Path: filepath.Join(etcdUsers, name)}
		}
		gatewayTLS := devca.ClientTLSConfig(ca.Pool(), nil, name)
		srv, err := plan.complete(ctx, name, flags, gatewayTLS, logOut)
		if err != nil {
			return nil, fmt.Errorf("%s service: %w", name, err)
		}
		services = append(services, started{name, srv})
		env.Services[name] = ServiceAddrs{GRPC: srv.GRPCAddr(), HTTP: srv.HTTPAddr()}
	}

	// Run the services. They stop newest first, each after the ones started
	// after it have stopped — audit, started first, stops last so the
	// others can still hand it their final events — and all before etcd.
	var mu sync.Mutex
	var runErrs []error
	type running struct {
		stop context.CancelFunc
		done chan struct{}
	}
	var runs []running
	for _, s := range services {
		// Not derived from runCtx: Stop cancels runCtx, and the services
		// must then stop one by one (cleanup), not all at once.
		sctx, stop := context.WithCancel(context.Background())
		r := running{stop: stop, done: make(chan struct{})}
		runs = append(runs, r)
		go func() {
			defer close(r.done)
			if err := s.srv.Run(sctx); err != nil {
				mu.Lock()
				runErrs = append(runErrs, fmt.Errorf("%s: %w", s.name, err))
				mu.Unlock()
			}
		}()
	}
	env.cleanups = append(env.cleanups, func() {
		for i := len(runs) - 1; i >= 0; i-- {
			runs[i].stop()
			<-runs[i].done
		}
		cancel()
	})

	// The example CRM MCP server, stopped before the services it calls.
	if o.CRMAddr != "" && o.CRMAddr != "off" {
		crmLis, err := lc.Listen(ctx, "tcp", o.CRMAddr)
		if err != nil {
			return nil, fmt.Errorf("setting crm-addr: cannot listen on %s (choose another with --crm-addr, or off): %w", o.CRMAddr, err)
		}
		crmURL, stopCRM, err := startCRM(ctx, crmLis, ca, env.Issuer, plan.grpc[policyserver.Name], plan.grpc[tokenserver.Name], logOut)
		if err != nil {
			_ = crmLis.Close()
			return nil, err
		}
		env.cleanups = append(env.cleanups, stopCRM)
		env.MCPServers = append(env.MCPServers, MCPServer{Name: "CRM", URL: crmURL})
	}

	if err := writeCLIContext(env, ca, pkiDir); err != nil {
		return nil, err
	}

	httpClient := &http.Client{Timeout: 2 * time.Second}
	readyURL := func(name string) string { return "http://" + env.Services[name].HTTP.String() }
	router, err := edgerouter.New(
		[]string{env.Services[registrationserver.Name].HTTP.String()},
		[]string{env.Services[tokenserver.Name].HTTP.String()},
		func(ctx context.Context) error {
			var errs []error
			for _, s := range services {
				if err := checkReady(ctx, httpClient, s.name, readyURL(s.name)); err != nil {
					errs = append(errs, err)
				}
			}
			return errors.Join(errs...)
		})
	if err != nil {
		return nil, err
	}
	public := &http.Server{Handler: router, ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- public.Serve(publicLis) }()
	env.cleanups = append(env.cleanups, func() {
		sctx, scancel := context.WithTimeout(context.Background(), o.ShutdownTimeout)
		defer scancel()
		_ = public.Shutdown(sctx)
	})

	go func() {
		defer close(env.done)
		select {
		case <-ctx.Done():
		case <-runCtx.Done():
		case err := <-serveErr:
			if !errors.Is(err, http.ErrServerClosed) {
				mu.Lock()
				runErrs = append(runErrs, fmt.Errorf("public origin: %w", err))
				mu.Unlock()
			}
		case err := <-etcd.Err():
			mu.Lock()
			runErrs = append(runErrs, fmt.Errorf("embedded etcd: %w", err))
			mu.Unlock()
		}
		env.cleanup()
		mu.Lock()
		env.err = errors.Join(runErrs...)
		mu.Unlock()
	}()
	return env, nil
}

// devPlan is what the services of one dev environment need to know about
// each other and the data folder.
type devPlan struct {
	dataDir          string
	issuer           string
	demoPasswordFile string
	grpc             map[string]string // service name → gRPC address
	connectorsFile   string
	noPasswordLogin  bool
}

// complete builds one service's configuration for development.
func (p devPlan) complete(ctx context.Context, name string, f service.Flags, tlsCfg *tls.Config, logOut io.Writer) (runnable, error) {
	switch name {
	case auditserver.Name:
		return auditserver.Config{
			Flags: f, GatewayTLS: tlsCfg, LogOutput: logOut,
			Issuer:              p.issuer,
			CheckpointKeyFile:   config.SecretFile{Path: filepath.Join(p.dataDir, "audit", "checkpoint-key.jwk")},
			CheckpointKeyCreate: true,
			ArchiveDir:          filepath.Join(p.dataDir, "audit", "archive"),
			RegistrationAddr:    p.grpc[registrationserver.Name],
			TokenAddr:           p.grpc[tokenserver.Name],
		}.Complete(ctx)
	case policyserver.Name:
		return policyserver.Config{
			Flags: f, GatewayTLS: tlsCfg, LogOutput: logOut,
			Issuer:    p.issuer,
			TokenAddr: p.grpc[tokenserver.Name],
		}.Complete(ctx)
	case registrationserver.Name:
		return registrationserver.Config{
			Flags: f, GatewayTLS: tlsCfg, LogOutput: logOut,
			Issuer:    p.issuer,
			TokenAddr: p.grpc[tokenserver.Name],
			// The edge router forwards from loopback: its X-Forwarded-For
			// entry is the client's real address.
			TrustedProxies: config.StringList{"127.0.0.1/32", "::1/128"},
		}.Complete(ctx)
	case tokenserver.Name:
		kekPath := filepath.Join(p.dataDir, "token", "kek")
		if err := os.MkdirAll(filepath.Dir(kekPath), 0o700); err != nil {
			return nil, err
		}
		if err := tokenserver.WriteKEKFile(kekPath); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("development key-encryption key: %w", err)
		}
		return tokenserver.Config{
			Flags: f, GatewayTLS: tlsCfg, LogOutput: logOut,
			Issuer:           p.issuer,
			KEKFile:          config.SecretFile{Path: kekPath},
			RegistrationAddr: p.grpc[registrationserver.Name],
			PolicyAddr:       p.grpc[policyserver.Name],
			TrustedProxies:   config.StringList{"127.0.0.1/32", "::1/128"},
			SeedUser:         DemoUser,
			SeedPasswordFile: config.SecretFile{Path: p.demoPasswordFile},
			ConnectorsFile:   config.SecretFile{Path: p.connectorsFile},
			NoPasswordLogin:  p.noPasswordLogin,
		}.Complete(ctx)
	}
	return nil, fmt.Errorf("unknown service %q", name)
}

// freeLoopbackAddr asks the kernel for a free loopback port. Another
// process could take it before the service binds it; the service then
// fails with a message naming the address, and a restart picks anew.
func freeLoopbackAddr(ctx context.Context) (string, error) {
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	return addr, l.Close()
}

// cleanup runs the cleanups newest first, once.
func (e *Env) cleanup() {
	for i := len(e.cleanups) - 1; i >= 0; i-- {
		e.cleanups[i]()
	}
	e.cleanups = nil
}

// Stop shuts everything down and waits.
func (e *Env) Stop() error {
	if e.cancel != nil {
		e.cancel()
	}
	return e.Wait()
}

// Wait blocks until the environment stops (ctx of Start ended, or a part
// failed) and returns why, nil for a clean stop.
func (e *Env) Wait() error {
	<-e.done
	return e.err
}

// PrintQuickStart tells a newcomer what runs where and what to try first.
// docs/getting-started.md follows this text: change both together.
func (e *Env) PrintQuickStart(w io.Writer) {
	var b strings.Builder
	cli := "./bin/mcpid"
	cfgNote := ""
	if rel, err := filepath.Rel(mustGetwd(), e.CLIConfig); err != nil || rel != filepath.Join(".mcpid", cliconfig.DevFileName) {
		cfgNote = fmt.Sprintf("  export MCPID_CONFIG=%s   # the CLI finds it alone only when run from the folder of .mcpid\n", e.CLIConfig)
	}
	fmt.Fprintf(&b, "\nmcpid dev is running\n\n")
	fmt.Fprintf(&b, "  issuer (public origin)   %s\n", e.Issuer)
	fmt.Fprintf(&b, "  metadata                 %s/.well-known/oauth-authorization-server\n", e.Issuer)
	fmt.Fprintf(&b, "  readiness                %s/readyz\n", e.Issuer)
	fmt.Fprintf(&b, "  etcd                     %s\n", strings.Join(e.Etcd, ","))
	if e.EtcdUsers != "" {
		fmt.Fprintf(&b, "  etcd users               mcpid-<service>, each only /mcpid/<service>/ (passwords in %s)\n", e.EtcdUsers)
	}
	for _, name := range []string{registrationserver.Name, tokenserver.Name, policyserver.Name, auditserver.Name} {
		a := e.Services[name]
		fmt.Fprintf(&b, "  %-24s gRPC %s (mTLS)   HTTP %s\n", name, a.GRPC, a.HTTP)
	}
	fmt.Fprintf(&b, "  data and development CA  %s\n", e.DataDir)
	fmt.Fprintf(&b, "  demo user                %s / %s (operator role admin)\n", DemoUser, e.DemoPassword)
	fmt.Fprintf(&b, "  CLI configuration        %s (context dev, bootstrap admin certificate)\n\n", e.CLIConfig)

	fmt.Fprintf(&b, "Try it, in another terminal in this folder:\n")
	b.WriteString(cfgNote)
	fmt.Fprintf(&b, "  %s clients list                 # the OAuth clients (agents)\n", cli)
	fmt.Fprintf(&b, "  %s audit tail -f                # watch the audit trail live\n", cli)
	fmt.Fprintf(&b, "  %s login                        # sign in as %s in the browser (operator token)\n\n", cli, DemoUser)

	for _, s := range e.MCPServers {
		fmt.Fprintf(&b, "MCP server %s: %s\n", s.Name, s.URL)
		fmt.Fprintf(&b, "  MCP Inspector:  npx @modelcontextprotocol/inspector, transport Streamable HTTP, URL %s\n", s.URL)
		fmt.Fprintf(&b, "  Claude Code:    claude mcp add --transport http %s %s\n", strings.ToLower(s.Name), s.URL)
		fmt.Fprintf(&b, "  The client registers itself, sends you to %s to sign in as %s, and asks your consent.\n\n", e.Issuer, DemoUser)
	}
	fmt.Fprintf(&b, "Press Ctrl-C to stop.\n")
	_, _ = io.WriteString(w, b.String())
}

func mustGetwd() string {
	wd, err := os.Getwd()
	if err != nil {
		return "."
	}
	return wd
}

// BootstrapOperator is the name in the bootstrap operator certificate that
// `mcpid dev` issues for the CLI (role admin).
const BootstrapOperator = "bootstrap"

// writeCLIContext issues the bootstrap operator certificate (dev CA, role
// admin) and writes the "dev" context of <data>/cli.yaml, keeping a token
// that `mcpid login` stored there before.
func writeCLIContext(env *Env, ca *devca.CA, pkiDir string) error {
	leaf, err := ca.IssueOperator(BootstrapOperator, devca.RoleAdmin)
	if err != nil {
		return fmt.Errorf("bootstrap operator certificate: %w", err)
	}
	base := "operator-" + BootstrapOperator
	if err := leaf.Save(pkiDir, base); err != nil {
		return fmt.Errorf("bootstrap operator certificate: %w", err)
	}
	env.CLIConfig = filepath.Join(env.DataDir, cliconfig.DevFileName)
	err = cliconfig.Update(env.CLIConfig, func(f *cliconfig.File) error {
		c, ok := f.Contexts[cliconfig.DevContext]
		if !ok {
			c = &cliconfig.Context{}
			f.Contexts[cliconfig.DevContext] = c
		}
		if c.Issuer != env.Issuer {
			c.Login = nil // a token of another issuer is useless here
		}
		c.Issuer = env.Issuer
		c.Registration = env.Services[registrationserver.Name].GRPC.String()
		c.Token = env.Services[tokenserver.Name].GRPC.String()
		c.Policy = env.Services[policyserver.Name].GRPC.String()
		c.Audit = env.Services[auditserver.Name].GRPC.String()
		c.CAFile = filepath.Join(pkiDir, "ca.crt")
		c.CertFile = filepath.Join(pkiDir, base+".crt")
		c.KeyFile = filepath.Join(pkiDir, base+".key")
		if f.CurrentContext == "" {
			f.CurrentContext = cliconfig.DevContext
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("CLI configuration: %w", err)
	}
	return nil
}

// DemoUser is the built-in user `mcpid dev` seeds.
const DemoUser = "demo"

// demoCredentials returns the demo user's password, generated once and kept
// (0600) in the data folder so it survives restarts.
func demoCredentials(dataDir string) (password, path string, err error) {
	path = filepath.Join(dataDir, "demo-password")
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), path, nil
	}
	raw := make([]byte, 12)
	if _, err := rand.Read(raw); err != nil {
		return "", "", err
	}
	password = base64.RawURLEncoding.EncodeToString(raw) // 16 characters
	if err := os.WriteFile(path, []byte(password+"\n"), 0o600); err != nil {
		return "", "", fmt.Errorf("demo password: %w", err)
	}
	return password, path, nil
}

// checkReady asks a service's /readyz.
func checkReady(ctx context.Context, client *http.Client, name, base string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return errors.New(name + " unreachable")
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errors.New(name + " not ready")
	}
	return nil
}

// EtcdAuthDir is the folder of the data folder holding the etcd passwords
// of --etcd-auth: "root" and one file per service, 0600.
const EtcdAuthDir = "etcd-users"

// setupEtcdAuth turns etcd access control on when asked, or when an earlier
// run turned it on for this data folder (the services could not connect
// anonymously any more). It returns the password folder, "" when off.
func setupEtcdAuth(ctx context.Context, on bool, dataDir string, endpoints []string) (string, error) {
	dir := filepath.Join(dataDir, EtcdAuthDir)
	root := filepath.Join(dir, etcdauth.RootUser)
	if !on {
		if _, err := os.Stat(root); err != nil {
			return "", nil //nolint:nilerr // never turned on: nothing to do
		}
	}
	err := etcdsetup.Run(ctx, etcdsetup.Options{
		Endpoints: endpoints, RootPasswordFile: root, PasswordDir: dir, Generate: true,
		Services: etcdauth.Services, Timeout: 30 * time.Second,
	}, io.Discard)
	if err != nil {
		return "", fmt.Errorf("setting etcd-auth: %w", err)
	}
	return dir, nil
}
