// Command mcpid-registration runs the mcpid registration service.
package main

import (
	"context"
	"flag"
	"io"
	"strings"

	"github.com/mcpid/mcpid/lib/config"
	"github.com/mcpid/mcpid/lib/service"
	"github.com/mcpid/mcpid/services/registration/server"
)

func main() { service.Main(run) }

func run(ctx context.Context, args, environ []string, stderr io.Writer) error {
	var cfg server.Config
	fs := flag.NewFlagSet("mcpid-registration", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg.RegisterFlags(fs)
	unknown, err := config.Load(fs, args, environ)
	if err != nil {
		return err
	}
	cfg.LogOutput = stderr
	srv, err := cfg.Complete(ctx)
	if err != nil {
		return err
	}
	if len(unknown) > 0 {
		_, _ = io.WriteString(stderr, "warning: unknown settings in the environment: "+strings.Join(unknown, ", ")+"\n")
	}
	return srv.Run(ctx)
}
