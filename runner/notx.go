package runner

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/lockmigrate/lockmigrate/internal/backoff"
	"github.com/lockmigrate/lockmigrate/internal/sqlsplit"
)

// firstLine is the short form of a statement used in messages.
func firstLine(sql string) string { return sqlsplit.FirstLine(sql) }

// applyNoTx runs a no-transaction migration one statement at a time, outside
// any transaction, and tracks its progress in the history: a "running" row is
// committed before the first statement and its statement counter after each
// one. If the process dies or a statement fails part-way, the row stays
// "running" and the next lock holder refuses to guess: the statements already
// run are committed and cannot be rolled back, and re-running them blindly (a
// CREATE INDEX CONCURRENTLY that left an INVALID index, say) would fail or do
// harm.
func (r *Runner) applyNoTx(ctx context.Context, res *Result, m *Migration) (time.Duration, error) {
	start := time.Now()
	if _, err := r.conn.Exec(ctx, `INSERT INTO `+r.hist.ident+
		` (version, name, checksum, applied_at, applied_by, run_id, state, statements_done)
VALUES ($1, $2, $3, clock_timestamp(), $4, $5::uuid, 'running', 0)`,
		m.Version, m.Name, m.Checksum, r.opts.AppliedBy, r.opts.RunID.String()); err != nil {
		return 0, fmt.Errorf("record start of migration %s in history: %w", m.File, err)
	}
	// Session-level settings: there is no transaction to scope SET LOCAL.
	// They are set only now, with the advisory lock held, so they never
	// limit the lock attempt itself.
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
		if err := r.execStatement(ctx, res, m, i, st); err != nil {
			return 0, err
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

// execStatement runs statement i of a no-transaction migration. On
// lock_timeout it retries the statement alone, which is safe because a
// statement that failed changed nothing, with one exception: a CREATE INDEX
// CONCURRENTLY (or REINDEX CONCURRENTLY) that fails after its catalog entry
// was committed leaves an INVALID index, and a retry would then fail with
// "already exists" or, with IF NOT EXISTS, silently keep the broken index.
// So every INVALID index that appeared during the failed attempt is dropped
// (concurrently, right before the retry: the transaction that blocked the
// build would block the drop as well) and the statement runs again. Indexes
// that were INVALID before are left alone: they are not ours to drop.
func (r *Runner) execStatement(ctx context.Context, res *Result, m *Migration, i int, st sqlsplit.Statement) error {
	retry := r.opts.LockTimeout > 0 && r.opts.LockRetries > 0
	var leftover []string // INVALID indexes our failed attempts created
	for attempt := 0; ; attempt++ {
		err := r.dropIndexes(ctx, &leftover)
		if err == nil {
			err = r.execTracked(ctx, st.SQL, retry, &leftover)
		}
		if err == nil {
			return nil
		}
		if !retry || !isLockTimeout(err) || attempt >= r.opts.LockRetries || ctx.Err() != nil {
			return r.statementError(ctx, m, i, st, err)
		}
		res.LockTimeoutRetries++
		delay := lockTimeoutBackoff.Delay(attempt + 1)
		r.log.LogAttrs(ctx, slog.LevelWarn, "lock_timeout reached; retrying the statement",
			slog.Int64("version", m.Version), slog.String("file", m.File), slog.Int("statement", i+1),
			slog.Int("line", st.Line), slog.String("error", err.Error()),
			slog.Int("retry", attempt+1), slog.Int("max_retries", r.opts.LockRetries),
			slog.Any("invalid_indexes_to_drop", leftover), slog.Any("lock_holders", r.blockers(ctx)),
			slog.Int64("delay_ms", delay.Milliseconds()))
		if err := backoff.Sleep(ctx, delay); err != nil {
			return err
		}
	}
}

// execTracked runs sql; when track is set it adds the INVALID indexes that
// appeared while sql ran (and failed) to leftover.
func (r *Runner) execTracked(ctx context.Context, sql string, track bool, leftover *[]string) error {
	var before []string
	if track {
		var err error
		if before, err = r.invalidIndexes(ctx); err != nil {
			return err
		}
	}
	_, err := r.conn.Exec(ctx, sql)
	if err == nil || !track || !isLockTimeout(err) {
		return err
	}
	after, lerr := r.invalidIndexes(ctx)
	if lerr != nil {
		return fmt.Errorf("%w (and listing INVALID indexes failed: %v)", err, lerr)
	}
	for _, idx := range after {
		if !slices.Contains(before, idx) && !slices.Contains(*leftover, idx) {
			*leftover = append(*leftover, idx)
		}
	}
	return err
}

// dropIndexes drops the INVALID indexes in leftover, removing each one that
// is gone from the list.
func (r *Runner) dropIndexes(ctx context.Context, leftover *[]string) error {
	for len(*leftover) > 0 {
		idx := (*leftover)[0]
		// idx is already quoted by format('%I.%I').
		if _, err := r.conn.Exec(ctx, "DROP INDEX CONCURRENTLY IF EXISTS "+idx); err != nil {
			return fmt.Errorf("drop INVALID index %s left by a failed attempt: %w", idx, err)
		}
		r.log.LogAttrs(ctx, slog.LevelInfo, "dropped INVALID index left by a failed attempt", slog.String("index", idx))
		*leftover = (*leftover)[1:]
	}
	return nil
}

// statementError builds the error of a failed no-transaction statement,
// naming any INVALID index the failure left.
func (r *Runner) statementError(ctx context.Context, m *Migration, i int, st sqlsplit.Statement, err error) error {
	me := migrationError(m, st.SQL, st.Line, 0, err).(*MigrationError)
	if me.Statement == "" {
		me.Line, me.Statement = st.Line, firstLine(st.SQL)
	}
	me.StatementIndex = i + 1
	if ctx.Err() == nil {
		if idx, ierr := r.invalidIndexes(ctx); ierr == nil && len(idx) > 0 {
			me.Err = fmt.Errorf("%w; INVALID indexes now present: %s", err, strings.Join(idx, ", "))
		}
	}
	return me
}
