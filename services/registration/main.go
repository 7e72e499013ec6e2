// Command mcpid-registration runs the mcpid registration service.
package main

import (
	"context"
	"io"

	"github.com/mcpid/mcpid/lib/service"
	"github.com/mcpid/mcpid/services/registration/server"
)

func main() {
	var cfg server.Config
	service.Main("mcpid-registration", cfg.RegisterFlags, func(ctx context.Context, logs io.Writer) (*service.Server, error) {
		cfg.LogOutput = logs
		return cfg.Complete(ctx)
	})
}
