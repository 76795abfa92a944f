package cli

import (
	"log/slog"
	"maps"
	"os"
	"strconv"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/lockmigrate/lockmigrate/internal/config"
	"github.com/lockmigrate/lockmigrate/internal/dbconn"
	"github.com/lockmigrate/lockmigrate/internal/fleet"
	"github.com/lockmigrate/lockmigrate/internal/metrics"
	"github.com/lockmigrate/lockmigrate/lock"
	"github.com/lockmigrate/lockmigrate/runner"
)

// options is everything the commands derive from the loaded configuration:
// newOptions is the only place that translates config.Config into the
// libraries' options, and the configuration itself is never changed.
type options struct {
	podName string
	// conn is the connection configuration, keepalives included.
	conn *pgx.ConnConfig
	// target is the single-schema run's history table and lock.
	target target
	// runner is the template of every runner's options; runnerFor sets the
	// history table.
	runner runner.Options
	// fleet is the multi-tenant run's options but for Connect and
	// Migrations, which the run supplies.
	fleet fleet.Options
	// pusher is nil when no Pushgateway is configured.
	pusher *metrics.Pusher
	// gate lints the pending files before a run applies them; nil with
	// LOCKMIGRATE_LINT=off.
	gate *lintGate
}

// target is one history table and the advisory lock that guards it.
type target struct {
	schema, table string
	key           int64
}

// historyTable is the table's name as the output shows it.
func (t target) historyTable() string { return t.schema + "." + t.table }

func newOptions(cfg *config.Config, runID uuid.UUID, log *slog.Logger) (options, error) {
	o := options{podName: cfg.PodName}
	if o.podName == "" {
		o.podName, _ = os.Hostname()
	}
	o.target = target{schema: cfg.Schema, table: cfg.Table, key: lock.DefaultKey(cfg.Schema, cfg.Table)}
	if cfg.LockKey != "" {
		o.target.key = lock.ParseKey(cfg.LockKey)
	}
	o.runner = runner.Options{
		Schema:           cfg.Schema,
		Table:            cfg.Table,
		OnLocked:         runner.OnLocked(cfg.OnLocked),
		WaitTimeout:      cfg.WaitTimeout,
		Transaction:      runner.TransactionMode(cfg.Transaction),
		LockTimeout:      cfg.LockTimeout,
		LockRetries:      cfg.LockRetries,
		StatementTimeout: cfg.StatementTimeout,
		AllowOutOfOrder:  cfg.AllowOutOfOrder,
		BaselineVersion:  cfg.BaselineVersion,
		AppliedBy:        o.podName,
		RunID:            runID,
		Logger:           log,

		Phase:                    runner.Phase(cfg.Phase),
		BeforeLock:               rolloutGate(cfg, log),
		BackfillSleep:            cfg.BackfillSleep,
		BackfillMaxLag:           cfg.BackfillMaxLag,
		BackfillProgressInterval: cfg.BackfillProgress,
	}
	if o.gate = newLintGate(cfg, log); o.gate != nil {
		o.runner.BeforeApply = o.gate.beforeApply
		o.runner.AfterLock = o.gate.afterLock
	}
	shard := fleet.Shard{Index: cfg.ShardIndex, Count: cfg.Shards}
	o.fleet = fleet.Options{Runner: o.runner, Query: cfg.TenantsQuery, Concurrency: cfg.TenantConcurrency,
		FailFast: cfg.TenantFailFast, Shard: shard, Logger: log}
	if cfg.PushgatewayURL != "" {
		o.pusher = &metrics.Pusher{URL: cfg.PushgatewayURL, Job: cfg.PushgatewayJob, Grouping: grouping(cfg, shard),
			Username: cfg.PushgatewayUsername, Password: cfg.PushgatewayPassword, Timeout: cfg.PushgatewayTimeout}
	}
	var err error
	o.conn, err = dbconn.Config(cfg.DatabaseURL, cfg.Lookup, "lockmigrate/"+o.podName, dbconn.Keepalive{
		Idle: cfg.TCPKeepalivesIdle, Interval: cfg.TCPKeepalivesInterval,
		Count: cfg.TCPKeepalivesCount, UserTimeout: cfg.TCPUserTimeout})
	return o, err
}

// grouping is the Pushgateway group of the run's metrics. Shards push to
// groups of their own, or the last one to finish would overwrite the
// others' tenant counts; the label takes a fixed set of values, so the
// Pushgateway's groups stay bounded.
func grouping(cfg *config.Config, shard fleet.Shard) map[string]string {
	if shard.Count <= 1 || cfg.TenantsQuery == "" {
		return cfg.Grouping
	}
	g := maps.Clone(cfg.Grouping)
	if g == nil {
		g = map[string]string{}
	}
	g["shard"] = strconv.Itoa(shard.Index)
	return g
}

// runnerFor is the runner's options for t's history table.
func (o options) runnerFor(t target) runner.Options {
	r := o.runner
	r.Schema, r.Table = t.schema, t.table
	return r
}

// tenantTarget is a tenant's history table and lock, as the fleet derives
// them: the tenant's schema and the default key of that table.
func (o options) tenantTarget(tenant string) target {
	return target{schema: tenant, table: o.target.table, key: lock.DefaultKey(tenant, o.target.table)}
}
