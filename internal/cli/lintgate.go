package cli

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/lockmigrate/lockmigrate/internal/config"
	"github.com/lockmigrate/lockmigrate/internal/lint"
	"github.com/lockmigrate/lockmigrate/internal/metrics"
	"github.com/lockmigrate/lockmigrate/runner"
)

// lintOptions are the lint options of the configuration, without a
// database. PGVersion is the offline assumption; set DB and clear it for
// an online lint, which takes the server's.
func lintOptions(cfg *config.Config) lint.Options {
	return lint.Options{PGVersion: cfg.LintPGVersion, SharedTransaction: cfg.Transaction == string(runner.TransactionAll),
		SmallTableRows: float64(cfg.LintSmallTableRows), Enable: config.LintRules(cfg.LintEnable), Disable: config.LintRules(cfg.LintDisable)}
}

// lintFiles turns migrations into the linter's files.
func lintFiles(migs []*runner.Migration, applied bool) []lint.File {
	out := make([]lint.File, len(migs))
	for i, m := range migs {
		out[i] = lint.File{Name: m.File, SQL: m.SQL, NoTransaction: m.NoTransaction, Applied: applied}
	}
	return out
}

// lintGate lints the pending files of a run before it applies them
// (runner.Options.BeforeApply), against the database on the run's own
// connection: LOCKMIGRATE_LINT=warn logs each finding, error also refuses
// the run, nothing applied, when one is at error. Only the lock holder
// with something to apply gets here: the fast path never lints.
type lintGate struct {
	refuse bool
	opts   lint.Options
	log    *slog.Logger

	mu sync.Mutex
	// found counts the findings of the runs' lints (a multi-tenant run
	// lints per tenant); nil until one linted.
	found *metrics.LintFindings
}

func newLintGate(cfg *config.Config, log *slog.Logger) *lintGate {
	if cfg.Lint == "off" {
		return nil
	}
	opts := lintOptions(cfg)
	opts.PGVersion = 0 // online: the server's
	// Every tenant of a fleet lints the same files: parse each text once.
	opts.Cache = &lint.ParseCache{}
	return &lintGate{refuse: cfg.Lint == "error", opts: opts, log: log}
}

// afterLock starts the parser's helper (a build without cgo) while the
// lock holder reads the history and creates its table, instead of on the
// gate's first parse: its start is about 2 ms, more on a busy node, and
// the round trips in between are as long. Only the lock holder of a run
// whose fast path found pending files gets here.
func (g *lintGate) afterLock(context.Context) { lint.PrestartParser() }

// maxErrorFindings is how many findings the refusal's message names.
const maxErrorFindings = 5

func (g *lintGate) beforeApply(ctx context.Context, conn runner.Conn, pending, applied []*runner.Migration) error {
	opts := g.opts
	opts.DB = conn
	start := time.Now()
	rep, err := lint.Lint(ctx, append(lintFiles(applied, true), lintFiles(pending, false)...), opts)
	if err != nil {
		if !g.refuse && ctx.Err() == nil {
			// warn must never stop a deployment: lint is advice there.
			g.log.LogAttrs(ctx, slog.LevelWarn, "lint skipped", slog.String("error", err.Error()))
			return nil
		}
		return fmt.Errorf("lint the pending migrations: %w", err)
	}
	g.record(rep)
	for _, f := range rep.Findings {
		level := slog.LevelWarn
		if f.Severity == lint.SeverityError && g.refuse {
			level = slog.LevelError
		}
		g.log.LogAttrs(ctx, level, "lint finding", slog.String("file", f.File), slog.Int("line", f.Line),
			slog.Int("column", f.Column), slog.String("rule", f.Rule), slog.String("severity", string(f.Severity)),
			slog.String("message", f.Message), slog.String("fix", f.Fix), slog.String("example", f.Example))
	}
	errs := rep.Count(lint.SeverityError)
	level := slog.LevelDebug // a clean lint is not news, in a fleet of thousands of tenants least of all
	if len(rep.Findings) > 0 {
		level = slog.LevelInfo
	}
	g.log.LogAttrs(ctx, level, "lint finished", slog.Int("files", rep.Files), slog.Int("errors", errs),
		slog.Int("warnings", rep.Count(lint.SeverityWarning)), slog.Int("pg_version", rep.PGVersion),
		slog.Int64("duration_ms", time.Since(start).Milliseconds()))
	if !g.refuse || errs == 0 {
		return nil
	}
	return lintError(rep, "LOCKMIGRATE_LINT=error refuses the run, nothing applied")
}

// lintError is the validation error (exit 5) of a lint with findings at
// error, naming the first of them.
func lintError(rep *lint.Report, what string) error {
	var named []string
	n := 0
	for _, f := range rep.Findings {
		if f.Severity != lint.SeverityError {
			continue
		}
		if n++; n <= maxErrorFindings {
			named = append(named, f.String())
		}
	}
	if n > maxErrorFindings {
		named = append(named, fmt.Sprintf("and %d more", n-maxErrorFindings))
	}
	return &runner.ValidationError{Kind: runner.KindLint, Detail: fmt.Sprintf("%d finding(s) at error (%s): %s; "+
		"follow each fix, or suppress one with \"%s <rule> <reason>\" on the line before its statement",
		n, what, strings.Join(named, "; "), lint.SuppressionPrefix)}
}

func (g *lintGate) record(rep *lint.Report) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.found == nil {
		g.found = &metrics.LintFindings{}
	}
	g.found.Errors += rep.Count(lint.SeverityError)
	g.found.Warnings += rep.Count(lint.SeverityWarning)
}

// findings are the counts for the report, nil when nothing was linted.
func (g *lintGate) findings() *metrics.LintFindings {
	if g == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.found == nil {
		return nil
	}
	f := *g.found
	return &f
}
