package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockmigrate/lockmigrate/internal/dbconn"
	"github.com/lockmigrate/lockmigrate/internal/fleet"
	"github.com/lockmigrate/lockmigrate/internal/metrics"
)

// tenantsTermination is the termination message's summary of a
// multi-tenant run. Failed is cut to fit the 4 KiB limit; FailedOmitted
// counts what was cut.
type tenantsTermination struct {
	Total         int               `json:"total"`
	Applied       int               `json:"applied"`
	UpToDate      int               `json:"up_to_date"`
	Skipped       int               `json:"skipped"`
	Failed        []failedTenant    `json:"failed,omitempty"`
	FailedCount   int               `json:"failed_count"`
	FailedOmitted int               `json:"failed_omitted,omitempty"`
	NotAttempted  int               `json:"not_attempted"`
	Shard         *shardTermination `json:"shard,omitempty"`
}

type failedTenant struct {
	Tenant string `json:"tenant"`
	Kind   string `json:"kind"`
}

type shardTermination struct {
	Index int `json:"index"`
	Count int `json:"count"`
}

// loggedFailures is how many failed tenants the "run finished" event names;
// each failure also has its own "tenant failed" event.
const loggedFailures = 100

// migrateTenants is migrate in multi-tenant mode (LOCKMIGRATE_TENANTS_QUERY):
// the fleet runs every tenant of this runner's shard, and the run ends with
// one summary, in the log, the termination message and the metrics.
func (e *env) migrateTenants(ctx context.Context, start time.Time) int {
	shard := fleet.Shard{Index: e.cfg.ShardIndex, Count: e.cfg.Shards}
	e.log.LogAttrs(ctx, slog.LevelInfo, "run started",
		slog.String("version", version), slog.String("pod", e.podName),
		slog.String("namespace", e.cfg.PodNamespace), slog.String("mode", "tenants"),
		slog.String("history_table", "<tenant>."+e.cfg.Table), slog.Int("migrations", len(e.migs)),
		slog.Int("concurrency", e.cfg.TenantConcurrency), slog.Bool("fail_fast", e.cfg.TenantFailFast),
		slog.Int("shard", shard.Index), slog.Int("shards", shard.Count),
		slog.String("on_locked", e.cfg.OnLocked), slog.String("transaction", e.cfg.Transaction))
	var attempts atomic.Int64
	sum, err := fleet.Run(ctx, fleet.Options{
		Connect: func(ctx context.Context) (*pgx.Conn, error) {
			conn, n, err := dbconn.Connect(ctx, e.connCfg, e.cfg.ConnectTimeout, e.log)
			attempts.Add(int64(n))
			return conn, err
		},
		Migrations:  e.migs,
		Runner:      e.runnerOptions(),
		Query:       e.cfg.TenantsQuery,
		Concurrency: e.cfg.TenantConcurrency,
		FailFast:    e.cfg.TenantFailFast,
		Shard:       shard,
		Logger:      e.log,
	})
	e.connectAttempts = int(attempts.Load())
	if shard.Count > 1 {
		// Shards push to groups of their own, or the last one to finish
		// would overwrite the others' tenant counts. The label takes a
		// fixed set of values, so the Pushgateway's groups stay bounded.
		g := maps.Clone(e.cfg.Grouping)
		if g == nil {
			g = map[string]string{}
		}
		g["shard"] = strconv.Itoa(shard.Index)
		e.cfg.Grouping = g
	}
	return e.finishTenants(ctx, start, sum, shard, err)
}

// finishTenants reports a multi-tenant run.
func (e *env) finishTenants(ctx context.Context, start time.Time, sum *fleet.Summary, shard fleet.Shard, err error) int {
	code := exitCode(ctx, err)
	end := time.Now()
	outcome := string(fleet.OutcomeFailed)
	if err == nil {
		outcome = string(sum.Outcome())
	}
	attrs := []slog.Attr{slog.String("outcome", outcome), slog.Int("exit_code", code)}
	if err != nil {
		attrs = append(attrs, slog.String("error_kind", errorKind(code)), slog.String("error", err.Error()))
	}
	attrs = append(attrs,
		slog.Int("tenants_listed", sum.Listed), slog.Int("tenants_total", sum.Total),
		slog.Int("tenants_applied", sum.Applied), slog.Int("tenants_up_to_date", sum.UpToDate+sum.Waited),
		slog.Int("tenants_skipped", sum.Skipped), slog.Int("tenants_failed", sum.Failed),
		slog.Int("tenants_not_attempted", sum.NotAttempted), slog.Int("migrations_applied", sum.MigrationsApplied))
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
	attrs = append(attrs, slog.Int("connections", sum.Connections), slog.Int("fast_path_queries", sum.ControlQueries),
		slog.Int64("fast_path_ms", sum.FastPath.Milliseconds()), slog.Int64("duration_ms", end.Sub(start).Milliseconds()))
	if e.cfg.PushgatewayURL != "" {
		attrs = append(attrs, slog.Bool("metrics_pushed", e.pushMetrics(ctx, e.tenantsMetrics(sum, outcome, code, start, end))))
	}

	t := newTermination(e, nil, code, err, end.Sub(start).Milliseconds())
	t.Outcome, t.Pending = outcome, sum.Pending()
	t.AppliedCount = sum.MigrationsApplied
	tt := &tenantsTermination{Total: sum.Total, Applied: sum.Applied, UpToDate: sum.UpToDate + sum.Waited,
		Skipped: sum.Skipped, FailedCount: sum.Failed, NotAttempted: sum.NotAttempted}
	for _, f := range sum.Failures {
		tt.Failed = append(tt.Failed, failedTenant{Tenant: f.Tenant, Kind: f.Kind})
	}
	if shard.Count > 1 {
		tt.Shard = &shardTermination{Index: shard.Index, Count: shard.Count}
	}
	t.Tenants = tt
	e.writeTermination(t)

	level := slog.LevelInfo
	if err != nil {
		level = slog.LevelError
	}
	e.log.LogAttrs(ctx, level, "run finished", attrs...)
	return code
}

// tenantsMetrics describes a multi-tenant run for the Pushgateway: the
// run's families and the tenant counts, no lock or schema families.
func (e *env) tenantsMetrics(sum *fleet.Summary, outcome string, code int, start, end time.Time) metrics.Run {
	m := metrics.Run{Version: version, Outcome: outcome, Start: start, End: end, ConnectAttempts: e.connectAttempts,
		ApplyTried: sum.Applied > 0 || sum.MigrationsApplied > 0 || sum.Failed > 0, Applied: sum.MigrationsApplied,
		LockTimeoutRetries: sum.LockTimeoutRetries,
		Tenants:            &metrics.Tenants{Total: sum.Total, Pending: sum.Pending(), Failed: sum.Failed, Applied: sum.Applied}}
	if outcome == string(fleet.OutcomeFailed) {
		m.ErrorKind = errorKind(code)
	}
	return m
}

// statusTenants is status in multi-tenant mode: the fleet fast path's
// counts and the tenants not current.
func (e *env) statusTenants(ctx context.Context, stdout io.Writer, asJSON bool) error {
	conn, err := e.connect(ctx)
	if err != nil {
		return err
	}
	defer closeConn(ctx, conn)
	sv, err := fleet.Surveyor{Conn: conn, Query: e.cfg.TenantsQuery, Table: e.cfg.Table, Migrations: e.migs,
		Shard: fleet.Shard{Index: e.cfg.ShardIndex, Count: e.cfg.Shards}, Logger: e.log}.Survey(ctx)
	if err != nil {
		return err
	}
	rep := struct {
		Listed  int      `json:"tenants_listed"`
		Total   int      `json:"tenants_total"`
		Current int      `json:"tenants_current"`
		Pending []string `json:"tenants_pending"`
		Ahead   []string `json:"tenants_ahead,omitempty"`
		Queries int      `json:"queries"`
	}{sv.Listed, len(sv.Tenants), len(sv.Tenants) - len(sv.Pending), sv.Pending, sv.Ahead, sv.Queries}
	if rep.Pending == nil {
		rep.Pending = []string{}
	}
	if asJSON {
		writeJSON(stdout, rep)
		return nil
	}
	fmt.Fprintf(stdout, "tenants: %d listed, %d in this shard, %d current, %d pending (history table <tenant>.%s)\n",
		rep.Listed, rep.Total, rep.Current, len(rep.Pending), e.cfg.Table)
	if len(rep.Ahead) > 0 {
		fmt.Fprintf(stdout, "ahead of this binary: %d tenants\n", len(rep.Ahead))
	}
	for _, p := range rep.Pending {
		fmt.Fprintf(stdout, "pending: %s\n", p)
	}
	return nil
}
