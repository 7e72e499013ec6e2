// Command mcpid-token runs the mcpid token service.
package main

import (
	"context"
	"io"

	"github.com/mcpid/mcpid/lib/service"
	"github.com/mcpid/mcpid/services/token/server"
)

func main() {
	var cfg server.Config
	service.Main("mcpid-token", cfg.RegisterFlags, func(ctx context.Context, logs io.Writer) (*service.Server, error) {
		cfg.LogOutput = logs
		return cfg.Complete(ctx)
	})
}
