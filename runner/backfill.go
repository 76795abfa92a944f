package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockmigrate/lockmigrate/internal/backoff"
	"github.com/lockmigrate/lockmigrate/internal/sqlsplit"
)

// BackfillDirective marks a file holding one data-changing statement that
// changes at most a batch of rows (its own LIMIT) and excludes the rows it
// already changed (WHERE new IS NULL ...). lockmigrate runs it again and
// again, each batch in its own transaction, until it changes no row. Options
// follow on the same line: "-- lockmigrate:backfill sleep=200ms
// max_batches=500 max_rows=2500000". A backfill runs outside any
// transaction of lockmigrate's, like a no-transaction file.
const BackfillDirective = "-- lockmigrate:backfill"

// DefaultBackfillMaxBatches bounds a backfill whose directive sets neither
// max_batches= nor max_rows=: a statement that never stops changing rows
// (its predicate does not exclude what it changed) is stopped instead of
// rewriting the table forever.
const DefaultBackfillMaxBatches = 100000

// DefaultBackfillProgressInterval is the least time between two "backfill
// progress" events when Options.BackfillProgressInterval is zero.
const DefaultBackfillProgressInterval = 10 * time.Second

// BackfillOptions are a backfill file's options, from its directive.
type BackfillOptions struct {
	// Sleep (sleep=) is the pause after each batch that changed rows; the
	// run pauses for the longer of it and Options.BackfillSleep, so an
	// operator can slow a backfill down without editing the file.
	Sleep time.Duration
	// MaxBatches (max_batches=) is the most batches that may change rows,
	// counted over the backfill's whole life (a resumed backfill goes on
	// counting). A batch that would go beyond it is rolled back and the run
	// fails (exit 1).
	MaxBatches int64
	// MaxRows (max_rows=; 0 means none) is the most rows the backfill may
	// change in all; a batch that would pass it is rolled back.
	MaxRows int64
}

// parseBackfill reads the options of a backfill directive.
func (m *Migration) parseBackfill(arg string) error {
	bad := func(detail string) error {
		return &ValidationError{Kind: KindMalformedName, Version: m.Version, File: m.File,
			Detail: fmt.Sprintf("backfill directive %q: %s; accepted options: sleep=<duration> max_batches=<n> max_rows=<n>",
				strings.TrimSpace(BackfillDirective+" "+arg), detail)}
	}
	o := &BackfillOptions{}
	seen := map[string]bool{}
	for _, f := range strings.Fields(arg) {
		k, v, ok := strings.Cut(f, "=")
		if !ok || v == "" || seen[k] {
			return bad(fmt.Sprintf("%q is not a single option=value", f))
		}
		seen[k] = true
		var err error
		switch k {
		case "sleep":
			o.Sleep, err = time.ParseDuration(v)
			if err == nil && o.Sleep < 0 {
				err = errors.New("negative")
			}
		case "max_batches":
			o.MaxBatches, err = positive(v)
		case "max_rows":
			o.MaxRows, err = positive(v)
		default:
			return bad(fmt.Sprintf("unknown option %q", k))
		}
		if err != nil {
			return bad(fmt.Sprintf("%s=%q: %v", k, v, err))
		}
	}
	if o.MaxBatches == 0 && o.MaxRows == 0 {
		o.MaxBatches = DefaultBackfillMaxBatches
	}
	m.Backfill, m.NoTransaction = o, true
	return nil
}

func positive(s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err == nil && n <= 0 {
		err = errors.New("must be positive")
	}
	return n, err
}

// backfillVerbs are the statements that report the rows they changed; a
// backfill ends when its statement reports none.
var backfillVerbs = []string{"UPDATE", "DELETE", "INSERT", "MERGE", "WITH"}

// checkBackfill refuses a backfill file that is not one data-changing
// statement: a second statement would run once per batch, and a SELECT, DO
// or CALL reports no changed rows, so the backfill could never tell that
// it is done.
func (m *Migration) checkBackfill() error {
	if m.Backfill == nil {
		return nil
	}
	bad := func(detail string) error {
		return &ValidationError{Kind: KindMalformedSQL, Version: m.Version, File: m.File, Detail: detail}
	}
	if len(m.statements) != 1 {
		return bad(fmt.Sprintf("a backfill file must hold exactly one statement (it runs once per batch), found %d", len(m.statements)))
	}
	verb, _, _ := strings.Cut(strings.ToUpper(strings.TrimSpace(m.statements[0].SQL)), " ")
	for _, v := range backfillVerbs {
		if strings.HasPrefix(verb, v) {
			return nil
		}
	}
	return bad(fmt.Sprintf("a backfill's statement must change rows and say how many (UPDATE, DELETE, INSERT, MERGE or WITH ...), "+
		"not %q: the backfill ends when it changes none", firstLine(m.statements[0].SQL)))
}

// takeResumable moves the rows left running by backfills of the set from
// p.running to p.resumed: running a batch again is safe by construction
// (its predicate excludes the rows already changed), so a run continues
// such a backfill instead of refusing it.
func (p *plan) takeResumable() {
	running := p.running[:0:0]
	for _, row := range p.running {
		if m := p.known.get(row.Version); m != nil && m.Backfill != nil {
			if p.resumed == nil {
				p.resumed = map[int64]HistoryRow{}
			}
			p.resumed[row.Version] = row
			continue
		}
		running = append(running, row)
	}
	p.running = running
}

// BackfillStats is what a run did of one backfill.
type BackfillStats struct {
	Version int64
	// Batches and Rows are this run's batches that changed rows and the
	// rows they changed; TotalBatches and TotalRows include earlier runs
	// of a resumed backfill.
	Batches, Rows           int64
	TotalBatches, TotalRows int64
	// Resumed is set when an earlier run had started the backfill.
	Resumed bool
	// Done is set when the backfill changed no more rows and was recorded
	// as applied.
	Done bool
	// Duration is this run's time in the backfill, pauses included;
	// MaxBatch the longest batch transaction.
	Duration, MaxBatch time.Duration
	// LagPauses counts the pauses for replication lag.
	LagPauses int
}

// backfill is one backfill in progress.
type backfill struct {
	m     *Migration
	st    sqlsplit.Statement
	stats *BackfillStats
	// baseMS is the duration recorded by earlier runs; start this run's.
	baseMS int64
	start  time.Time
	// lastLog is when progress was last logged.
	lastLog time.Time
}

// ErrBackfillBound is wrapped by the error of a backfill stopped at its
// bound (max_batches=, max_rows=): its statement kept changing rows.
var ErrBackfillBound = errors.New("backfill did not converge")

// applyBackfill runs a backfill file's statement batch after batch until it
// changes no row, each batch in its own transaction with the configured
// timeouts and lock_timeout retries, and records batches and rows in the
// history row with each batch, so a run that dies anywhere leaves an exact
// count for the run that continues it.
func (r *Runner) applyBackfill(ctx context.Context, res *Result, m *Migration) (time.Duration, error) {
	b := &backfill{m: m, st: m.statements[0], start: time.Now(),
		stats: &BackfillStats{Version: m.Version}}
	res.Backfills = append(res.Backfills, b.stats)
	defer func() { b.stats.Duration = time.Since(b.start) }()
	if err := r.hist.ensureRowsDone(ctx, r.conn); err != nil {
		return 0, err
	}
	if err := r.startBackfill(ctx, b); err != nil {
		return 0, err
	}
	for {
		n, err := r.nextBatch(ctx, res, b)
		if err != nil {
			return 0, err
		}
		if n == 0 {
			break
		}
		r.logBackfillProgress(ctx, b, false)
		if err := backoff.Sleep(ctx, max(m.Backfill.Sleep, r.opts.BackfillSleep)); err != nil {
			return 0, err
		}
	}
	d := time.Duration(b.baseMS)*time.Millisecond + time.Since(b.start)
	if _, err := r.conn.Exec(ctx, `UPDATE `+r.hist.ident+
		` SET state = 'applied', duration_ms = $2, applied_at = clock_timestamp() WHERE version = $1`,
		m.Version, d.Milliseconds()); err != nil {
		return 0, fmt.Errorf("record backfill %s as applied in history: %w", m.File, err)
	}
	b.stats.Done = true
	r.logBackfillProgress(ctx, b, true)
	return d, nil
}

// startBackfill records the start of a backfill in the history, or, when
// an earlier run left it running, takes it over: the counts go on from
// where that run committed its last batch.
func (r *Runner) startBackfill(ctx context.Context, b *backfill) error {
	m := b.m
	var (
		state, sum, by, run string
		batches             int32
	)
	err := r.conn.QueryRow(ctx, `SELECT state, checksum, applied_by, coalesce(run_id::text, ''), statements_done, rows_done, duration_ms
  FROM `+r.hist.ident+` WHERE version = $1`, m.Version).Scan(&state, &sum, &by, &run, &batches, &b.stats.TotalRows, &b.baseMS)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		if _, err := r.conn.Exec(ctx, `INSERT INTO `+r.hist.ident+
			` (version, name, checksum, applied_at, applied_by, run_id, state, statements_done, rows_done)
VALUES ($1, $2, $3, clock_timestamp(), $4, $5::uuid, 'running', 0, 0)`,
			m.Version, m.Name, m.Checksum, r.opts.AppliedBy, r.opts.RunID.String()); err != nil {
			return fmt.Errorf("record start of backfill %s in history: %w", m.File, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("read the history row of backfill %s: %w", m.File, err)
	case state != StateRunning:
		return fmt.Errorf("backfill %s: history row in state %q, want running", m.File, state)
	}
	b.stats.TotalBatches, b.stats.Resumed = int64(batches), true
	attrs := []slog.Attr{slog.Int64("version", m.Version), slog.String("file", m.File),
		slog.Int64("batches_done", b.stats.TotalBatches), slog.Int64("rows_done", b.stats.TotalRows),
		slog.String("started_by", by), slog.String("started_run_id", run)}
	if sum != m.Checksum {
		// A batch is safe to repeat whatever the file became; the row
		// takes the checksum of the file that finishes it.
		attrs = append(attrs, slog.String("checksum_was", sum), slog.String("checksum", m.Checksum))
	}
	r.log.LogAttrs(ctx, slog.LevelInfo, "resuming interrupted backfill", attrs...)
	if _, err := r.conn.Exec(ctx, `UPDATE `+r.hist.ident+` SET checksum = $2, applied_by = $3, run_id = $4::uuid WHERE version = $1`,
		m.Version, m.Checksum, r.opts.AppliedBy, r.opts.RunID.String()); err != nil {
		return fmt.Errorf("take over backfill %s in history: %w", m.File, err)
	}
	return nil
}

// nextBatch waits for the replication lag to be within its ceiling, then
// runs one batch, retrying it after lock_timeout. It returns the rows the
// batch changed (0: the backfill is done).
func (r *Runner) nextBatch(ctx context.Context, res *Result, b *backfill) (int64, error) {
	if err := r.awaitLag(ctx, b); err != nil {
		return 0, err
	}
	var n int64
	err := r.retryLockTimeout(ctx, res, func() error {
		var err error
		n, err = r.runBatch(ctx, b)
		return err
	})
	switch {
	case errors.Is(err, ErrBackfillBound):
		return 0, &MigrationError{Version: b.m.Version, File: b.m.File, Err: err}
	case err != nil:
		return 0, r.statementError(ctx, b.m, 0, b.st, err)
	}
	if n > 0 {
		b.stats.Batches++
		b.stats.TotalBatches++
		b.stats.Rows += n
		b.stats.TotalRows += n
	}
	return n, nil
}

// runBatch runs the statement once in a transaction of its own, with the
// batch's progress recorded in the same transaction. A batch that would
// take the backfill past its bound is rolled back.
func (r *Runner) runBatch(ctx context.Context, b *backfill) (int64, error) {
	var n int64
	start := time.Now()
	err := r.tryTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, b.st.SQL)
		if err != nil {
			return err
		}
		if n = tag.RowsAffected(); n == 0 {
			return nil
		}
		if err := b.overBound(n); err != nil {
			return err
		}
		ms := b.baseMS + time.Since(b.start).Milliseconds()
		if _, err := tx.Exec(ctx, `UPDATE `+r.hist.ident+
			` SET statements_done = statements_done + 1, rows_done = rows_done + $2, duration_ms = $3 WHERE version = $1`,
			b.m.Version, n, ms); err != nil {
			return fmt.Errorf("record progress of backfill %s in history: %w", b.m.File, err)
		}
		return nil
	})
	b.stats.MaxBatch = max(b.stats.MaxBatch, time.Since(start))
	return n, err
}

// overBound reports a batch of n rows that would take the backfill past
// max_batches or max_rows.
func (b *backfill) overBound(n int64) error {
	o, s := b.m.Backfill, b.stats
	var why string
	switch {
	case o.MaxBatches > 0 && s.TotalBatches+1 > o.MaxBatches:
		why = fmt.Sprintf("its statement still changed %d row(s) in batch %d, after max_batches=%d", n, s.TotalBatches+1, o.MaxBatches)
	case o.MaxRows > 0 && s.TotalRows+n > o.MaxRows:
		why = fmt.Sprintf("batch %d would change %d row(s), taking it to %d, past max_rows=%d", s.TotalBatches+1, n, s.TotalRows+n, o.MaxRows)
	default:
		return nil
	}
	return fmt.Errorf("%w: %s (%d batches and %d rows committed; the last batch was rolled back); "+
		"a backfill's statement must exclude the rows it already changed (WHERE new_column IS NULL ...) so that it "+
		"eventually changes none: fix the statement, or raise the bound in the directive if the table really is that large. "+
		"The history row stays running and the next run continues from here; `lockmigrate resolve %d retry` starts the count again",
		ErrBackfillBound, why, s.TotalBatches, s.TotalRows, b.m.Version)
}

// logBackfillProgress logs the backfill's progress, at most once per
// progress interval, and always when it is done.
func (r *Runner) logBackfillProgress(ctx context.Context, b *backfill, done bool) {
	now := time.Now()
	last := b.lastLog
	if last.IsZero() {
		last = b.start
	}
	if !done && now.Sub(last) < r.progressInterval() {
		return
	}
	b.lastLog = now
	s := b.stats
	elapsed := now.Sub(b.start)
	msg := "backfill progress"
	if done {
		msg = "backfill finished"
	}
	r.log.LogAttrs(ctx, slog.LevelInfo, msg,
		slog.Int64("version", b.m.Version), slog.String("file", b.m.File),
		slog.Int64("batches", s.TotalBatches), slog.Int64("rows", s.TotalRows),
		slog.Int64("batches_this_run", s.Batches), slog.Int64("rows_this_run", s.Rows),
		slog.Float64("rows_per_second", float64(s.Rows)/max(elapsed.Seconds(), 1e-3)),
		slog.Int64("elapsed_ms", elapsed.Milliseconds()), slog.Int64("max_batch_ms", s.MaxBatch.Milliseconds()),
		slog.Int("lag_pauses", s.LagPauses))
}
