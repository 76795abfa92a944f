package cli

import (
	"context"
	"log/slog"
	"time"

	"github.com/lockmigrate/lockmigrate/internal/fleet"
	"github.com/lockmigrate/lockmigrate/internal/metrics"
	"github.com/lockmigrate/lockmigrate/lock"
	"github.com/lockmigrate/lockmigrate/runner"
)

// loggedFailures is how many failed tenants the "run finished" event names;
// each failure also has its own "tenant failed" event.
const loggedFailures = 100

// report is what one migrate run did, however far it got: the one source of
// its three views, the "run finished" log event, the termination message and
// the pushed metrics.
type report struct {
	// outcome is the result's outcome, or "failed" when err is set.
	outcome    string
	code       int
	err        error
	start, end time.Time
	// connectAttempts is how many connection attempts the run made.
	connectAttempts int
	// single is a single-schema run's result (nil when it never got one);
	// holder the session that held the lock when it skipped.
	single *runner.Result
	holder *lock.Holder
	// tenants is a multi-tenant run's summary, shard its shard.
	tenants *fleet.Summary
	shard   fleet.Shard
	// lint counts the findings of the pending files' lint (nil when the
	// run linted nothing).
	lint *metrics.LintFindings
}

func newReport(ctx context.Context, start time.Time, err error) report {
	r := report{outcome: string(fleet.OutcomeFailed), code: exitCode(ctx, err), err: err, start: start, end: time.Now()}
	return r
}

// singleReport reports a single-schema run.
func (a *app) singleReport(ctx context.Context, start time.Time, res *runner.Result, holder *lock.Holder, err error) report {
	r := newReport(ctx, start, err)
	r.connectAttempts, r.single, r.holder = a.connectAttempts, res, holder
	if err == nil && res != nil {
		r.outcome = string(res.Outcome)
	}
	return r
}

// tenantsReport reports a multi-tenant run.
func (a *app) tenantsReport(ctx context.Context, start time.Time, sum *fleet.Summary, err error) report {
	r := newReport(ctx, start, err)
	r.connectAttempts, r.tenants, r.shard = a.connectAttempts, sum, a.opts.fleet.Shard
	if err == nil {
		r.outcome = string(sum.Outcome())
	}
	return r
}

func (r report) failed() bool { return r.outcome == string(fleet.OutcomeFailed) }

// finish renders the report: the termination message, the metrics push
// (once the configuration could be read) and the one "run finished" event.
// It returns the run's exit code.
func (a *app) finish(ctx context.Context, r report) int {
	a.dropEarly(ctx) // only when the run never got as far as connecting
	r.lint = a.opts.gate.findings()
	pushed := a.opts.pusher != nil && a.cfg != nil
	if pushed {
		pushed = a.push(ctx, r.metrics(a.version))
	}
	writeTermination(a.termLog, a.red, r.termination(a.runID.String(), a.version))
	level := slog.LevelInfo
	if r.err != nil {
		level = slog.LevelError
	}
	a.log.LogAttrs(ctx, level, "run finished", r.logAttrs(a.opts.pusher != nil && a.cfg != nil, pushed)...)
	return r.code
}

// push pushes run to the Pushgateway within its timeout. A failure is
// logged and otherwise ignored: metrics must never fail a deployment. The
// push ignores the run's cancellation, so a run stopped by SIGTERM still
// reports, within the push timeout.
func (a *app) push(ctx context.Context, run metrics.Run) bool {
	if err := a.opts.pusher.Push(context.WithoutCancel(ctx), run); err != nil {
		a.log.LogAttrs(ctx, slog.LevelWarn, "metrics push failed; the run's result is unaffected",
			slog.String("error", err.Error()), slog.Duration("timeout", a.cfg.PushgatewayTimeout))
		return false
	}
	return true
}

// logAttrs is the "run finished" event's view.
func (r report) logAttrs(pushConfigured, pushed bool) []slog.Attr {
	attrs := []slog.Attr{slog.String("outcome", r.outcome)}
	if r.err != nil {
		attrs = append(attrs, slog.String("error_kind", errorKind(r.code)), slog.String("error", r.err.Error()))
	}
	attrs = append(attrs, slog.Int("exit_code", r.code))
	if r.tenants != nil {
		attrs = append(attrs, r.tenantsAttrs()...)
	}
	if r.lint != nil {
		attrs = append(attrs, slog.Int("lint_errors", r.lint.Errors), slog.Int("lint_warnings", r.lint.Warnings))
	}
	attrs = append(attrs, slog.Int64("duration_ms", r.end.Sub(r.start).Milliseconds()))
	if pushConfigured {
		attrs = append(attrs, slog.Bool("metrics_pushed", pushed))
	}
	if res := r.single; res != nil {
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
		attrs = append(attrs, phaseAttrs(res)...)
	}
	if r.holder != nil {
		attrs = append(attrs, slog.Any("holder", *r.holder))
	}
	return attrs
}

// tenantsAttrs are the fleet summary's fields of the "run finished" event.
func (r report) tenantsAttrs() []slog.Attr {
	sum := r.tenants
	attrs := []slog.Attr{
		slog.Int("tenants_listed", sum.Listed), slog.Int("tenants_total", sum.Total),
		slog.Int("tenants_applied", sum.Applied), slog.Int("tenants_up_to_date", sum.UpToDate+sum.Waited),
		slog.Int("tenants_skipped", sum.Skipped), slog.Int("tenants_failed", sum.Failed),
		slog.Int("tenants_not_attempted", sum.NotAttempted), slog.Int("migrations_applied", sum.MigrationsApplied)}
	if len(sum.Failures) > 0 {
		names := make([]string, 0, min(len(sum.Failures), loggedFailures))
		for _, f := range sum.Failures[:min(len(sum.Failures), loggedFailures)] {
			names = append(names, f.Tenant+" ("+f.Kind+")")
		}
		attrs = append(attrs, slog.Any("failed_tenants", names))
		if len(sum.Failures) > loggedFailures {
			attrs = append(attrs, slog.Int("failed_tenants_omitted", len(sum.Failures)-loggedFailures))
		}
	}
	return append(attrs, slog.Int("connections", sum.Connections), slog.Int("fast_path_queries", sum.ControlQueries),
		slog.Int64("fast_path_ms", sum.FastPath.Milliseconds()))
}

// termination is the termination message's view.
func (r report) termination(runID, version string) termination {
	t := termination{Outcome: r.outcome, ExitCode: r.code, ErrorKind: errorKind(r.code),
		DurationMS: r.end.Sub(r.start).Milliseconds(), RunID: runID, Version: version}
	if r.err != nil {
		t.Error = r.err.Error()
	}
	if res := r.single; res != nil {
		for _, a := range res.Applied {
			t.Applied = append(t.Applied, a.Version)
		}
		t.AppliedCount = len(res.Applied)
		t.SchemaVersion, t.Pending, t.LockWaitMS = res.SchemaVersion, res.Pending, res.LockWait.Milliseconds()
	}
	if sum := r.tenants; sum != nil {
		t.Pending, t.AppliedCount = sum.Pending(), sum.MigrationsApplied
		tt := &tenantsTermination{Total: sum.Total, Applied: sum.Applied, UpToDate: sum.UpToDate + sum.Waited,
			Skipped: sum.Skipped, FailedCount: sum.Failed, NotAttempted: sum.NotAttempted}
		for _, f := range sum.Failures {
			tt.Failed = append(tt.Failed, failedTenant{Tenant: f.Tenant, Kind: f.Kind})
		}
		if r.shard.Count > 1 {
			tt.Shard = &shardTermination{Index: r.shard.Index, Count: r.shard.Count}
		}
		t.Tenants = tt
	}
	return t
}

// metrics is the Pushgateway's view.
func (r report) metrics(version string) metrics.Run {
	m := metrics.Run{Version: version, Outcome: r.outcome, Start: r.start, End: r.end, ConnectAttempts: r.connectAttempts, Lint: r.lint}
	if r.failed() {
		m.ErrorKind = errorKind(r.code)
	}
	if sum := r.tenants; sum != nil {
		// No lock or schema families: they describe one history table.
		m.ApplyTried = sum.Applied > 0 || sum.MigrationsApplied > 0 || sum.Failed > 0
		m.Applied, m.LockTimeoutRetries = sum.MigrationsApplied, sum.LockTimeoutRetries
		m.Tenants = &metrics.Tenants{Total: sum.Total, Pending: sum.Pending(), Failed: sum.Failed, Applied: sum.Applied}
		return m
	}
	res := r.single
	if res == nil {
		return m
	}
	m.LockTried = res.LockAttempts > 0
	m.LockConflict, m.LockAcquired, m.LockAttempts = res.LockConflict, res.LockAcquired, res.LockAttempts
	m.LockWait, m.LockHeld = res.LockWait, res.LockHeld
	m.SchemaKnown = res.LockAcquired || m.Outcome == string(runner.OutcomeUpToDate)
	m.SchemaVersion, m.Pending = res.SchemaVersion, res.Pending
	m.ApplyTried, m.Applied, m.LockTimeoutRetries = res.ApplyStarted, len(res.Applied), res.LockTimeoutRetries
	m.PendingExpand, m.PendingContract = res.PendingExpand, res.PendingContract
	m.Backfill = backfillMetrics(res)
	return m
}
