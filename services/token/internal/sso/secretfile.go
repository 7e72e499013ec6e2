package sso

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
)

// MaxSecretFileSize bounds a client secret file: a client secret is a few
// dozen bytes, and anything larger (or endless, like /dev/zero) is not one.
const MaxSecretFileSize = 4096

// errSecretFileRefused: the path is neither the one the start-up connectors
// file names for this connector nor inside the connector secrets directory.
var errSecretFileRefused = errors.New("sso: client_secret_file is outside the allowed locations")

// SecretFiles decides which client_secret_file paths the token service
// reads. The file's contents are sent to the connector's token endpoint,
// whose issuer an operator chooses: a path an API caller could pick freely
// would let an admin exfiltrate any file the process can read (the KEK, the
// TLS key). So a path is read only when
//   - the start-up connectors file names it for this connector and this
//     issuer (what the deployment mounted, not what the API said), or
//   - it lies inside Dir (the connector-secrets-dir setting), resolved with
//     os.Root so that neither ".." nor a symlink leaves the directory.
//
// Only regular files of at most MaxSecretFileSize bytes are read.
type SecretFiles struct {
	// Dir is the directory API callers may name files in ("" = none: the
	// admin API takes client_secret, sealed with the KEK, instead).
	Dir string
	// Seeded maps a connector id to the issuer and path the connectors file
	// gives it.
	Seeded map[string]SeededSecret
}

// SeededSecret is a client_secret_file of the connectors file.
type SeededSecret struct {
	Issuer string
	Path   string
}

// seededFrom collects the client_secret_file entries of the connectors file.
func seededFrom(cs []*tokenv1.Connector) map[string]SeededSecret {
	out := map[string]SeededSecret{}
	for _, c := range cs {
		if p := c.GetOidc().GetClientSecretFile(); p != "" {
			out[c.GetConnectorId()] = SeededSecret{Issuer: strings.TrimSpace(c.GetOidc().GetIssuerUrl()), Path: p}
		}
	}
	return out
}

// inDir returns path relative to Dir when path is an absolute path inside
// it (lexically; os.Root checks symlinks when the file is opened).
func (s *SecretFiles) inDir(path string) (string, bool) {
	if s == nil || s.Dir == "" || !filepath.IsAbs(path) {
		return "", false
	}
	rel, err := filepath.Rel(filepath.Clean(s.Dir), filepath.Clean(path))
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) || filepath.IsAbs(rel) {
		return "", false
	}
	return rel, true
}

// AllowedForAPI reports whether an API caller may name path.
func (s *SecretFiles) AllowedForAPI(path string) bool {
	_, ok := s.inDir(path)
	return ok
}

// Read returns the client secret of rec's client_secret_file, or an error
// when the path is not allowed for rec or is not a small regular file. The
// error may name the path: it is for logs, never for API callers.
func (s *SecretFiles) Read(rec *Record) (string, error) {
	var f *os.File
	var err error
	if seeded, ok := s.seeded(rec); ok {
		f, err = openRegular(func(flag int) (*os.File, error) { return os.OpenFile(seeded, flag, 0) })
	} else if rel, ok := s.inDir(rec.SecretFile); ok {
		root, rerr := os.OpenRoot(s.Dir)
		if rerr != nil {
			return "", fmt.Errorf("sso: connector secrets directory: %w", rerr)
		}
		defer func() { _ = root.Close() }()
		f, err = openRegular(func(flag int) (*os.File, error) { return root.OpenFile(rel, flag, 0) })
	} else {
		return "", errSecretFileRefused
	}
	if err != nil {
		return "", fmt.Errorf("sso: client secret file of %s: %w", rec.ID, err)
	}
	defer func() { _ = f.Close() }()
	b, err := io.ReadAll(io.LimitReader(f, MaxSecretFileSize+1))
	if err != nil {
		return "", fmt.Errorf("sso: client secret file of %s: %w", rec.ID, err)
	}
	if len(b) > MaxSecretFileSize {
		return "", fmt.Errorf("sso: client secret file of %s is larger than %d bytes", rec.ID, MaxSecretFileSize)
	}
	secret := strings.TrimRight(string(b), "\r\n")
	if secret == "" {
		return "", fmt.Errorf("sso: client secret file of %s is empty", rec.ID)
	}
	return secret, nil
}

// seeded returns the path when the connectors file gives rec's connector
// exactly this file and issuer (a connector deleted and re-created through
// the API with another issuer does not inherit the file).
func (s *SecretFiles) seeded(rec *Record) (string, bool) {
	if s == nil || rec.SecretFile == "" {
		return "", false
	}
	e, ok := s.Seeded[rec.ID]
	if !ok || e.Path != rec.SecretFile || e.Issuer != rec.Issuer {
		return "", false
	}
	return e.Path, true
}

// openRegular opens without blocking (a FIFO would hang the open) and
// accepts only a regular file of at most MaxSecretFileSize bytes.
func openRegular(open func(flag int) (*os.File, error)) (*os.File, error) {
	f, err := open(os.O_RDONLY | syscall.O_NONBLOCK)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = errors.New("not a regular file")
	}
	if err == nil && fi.Size() > MaxSecretFileSize {
		err = fmt.Errorf("larger than %d bytes", MaxSecretFileSize)
	}
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return f, nil
}
