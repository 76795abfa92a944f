package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/lockmigrate/lockmigrate/internal/listfmt"
)

// StateBaseline marks a migration recorded as applied without being run:
// the database already had its effects when lockmigrate took over (it was
// migrated by another tool, or built by hand). It counts as applied
// everywhere (plan, fast path, status, schema version); its checksum is
// still compared, so editing the file afterwards is still a validation
// error.
const StateBaseline = "baseline"

// stateCheck is the history table's CHECK on state. Tables created before
// the baseline state existed allow only 'applied' and 'running'; they are
// upgraded by upgradeStateCheck the first time a baseline is written.
const stateCheck = `CHECK (state IN ('applied', 'running', 'baseline'))`

// Validation kinds of baselining.
const (
	// KindHistoryNotEmpty: a baseline was asked for, but lockmigrate's
	// history already has rows, so the database is already managed.
	KindHistoryNotEmpty ValidationKind = "history_not_empty"
	// KindUnknownVersion: a baseline was asked for a version that is not a
	// file of this migration set.
	KindUnknownVersion ValidationKind = "unknown_version"
)

// countsAsApplied reports whether a history row's state means "its effects
// are in the database".
func countsAsApplied(state string) bool { return state == StateApplied || state == StateBaseline }

// BaselineResult describes what Baseline did.
type BaselineResult struct {
	// Versions are the versions recorded as baseline, ascending.
	Versions []int64
	// AlreadyDone is set when the history already held exactly this
	// baseline (same versions, same checksums), so nothing was written.
	AlreadyDone bool
	// ConstraintUpgraded is set when the history table's state check came
	// from a release without the baseline state and was replaced.
	ConstraintUpgraded bool
}

// Baseline records the given versions as applied (state baseline) without
// running them, under the lock, in one transaction. It is how a database
// migrated by another tool is handed over: the next Migrate applies only the
// newer files. The history must be empty (it is created when missing);
// a history that already holds exactly this baseline is accepted as done,
// anything else is a *ValidationError of kind KindHistoryNotEmpty. Every
// version must be a file of the migration set (KindUnknownVersion). Baseline
// waits for the lock up to the configured wait timeout.
func (r *Runner) Baseline(ctx context.Context, versions []int64) (*BaselineResult, error) {
	migs, err := r.baselineSet(versions)
	if err != nil {
		return nil, err
	}
	res := &BaselineResult{}
	if len(migs) == 0 {
		return res, nil
	}
	if err := r.lockWaiting(ctx); err != nil {
		return nil, err
	}
	defer func() {
		if uerr := r.locker.Unlock(ctx); uerr != nil {
			r.log.LogAttrs(ctx, slog.LevelWarn, "advisory unlock failed; the lock is released when the connection closes",
				slog.String("error", uerr.Error()))
		}
	}()
	if err := r.prepareSession(ctx); err != nil {
		return nil, err
	}
	rows, exists, err := r.hist.read(ctx, r.conn)
	if err != nil {
		return nil, err
	}
	if !exists {
		if err := r.hist.ensure(ctx, r.conn); err != nil {
			return nil, err
		}
	}
	if len(rows) > 0 {
		if sameBaseline(rows, migs) {
			res.Versions, res.AlreadyDone = versionsOf(migs), true
			r.log.LogAttrs(ctx, slog.LevelInfo, "baseline already recorded; nothing written",
				slog.Int("baselined", len(migs)), slog.Int64("baseline_version", migs[len(migs)-1].Version))
			return res, nil
		}
		return nil, &ValidationError{Kind: KindHistoryNotEmpty, Version: migs[len(migs)-1].Version,
			Detail: fmt.Sprintf("history table %s already has %d row(s) (%s), so this database is already managed by lockmigrate; "+
				"a baseline is only written into an empty history", r.hist.ident, len(rows), describeRows(rows))}
	}
	res.ConstraintUpgraded, err = r.writeBaseline(ctx, migs)
	if err != nil {
		return nil, err
	}
	res.Versions = versionsOf(migs)
	return res, nil
}

// baselineSet maps versions to migrations, ascending, refusing unknown ones.
func (r *Runner) baselineSet(versions []int64) ([]*Migration, error) {
	want := map[int64]bool{}
	for _, v := range versions {
		want[v] = true
	}
	var (
		migs    []*Migration
		unknown []int64
	)
	for _, m := range r.migs {
		if want[m.Version] {
			migs = append(migs, m)
			delete(want, m.Version)
		}
	}
	for v := range want {
		unknown = append(unknown, v)
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return nil, &ValidationError{Kind: KindUnknownVersion, Version: unknown[0],
			Detail: fmt.Sprintf("cannot record version(s) %s as baseline: no such file in this migration set", listfmt.Versions(unknown))}
	}
	return migs, nil
}

// lockWaiting takes the lock, waiting up to the wait timeout whatever the
// OnLocked mode: an operator's command should not give up because a
// replica happens to be migrating.
func (r *Runner) lockWaiting(ctx context.Context) error {
	won, err := r.locker.TryLock(ctx)
	if err != nil || won {
		return err
	}
	r.log.LogAttrs(ctx, slog.LevelInfo, "advisory lock held elsewhere, waiting",
		slog.Duration("wait_timeout", r.opts.WaitTimeout))
	wctx, cancel := context.WithTimeoutCause(ctx, r.opts.WaitTimeout, ErrWaitTimeout)
	defer cancel()
	if _, err := r.locker.Wait(wctx); err != nil {
		if errors.Is(err, ErrWaitTimeout) {
			return fmt.Errorf("%w after %s", ErrWaitTimeout, r.opts.WaitTimeout)
		}
		return err
	}
	return nil
}

// autoBaseline applies Options.BaselineVersion for a run holding the lock:
// with an empty history, every file up to that version is recorded as
// baseline before anything runs, and the history is re-read. With a
// non-empty history the option is ignored (and said so once per run).
func (r *Runner) autoBaseline(ctx context.Context, res *Result, rows []HistoryRow) ([]HistoryRow, error) {
	bv := r.opts.BaselineVersion
	if bv <= 0 {
		return rows, nil
	}
	if len(rows) > 0 {
		r.log.LogAttrs(ctx, slog.LevelInfo, "LOCKMIGRATE_BASELINE_VERSION ignored: the history is not empty "+
			"(the baseline applies only to a database lockmigrate has never migrated; the variable can be removed)",
			slog.Int64("baseline_version", bv), slog.Int("history_rows", len(rows)))
		return rows, nil
	}
	migs := autoBaselineSet(r.migs, bv)
	if len(migs) == 0 {
		r.log.LogAttrs(ctx, slog.LevelInfo, "LOCKMIGRATE_BASELINE_VERSION: no migration file at or below it; nothing recorded",
			slog.Int64("baseline_version", bv))
		return rows, nil
	}
	if _, err := r.writeBaseline(ctx, migs); err != nil {
		return nil, err
	}
	res.Baselined = len(migs)
	rows, _, err := r.hist.read(ctx, r.conn)
	return rows, err
}

// autoBaselineSet is what Options.BaselineVersion records on an empty
// history: every file at or below bv, ascending (bv need not be a file's
// version). The run (autoBaseline) and the dry run (Plan) both use it, so
// the plan lists exactly what a run would record.
func autoBaselineSet(migs []*Migration, bv int64) []*Migration {
	if bv <= 0 {
		return nil
	}
	var out []*Migration
	for _, m := range migs {
		if m.Version <= bv {
			out = append(out, m)
		}
	}
	return out
}

// writeBaseline inserts one baseline row per migration in one transaction,
// upgrading an old state check first in the same transaction. The caller
// holds the lock and found the history empty.
func (r *Runner) writeBaseline(ctx context.Context, migs []*Migration) (upgraded bool, err error) {
	var (
		versions   = make([]int64, len(migs))
		names      = make([]string, len(migs))
		sums       = make([]string, len(migs))
		statements = make([]int32, len(migs))
	)
	for i, m := range migs {
		versions[i], names[i], sums[i], statements[i] = m.Version, m.Name, m.Checksum, int32(len(m.statements))
	}
	err = r.tryTx(ctx, func(tx pgx.Tx) error {
		var err error
		if upgraded, err = r.hist.upgradeStateCheck(ctx, tx); err != nil {
			return err
		}
		// statements_done of a no-transaction file is its statement count,
		// as if it had run to the end.
		_, err = tx.Exec(ctx, `INSERT INTO `+r.hist.ident+`
       (version, name, checksum, applied_at, duration_ms, applied_by, run_id, state, statements_done)
SELECT v, n, c, clock_timestamp(), 0, $5, $6::uuid, 'baseline', s
  FROM unnest($1::bigint[], $2::text[], $3::text[], $4::integer[]) AS t(v, n, c, s)`,
			versions, names, sums, statements, r.opts.AppliedBy, r.opts.RunID.String())
		if err != nil {
			return fmt.Errorf("record baseline in history table %s: %w", r.hist.ident, err)
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	if upgraded {
		r.log.LogAttrs(ctx, slog.LevelInfo, "history table's state check upgraded to allow baseline rows",
			slog.String("history_table", r.hist.ident))
	}
	r.log.LogAttrs(ctx, slog.LevelInfo, "baseline recorded: migrations marked applied without running them",
		slog.Int("baselined", len(migs)), slog.Int64("first_version", migs[0].Version),
		slog.Int64("baseline_version", migs[len(migs)-1].Version))
	return upgraded, nil
}

// upgradeStateCheck replaces the state check of a history table created by a
// release that did not know the baseline state. It runs in tx, under the
// lock, and only when a check on the state column lacks 'baseline', so it is
// idempotent and a current table is left alone. A table whose state check
// was dropped by hand is not given one.
func (h history) upgradeStateCheck(ctx context.Context, tx pgx.Tx) (bool, error) {
	rows, err := tx.Query(ctx, `SELECT c.conname, pg_get_constraintdef(c.oid)
  FROM pg_constraint c
 WHERE c.conrelid = $1::text::regclass AND c.contype = 'c'
   AND EXISTS (SELECT 1 FROM pg_attribute a
                WHERE a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey) AND a.attname = 'state')
 ORDER BY c.conname`, h.ident)
	if err != nil {
		return false, fmt.Errorf("inspect the state check of history table %s: %w", h.ident, err)
	}
	type check struct{ name, def string }
	checks, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (check, error) {
		var c check
		err := row.Scan(&c.name, &c.def)
		return c, err
	})
	if err != nil {
		return false, fmt.Errorf("inspect the state check of history table %s: %w", h.ident, err)
	}
	var stale []string
	for _, c := range checks {
		if !strings.Contains(c.def, "'"+StateBaseline+"'") {
			stale = append(stale, c.name)
		}
	}
	if len(stale) == 0 {
		return false, nil
	}
	// Drops run before adds within one ALTER TABLE, so the first stale
	// check's name can be reused for its replacement.
	var b strings.Builder
	b.WriteString("ALTER TABLE " + h.ident)
	for _, name := range stale {
		b.WriteString(" DROP CONSTRAINT " + pgx.Identifier{name}.Sanitize() + ",")
	}
	b.WriteString(" ADD CONSTRAINT " + pgx.Identifier{stale[0]}.Sanitize() + " " + stateCheck)
	if _, err := tx.Exec(ctx, b.String()); err != nil {
		return false, fmt.Errorf("upgrade the state check of history table %s: %w", h.ident, err)
	}
	return true, nil
}

// sameBaseline reports whether rows are exactly the baseline of migs.
func sameBaseline(rows []HistoryRow, migs []*Migration) bool {
	if len(rows) != len(migs) {
		return false
	}
	for i, row := range rows { // both ascending by version
		if row.State != StateBaseline || row.Version != migs[i].Version || row.Checksum != migs[i].Checksum {
			return false
		}
	}
	return true
}

func describeRows(rows []HistoryRow) string {
	count := map[string]int{}
	for _, r := range rows {
		count[r.State]++
	}
	var parts []string
	for _, s := range []string{StateApplied, StateBaseline, StateRunning} {
		if count[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", count[s], s))
		}
	}
	return strings.Join(parts, ", ") + fmt.Sprintf(", versions %d to %d", rows[0].Version, rows[len(rows)-1].Version)
}

func versionsOf(migs []*Migration) []int64 {
	out := make([]int64, len(migs))
	for i, m := range migs {
		out[i] = m.Version
	}
	return out
}
