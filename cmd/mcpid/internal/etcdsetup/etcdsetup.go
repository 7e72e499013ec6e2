// Package etcdsetup is `mcpid etcd-setup`: it turns on etcd access control
// for an installation with one user and role per service (lib/etcdauth),
// reading (or generating) the passwords from files the services then get as
// their etcd-password-file.
package etcdsetup

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/mcpid/mcpid/lib/etcdauth"
)

// Options are the command's settings.
type Options struct {
	Endpoints        []string
	RootPasswordFile string
	PasswordDir      string
	Generate         bool
	Services         []string
	CAFile           string
	CertFile         string
	KeyFile          string
	Timeout          time.Duration
}

// NewCommand returns the `etcd-setup` command.
func NewCommand() *cobra.Command {
	o := Options{}
	cmd := &cobra.Command{
		Use:   "etcd-setup",
		Short: "Create one etcd user and role per service and enable etcd authentication",
		Long: `etcd-setup creates etcd's root user, and for each service a role allowed to read
and write only /mcpid/<service>/ and a user mcpid-<service> with that role, then
enables authentication. Run it once per cluster, and again to change passwords
(it then logs in as root) — it is idempotent.

Passwords are files: --password-dir/<service> for each service (give the file to
the service as --etcd-password-file with --etcd-username mcpid-<service>) and
--root-password-file. With --generate, missing files are created with random
passwords (mode 0600).`,
		Example: `  mcpid etcd-setup --etcd-endpoints https://etcd-0:2379 --etcd-ca-file ca.crt \
    --root-password-file secrets/root --password-dir secrets/etcd --generate`,
		Args: cobra.NoArgs,
		// The CLI's own setup (configuration file, service connections) is
		// not needed to talk to etcd.
		PersistentPreRunE: func(*cobra.Command, []string) error { return nil },
		RunE: func(cmd *cobra.Command, _ []string) error {
			return Run(cmd.Context(), o, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&o.Endpoints, "etcd-endpoints", []string{"http://127.0.0.1:2379"}, "etcd client URLs")
	f.StringVar(&o.RootPasswordFile, "root-password-file", "", "file holding etcd's root password (required)")
	f.StringVar(&o.PasswordDir, "password-dir", "", "folder with one password file per service, named after the service (required)")
	f.BoolVar(&o.Generate, "generate", false, "create missing password files with random passwords")
	f.StringSliceVar(&o.Services, "services", etcdauth.Services, "services to create users for")
	f.StringVar(&o.CAFile, "etcd-ca-file", "", "CA bundle of etcd's server certificate (TLS to etcd)")
	f.StringVar(&o.CertFile, "etcd-cert-file", "", "client certificate presented to etcd")
	f.StringVar(&o.KeyFile, "etcd-key-file", "", "private key of --etcd-cert-file")
	f.DurationVar(&o.Timeout, "timeout", 30*time.Second, "bound on the whole setup")
	return cmd
}

// Run performs the setup and reports each user on out.
func Run(ctx context.Context, o Options, out io.Writer) error {
	if o.RootPasswordFile == "" || o.PasswordDir == "" {
		return errors.New("etcd-setup: --root-password-file and --password-dir are required")
	}
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	root, err := password(o.RootPasswordFile, o.Generate)
	if err != nil {
		return err
	}
	cfg := etcdauth.Config{RootPassword: root, Passwords: map[string]string{}}
	for _, svc := range o.Services {
		pw, err := password(filepath.Join(o.PasswordDir, svc), o.Generate)
		if err != nil {
			return err
		}
		cfg.Passwords[svc] = pw
	}
	tlsCfg, err := clientTLS(o)
	if err != nil {
		return err
	}
	cli, err := connect(ctx, o.Endpoints, tlsCfg, root)
	if err != nil {
		return err
	}
	defer cli.Close()
	if err := etcdauth.Setup(ctx, cli, cfg); err != nil {
		return err
	}
	for _, svc := range o.Services {
		fmt.Fprintf(out, "user %s: read/write %s (password file %s)\n",
			etcdauth.UserName(svc), etcdauth.Prefix(svc), filepath.Join(o.PasswordDir, svc))
	}
	fmt.Fprintln(out, "etcd authentication enabled")
	return nil
}

// connect logs in as root when auth is already on, anonymously otherwise.
func connect(ctx context.Context, endpoints []string, tlsCfg *tls.Config, rootPassword string) (*clientv3.Client, error) {
	cfg := clientv3.Config{
		Endpoints: endpoints, DialTimeout: 10 * time.Second, Logger: zap.NewNop(), TLS: tlsCfg, Context: ctx,
		Username: etcdauth.RootUser, Password: rootPassword,
	}
	cli, err := clientv3.New(cfg)
	if err == nil {
		if _, err = cli.AuthStatus(ctx); err == nil {
			return cli, nil
		}
		_ = cli.Close()
	}
	if !errors.Is(err, rpctypes.ErrAuthNotEnabled) {
		return nil, fmt.Errorf("etcd-setup: connect as root: %w", err)
	}
	cfg.Username, cfg.Password = "", ""
	cli, err = clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd-setup: connect: %w", err)
	}
	return cli, nil
}

func clientTLS(o Options) (*tls.Config, error) {
	if o.CAFile == "" {
		if o.CertFile != "" {
			return nil, errors.New("etcd-setup: --etcd-cert-file needs --etcd-ca-file")
		}
		return nil, nil //nolint:nilnil // no TLS to etcd
	}
	ca, err := os.ReadFile(o.CAFile)
	if err != nil {
		return nil, fmt.Errorf("etcd-setup: --etcd-ca-file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, errors.New("etcd-setup: --etcd-ca-file: no PEM certificates")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	if o.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("etcd-setup: --etcd-cert-file/--etcd-key-file: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// password reads a password file (trailing newline dropped, as the services
// do) or, with generate, creates it.
func password(path string, generate bool) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && generate {
		buf := make([]byte, 24)
		if _, err := rand.Read(buf); err != nil {
			return "", fmt.Errorf("etcd-setup: generate password: %w", err)
		}
		pw := base64.RawURLEncoding.EncodeToString(buf)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return "", fmt.Errorf("etcd-setup: %w", err)
		}
		if err := os.WriteFile(path, []byte(pw+"\n"), 0o600); err != nil {
			return "", fmt.Errorf("etcd-setup: write %s: %w", path, err)
		}
		return pw, nil
	}
	if err != nil {
		return "", fmt.Errorf("etcd-setup: password file: %w", err)
	}
	pw := strings.TrimRight(string(b), "\r\n")
	if pw == "" {
		return "", fmt.Errorf("etcd-setup: password file %s is empty", path)
	}
	return pw, nil
}
