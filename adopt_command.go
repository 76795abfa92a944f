package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"

	"github.com/lockmigrate/lockmigrate/internal/adopt"
	"github.com/lockmigrate/lockmigrate/lock"
	"github.com/lockmigrate/lockmigrate/runner"
)

const adoptUsage = "lockmigrate adopt golang-migrate|goose|tern [--table NAME] [--schema NAME]"

// cmdAdopt hands a database migrated by another tool over to lockmigrate:
// it reads that tool's version table and records the migrations it applied
// as baseline, so the next migrate applies only newer files.
func cmdAdopt(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("adopt", flag.ContinueOnError)
	fl.SetOutput(stderr)
	table := fl.String("table", "", "the tool's version table (default: schema_migrations, goose_db_version, schema_version)")
	schema := fl.String("schema", "", "schema of that table (default: the search path; public for tern)")
	// The tool may come before or after the flags.
	var tool string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		tool, args = args[0], args[1:]
	}
	if err := fl.Parse(args); err != nil {
		fmt.Fprintf(stderr, "lockmigrate: usage: %s\n", adoptUsage)
		return exitUsage
	}
	rest := fl.Args()
	if tool == "" && len(rest) > 0 {
		tool, rest = rest[0], rest[1:]
	}
	if len(rest) > 0 || !slices.Contains(adopt.Tools, adopt.Tool(tool)) {
		fmt.Fprintf(stderr, "lockmigrate: usage: %s (got %q)\n", adoptUsage, append([]string{tool}, rest...))
		return exitUsage
	}
	e, err := setup(ctx, getenv, stderr, "adopt")
	if err != nil {
		return exitCode(ctx, err)
	}
	src := adopt.Source{Tool: adopt.Tool(tool), Schema: *schema, Table: *table}
	var (
		found *adopt.Result
		done  *runner.BaselineResult
	)
	err = e.withRunnerConn(ctx, func(r *runner.Runner, q adopt.Querier) error {
		known := make([]int64, len(e.migs))
		for i, m := range e.migs {
			known[i] = m.Version
		}
		var err error
		if found, err = adopt.Read(ctx, q, src, known); err != nil || len(found.Versions) == 0 {
			return err
		}
		done, err = r.Baseline(ctx, found.Versions)
		return err
	})
	if err != nil {
		code := exitCode(ctx, err)
		e.log.Error("adopt failed", "error", err.Error(), "exit_code", code)
		return code
	}
	hist := e.cfg.Schema + "." + e.cfg.Table
	if len(found.Versions) == 0 {
		fmt.Fprintf(stdout, "nothing to adopt: %s's table %s records no applied migration; `lockmigrate migrate` will apply all %d\n",
			tool, found.Table, len(e.migs))
		return exitOK
	}
	newer := 0
	for _, m := range e.migs {
		if m.Version > found.Version {
			newer++
		}
	}
	e.log.LogAttrs(ctx, slog.LevelInfo, "adopted", slog.String("tool", tool), slog.String("table", found.Table),
		slog.Int64("tool_version", found.Version), slog.Int("baselined", len(done.Versions)),
		slog.Bool("already_done", done.AlreadyDone), slog.Bool("state_check_upgraded", done.ConstraintUpgraded))
	if done.AlreadyDone {
		fmt.Fprintf(stdout, "already adopted: %s holds exactly this baseline (%d migrations up to version %d from %s %s); nothing written\n",
			hist, len(done.Versions), found.Version, tool, found.Table)
		return exitOK
	}
	fmt.Fprintf(stdout, "adopted %s at version %d (%s): recorded %d migrations (versions %d to %d) as baseline in %s without running them; "+
		"`lockmigrate migrate` will apply the %d newer one(s)\n",
		tool, found.Version, found.Table, len(done.Versions), done.Versions[0], done.Versions[len(done.Versions)-1], hist, newer)
	return exitOK
}

// withRunnerConn is withRunner for a command that also queries the
// connection itself.
func (e *env) withRunnerConn(ctx context.Context, fn func(*runner.Runner, adopt.Querier) error) error {
	conn, err := e.connect(ctx)
	if err != nil {
		return err
	}
	defer closeConn(ctx, conn)
	r, err := runner.New(conn, lock.New(conn, e.key, e.log), e.migs, e.runnerOptions())
	if err != nil {
		return err
	}
	return fn(r, conn)
}
