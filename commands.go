package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/lockmigrate/lockmigrate/internal/config"
	"github.com/lockmigrate/lockmigrate/internal/dbconn"
	"github.com/lockmigrate/lockmigrate/internal/metrics"
	"github.com/lockmigrate/lockmigrate/lock"
	"github.com/lockmigrate/lockmigrate/runner"
)

type command func(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int

var commands = map[string]command{
	"migrate":  cmdMigrate,
	"status":   cmdStatus,
	"validate": cmdValidate,
	"resolve":  cmdResolve,
	"adopt":    cmdAdopt,
	"unlock":   cmdUnlock,
	"plan":     cmdPlan,
}

func writeHelp(w io.Writer) {
	fmt.Fprintf(w, `lockmigrate %s: apply SQL migrations to PostgreSQL exactly once, from many replicas at once.

Usage:
  lockmigrate [migrate]        take the advisory lock and apply pending migrations (the default)
  lockmigrate status [--json]  show applied and pending migrations and the lock holder
  lockmigrate validate         check the migration set (and the database, when one is configured)
  lockmigrate resolve VERSION applied|retry
                               settle an interrupted no-transaction migration after inspecting it:
                               applied = its effects are complete; retry = run the whole file again
  lockmigrate adopt golang-migrate|goose|tern [--table NAME] [--schema NAME]
                               take over a database migrated by that tool: record what it applied
                               as baseline (not run), so migrate applies only newer files
  lockmigrate unlock [--tenant SCHEMA] [--force [--pid PID] [--timeout 30s]] [--json]
                               show who holds the migration lock; --force terminates that backend
                               (pg_terminate_backend, only while it still holds the lock) and waits for the release
  lockmigrate plan [--json]    dry run: the pending migrations, their mode and statement count; takes no lock,
                               changes nothing; offline (every migration) when no database is configured;
                               with LOCKMIGRATE_TENANTS_QUERY, tenants grouped by what would run in them
  lockmigrate version          print the version
  lockmigrate --help           this text

Configuration comes from environment variables only:
`, version)
	config.WriteHelp(w)
	fmt.Fprint(w, `
Exit codes: 0 applied, up to date, skipped or waited; 1 a migration failed; 2 configuration or usage;
3 database unreachable or authentication failed; 4 wait timeout; 5 validation; 130/143 SIGINT/SIGTERM.
Multi-tenant mode (LOCKMIGRATE_TENANTS_QUERY): exit 1 when any tenant failed, whatever the failure.
`)
}

func noArgs(args []string, stderr io.Writer, cmd string) bool {
	if len(args) == 0 {
		return true
	}
	fmt.Fprintf(stderr, "lockmigrate: %s takes no arguments, got %q; run lockmigrate --help\n", cmd, args)
	return false
}

// cmdMigrate is the main job: fast path, lock, apply, unlock.
func cmdMigrate(ctx context.Context, args []string, getenv func(string) string, _, stderr io.Writer) int {
	if !noArgs(args, stderr, "migrate") {
		return exitUsage
	}
	start := time.Now()
	e, err := setup(ctx, getenv, stderr, "migrate")
	var (
		res    *runner.Result
		holder *lock.Holder
	)
	if err == nil && e.cfg.TenantsQuery != "" {
		return e.migrateTenants(ctx, start)
	}
	if err == nil {
		e.log.LogAttrs(ctx, slog.LevelInfo, "run started",
			slog.String("version", version), slog.String("pod", e.podName),
			slog.String("namespace", e.cfg.PodNamespace),
			slog.String("history_table", e.cfg.Schema+"."+e.cfg.Table), slog.Int64("lock_key", e.key),
			slog.Int("migrations", len(e.migs)), slog.String("on_locked", e.cfg.OnLocked),
			slog.String("transaction", e.cfg.Transaction))
		res, holder, err = e.migrate(ctx)
	}
	return e.finish(ctx, start, res, holder, err)
}

// finish reports a migrate run, however far it got (setup failures
// included): the termination message, the metrics push (once the
// configuration could be read) and the one "run finished" event.
func (e *env) finish(ctx context.Context, start time.Time, res *runner.Result, holder *lock.Holder, err error) int {
	e.dropEarly(ctx) // only when the run never got as far as connecting
	code := exitCode(ctx, err)
	end := time.Now()
	attrs := []slog.Attr{
		slog.Int("exit_code", code),
		slog.Int64("duration_ms", end.Sub(start).Milliseconds()),
	}
	if e.cfg != nil && e.cfg.PushgatewayURL != "" {
		attrs = append(attrs, slog.Bool("metrics_pushed", e.pushMetrics(ctx, e.metricsRun(res, code, start, end))))
	}
	if res != nil {
		attrs = append(attrs,
			slog.Int("applied", len(res.Applied)), slog.Int("pending", res.Pending),
			slog.Int64("schema_version", res.SchemaVersion),
			slog.Bool("lock_acquired", res.LockAcquired), slog.Int("lock_attempts", res.LockAttempts),
			slog.Int64("lock_wait_ms", res.LockWait.Milliseconds()),
			slog.Int64("lock_held_ms", res.LockHeld.Milliseconds()))
		if res.Baselined > 0 {
			attrs = append(attrs, slog.Int("baselined", res.Baselined))
		}
		if res.LockTimeoutRetries > 0 {
			attrs = append(attrs, slog.Int("lock_timeout_retries", res.LockTimeoutRetries))
		}
	}
	if holder != nil {
		attrs = append(attrs, slog.Any("holder", *holder))
	}
	e.writeTermination(newTermination(e, res, code, err, end.Sub(start).Milliseconds()))
	if err != nil {
		attrs = append([]slog.Attr{slog.String("outcome", "failed"), slog.String("error_kind", errorKind(code)),
			slog.String("error", err.Error())}, attrs...)
		e.log.LogAttrs(ctx, slog.LevelError, "run finished", attrs...)
		return code
	}
	attrs = append([]slog.Attr{slog.String("outcome", string(res.Outcome))}, attrs...)
	e.log.LogAttrs(ctx, slog.LevelInfo, "run finished", attrs...)
	return code
}

// metricsRun describes the run for the Pushgateway.
func (e *env) metricsRun(res *runner.Result, code int, start, end time.Time) metrics.Run {
	m := metrics.Run{Version: version, Outcome: "failed", ErrorKind: errorKind(code),
		Start: start, End: end, ConnectAttempts: e.connectAttempts}
	if res == nil {
		return m
	}
	if code == exitOK {
		m.Outcome = string(res.Outcome)
	}
	m.LockTried = res.LockAttempts > 0
	m.LockConflict, m.LockAcquired, m.LockAttempts = res.LockConflict, res.LockAcquired, res.LockAttempts
	m.LockWait, m.LockHeld = res.LockWait, res.LockHeld
	m.SchemaKnown = res.LockAcquired || m.Outcome == string(runner.OutcomeUpToDate)
	m.SchemaVersion, m.Pending = res.SchemaVersion, res.Pending
	m.ApplyTried, m.Applied, m.LockTimeoutRetries = res.ApplyStarted, len(res.Applied), res.LockTimeoutRetries
	return m
}

// pushMetrics pushes run to the Pushgateway within its timeout. A failure is
// logged and otherwise ignored: metrics must never fail a deployment. The
// push ignores the run's cancellation, so a run stopped by SIGTERM still
// reports, within the push timeout.
func (e *env) pushMetrics(ctx context.Context, run metrics.Run) bool {
	p := metrics.Pusher{URL: e.cfg.PushgatewayURL, Job: e.cfg.PushgatewayJob, Grouping: e.cfg.Grouping,
		Username: e.cfg.PushgatewayUsername, Password: e.cfg.PushgatewayPassword, Timeout: e.cfg.PushgatewayTimeout}
	if err := p.Push(context.WithoutCancel(ctx), run); err != nil {
		e.log.LogAttrs(ctx, slog.LevelWarn, "metrics push failed; the run's result is unaffected",
			slog.String("error", err.Error()), slog.Duration("timeout", e.cfg.PushgatewayTimeout))
		return false
	}
	return true
}

func (e *env) migrate(ctx context.Context) (res *runner.Result, holder *lock.Holder, err error) {
	err = e.withRunner(ctx, func(r *runner.Runner, adv *lock.Advisory) error {
		var err error
		// A skipping replica names the holder: the lost try looks it up in
		// the same statement, saving every losing replica a round trip.
		adv.HolderOnConflict = e.cfg.OnLocked == string(runner.Skip)
		res, err = r.Migrate(ctx)
		if err != nil && ctx.Err() == nil && dbconn.Lost(err) {
			return fmt.Errorf("connection to the database lost during the run (a transactional migration was rolled back by the server; retry): %w", err)
		}
		if err == nil && res.Outcome == runner.OutcomeSkipped {
			holder = adv.ConflictHolder()
		}
		return err
	})
	return res, holder, err
}

// statusReport is status's --json document.
type statusReport struct {
	*runner.Status
	HistoryTable string       `json:"history_table"`
	LockKey      int64        `json:"lock_key"`
	LockHolder   *lock.Holder `json:"lock_holder"`
}

func cmdStatus(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("status", flag.ContinueOnError)
	fl.SetOutput(stderr)
	asJSON := fl.Bool("json", false, "print JSON instead of a table")
	if err := fl.Parse(args); err != nil || fl.NArg() > 0 {
		return exitUsage
	}
	e, err := setup(ctx, getenv, stderr, "status")
	if err != nil {
		return exitCode(ctx, err)
	}
	if e.cfg.TenantsQuery != "" {
		if err := e.statusTenants(ctx, stdout, *asJSON); err != nil {
			code := exitCode(ctx, err)
			e.log.Error("status failed", "error", err.Error(), "exit_code", code)
			return code
		}
		return exitOK
	}
	rep, err := e.status(ctx)
	if err != nil {
		code := exitCode(ctx, err)
		e.log.Error("status failed", "error", err.Error(), "exit_code", code)
		return code
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
		return exitOK
	}
	writeStatus(stdout, rep)
	return exitOK
}

func (e *env) status(ctx context.Context) (rep *statusReport, err error) {
	err = e.withRunner(ctx, func(r *runner.Runner, adv *lock.Advisory) error {
		st, err := r.Status(ctx)
		if err != nil {
			return err
		}
		holder, err := adv.Holder(ctx)
		if err != nil {
			return err
		}
		rep = &statusReport{Status: st, HistoryTable: e.cfg.Schema + "." + e.cfg.Table,
			LockKey: e.key, LockHolder: holder}
		return nil
	})
	return rep, err
}

func writeStatus(w io.Writer, rep *statusReport) {
	fmt.Fprintf(w, "history table: %s  lock key: %d\n", rep.HistoryTable, rep.LockKey)
	fmt.Fprintf(w, "schema version: %d  applied: %d  pending: %d\n", rep.SchemaVersion, rep.Applied, rep.Pending)
	if h := rep.LockHolder; h != nil {
		fmt.Fprintf(w, "lock: held by pid %d (%s) from %s, user %s, connected since %s, %s\n",
			h.PID, h.ApplicationName, h.ClientAddr, h.User, h.Since.UTC().Format(time.RFC3339), h.State)
	} else {
		fmt.Fprintln(w, "lock: free")
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(w, "problem: %s\n", p)
	}
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "\nVERSION\tNAME\tSTATE\tAPPLIED AT\tBY\tDURATION")
	for _, m := range rep.Migrations {
		at, dur := "-", "-"
		if m.AppliedAt != nil {
			at = m.AppliedAt.UTC().Format(time.RFC3339)
			dur = (time.Duration(m.DurationMS) * time.Millisecond).String()
		}
		by := m.AppliedBy
		if by == "" {
			by = "-"
		}
		name := m.Name
		if m.NoTransaction {
			name += " (no-transaction)"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", m.Version, name, m.State, at, by, dur)
	}
	tw.Flush()
}

func cmdValidate(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if !noArgs(args, stderr, "validate") {
		return exitUsage
	}
	e, err := setup(ctx, getenv, stderr, "validate")
	if err != nil {
		return exitCode(ctx, err)
	}
	checked := "offline"
	if !databaseConfigured(e.cfg, getenv) {
		// Without the history, a file holding its own BEGIN/COMMIT may be
		// one already applied by another tool and adopted as baseline: a
		// run never executes it, so offline it is a warning; against the
		// database (and in every run) a pending one is refused.
		if err := runner.CheckTransactionControl(e.migs); err != nil {
			e.log.Warn("transactional file ends its own transaction: a run refuses it unless it is already applied (e.g. adopted)",
				"error", err.Error())
		}
	} else {
		checked = "against the database"
		if err := e.validate(ctx); err != nil {
			code := exitCode(ctx, err)
			e.log.Error("validation failed", "error", err.Error(), "exit_code", code)
			return code
		}
	}
	fmt.Fprintf(stdout, "ok: %d migrations valid (%s)\n", len(e.migs), checked)
	return exitOK
}

func (e *env) validate(ctx context.Context) error {
	return e.withRunner(ctx, func(r *runner.Runner, _ *lock.Advisory) error { return r.Validate(ctx) })
}

func cmdResolve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) != 2 {
		fmt.Fprintln(stderr, "lockmigrate: usage: lockmigrate resolve VERSION applied|retry")
		return exitUsage
	}
	version, err := strconv.ParseInt(args[0], 10, 64)
	action := runner.ResolveAction(args[1])
	if err != nil || version <= 0 || (action != runner.ResolveApplied && action != runner.ResolveRetry) {
		fmt.Fprintf(stderr, "lockmigrate: resolve: want a positive version and applied or retry, got %q\n", args)
		return exitUsage
	}
	e, err := setup(ctx, getenv, stderr, "resolve")
	if err != nil {
		return exitCode(ctx, err)
	}
	err = e.withRunner(ctx, func(r *runner.Runner, _ *lock.Advisory) error { return r.Resolve(ctx, version, action) })
	if err != nil {
		code := exitCode(ctx, err)
		e.log.Error("resolve failed", "error", err.Error(), "exit_code", code)
		return code
	}
	fmt.Fprintf(stdout, "migration %d marked %s\n", version, action)
	return exitOK
}

// withRunner connects and runs fn with a runner and its advisory lock on
// that one connection, which it closes afterwards.
func (e *env) withRunner(ctx context.Context, fn func(*runner.Runner, *lock.Advisory) error) error {
	conn, err := e.connect(ctx)
	if err != nil {
		return err
	}
	defer closeConn(ctx, conn)
	adv := lock.New(conn, e.key, e.log)
	r, err := runner.New(conn, adv, e.migs, e.runnerOptions())
	if err != nil {
		return err
	}
	return fn(r, adv)
}
