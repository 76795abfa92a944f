package cli

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/lockmigrate/lockmigrate/internal/lint"
	"github.com/lockmigrate/lockmigrate/internal/lint/pgparse"
	"github.com/lockmigrate/lockmigrate/runner"
)

var lintCmd = &command{
	name: "lint",
	usage: []string{"lockmigrate lint [--format text|json|sarif] [FILE...]",
		"check migration files (default: the configured set; against the database, its pending files, when one is",
		"configured) for statements that block a live database; exit 5 when a finding is at error (docs/lint.md)"},
	run: runLint,
}

func runLint(ctx context.Context, a *app, args []string) int {
	fl := flag.NewFlagSet("lint", flag.ContinueOnError)
	fl.SetOutput(a.stderr)
	format := fl.String("format", "text", "text, json or sarif")
	if err := fl.Parse(args); err != nil {
		return exitUsage
	}
	if *format != "text" && *format != "json" && *format != "sarif" {
		fmt.Fprintf(a.stderr, "lockmigrate: lint --format %q: accepted: text, json, sarif\n", *format)
		return exitUsage
	}
	if err := a.setup(ctx, withMigrations); err != nil {
		return exitCode(ctx, err)
	}
	if err := pgparse.Unavailable(); err != nil {
		return a.fail(ctx, "lint unavailable", err)
	}
	rep, err := a.lint(ctx, fl.Args())
	if err != nil {
		return a.fail(ctx, "lint failed", err)
	}
	switch *format {
	case "json":
		err = lint.WriteJSON(a.stdout, rep)
	case "sarif":
		err = lint.WriteSARIF(a.stdout, rep, a.version)
	default:
		err = lint.WriteText(a.stdout, rep)
	}
	if err != nil {
		return a.fail(ctx, "lint output failed", err)
	}
	if rep.Count(lint.SeverityError) > 0 {
		return a.fail(ctx, "lint found errors", lintError(rep, "lockmigrate lint"))
	}
	return exitOK
}

// lint lints the configured set or the named files. The set: offline,
// every file, as a first deployment to an empty database runs them (a table
// created by an earlier file is new); against the database, the pending
// ones, with the applied ones as their context, as a run's gate lints them.
// Named files (the new ones of a change, in CI) are linted with the other
// files of the set as applied context, so a table the set created earlier
// counts as existing, offline too.
func (a *app) lint(ctx context.Context, paths []string) (*lint.Report, error) {
	opts := lintOptions(a.cfg)
	files := lintFiles(a.migs, false)
	if len(paths) > 0 {
		named, err := readLintFiles(paths)
		if err != nil {
			return nil, err
		}
		files = withContext(a.migs, named)
	}
	if !a.cfg.DatabaseConfigured() {
		return lint.Lint(ctx, files, opts)
	}
	var rep *lint.Report
	err := a.withRunner(ctx, a.opts.target, func(s session) error {
		if len(paths) == 0 && len(a.migs) > 0 {
			plan, err := s.runner.Plan(ctx)
			if plan == nil {
				return err
			}
			files = splitByPlan(a.migs, plan)
		}
		opts.DB, opts.PGVersion = s.conn, 0
		var err error
		rep, err = lint.Lint(ctx, files, opts)
		return err
	})
	return rep, err
}

// splitByPlan marks the set's migrations that the plan does not list as
// pending as applied (context only).
func splitByPlan(migs []*runner.Migration, plan *runner.Plan) []lint.File {
	pending := map[int64]bool{}
	for _, sp := range plan.Schemas {
		for _, p := range sp.Pending {
			pending[p.Version] = p.Mode != runner.ModeBaseline
		}
	}
	files := lintFiles(migs, false)
	for i, m := range migs {
		files[i].Applied = !pending[m.Version]
	}
	return files
}

// withContext puts the set's files other than the named ones (by base
// name) before them, as applied context. A named file of the set is read
// as the set reads it: the part that runs, in its transaction mode,
// whatever marker sets it.
func withContext(migs []*runner.Migration, named []lint.File) []lint.File {
	inSet := map[string]*runner.Migration{}
	for _, m := range migs {
		inSet[m.File] = m
	}
	isNamed := map[string]bool{}
	for i, f := range named {
		base := filepath.Base(f.Name)
		isNamed[base] = true
		// The set's SQL is the part of the file that runs (a prefix: a
		// goose or dbmate down section is not linted).
		if m := inSet[base]; m != nil && strings.HasPrefix(f.SQL, m.SQL) {
			named[i].SQL, named[i].NoTransaction = m.SQL, m.NoTransaction
		}
	}
	var files []lint.File
	for _, f := range lintFiles(migs, true) {
		if !isNamed[f.Name] {
			files = append(files, f)
		}
	}
	return append(files, named...)
}

// readLintFiles reads files named on the command line; a first line
// "-- lockmigrate:no-transaction" makes one a no-transaction file.
func readLintFiles(paths []string) ([]lint.File, error) {
	var files []lint.File
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, usageError{fmt.Sprintf("lint: %v", err)}
		}
		sql := strings.TrimPrefix(string(b), "\ufeff")
		first, _, _ := strings.Cut(sql, "\n")
		files = append(files, lint.File{Name: filepath.ToSlash(p), SQL: sql,
			NoTransaction: strings.TrimSpace(first) == runner.NoTransactionDirective})
	}
	return files, nil
}
