package runner

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/lockmigrate/lockmigrate/internal/sqlsplit"
)

// firstLine is the short form of a statement used in messages.
func firstLine(sql string) string { return sqlsplit.FirstLine(sql) }

// applyNoTx runs a no-transaction migration one statement at a time, outside
// any transaction, and tracks its progress in the history: a "running" row is
// committed before the first statement and its statement counter after each
// one. If the process dies part-way, the next lock holder finds the row and
// refuses to guess: the statements already run are committed and cannot be
// rolled back, and re-running them blindly (a CREATE INDEX CONCURRENTLY that
// left an INVALID index, say) would fail or do harm.
func (r *Runner) applyNoTx(ctx context.Context, m *Migration) (time.Duration, error) {
	start := time.Now()
	if _, err := r.conn.Exec(ctx, `INSERT INTO `+r.hist.ident+
		` (version, name, checksum, applied_at, applied_by, run_id, state, statements_done)
VALUES ($1, $2, $3, clock_timestamp(), $4, $5, 'running', 0)`,
		m.Version, m.Name, m.Checksum, r.opts.AppliedBy, r.opts.RunID.String()); err != nil {
		return 0, fmt.Errorf("record start of migration %s in history: %w", m.File, err)
	}
	if set := r.timeoutSettings("SET"); set != "" {
		if _, err := r.conn.Exec(ctx, set); err != nil {
			return 0, fmt.Errorf("set timeouts: %w", err)
		}
		defer func() {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
			defer cancel()
			if _, err := r.conn.Exec(cctx, "RESET lock_timeout; RESET statement_timeout"); err != nil {
				r.log.LogAttrs(ctx, slog.LevelWarn, "reset timeouts failed", slog.String("error", err.Error()))
			}
		}()
	}
	progress := `UPDATE ` + r.hist.ident + ` SET statements_done = $2 WHERE version = $1`
	for i, st := range m.statements {
		r.log.LogAttrs(ctx, slog.LevelDebug, "no-transaction statement",
			slog.Int64("version", m.Version), slog.Int("statement", i+1), slog.Int("line", st.Line))
		if _, err := r.conn.Exec(ctx, st.SQL); err != nil {
			me := migrationError(m, st.SQL, st.Line, err).(*MigrationError)
			if me.Statement == "" {
				me.Line, me.Statement = st.Line, firstLine(st.SQL)
			}
			me.StatementIndex = i + 1
			return 0, me
		}
		if _, err := r.conn.Exec(ctx, progress, m.Version, i+1); err != nil {
			return 0, fmt.Errorf("record progress of migration %s (statement %d) in history: %w", m.File, i+1, err)
		}
	}
	d := time.Since(start)
	if _, err := r.conn.Exec(ctx, `UPDATE `+r.hist.ident+
		` SET state = 'applied', duration_ms = $2, applied_at = clock_timestamp() WHERE version = $1`,
		m.Version, d.Milliseconds()); err != nil {
		return 0, fmt.Errorf("record migration %s as applied in history: %w", m.File, err)
	}
	return d, nil
}
