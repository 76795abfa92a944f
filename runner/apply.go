package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lockmigrate/lockmigrate/internal/backoff"
	"github.com/lockmigrate/lockmigrate/internal/sqlsplit"
)

// rollbackTimeout bounds cleanup statements that must run even after the
// run's context was cancelled (SIGTERM).
const rollbackTimeout = 5 * time.Second

// lockTimeoutBackoff spaces retries after lock_timeout: the blocking
// transaction is usually short, and a retry must leave room for the readers
// that queued behind the failed DDL.
var lockTimeoutBackoff = backoff.Policy{Initial: 500 * time.Millisecond, Max: 10 * time.Second}

// apply runs the pending migrations in version order and appends each
// committed one to res.Applied. splits says, per pending migration, that
// the plan's checks split its file without error (plan.checkStatements);
// it may be shorter than pending.
func (r *Runner) apply(ctx context.Context, res *Result, pending []*Migration, splits []bool) error {
	if r.opts.Transaction == TransactionAll {
		var done []AppliedMigration
		err := r.retryLockTimeout(ctx, res, func() (err error) {
			done, err = r.execTx(ctx, pending, splits)
			return err
		})
		if err != nil {
			return err
		}
		for _, a := range done {
			r.logApplied(ctx, a, "all")
		}
		res.Applied = append(res.Applied, done...)
		return nil
	}
	for i, m := range pending {
		var (
			a   AppliedMigration
			err error
		)
		switch {
		case m.Backfill != nil:
			a = AppliedMigration{Version: m.Version, Name: m.Name}
			a.Duration, err = r.applyBackfill(ctx, res, m)
		case m.NoTransaction:
			a = AppliedMigration{Version: m.Version, Name: m.Name}
			a.Duration, err = r.applyNoTx(ctx, res, m)
		default:
			err = r.retryLockTimeout(ctx, res, func() error {
				done, err := r.execTx(ctx, []*Migration{m}, splits[min(i, len(splits)):min(i+1, len(splits))])
				if err == nil {
					a = done[0]
				}
				return err
			})
		}
		if err != nil {
			return err
		}
		tx := "each"
		if m.NoTransaction {
			tx = "none"
		}
		r.logApplied(ctx, a, tx)
		res.Applied = append(res.Applied, a)
	}
	return nil
}

// logApplied logs the "migration applied" event of a, which ran in
// transaction mode tx. It hands the record to the handler itself, as
// Logger.LogAttrs would, without the caller's program counter
// (runtime.Callers, a sixth of the event's cost), which no handler of
// lockmigrate's prints; the four attributes fit in the record without an
// allocation.
func (r *Runner) logApplied(ctx context.Context, a AppliedMigration, tx string) {
	h := r.log.Handler()
	if !h.Enabled(ctx, slog.LevelInfo) {
		return
	}
	rec := slog.NewRecord(time.Now(), slog.LevelInfo, "migration applied", 0)
	rec.AddAttrs(slog.Int64("version", a.Version), slog.String("name", a.Name),
		slog.Int64("duration_ms", a.Duration.Milliseconds()), slog.String("transaction", tx))
	_ = h.Handle(ctx, rec) // as Logger.LogAttrs: a log line that cannot be written is dropped
}

// retryLockTimeout runs try, a whole transaction, again when one of its
// statements hit lock_timeout.
func (r *Runner) retryLockTimeout(ctx context.Context, res *Result, try func() error) error {
	for retry := 0; ; retry++ {
		err := try()
		if err == nil || !isLockTimeout(err) || r.opts.LockTimeout <= 0 || retry >= r.opts.LockRetries {
			return err
		}
		res.LockTimeoutRetries++
		delay := lockTimeoutBackoff.Delay(retry + 1)
		r.log.LogAttrs(ctx, slog.LevelWarn, "lock_timeout reached; transaction rolled back, retrying",
			slog.String("error", err.Error()), slog.Int("retry", retry+1),
			slog.Int("max_retries", r.opts.LockRetries), slog.Int64("delay_ms", delay.Milliseconds()),
			slog.Any("lock_holders", r.blockers(ctx)))
		if err := backoff.Sleep(ctx, delay); err != nil {
			return err
		}
	}
}

// execTx applies ms in one transaction and records each in the history.
//
// Each migration travels as ONE simple-protocol query: its file, then the
// INSERT of its history row with literal values, wrapped in BEGIN (and the
// SET LOCAL timeouts) for the first migration and COMMIT for the last. A
// transactional migration therefore costs one round trip instead of four
// (begin, file, insert, commit): at 1000 migrations on a 1 ms network that is
// seconds of every rollout. The history row still commits with the file or
// not at all. Its duration is measured by the server (statement_timestamp()
// is when this query arrived), so it needs no second message. On an error the
// server has skipped the rest of the query and left the transaction aborted;
// ROLLBACK ends it (a harmless warning if the file's own statements already
// ended the transaction).
//
// splits[i] true says that ms[i]'s file is known to split (see apply); a
// file without it is split here.
func (r *Runner) execTx(ctx context.Context, ms []*Migration, splits []bool) (done []AppliedMigration, err error) {
	defer func() {
		if err != nil {
			r.rollback(ctx)
		}
	}()
	runID := r.runID
	done = make([]AppliedMigration, 0, len(ms))
	var q strings.Builder
	for i, m := range ms {
		prefix, commit := "", ""
		if i == 0 {
			prefix = "BEGIN;\n" + r.timeoutSettings("SET LOCAL") + "\n"
		}
		if i == len(ms)-1 {
			commit = ";\nCOMMIT"
		}
		start := time.Now()
		// A file that ends inside a string, quoted identifier, comment,
		// parenthesis or BEGIN ATOMIC body would swallow the INSERT and
		// COMMIT that follow it (the server then reports an error about our
		// SQL, or in theory none at all). Such a file goes alone; the
		// server's error then points into it, and should the server accept
		// it after all, the history row follows in a query of its own.
		whole := fileSplits(m, i, splits)
		insert := ""
		if whole {
			insert = r.hist.insertAppliedLiteral(m, serverDuration, r.opts.AppliedBy, runID)
		}
		// One buffer of the query's size, allocated once.
		q.Reset()
		q.Grow(len(prefix) + len(m.SQL) + len(fileEnd) + len(insert) + len(commit))
		q.WriteString(prefix)
		q.WriteString(m.SQL)
		// The newline ends a trailing "--" comment, the semicolon a last
		// statement written without one (an empty statement is harmless).
		q.WriteString(fileEnd)
		if !whole {
			if _, err := r.conn.Exec(ctx, q.String()); err != nil {
				return nil, r.txError(m, prefix, err)
			}
			took := strconv.FormatInt(time.Since(start).Milliseconds(), 10)
			if _, err := r.conn.Exec(ctx, r.hist.insertAppliedLiteral(m, took, r.opts.AppliedBy, runID)+commit); err != nil {
				return nil, fmt.Errorf("record migration %s in history: %w", m.File, err)
			}
		} else {
			q.WriteString(insert)
			q.WriteString(commit)
			if _, err := r.conn.Exec(ctx, q.String()); err != nil {
				return nil, r.txError(m, prefix, err)
			}
		}
		done = append(done, AppliedMigration{Version: m.Version, Name: m.Name, Duration: time.Since(start)})
	}
	return done, nil
}

// fileSplits reports whether m, the i-th file of splits' run, splits
// without error: known from the plan's checks, else split now.
func fileSplits(m *Migration, i int, splits []bool) bool {
	if i < len(splits) && splits[i] {
		return true
	}
	_, err := sqlsplit.Split(m.SQL)
	return err == nil
}

// fileEnd follows every transactional file in its query.
const fileEnd = "\n;\n"

// txError attributes an error of execTx's query for m, which began with
// prefix, to the migration's file (locating the statement when the server
// gave a position) or to the history row.
func (r *Runner) txError(m *Migration, prefix string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		fileStart := utf8.RuneCountInString(prefix)
		pos := int(pgErr.Position) - 1 - fileStart
		// An error at fileEnd's semicolon is the file's: its last statement
		// was unfinished ("syntax error at or near ;").
		afterFile := pgErr.Position > 0 && pos >= utf8.RuneCountInString(m.SQL)+len(fileEnd)
		onHistory := pgErr.Position == 0 && pgErr.SchemaName == r.hist.schema && pgErr.TableName == r.hist.name
		if afterFile || onHistory {
			return fmt.Errorf("record migration %s in history: %w", m.File, err)
		}
		return migrationError(m, m.SQL, 1, fileStart, err)
	}
	return migrationError(m, m.SQL, 1, 0, err)
}

// tryTx runs fn in a transaction with the configured timeouts, for the
// runner's own bookkeeping (a baseline); migrations go through execTx.
func (r *Runner) tryTx(ctx context.Context, fn func(pgx.Tx) error) (err error) {
	tx, err := r.conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	defer func() {
		if err == nil {
			return
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
		defer cancel()
		if rerr := tx.Rollback(cctx); rerr != nil && !errors.Is(rerr, pgx.ErrTxClosed) {
			r.log.LogAttrs(ctx, slog.LevelWarn, "rollback failed; the server rolls back when the connection closes",
				slog.String("error", rerr.Error()))
		}
	}()
	if set := r.timeoutSettings("SET LOCAL"); set != "" {
		if _, err := tx.Exec(ctx, set); err != nil {
			return fmt.Errorf("set timeouts: %w", err)
		}
	}
	if err := fn(tx); err != nil {
		return err
	}
	// pgx closes the connection when a Commit fails inside a transaction,
	// which it does at once on a cancelled context; the deferred rollback
	// ends the transaction instead and keeps the session (and its lock).
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// rollback ends a failed transaction, even after ctx was cancelled.
func (r *Runner) rollback(ctx context.Context) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
	defer cancel()
	if _, err := r.conn.Exec(cctx, "ROLLBACK"); err != nil {
		r.log.LogAttrs(ctx, slog.LevelWarn, "rollback failed; the server rolls back when the connection closes",
			slog.String("error", err.Error()))
	}
}

// timeoutSettings returns the SET statements for the configured timeouts.
func (r *Runner) timeoutSettings(set string) string {
	var b strings.Builder
	// Rounded up: a sub-millisecond timeout must not become 0, which is off.
	ms := func(d time.Duration) int64 { return int64((d + time.Millisecond - 1) / time.Millisecond) }
	if r.opts.LockTimeout > 0 {
		fmt.Fprintf(&b, "%s lock_timeout = %d;", set, ms(r.opts.LockTimeout))
	}
	if r.opts.StatementTimeout > 0 {
		fmt.Fprintf(&b, "%s statement_timeout = %d;", set, ms(r.opts.StatementTimeout))
	}
	return b.String()
}

// migrationError wraps err from executing sql, which starts at line
// startLine of m's file and was sent after queryOffset characters of other
// SQL, and locates the failing statement when the server reported a
// position.
func migrationError(m *Migration, sql string, startLine, queryOffset int, err error) error {
	e := &MigrationError{Version: m.Version, File: m.File, Err: err}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && int(pgErr.Position)-1 >= queryOffset {
		off := runeOffset(sql, int(pgErr.Position)-1-queryOffset)
		// Past the end of the text (at the separator after an unfinished
		// last statement): the last non-blank line is the culprit.
		if end := len(strings.TrimRight(sql, " \t\r\n")); off >= end && end > 0 {
			off = end - 1
		}
		e.Line = startLine + strings.Count(sql[:off], "\n")
		lineStart := strings.LastIndexByte(sql[:off], '\n') + 1
		lineEnd := strings.IndexByte(sql[off:], '\n')
		if lineEnd < 0 {
			lineEnd = len(sql) - off
		}
		e.Statement = truncate(strings.TrimSpace(sql[lineStart:off+lineEnd]), 120)
	}
	return e
}

// runeOffset converts PostgreSQL's character position to a byte offset.
func runeOffset(s string, chars int) int {
	off := 0
	for i := 0; i < chars && off < len(s); i++ {
		_, size := utf8.DecodeRuneInString(s[off:])
		off += size
	}
	return off
}

func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n]) + "…"
}

func isLockTimeout(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "55P03"
}
