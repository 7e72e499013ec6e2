// Command mcpid-policy runs the mcpid policy service.
package main

import (
	"context"
	"io"

	"github.com/mcpid/mcpid/lib/service"
	"github.com/mcpid/mcpid/services/policy/server"
)

func main() {
	var cfg server.Config
	service.Main("mcpid-policy", cfg.RegisterFlags, func(ctx context.Context, logs io.Writer) (*service.Server, error) {
		cfg.LogOutput = logs
		return cfg.Complete(ctx)
	})
}
