// Command lockmigrate applies embedded SQL migrations to PostgreSQL exactly
// once, however many replicas start at the same time. See README.md; the
// commands live in internal/cli.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/lockmigrate/lockmigrate/internal/cli"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		sig := (<-sigs).(syscall.Signal)
		cancel(cli.SignalCause(sig))
		// A second signal means the operator wants out now.
		<-sigs
		os.Exit(cli.SignalExitCode(sig))
	}()
	code := cli.Run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr, version)
	cancel(nil)
	os.Exit(code)
}
