// Command mcpid is the mcpid operator CLI. `mcpid dev` runs the whole system
// on one machine: embedded etcd, the development CA, every service, and the
// edge router that serves the issuer's OAuth surface on one origin.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/mcpid/mcpid/cmd/mcpid/internal/dev"
)

const usage = `mcpid — identity control plane for MCP servers

Usage:
  mcpid dev [flags]     run every service on one machine (embedded etcd)
  mcpid help            show this help

Run "mcpid dev -h" for the flags of dev.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args, environ []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		_, _ = io.WriteString(stderr, usage)
		return errors.New("no command given")
	}
	switch args[0] {
	case "dev":
		return dev.Main(ctx, args[1:], environ, stdout, stderr)
	case "help", "-h", "--help":
		_, _ = io.WriteString(stdout, usage)
		return nil
	default:
		_, _ = io.WriteString(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}
