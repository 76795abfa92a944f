// Command lockmigrate applies embedded SQL migrations to PostgreSQL exactly
// once, however many replicas start at the same time. See README.md.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		cancel(signalCause{sig.(syscall.Signal)})
		// A second signal means the operator wants out now.
		<-sigs
		os.Exit(exitForSignal(sig.(syscall.Signal)))
	}()
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	cancel(nil)
	os.Exit(code)
}

// run is the whole program behind main: it never exits, takes its
// environment through getenv and returns the exit code, so tests drive it
// in-process exactly as the binary runs.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cmd, rest := "migrate", args
	if len(args) > 0 {
		cmd, rest = args[0], args[1:]
	}
	switch cmd {
	case "-h", "--help", "help":
		writeHelp(stdout)
		return exitOK
	case "version", "--version":
		fmt.Fprintf(stdout, "lockmigrate %s\n", version)
		return exitOK
	}
	c, ok := commands[cmd]
	if !ok {
		fmt.Fprintf(stderr, "lockmigrate: unknown command %q; run lockmigrate --help\n", cmd)
		return exitUsage
	}
	return c(ctx, rest, getenv, stdout, stderr)
}
