package service

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
)

// SelfCheckFlag names the flag that makes a service binary report what its
// container gives it and exit, without opening anything: the image tests
// (deploy/) start each image's binary with it.
const SelfCheckFlag = "selfcheck"

// SelfCheck is the report --selfcheck prints as one JSON line.
type SelfCheck struct {
	Service string `json:"service"`
	UID     int    `json:"uid"`
	GID     int    `json:"gid"`
	// SystemRoots counts the CA certificates of the system pool: outbound
	// fetches (CIMD documents, jwks_uri, SSO connectors) verify against it.
	SystemRoots int `json:"system_roots"`
}

// selfCheck writes the report and fails when the process runs as root or
// finds no CA certificates, the two things a production image must get
// right.
func selfCheck(name string, w io.Writer) error {
	r := SelfCheck{Service: name, UID: os.Getuid(), GID: os.Getgid()}
	pool, poolErr := x509.SystemCertPool()
	if poolErr == nil {
		// Subjects is deprecated for pools that defer to the platform
		// verifier (macOS, Windows); on Linux the pool is the loaded bundle.
		r.SystemRoots = len(pool.Subjects()) //nolint:staticcheck // see above
	}
	if err := json.NewEncoder(w).Encode(r); err != nil {
		return fmt.Errorf("selfcheck: %w", err)
	}
	var errs []error
	if r.UID == 0 {
		errs = append(errs, errors.New("selfcheck: running as root (uid 0)"))
	}
	if r.SystemRoots == 0 {
		errs = append(errs, errors.Join(errors.New("selfcheck: no system CA certificates"), poolErr))
	}
	return errors.Join(errs...)
}
