// Command selfcheck stands in for a service binary in the image tests: it
// answers --selfcheck the way lib/service does (the real binaries are
// checked by `make images`), without building a whole service.
package main

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
)

func main() {
	if len(os.Args) != 2 || os.Args[1] != "--selfcheck" {
		fmt.Fprintln(os.Stderr, "usage: selfcheck --selfcheck")
		os.Exit(2)
	}
	n := 0
	if pool, err := x509.SystemCertPool(); err == nil {
		n = len(pool.Subjects()) //nolint:staticcheck // Linux: the loaded bundle
	}
	_ = json.NewEncoder(os.Stdout).Encode(map[string]any{
		"service": "selfcheck", "uid": os.Getuid(), "gid": os.Getgid(), "system_roots": n,
	})
	if os.Getuid() == 0 || n == 0 {
		os.Exit(1)
	}
}
