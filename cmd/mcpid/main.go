// Command mcpid is the mcpid operator CLI. `mcpid dev` runs the whole system
// on one machine: embedded etcd, the development CA, every service, and the
// edge router that serves the issuer's OAuth surface on one origin. The
// other commands operate a running system over the services' gRPC admin
// APIs (internal/cli).
package main

import (
	"context"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/mcpid/mcpid/cmd/mcpid/internal/cli"
	"github.com/mcpid/mcpid/cmd/mcpid/internal/dev"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	cwd, _ := os.Getwd()
	userCfg, _ := os.UserConfigDir()
	code := cli.Execute(ctx, os.Args[1:], cli.Deps{
		Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr,
		Environ: os.Environ(), Cwd: cwd, UserConfigDir: userCfg,
		OpenBrowser: openBrowser,
		Dev:         dev.Main,
	})
	stop()
	os.Exit(code)
}

// openBrowser opens url with the desktop's opener; without one, `mcpid
// login` has already printed the URL.
func openBrowser(ctx context.Context, url string) error {
	var cmd *exec.Cmd
	switch runtime.GOOS {
	case "darwin":
		cmd = exec.CommandContext(ctx, "open", url)
	case "windows":
		cmd = exec.CommandContext(ctx, "rundll32", "url.dll,FileProtocolHandler", url)
	default:
		cmd = exec.CommandContext(ctx, "xdg-open", url)
	}
	return cmd.Start()
}
