package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lockmigrate/lockmigrate/internal/backoff"
)

// rollbackTimeout bounds cleanup statements that must run even after the
// run's context was cancelled (SIGTERM).
const rollbackTimeout = 5 * time.Second

// lockTimeoutBackoff spaces retries after lock_timeout: the blocking
// transaction is usually short, and a retry must leave room for the readers
// that queued behind the failed DDL.
var lockTimeoutBackoff = backoff.Policy{Initial: 500 * time.Millisecond, Max: 10 * time.Second}

// apply runs the pending migrations in version order and appends each
// committed one to res.Applied.
func (r *Runner) apply(ctx context.Context, res *Result, pending []*Migration) error {
	if r.opts.Transaction == TransactionAll {
		var done []AppliedMigration
		err := r.inTx(ctx, res, func(tx pgx.Tx) error {
			done = done[:0]
			for _, m := range pending {
				d, err := r.execInTx(ctx, tx, m)
				if err != nil {
					return err
				}
				done = append(done, AppliedMigration{Version: m.Version, Name: m.Name, Duration: d})
			}
			return nil
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
	for _, m := range pending {
		var (
			d   time.Duration
			err error
		)
		if m.NoTransaction {
			d, err = r.applyNoTx(ctx, res, m)
		} else {
			err = r.inTx(ctx, res, func(tx pgx.Tx) error {
				d, err = r.execInTx(ctx, tx, m)
				return err
			})
		}
		if err != nil {
			return err
		}
		a := AppliedMigration{Version: m.Version, Name: m.Name, Duration: d}
		r.logApplied(ctx, a, map[bool]string{true: "none", false: "each"}[m.NoTransaction])
		res.Applied = append(res.Applied, a)
	}
	return nil
}

func (r *Runner) logApplied(ctx context.Context, a AppliedMigration, tx string) {
	r.log.LogAttrs(ctx, slog.LevelInfo, "migration applied",
		slog.Int64("version", a.Version), slog.String("name", a.Name),
		slog.Int64("duration_ms", a.Duration.Milliseconds()), slog.String("transaction", tx))
}

// inTx runs fn in a transaction with the configured timeouts, retrying the
// whole transaction when a statement hit lock_timeout.
func (r *Runner) inTx(ctx context.Context, res *Result, fn func(pgx.Tx) error) error {
	for retry := 0; ; retry++ {
		err := r.tryTx(ctx, fn)
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
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// timeoutSettings returns the SET statements for the configured timeouts.
func (r *Runner) timeoutSettings(set string) string {
	var b strings.Builder
	if r.opts.LockTimeout > 0 {
		fmt.Fprintf(&b, "%s lock_timeout = %d;", set, r.opts.LockTimeout.Milliseconds())
	}
	if r.opts.StatementTimeout > 0 {
		fmt.Fprintf(&b, "%s statement_timeout = %d;", set, r.opts.StatementTimeout.Milliseconds())
	}
	return b.String()
}

// execInTx runs one migration's SQL and records it, inside tx. The file is
// sent as one simple-protocol query, so it may hold many statements.
func (r *Runner) execInTx(ctx context.Context, tx pgx.Tx, m *Migration) (time.Duration, error) {
	start := time.Now()
	if _, err := tx.Exec(ctx, m.SQL); err != nil {
		return 0, migrationError(m, m.SQL, 1, err)
	}
	d := time.Since(start)
	if _, err := tx.Exec(ctx, r.hist.insertApplied(), m.Version, m.Name, m.Checksum,
		d.Milliseconds(), r.opts.AppliedBy, r.opts.RunID.String()); err != nil {
		return 0, fmt.Errorf("record migration %s in history: %w", m.File, err)
	}
	return d, nil
}

// migrationError wraps err from executing sql, which starts at line
// startLine of m's file, and locates the failing statement when the server
// reported a position.
func migrationError(m *Migration, sql string, startLine int, err error) error {
	e := &MigrationError{Version: m.Version, File: m.File, Err: err}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Position > 0 {
		off := runeOffset(sql, int(pgErr.Position)-1)
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
