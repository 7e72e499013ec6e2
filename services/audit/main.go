// Command mcpid-audit runs the mcpid audit service.
package main

import (
	"context"
	"io"

	"github.com/mcpid/mcpid/lib/service"
	"github.com/mcpid/mcpid/services/audit/server"
)

func main() {
	var cfg server.Config
	service.Main("mcpid-audit", cfg.RegisterFlags, func(ctx context.Context, logs io.Writer) (*service.Server, error) {
		cfg.LogOutput = logs
		return cfg.Complete(ctx)
	})
}
