// Package cliconfig is the `mcpid` CLI's configuration file: named contexts
// (where the four services listen, how to trust them, which operator
// credential to present), the current context, and the operator tokens that
// `mcpid login` stored. `mcpid dev` writes a "dev" context into its data
// folder so the CLI works against it without any set-up.
//
// The file holds credentials (tokens, paths of private keys), so it is
// written 0600 and replaced atomically.
package cliconfig

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"sigs.k8s.io/yaml"
)

// DevFileName is the file `mcpid dev` writes in its data folder; the CLI
// reads ./.mcpid/<DevFileName> when no other configuration is named, so the
// CLI works in the folder `make run` was started from.
const DevFileName = "cli.yaml"

// DevContext is the name of the context `mcpid dev` writes.
const DevContext = "dev"

// Context is one named set of connection settings.
type Context struct {
	// Issuer is the public origin (OAuth issuer), used by `mcpid login`.
	Issuer string `json:"issuer,omitempty"`
	// Addresses of each service's gRPC port (host:port).
	Registration string `json:"registration,omitempty"`
	Token        string `json:"token,omitempty"`
	Policy       string `json:"policy,omitempty"`
	Audit        string `json:"audit,omitempty"`
	// CAFile is the PEM bundle that verifies the services' certificates;
	// empty means the system roots.
	CAFile string `json:"ca_file,omitempty"`
	// CertFile and KeyFile are an operator's bootstrap client certificate.
	CertFile string `json:"cert_file,omitempty"`
	KeyFile  string `json:"key_file,omitempty"`
	// Credentials stored by `mcpid login`; preferred over the certificate
	// when present and not expired (or refreshable).
	Login *Login `json:"login,omitempty"`
}

// Login is an operator token obtained by `mcpid login`.
type Login struct {
	AccessToken  string    `json:"access_token"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	Expiry       time.Time `json:"expiry"`
	// Subject and Roles are copied from the token for `mcpid login status`.
	Subject string   `json:"subject,omitempty"`
	Roles   []string `json:"roles,omitempty"`
}

// File is the whole configuration file.
type File struct {
	CurrentContext string              `json:"current_context,omitempty"`
	Contexts       map[string]*Context `json:"contexts,omitempty"`
}

// Names returns the context names, sorted.
func (f *File) Names() []string {
	names := make([]string, 0, len(f.Contexts))
	for n := range f.Contexts {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Load reads path. A missing file is an empty configuration, not an error:
// flags and MCPID_* variables may carry everything.
func Load(path string) (*File, error) {
	f := &File{Contexts: map[string]*Context{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading configuration %s: %w", path, err)
	}
	if err := yaml.UnmarshalStrict(b, f); err != nil {
		return nil, fmt.Errorf("configuration %s is not valid (fix or remove it): %w", path, err)
	}
	if f.Contexts == nil {
		f.Contexts = map[string]*Context{}
	}
	for name, c := range f.Contexts {
		if c == nil {
			f.Contexts[name] = &Context{}
		}
	}
	return f, nil
}

// Save writes f to path (0600, atomically), creating the folder 0700.
func Save(path string, f *File) error {
	b, err := yaml.Marshal(f)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("writing configuration %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing configuration %s: %w", path, err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if _, err := tmp.Write(b); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("writing configuration %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing configuration %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing configuration %s: %w", path, err)
	}
	return nil
}

// Update loads path, applies fn and saves the result.
func Update(path string, fn func(*File) error) error {
	f, err := Load(path)
	if err != nil {
		return err
	}
	if err := fn(f); err != nil {
		return err
	}
	return Save(path, f)
}

// DefaultPath is where the CLI looks when neither --config nor MCPID_CONFIG
// names a file: ./.mcpid/cli.yaml if it exists (written by `mcpid dev` run
// from the same folder), else the user's configuration folder.
func DefaultPath(cwd, userConfigDir string) string {
	dev := filepath.Join(cwd, ".mcpid", DevFileName)
	if _, err := os.Stat(dev); err == nil {
		return dev
	}
	if userConfigDir == "" {
		return dev
	}
	return filepath.Join(userConfigDir, "mcpid", "config.yaml")
}
