// Package config loads a service's settings from, in increasing precedence:
// flag defaults, an optional YAML file (--config), MCPID_* environment
// variables, and command-line flags.
//
// Every setting is a flag, so `--help` documents them all and every source
// goes through the same parser. A bad value stops start-up with an error that
// names the setting and where its value came from. Secrets are never flag or
// environment values: a secret setting is a *_file path (SecretFile), read
// when the service starts.
package config

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// EnvPrefix prefixes every environment variable: flag "grpc-addr" is
// MCPID_GRPC_ADDR.
const EnvPrefix = "MCPID_"

// ConfigFlag is the flag naming the optional YAML file.
const ConfigFlag = "config"

// maxSecretBytes bounds a secret file: secrets are keys and passwords.
const maxSecretBytes = 64 << 10

// EnvName returns the environment variable for a flag name.
func EnvName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Load fills fs from the YAML file named by --config (if fs defines it and
// it is given), then from the environment, then from args. lookupEnv is
// os.LookupEnv in production. It returns the names of MCPID_* variables that
// match no flag, so the caller can warn about typos.
func Load(fs *flag.FlagSet, args []string, environ []string) (unknownEnv []string, err error) {
	// First pass: learn which flags the command line sets, and --config.
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	explicit := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })

	if f := fs.Lookup(ConfigFlag); f != nil && f.Value.String() != "" {
		if err := loadYAML(fs, f.Value.String(), explicit); err != nil {
			return nil, err
		}
	}

	env := map[string]string{}
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if ok && strings.HasPrefix(k, EnvPrefix) {
			env[k] = v
		}
	}
	known := map[string]bool{}
	var setErr error
	fs.VisitAll(func(f *flag.Flag) {
		name := EnvName(f.Name)
		known[name] = true
		v, ok := env[name]
		if !ok || explicit[f.Name] || setErr != nil {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			setErr = fmt.Errorf("setting %s (from environment variable %s): %w", f.Name, name, err)
		}
	})
	if setErr != nil {
		return nil, setErr
	}
	for k := range env {
		if !known[k] {
			unknownEnv = append(unknownEnv, k)
		}
	}
	sort.Strings(unknownEnv)

	// Command-line flags win: parse them again over the file and environment.
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	return unknownEnv, nil
}

// loadYAML applies a flat YAML mapping of flag names to values.
func loadYAML(fs *flag.FlagSet, path string, explicit map[string]bool) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("setting %s: %w", ConfigFlag, err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	keys := make([]string, 0, len(doc))
	for k := range doc {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if k == ConfigFlag {
			return fmt.Errorf("config file %s: %q cannot be set from the file", path, k)
		}
		if fs.Lookup(k) == nil {
			return fmt.Errorf("config file %s: unknown setting %q", path, k)
		}
		if explicit[k] {
			continue
		}
		for _, v := range yamlValues(doc[k]) {
			if err := fs.Set(k, v); err != nil {
				return fmt.Errorf("setting %s (from config file %s): %w", k, path, err)
			}
		}
	}
	return nil
}

// yamlValues turns a YAML value into flag strings; a list sets a repeatable
// flag once per element.
func yamlValues(v any) []string {
	switch t := v.(type) {
	case nil:
		return []string{""}
	case []any:
		out := make([]string, 0, len(t))
		for _, e := range t {
			out = append(out, fmt.Sprint(e))
		}
		return out
	default:
		return []string{fmt.Sprint(t)}
	}
}

// SecretFile is a flag.Value holding the path of a file with a secret. The
// secret itself never passes through flags, environment or logs.
type SecretFile struct {
	Path string
}

// String returns the path (never the secret).
func (s *SecretFile) String() string { return s.Path }

// Set records the path.
func (s *SecretFile) Set(path string) error {
	s.Path = path
	return nil
}

// Read returns the secret with one trailing newline removed. It refuses an
// empty file and files larger than 64 KiB.
func (s *SecretFile) Read() ([]byte, error) {
	if s.Path == "" {
		return nil, errors.New("no file given")
	}
	f, err := os.Open(s.Path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, maxSecretBytes+1)
	n, err := readFull(f, buf)
	if err != nil {
		return nil, err
	}
	if n > maxSecretBytes {
		return nil, fmt.Errorf("%s is larger than %d bytes", s.Path, maxSecretBytes)
	}
	b := buf[:n]
	b = []byte(strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r"))
	if len(b) == 0 {
		return nil, fmt.Errorf("%s is empty", s.Path)
	}
	return b, nil
}

func readFull(f *os.File, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := f.Read(buf[n:])
		n += m
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return n, err
			}
			return n, nil // io.EOF or a short read: n is what the file holds
		}
	}
	return n, nil
}

// StringList is a repeatable (or comma-separated) string flag.
type StringList []string

// String joins the values with commas.
func (l *StringList) String() string { return strings.Join(*l, ",") }

// Set appends one or more comma-separated values.
func (l *StringList) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}
