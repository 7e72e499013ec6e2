package cli

import (
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/mcpid/mcpid/cmd/mcpid/internal/cliconfig"
	"github.com/mcpid/mcpid/cmd/mcpid/internal/opcert"
	"github.com/mcpid/mcpid/cmd/mcpid/internal/output"
)

func (a *app) devCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "dev [flags]",
		Short: "Run the whole system on one machine (embedded etcd, all services)",
		Long: `Run mcpid on one machine for development and demos: embedded etcd (data in
./.mcpid unless --ephemeral), a development CA, the four services with mTLS,
and the public origin (the issuer) on http://127.0.0.1:8080. It starts the example
CRM MCP server (examples/crm) with its policy, seeds the demo
user and writes a bootstrap operator certificate and a "dev" context to
.mcpid/cli.yaml, so mcpid commands run from the same folder work at once.
It prints a quick-start and runs until Ctrl-C.

Flags (also MCPID_* variables, or a YAML file with --config):
  --addr              public origin listen address (default 127.0.0.1:8080)
  --issuer            issuer URL (default http://<addr>)
  --data-dir          folder for etcd data and the development CA (default .mcpid)
  --ephemeral         keep nothing: a temporary folder, removed on exit
  --etcd-addr         embedded etcd client address (default 127.0.0.1:2379)
  --log-level         service log level: debug, info, warn, error (default warn)
  --shutdown-timeout  bound on graceful shutdown (default 10s)
  --crm-addr          example CRM MCP server address (default 127.0.0.1:8090; off)
  --connectors-file   YAML file of SSO connectors created at start-up (docs/sso.md)
  --no-password-login turn the built-in password sign-in off (SSO only)
  --config            YAML file of the settings above`,
		Example: `  mcpid dev
  mcpid dev --ephemeral --addr 127.0.0.1:9090 --etcd-addr 127.0.0.1:0`,
		// dev parses its own flags (shared with the service binaries'
		// lib/config rules); the CLI's global flags do not apply.
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, arg := range args {
				if arg == "-h" || arg == "--help" || arg == "-help" {
					return cmd.Help()
				}
			}
			if a.d.Dev == nil {
				return usagef("mcpid dev is not available in this build")
			}
			return a.d.Dev(cmd.Context(), args, a.d.Environ, a.d.Stdout, a.d.Stderr)
		},
	}
}

func (a *app) configCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Show and edit the configuration file's contexts",
		Long: `A context names where the four services listen, the CA that verifies them,
and the operator credential (bootstrap certificate, or the token of mcpid login).
The configuration file is --config, else MCPID_CONFIG, else ./.mcpid/cli.yaml
when it exists (mcpid dev writes it), else ~/.config/mcpid/config.yaml.`,
		Example: `  mcpid config view
  mcpid config get-contexts
  mcpid config set-context prod --registration-addr reg.example.com:443 ... --ca-file ca.pem
  mcpid config use-context prod`,
	}
	view := &cobra.Command{
		Use:     "view",
		Short:   "Show the settings in effect (tokens redacted)",
		Long:    "Show which configuration file and context are in effect and the resolved settings after flags and MCPID_* variables. Tokens are never printed.",
		Example: "  mcpid config view\n  mcpid config view -o yaml",
		Args:    cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			c := *a.cfg
			auth := "none"
			switch {
			case c.Login != nil:
				auth = "token of " + c.Login.Subject + " (mcpid login, expires " + c.Login.Expiry.Format(time.RFC3339) + ")"
			case c.CertFile != "":
				auth = "certificate " + c.CertFile
			}
			c.Login = nil
			view := map[string]any{"config_file": a.cfgPath, "context": a.ctxName, "settings": c, "credential": auth}
			return a.out(view, func(w io.Writer) error {
				return output.KV(w, "config file", a.cfgPath, "context", a.ctxName, "issuer", c.Issuer,
					"registration", c.Registration, "token", c.Token, "policy", c.Policy, "audit", c.Audit,
					"ca file", c.CAFile, "credential", auth)
			})
		},
	}
	getContexts := &cobra.Command{
		Use:     "get-contexts",
		Short:   "List the contexts of the configuration file",
		Long:    "List the contexts of the configuration file; the current one is marked with *.",
		Example: "  mcpid config get-contexts",
		Args:    cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			f, err := cliconfig.Load(a.cfgPath)
			if err != nil {
				return err
			}
			return a.out(f.Names(), func(w io.Writer) error {
				t := output.NewTable(w, "CURRENT", "NAME", "ISSUER", "CREDENTIAL")
				for _, n := range f.Names() {
					c := f.Contexts[n]
					cur, cred := "", "none"
					if n == f.CurrentContext {
						cur = "*"
					}
					if c.CertFile != "" {
						cred = "certificate"
					}
					if c.Login != nil {
						cred = "login " + c.Login.Subject
					}
					t.Row(cur, n, c.Issuer, cred)
				}
				return t.Flush()
			})
		},
	}
	use := &cobra.Command{
		Use:               "use-context NAME",
		Short:             "Make a context the current one",
		Long:              "Make NAME the current context of the configuration file.",
		Example:           "  mcpid config use-context dev",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: a.completeContexts,
		RunE: func(_ *cobra.Command, args []string) error {
			err := cliconfig.Update(a.cfgPath, func(f *cliconfig.File) error {
				if _, ok := f.Contexts[args[0]]; !ok {
					return usagef("context %q is not in %s", args[0], a.cfgPath)
				}
				f.CurrentContext = args[0]
				return nil
			})
			if err == nil {
				a.printf("Switched to context %q.\n", args[0])
			}
			return err
		},
	}
	set := &cobra.Command{
		Use:   "set-context NAME",
		Short: "Create or change a context from the global flags",
		Long: `Create or change context NAME: every global flag given (--issuer,
--registration-addr, --token-addr, --policy-addr, --audit-addr, --ca-file,
--cert-file, --key-file) is stored in it; other settings are kept. Paths are
stored absolute.`,
		Example: "  mcpid config set-context prod --issuer https://auth.example.com --registration-addr registration.mcpid:443 --token-addr token.mcpid:443 --policy-addr policy.mcpid:443 --audit-addr audit.mcpid:443 --ca-file ca.pem",
		Args:    cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			abs := func(p string) string {
				if p == "" || filepath.IsAbs(p) {
					return p
				}
				return filepath.Join(a.d.Cwd, p)
			}
			err := cliconfig.Update(a.cfgPath, func(f *cliconfig.File) error {
				c, ok := f.Contexts[args[0]]
				if !ok {
					c = &cliconfig.Context{}
					f.Contexts[args[0]] = c
				}
				set := func(dst *string, v string) {
					if v != "" {
						*dst = v
					}
				}
				fl := a.flags
				set(&c.Issuer, fl.issuer)
				set(&c.Registration, fl.registration)
				set(&c.Token, fl.token)
				set(&c.Policy, fl.policy)
				set(&c.Audit, fl.audit)
				set(&c.CAFile, abs(fl.caFile))
				set(&c.CertFile, abs(fl.certFile))
				set(&c.KeyFile, abs(fl.keyFile))
				if f.CurrentContext == "" {
					f.CurrentContext = args[0]
				}
				return nil
			})
			if err == nil {
				a.printf("Context %q saved in %s.\n", args[0], a.cfgPath)
			}
			return err
		},
	}
	cmd.AddCommand(view, getContexts, use, set)
	return cmd
}

func (a *app) certsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Issue operator bootstrap certificates",
		Long: `Issue operator bootstrap client certificates. The services accept a client
certificate from their CA that names an operator and one role (admin or
auditor) in a SPIFFE URI SAN: spiffe://mcpid/operator/<role>/<name>.`,
	}
	var name, role, caCert, caKey, outDir, setContext string
	var validity time.Duration
	issue := &cobra.Command{
		Use:   "issue-operator",
		Short: "Issue an operator certificate from a CA certificate and its key",
		Long: `Issue an operator's bootstrap client certificate, signed by the CA in
--ca-cert and --ca-key: the development CA (.mcpid/ca/ca.crt and ca.key) or a
production CA (root or intermediate; ECDSA, RSA or Ed25519 key). Writes
<out-dir>/<name>.crt and <name>.key (0600). With --set-context the certificate
is stored in that context of the configuration file. Keep the CA key offline;
the certificate is valid for --validity (at most the CA's own validity).`,
		Example: `  mcpid certs issue-operator --name alice --role admin --ca-cert ca.crt --ca-key ca.key --out-dir ~/.mcpid
  mcpid certs issue-operator --name audit-team --role auditor --ca-cert .mcpid/ca/ca.crt --ca-key .mcpid/ca/ca.key --out-dir .mcpid/pki --set-context dev-auditor`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			certPEM, err := os.ReadFile(caCert)
			if err != nil {
				return usagef("reading --ca-cert: %v", err)
			}
			keyPEM, err := os.ReadFile(caKey)
			if err != nil {
				return usagef("reading --ca-key: %v", err)
			}
			issued, err := opcert.Issue(certPEM, keyPEM, opcert.Request{Name: name, Role: role, Validity: validity, Now: a.d.Now()})
			if err != nil {
				return usagef("issuing the certificate: %v", err)
			}
			dir := outDir
			if !filepath.IsAbs(dir) {
				dir = filepath.Join(a.d.Cwd, dir)
			}
			certPath, keyPath, err := issued.Save(dir, name)
			if err != nil {
				return err
			}
			if setContext != "" {
				caAbs := caCert
				if !filepath.IsAbs(caAbs) {
					caAbs = filepath.Join(a.d.Cwd, caAbs)
				}
				base := *a.cfg
				err := cliconfig.Update(a.cfgPath, func(f *cliconfig.File) error {
					c, ok := f.Contexts[setContext]
					if !ok {
						c = &base
						c.Login = nil
						if c.CAFile == "" {
							c.CAFile = caAbs
						}
						f.Contexts[setContext] = c
					}
					c.CertFile, c.KeyFile = certPath, keyPath
					return nil
				})
				if err != nil {
					return err
				}
			}
			a.printf("Issued %s (%s) valid until %s:\n  %s\n  %s\n", name, role, issued.NotAfter.UTC().Format(time.RFC3339), certPath, keyPath)
			if setContext != "" {
				a.printf("Stored in context %q: use it with --context %s.\n", setContext, setContext)
			}
			return nil
		},
	}
	f := issue.Flags()
	f.StringVar(&name, "name", "", "operator name, [A-Za-z0-9._-] (required)")
	f.StringVar(&role, "role", "admin", "operator role: admin or auditor")
	f.StringVar(&caCert, "ca-cert", "", "CA certificate (PEM) (required)")
	f.StringVar(&caKey, "ca-key", "", "CA private key (PEM) (required)")
	f.StringVar(&outDir, "out-dir", ".", "folder for <name>.crt and <name>.key")
	f.StringVar(&setContext, "set-context", "", "store the certificate in this context of the configuration file")
	f.DurationVar(&validity, "validity", 90*24*time.Hour, "validity of the certificate")
	_ = issue.MarkFlagRequired("name")
	_ = issue.MarkFlagRequired("ca-cert")
	_ = issue.MarkFlagRequired("ca-key")
	_ = issue.RegisterFlagCompletionFunc("role", cobra.FixedCompletions([]string{"admin", "auditor"}, cobra.ShellCompDirectiveNoFileComp))
	cmd.AddCommand(issue)
	return cmd
}
