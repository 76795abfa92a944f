package runner

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/lockmigrate/lockmigrate/internal/backoff"
)

// lagPoll is how often a paused backfill looks at the replication lag again.
var lagPoll = time.Second

// replicationLag is what pg_stat_replication says of the standbys of the
// primary a run is connected to.
type replicationLag struct {
	// max is the highest replay_lag (0 when there is no standby, and for a
	// standby that has replayed everything: its replay_lag turns NULL a
	// little after it caught up and the primary went idle).
	max time.Duration
	// standby is the application_name of the standby with the highest lag.
	standby string
	// standbys counts the WAL senders; hidden those whose details the role
	// may not see (it lacks pg_read_all_stats): their lag reads NULL.
	standbys, hidden int
}

// queryLag reads the replication lag on the primary. replay_lag is the time
// between the primary flushing WAL and a standby reporting it replayed:
// what a reader of that standby is behind by. (pg_last_xact_replay_timestamp()
// says the same from the standby's side, but lockmigrate only ever runs
// against the primary.) A standby that is disconnected has no row, so its
// lag is not seen; logical replication's WAL senders are rows too.
func (r *Runner) queryLag(ctx context.Context) (replicationLag, error) {
	var (
		l   replicationLag
		sec float64
	)
	err := r.conn.QueryRow(ctx, `SELECT count(*)::int, (count(*) FILTER (WHERE state IS NULL))::int,
       coalesce(extract(epoch FROM max(replay_lag)), 0)::float8,
       coalesce((array_agg(application_name ORDER BY replay_lag DESC NULLS LAST))[1], '')
  FROM pg_stat_replication`).Scan(&l.standbys, &l.hidden, &sec, &l.standby)
	if err != nil {
		return l, fmt.Errorf("read the replication lag (pg_stat_replication): %w", err)
	}
	l.max = time.Duration(math.Round(sec * float64(time.Second)))
	return l, nil
}

// awaitLag returns once the replication lag is within
// Options.BackfillMaxLag (at once when no ceiling is set, or no standby is
// connected), pausing the backfill meanwhile. A ceiling that cannot be
// checked, because the role may not see the standbys' lag, is an error
// rather than a ceiling silently never applied.
func (r *Runner) awaitLag(ctx context.Context, b *backfill) error {
	ceiling := r.opts.BackfillMaxLag
	if ceiling <= 0 {
		return nil
	}
	probe := r.lagProbe
	if probe == nil {
		probe = r.queryLag
	}
	var pausedAt, loggedAt time.Time
	for {
		l, err := probe(ctx)
		if err != nil {
			return err
		}
		if l.hidden > 0 {
			return fmt.Errorf("backfill %s: LOCKMIGRATE_BACKFILL_MAX_LAG is set, but the role cannot see the replay lag "+
				"of %d of %d standby(s) in pg_stat_replication, so the ceiling cannot be enforced: grant it pg_read_all_stats "+
				"(GRANT pg_read_all_stats TO <role>) or unset LOCKMIGRATE_BACKFILL_MAX_LAG", b.m.File, l.hidden, l.standbys)
		}
		if l.max <= ceiling {
			if !pausedAt.IsZero() {
				r.log.LogAttrs(ctx, slog.LevelInfo, "backfill resumed: replication lag within LOCKMIGRATE_BACKFILL_MAX_LAG",
					slog.Int64("version", b.m.Version), slog.Int64("lag_ms", l.max.Milliseconds()),
					slog.Int64("paused_ms", time.Since(pausedAt).Milliseconds()))
			}
			return nil
		}
		if pausedAt.IsZero() {
			pausedAt = time.Now()
			b.stats.LagPauses++
		}
		if time.Since(loggedAt) >= r.progressInterval() {
			loggedAt = time.Now()
			r.log.LogAttrs(ctx, slog.LevelWarn, "backfill paused: replication lag above LOCKMIGRATE_BACKFILL_MAX_LAG",
				slog.Int64("version", b.m.Version), slog.String("file", b.m.File),
				slog.Int64("lag_ms", l.max.Milliseconds()), slog.Int64("max_lag_ms", ceiling.Milliseconds()),
				slog.String("standby", l.standby), slog.Int("standbys", l.standbys),
				slog.Int64("paused_ms", time.Since(pausedAt).Milliseconds()))
		}
		if err := backoff.Sleep(ctx, lagPoll); err != nil {
			return err
		}
	}
}

// progressInterval is the least time between two progress events of a
// backfill (and between two "paused" events).
func (r *Runner) progressInterval() time.Duration {
	if r.opts.BackfillProgressInterval > 0 {
		return r.opts.BackfillProgressInterval
	}
	return DefaultBackfillProgressInterval
}
