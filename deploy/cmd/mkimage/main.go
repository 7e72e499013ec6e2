// Command mkimage builds an mcpid service image without a container engine
// and writes it as an OCI layout tar; `mkimage verify` starts an image's
// binary in its unpacked root filesystem as the image's user. `make images`
// runs both for the four services.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mcpid/mcpid/deploy/internal/image"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	if len(args) > 0 && args[0] == "verify" {
		return verify(ctx, args[1:], out)
	}
	return build(args, out)
}

func build(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("mkimage", flag.ContinueOnError)
	name := fs.String("name", "", "service name (registration, token, policy, audit)")
	binary := fs.String("binary", "", "static service binary (CGO_ENABLED=0)")
	caBundle := fs.String("ca-bundle", image.CABundlePath, "PEM CA bundle to carry (Debian's ca-certificates)")
	uid := fs.Int("uid", image.DefaultUID, "numeric non-root user and group")
	ports := fs.String("ports", "", "exposed TCP ports, comma-separated")
	env := fs.String("env", "", "extra environment, comma-separated KEY=value")
	version := fs.String("version", "dev", "image version label and tag")
	dst := fs.String("out", "", "OCI layout tar to write")
	epoch := fs.Int64("source-date-epoch", 0, "file and image time (seconds since 1970): reproducible builds")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *name == "" || *binary == "" || *dst == "" {
		return errors.New("mkimage: -name, -binary and -out are required")
	}
	bin, err := os.ReadFile(*binary)
	if err != nil {
		return fmt.Errorf("mkimage: %w", err)
	}
	ca, err := os.ReadFile(*caBundle)
	if err != nil {
		return fmt.Errorf("mkimage: CA bundle (install Debian's ca-certificates): %w", err)
	}
	spec := image.Spec{Name: *name, Binary: bin, CABundle: ca, UID: *uid, Version: *version, Created: time.Unix(*epoch, 0).UTC()}
	for _, kv := range strings.Split(*env, ",") {
		if kv = strings.TrimSpace(kv); kv != "" {
			if !strings.Contains(kv, "=") {
				return fmt.Errorf("mkimage: -env %q: want KEY=value", kv)
			}
			spec.Env = append(spec.Env, kv)
		}
	}
	for _, p := range strings.Split(*ports, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		n, err := strconv.Atoi(p)
		if err != nil {
			return fmt.Errorf("mkimage: port %q: %w", p, err)
		}
		spec.Ports = append(spec.Ports, n)
	}
	img, err := image.Build(spec)
	if err != nil {
		return err
	}
	ref := "mcpid-" + *name + ":" + *version
	if err := image.WriteOCITar(*dst, ref, img); err != nil {
		return err
	}
	d, err := img.Digest()
	if err != nil {
		return fmt.Errorf("mkimage: %w", err)
	}
	fmt.Fprintf(out, "%s %s %s\n", *dst, ref, d)
	return nil
}

func verify(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("mkimage verify", flag.ContinueOnError)
	work := fs.String("work-dir", os.TempDir(), "where images are unpacked")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("mkimage verify: name the OCI tars to check")
	}
	var errs []error
	for _, p := range fs.Args() {
		r, err := image.Verify(ctx, p, *work)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p, err))
			continue
		}
		fmt.Fprintf(out, "%s: %s runs as uid %d gid %d, %d CA certificates\n", p, r.Service, r.UID, r.GID, r.SystemRoots)
	}
	return errors.Join(errs...)
}
