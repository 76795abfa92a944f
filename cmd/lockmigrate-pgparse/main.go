//go:build cgo

// Command lockmigrate-pgparse is the PostgreSQL parser (libpg_query, C) of
// a lockmigrate built without cgo, in a binary of its own: lockmigrate
// starts it from next to its executable the first time it lints, once per
// process, and talks to it over stdin and stdout (the protocol is in
// internal/lint/pgparse). It exits 0 at EOF on stdin, which is also what
// the parent's exit gives it, whatever way the parent ends. Build it as
// the Makefile does: CGO_ENABLED=1, linked statically.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/lockmigrate/lockmigrate/internal/lint/pgparse"
)

func main() {
	// The parent decides when this ends (EOF on stdin): a Ctrl-C sent to
	// the terminal's process group must not kill the parser under a run
	// that is stopping cleanly.
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM)
	if len(os.Args) > 1 {
		fmt.Fprintf(os.Stderr, "%s takes no arguments: lockmigrate starts it to lint (docs/lint.md)\n", os.Args[0])
		os.Exit(2)
	}
	out, err := protocolOut()
	if err != nil {
		fmt.Fprintf(os.Stderr, "lockmigrate-pgparse: %v\n", err)
		os.Exit(1)
	}
	if err := pgparse.Serve(os.Stdin, out); err != nil {
		fmt.Fprintf(os.Stderr, "lockmigrate-pgparse: %v\n", err)
		os.Exit(1)
	}
}
