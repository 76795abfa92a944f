// Command lockmigrate applies embedded SQL migrations to PostgreSQL exactly
// once, however many replicas start at the same time. See README.md; the
// commands live in internal/cli.
package main

import (
	"context"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/lockmigrate/lockmigrate/internal/cli"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// gcPercent is the collector's target when GOGC is not set. A run lives
// for milliseconds to minutes and keeps little: at GOGC=100 the collector
// ran several cycles over what a large migration set keeps live (23 % of a
// no-op's instructions at 10,000 applied files), at 400 it runs about none
// of them, for no measurable change of the maximum RSS (21 MB either way at
// 10,000; see docs/performance.md).
const gcPercent = 400

func main() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(gcPercent)
	}
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
