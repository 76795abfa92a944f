// Package cli is lockmigrate's command line: one file per command
// (cmd_*.go), the one state they share (app.go), the one translation of the
// loaded configuration into library options (options.go), the run report
// with its three views (report.go) and the one error → exit code mapping
// (exitcode.go). It holds no domain logic: migrations are package runner's,
// advisory locks package lock's, tenants package fleet's.
package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"runtime/debug"
	"strings"

	"github.com/lockmigrate/lockmigrate/internal/config"
)

// command is one subcommand: its usage lines (the first is the synopsis,
// the others explain it) for --help, and the function that runs it.
type command struct {
	name  string
	usage []string
	run   func(ctx context.Context, a *app, args []string) int
}

// commands lists the subcommands in the order --help shows them; migrate,
// the default, first.
func commands() []*command {
	return []*command{migrateCmd, statusCmd, validateCmd, lintCmd, resolveCmd, adoptCmd, unlockCmd, planCmd}
}

// gcPercent is the collector's target when GOGC is not set. A run lives
// for milliseconds to minutes and keeps little: at GOGC=100 the collector
// ran several cycles over what a large migration set keeps live (a quarter
// of a no-op's instructions at 10,000 applied files), at 400 it runs about
// none of them, for no measurable change of the maximum RSS (21 MB either
// way at 10,000; see docs/performance.md).
const gcPercent = 400

// Run is the whole program behind main: it never exits, takes its
// environment through getenv and returns the exit code, so tests drive it
// in-process exactly as the binary runs. version is the binary's version.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, version string) int {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	name, rest := "migrate", args
	if len(args) > 0 {
		name, rest = args[0], args[1:]
	}
	switch name {
	case "-h", "--help", "help":
		writeHelp(stdout, version)
		return exitOK
	case "version", "--version":
		fmt.Fprintf(stdout, "lockmigrate %s\n", version)
		return exitOK
	}
	for _, c := range commands() {
		if c.name == name {
			return c.run(ctx, &app{stdout: stdout, stderr: stderr, getenv: getenv, version: version, command: name}, rest)
		}
	}
	fmt.Fprintf(stderr, "lockmigrate: unknown command %q; run lockmigrate --help\n", name)
	return exitUsage
}

// writeHelp builds --help from the commands' own usage lines.
func writeHelp(w io.Writer, version string) {
	fmt.Fprintf(w, "lockmigrate %s: apply SQL migrations to PostgreSQL exactly once, from many replicas at once.\n\nUsage:\n", version)
	rows := [][]string{}
	for _, c := range commands() {
		rows = append(rows, c.usage)
	}
	rows = append(rows, []string{"lockmigrate version", "print the version"},
		[]string{"lockmigrate --help", "this text"})
	for _, u := range rows {
		writeUsage(w, u)
	}
	fmt.Fprint(w, "\nConfiguration comes from environment variables only:\n")
	config.WriteHelp(w)
	fmt.Fprint(w, `
Exit codes: 0 applied, up to date, skipped or waited; 1 a migration failed; 2 configuration or usage;
3 database unreachable or authentication failed; 4 wait timeout; 5 validation; 130/143 SIGINT/SIGTERM.
Multi-tenant mode (LOCKMIGRATE_TENANTS_QUERY): exit 1 when any tenant failed, whatever the failure.
`)
}

// usageColumn is where the explanation starts when the synopsis is short
// enough to share its line.
const usageColumn = 31

// writeUsage prints a synopsis and its explanation lines: on the synopsis's
// line when it fits, below it otherwise.
func writeUsage(w io.Writer, u []string) {
	synopsis, text := "  "+u[0], u[1:]
	if len(text) > 0 && len(synopsis) < usageColumn-1 {
		fmt.Fprintf(w, "%-*s%s\n", usageColumn, synopsis, text[0])
		text = text[1:]
	} else {
		fmt.Fprintln(w, synopsis)
	}
	for _, line := range text {
		fmt.Fprintf(w, "%s%s\n", strings.Repeat(" ", usageColumn), line)
	}
}

// parseJSONFlag parses the arguments of a command whose only flag is
// --json.
func (a *app) parseJSONFlag(name string, args []string) (asJSON, ok bool) {
	fl := flag.NewFlagSet(name, flag.ContinueOnError)
	fl.SetOutput(a.stderr)
	j := fl.Bool("json", false, "print JSON instead of a table")
	if err := fl.Parse(args); err != nil || fl.NArg() > 0 {
		return false, false
	}
	return *j, true
}
