// Package cli is the `mcpid` operator CLI: cobra commands that call the
// services' admin RPCs over gRPC (mTLS with a bootstrap operator certificate,
// or TLS with the token from `mcpid login`), configured by flags, MCPID_*
// variables and a configuration file with named contexts.
package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/mcpid/mcpid/cmd/mcpid/internal/etcdsetup"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/mcpid/mcpid/cmd/mcpid/internal/cliconfig"
	"github.com/mcpid/mcpid/cmd/mcpid/internal/output"
)

// Deps are the CLI's connections to the outside world, so that tests run
// every command in-process.
type Deps struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Environ        []string
	// Cwd and UserConfigDir locate the default configuration file.
	Cwd, UserConfigDir string
	// OpenBrowser opens a URL for `mcpid login`; nil only prints it.
	OpenBrowser func(ctx context.Context, url string) error
	// Dev runs `mcpid dev` with its own flags.
	Dev func(ctx context.Context, args, environ []string, stdout, stderr io.Writer) error
	Now func() time.Time
}

// Service names, as in flags and the configuration.
const (
	svcRegistration = "registration"
	svcToken        = "token"
	svcPolicy       = "policy"
	svcAudit        = "audit"
)

// app is one invocation: its resolved settings and open connections.
type app struct {
	d     Deps
	flags globalFlags
	cmd   *cobra.Command

	cfgPath string
	ctxName string
	cfg     *cliconfig.Context
	format  output.Format
	conns   map[string]*grpc.ClientConn
}

type globalFlags struct {
	config, context, output            string
	registration, token, policy, audit string
	caFile, certFile, keyFile, issuer  string
	timeout                            time.Duration
}

// Execute runs the CLI with args (without the program name) and returns
// the exit code. Errors are printed to Stderr.
func Execute(ctx context.Context, args []string, d Deps) int {
	if d.Now == nil {
		d.Now = time.Now
	}
	a := &app{d: d, conns: map[string]*grpc.ClientConn{}}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetIn(d.Stdin)
	root.SetOut(d.Stdout)
	root.SetErr(d.Stderr)
	err := root.ExecuteContext(ctx)
	a.close()
	if err != nil {
		fmt.Fprintln(d.Stderr, "error:", err)
	}
	return ExitCode(err)
}

func (a *app) close() {
	for _, c := range a.conns {
		_ = c.Close()
	}
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "mcpid",
		Short: "Identity control plane for MCP servers",
		Long: `mcpid is the identity control plane for MCP (Model Context Protocol) servers:
agents register as OAuth clients, users sign in and consent, agents get short-lived
tokens bound to one MCP server, every tool call is checked against policy, and
everything lands in a tamper-evident audit trail.

This command runs the whole system on one machine (mcpid dev) and operates it:
clients, users, policies, grants, signing keys, the audit trail, the agent
inventory and identity connectors, over the services' gRPC admin APIs.

Settings come from, in increasing precedence: the configuration file's current
context, MCPID_* environment variables (MCPID_AUDIT_ADDR for --audit-addr, ...),
and flags. The configuration file is --config, else MCPID_CONFIG, else
./.mcpid/cli.yaml when it exists (written by mcpid dev), else
~/.config/mcpid/config.yaml.

Exit codes: 0 success, 1 error, 2 usage or invalid input, 3 not found,
4 not authenticated or not allowed, 5 conflict, 6 service unavailable,
7 not implemented by the server, 8 negative answer (DENY, broken chain).`,
		Example: `  mcpid dev                      # run everything locally, then in another terminal:
  mcpid clients list
  mcpid audit tail -f
  mcpid login                    # sign in as an operator (browser, PKCE)`,
		SilenceUsage:      true,
		SilenceErrors:     true,
		PersistentPreRunE: a.setup,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&a.flags.config, "config", "", "configuration file with named contexts (env MCPID_CONFIG)")
	pf.StringVar(&a.flags.context, "context", "", "context of the configuration file to use (default: its current context)")
	pf.StringVarP(&a.flags.output, "output", "o", "table", "output format: table, json or yaml")
	pf.StringVar(&a.flags.registration, "registration-addr", "", "registration service gRPC address (host:port)")
	pf.StringVar(&a.flags.token, "token-addr", "", "token service gRPC address (host:port)")
	pf.StringVar(&a.flags.policy, "policy-addr", "", "policy service gRPC address (host:port)")
	pf.StringVar(&a.flags.audit, "audit-addr", "", "audit service gRPC address (host:port)")
	pf.StringVar(&a.flags.caFile, "ca-file", "", "PEM bundle that verifies the services' certificates (default: system roots)")
	pf.StringVar(&a.flags.certFile, "cert-file", "", "operator bootstrap client certificate (PEM)")
	pf.StringVar(&a.flags.keyFile, "key-file", "", "private key of --cert-file (PEM)")
	pf.StringVar(&a.flags.issuer, "issuer", "", "issuer URL (public origin) for mcpid login")
	pf.DurationVar(&a.flags.timeout, "timeout", 30*time.Second, "bound on each call (streams: on connecting)")
	_ = root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(output.Formats, cobra.ShellCompDirectiveNoFileComp))
	_ = root.RegisterFlagCompletionFunc("context", a.completeContexts)

	root.AddCommand(
		a.devCommand(),
		a.loginCommand(), a.logoutCommand(),
		a.configCommand(), a.certsCommand(),
		a.clientsCommand(), a.usersCommand(), a.policiesCommand(), a.grantsCommand(),
		a.keysCommand(), a.auditCommand(), a.agentsCommand(), a.connectorsCommand(),
		etcdsetup.NewCommand(),
	)
	a.cmd = root
	return root
}

// env returns an MCPID_* variable.
func (a *app) env(name string) (string, bool) {
	prefix := name + "="
	for _, kv := range a.d.Environ {
		if strings.HasPrefix(kv, prefix) {
			return kv[len(prefix):], true
		}
	}
	return "", false
}

// setup resolves the settings every command needs: flags, then MCPID_*
// variables for flags not given, then the configuration file's context.
func (a *app) setup(cmd *cobra.Command, _ []string) error {
	var setErr error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Changed || setErr != nil || f.Name == "help" {
			return
		}
		name := "MCPID_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := a.env(name); ok {
			if err := f.Value.Set(v); err != nil {
				setErr = usagef("%s (from %s): %v", f.Name, name, err)
			}
			f.Changed = true
		}
	})
	if setErr != nil {
		return setErr
	}
	f, err := output.Parse(a.flags.output)
	if err != nil {
		return &usageError{msg: err.Error()}
	}
	a.format = f

	a.cfgPath = a.flags.config
	if a.cfgPath == "" {
		a.cfgPath = cliconfig.DefaultPath(a.d.Cwd, a.d.UserConfigDir)
	}
	file, err := cliconfig.Load(a.cfgPath)
	if err != nil {
		return err
	}
	a.ctxName = a.flags.context
	if a.ctxName == "" {
		a.ctxName = file.CurrentContext
	}
	c := &cliconfig.Context{}
	if a.ctxName != "" {
		found, ok := file.Contexts[a.ctxName]
		if !ok && a.flags.context != "" {
			return usagef("context %q is not in %s (contexts: %s); create it with `mcpid config set-context`", a.ctxName, a.cfgPath, strings.Join(file.Names(), ", "))
		}
		if ok {
			cp := *found
			c = &cp
		}
	}
	override := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	override(&c.Registration, a.flags.registration)
	override(&c.Token, a.flags.token)
	override(&c.Policy, a.flags.policy)
	override(&c.Audit, a.flags.audit)
	override(&c.CAFile, a.flags.caFile)
	override(&c.Issuer, a.flags.issuer)
	if a.flags.certFile != "" || a.flags.keyFile != "" {
		// An explicit certificate wins over a stored login.
		c.CertFile, c.KeyFile, c.Login = a.flags.certFile, a.flags.keyFile, nil
	}
	a.cfg = c
	return nil
}

func (a *app) completeContexts(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	path := a.flags.config
	if path == "" {
		path = cliconfig.DefaultPath(a.d.Cwd, a.d.UserConfigDir)
	}
	f, err := cliconfig.Load(path)
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	return f.Names(), cobra.ShellCompDirectiveNoFileComp
}

// addr returns a service's address or an error saying how to set it.
func (a *app) addr(service string) (string, error) {
	var v string
	switch service {
	case svcRegistration:
		v = a.cfg.Registration
	case svcToken:
		v = a.cfg.Token
	case svcPolicy:
		v = a.cfg.Policy
	case svcAudit:
		v = a.cfg.Audit
	}
	if v == "" {
		return "", usagef("no address for the %s service: start `mcpid dev` in this folder, pass --%s-addr, set MCPID_%s_ADDR, or select a context with --context", service, service, strings.ToUpper(service))
	}
	return v, nil
}

// conn returns (and caches) the connection to a service.
func (a *app) conn(ctx context.Context, service string) (*grpc.ClientConn, error) {
	if c, ok := a.conns[service]; ok {
		return c, nil
	}
	addr, err := a.addr(service)
	if err != nil {
		return nil, err
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS13}
	if a.cfg.CAFile != "" {
		pem, err := os.ReadFile(a.cfg.CAFile)
		if err != nil {
			return nil, usagef("reading --ca-file: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, usagef("--ca-file %s holds no PEM certificate", a.cfg.CAFile)
		}
		tlsCfg.RootCAs = pool
	}
	var opts []grpc.DialOption
	switch {
	case a.cfg.Login != nil:
		opts = append(opts, grpc.WithPerRPCCredentials(&bearer{a: a}))
	case a.cfg.CertFile != "" || a.cfg.KeyFile != "":
		if a.cfg.CertFile == "" || a.cfg.KeyFile == "" {
			return nil, usagef("--cert-file and --key-file go together")
		}
		cert, err := tls.LoadX509KeyPair(a.cfg.CertFile, a.cfg.KeyFile)
		if err != nil {
			return nil, usagef("loading the operator certificate: %v", err)
		}
		tlsCfg.Certificates = []tls.Certificate{cert}
	}
	// NewTLS copies the configuration: it must be complete here.
	opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	c, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, usagef("--%s-addr %q: %v", service, addr, err)
	}
	a.conns[service] = c
	return c, nil
}

// call runs one unary RPC with the timeout and turns its error into a
// callError that says what to do next.
func call[Req, Resp any](ctx context.Context, a *app, service, what string, req Req,
	fn func(*grpc.ClientConn) func(context.Context, Req, ...grpc.CallOption) (Resp, error),
) (Resp, error) {
	var zero Resp
	c, err := a.conn(ctx, service)
	if err != nil {
		return zero, err
	}
	ctx, cancel := context.WithTimeout(ctx, a.flags.timeout)
	defer cancel()
	resp, err := fn(c)(ctx, req)
	if err != nil {
		return zero, a.wrap(service, what, err)
	}
	return resp, nil
}

func (a *app) wrap(service, what string, err error) error {
	var ue *usageError
	if errors.As(err, &ue) {
		return err
	}
	if errors.Is(err, errLoginExpired) {
		return err
	}
	st, _ := status.FromError(err)
	addr, _ := a.addr(service)
	return &callError{what: what, service: service, addr: addr, st: st}
}

// out writes structured output, or calls table for the table format.
func (a *app) out(v any, table func(w io.Writer) error) error {
	if a.format == output.Table {
		return table(a.d.Stdout)
	}
	return output.Structured(a.d.Stdout, a.format, v)
}

// printf writes a line for people (not part of structured output).
func (a *app) printf(format string, args ...any) {
	fmt.Fprintf(a.d.Stdout, format, args...)
}

// note writes to stderr: progress, hints, one-time secrets' warnings.
func (a *app) note(format string, args ...any) {
	fmt.Fprintf(a.d.Stderr, format, args...)
}

// RootForDocs returns the command tree without running it, for help tests
// and documentation generators.
func RootForDocs() *cobra.Command {
	a := &app{d: Deps{Now: time.Now}, conns: map[string]*grpc.ClientConn{}}
	return a.rootCommand()
}
