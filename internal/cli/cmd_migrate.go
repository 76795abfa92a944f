package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockmigrate/lockmigrate/internal/dbconn"
	"github.com/lockmigrate/lockmigrate/internal/fleet"
	"github.com/lockmigrate/lockmigrate/lock"
	"github.com/lockmigrate/lockmigrate/runner"
)

var migrateCmd = &command{
	name:  "migrate",
	usage: []string{"lockmigrate [migrate]", "take the advisory lock and apply pending migrations (the default)"},
	run:   runMigrate,
}

// runMigrate is the main job: fast path, lock, apply, unlock; in
// multi-tenant mode the same for every tenant of this runner's shard.
func runMigrate(ctx context.Context, a *app, args []string) int {
	if !noArgs(args, a.stderr, "migrate") {
		return exitUsage
	}
	start := time.Now()
	if err := a.setup(ctx, withMigrations); err != nil {
		return a.finish(ctx, a.singleReport(ctx, start, nil, nil, err))
	}
	if a.cfg.TenantsQuery != "" {
		return a.migrateTenants(ctx, start)
	}
	a.log.LogAttrs(ctx, slog.LevelInfo, "run started",
		slog.String("version", a.version), slog.String("pod", a.opts.podName),
		slog.String("namespace", a.cfg.PodNamespace),
		slog.String("history_table", a.opts.target.historyTable()), slog.Int64("lock_key", a.opts.target.key),
		slog.Int("migrations", len(a.migs)), slog.String("on_locked", a.cfg.OnLocked),
		slog.String("transaction", a.cfg.Transaction), slog.String("phase", a.cfg.Phase))
	res, holder, err := a.migrate(ctx)
	return a.finish(ctx, a.singleReport(ctx, start, res, holder, err))
}

func (a *app) migrate(ctx context.Context) (res *runner.Result, holder *lock.Holder, err error) {
	err = a.withRunner(ctx, a.opts.target, func(s session) error {
		var err error
		// A skipping replica names the holder: the lost try looks it up in
		// the same statement, saving every losing replica a round trip.
		s.lock.HolderOnConflict = a.cfg.OnLocked == string(runner.Skip)
		res, err = s.runner.Migrate(ctx)
		if err != nil && ctx.Err() == nil && dbconn.Lost(err) {
			return fmt.Errorf("connection to the database lost during the run (a transactional migration was rolled back by the server; retry): %w", err)
		}
		if err == nil && res.Outcome == runner.OutcomeSkipped {
			holder = s.lock.ConflictHolder()
		}
		return err
	})
	return res, holder, err
}

// migrateTenants is migrate in multi-tenant mode (LOCKMIGRATE_TENANTS_QUERY):
// the fleet runs every tenant of this runner's shard, and the run ends with
// one report.
func (a *app) migrateTenants(ctx context.Context, start time.Time) int {
	o := a.opts.fleet
	a.log.LogAttrs(ctx, slog.LevelInfo, "run started",
		slog.String("version", a.version), slog.String("pod", a.opts.podName),
		slog.String("namespace", a.cfg.PodNamespace), slog.String("mode", "tenants"),
		slog.String("history_table", "<tenant>."+a.cfg.Table), slog.Int("migrations", len(a.migs)),
		slog.Int("concurrency", o.Concurrency), slog.Bool("fail_fast", o.FailFast),
		slog.Int("shard", o.Shard.Index), slog.Int("shards", o.Shard.Count),
		slog.String("on_locked", a.cfg.OnLocked), slog.String("transaction", a.cfg.Transaction))
	var attempts atomic.Int64
	o.Connect = func(ctx context.Context) (*pgx.Conn, error) {
		conn, n, err := dbconn.Connect(ctx, a.opts.conn, a.cfg.ConnectTimeout, a.log)
		attempts.Add(int64(n))
		return conn, err
	}
	o.Migrations = a.migs
	sum, err := fleet.Run(ctx, o)
	a.connectAttempts = int(attempts.Load())
	return a.finish(ctx, a.tenantsReport(ctx, start, sum, err))
}

// noArgs refuses arguments to a command that takes none.
func noArgs(args []string, stderr io.Writer, cmd string) bool {
	if len(args) == 0 {
		return true
	}
	fmt.Fprintf(stderr, "lockmigrate: %s takes no arguments, got %q; run lockmigrate --help\n", cmd, args)
	return false
}
