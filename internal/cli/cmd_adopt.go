package cli

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/lockmigrate/lockmigrate/internal/adopt"
	"github.com/lockmigrate/lockmigrate/runner"
)

var adoptCmd = &command{
	name: "adopt",
	usage: []string{adoptUsage,
		"take over a database migrated by that tool: record what it applied",
		"as baseline (not run), so migrate applies only newer files"},
	run: runAdopt,
}

// adoptUsage names the tools adopt reads, as package adopt lists them.
var adoptUsage = func() string {
	tools := make([]string, len(adopt.Tools))
	for i, t := range adopt.Tools {
		tools[i] = string(t)
	}
	return "lockmigrate adopt " + strings.Join(tools, "|") + " [--table NAME] [--schema NAME]"
}()

// runAdopt hands a database migrated by another tool over to lockmigrate:
// it reads that tool's version table and records the migrations it applied
// as baseline, so the next migrate applies only newer files.
func runAdopt(ctx context.Context, a *app, args []string) int {
	src, ok := parseAdopt(a, args)
	if !ok {
		return exitUsage
	}
	if err := a.setup(ctx, withMigrations); err != nil {
		return exitCode(ctx, err)
	}
	var (
		found *adopt.Result
		done  *runner.BaselineResult
	)
	err := a.withRunner(ctx, a.opts.target, func(s session) error {
		known := make([]int64, len(a.migs))
		for i, m := range a.migs {
			known[i] = m.Version
		}
		var err error
		if found, err = adopt.Read(ctx, s.conn, src, known); err != nil || len(found.Versions) == 0 {
			return err
		}
		done, err = s.runner.Baseline(ctx, found.Versions)
		return err
	})
	if err != nil {
		return a.fail(ctx, "adopt failed", err)
	}
	a.writeAdopted(ctx, src.Tool, found, done)
	return exitOK
}

// parseAdopt reads adopt's arguments: the tool may come before or after the
// flags.
func parseAdopt(a *app, args []string) (adopt.Source, bool) {
	fl := flag.NewFlagSet("adopt", flag.ContinueOnError)
	fl.SetOutput(a.stderr)
	table := fl.String("table", "", "the tool's version table (default: schema_migrations for golang-migrate and dbmate, goose_db_version, schema_version)")
	schema := fl.String("schema", "", "schema of that table (default: the search path; public for tern)")
	var tool string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		tool, args = args[0], args[1:]
	}
	if err := fl.Parse(args); err != nil {
		fmt.Fprintf(a.stderr, "lockmigrate: usage: %s\n", adoptUsage)
		return adopt.Source{}, false
	}
	rest := fl.Args()
	if tool == "" && len(rest) > 0 {
		tool, rest = rest[0], rest[1:]
	}
	if len(rest) > 0 || !slices.Contains(adopt.Tools, adopt.Tool(tool)) {
		fmt.Fprintf(a.stderr, "lockmigrate: usage: %s (got %q)\n", adoptUsage, append([]string{tool}, rest...))
		return adopt.Source{}, false
	}
	return adopt.Source{Tool: adopt.Tool(tool), Schema: *schema, Table: *table}, true
}

// writeAdopted logs and prints what adopt found and recorded.
func (a *app) writeAdopted(ctx context.Context, tool adopt.Tool, found *adopt.Result, done *runner.BaselineResult) {
	hist := a.opts.target.historyTable()
	if len(found.Versions) == 0 {
		fmt.Fprintf(a.stdout, "nothing to adopt: %s's table %s records no applied migration; `lockmigrate migrate` will apply all %d\n",
			tool, found.Table, len(a.migs))
		return
	}
	newer := 0
	for _, m := range a.migs {
		if m.Version > found.Version {
			newer++
		}
	}
	a.log.LogAttrs(ctx, slog.LevelInfo, "adopted", slog.String("tool", string(tool)), slog.String("table", found.Table),
		slog.Int64("tool_version", found.Version), slog.Int("baselined", len(done.Versions)),
		slog.Bool("already_done", done.AlreadyDone), slog.Bool("state_check_upgraded", done.ConstraintUpgraded))
	if done.AlreadyDone {
		fmt.Fprintf(a.stdout, "already adopted: %s holds exactly this baseline (%d migrations up to version %d from %s %s); nothing written\n",
			hist, len(done.Versions), found.Version, tool, found.Table)
		return
	}
	fmt.Fprintf(a.stdout, "adopted %s at version %d (%s): recorded %d migrations (versions %d to %d) as baseline in %s without running them; "+
		"`lockmigrate migrate` will apply the %d newer one(s)\n",
		tool, found.Version, found.Table, len(done.Versions), done.Versions[0], done.Versions[len(done.Versions)-1], hist, newer)
}
