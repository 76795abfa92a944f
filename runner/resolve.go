package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
)

// ResolveAction is an operator's decision about an interrupted
// no-transaction migration.
type ResolveAction string

const (
	// ResolveApplied records the migration as applied: the operator checked
	// (or finished by hand) every statement of the file.
	ResolveApplied ResolveAction = "applied"
	// ResolveRetry forgets the attempt, so the next run executes the whole
	// file again: the operator undid what the attempt did (for example,
	// dropped the INVALID index it left).
	ResolveRetry ResolveAction = "retry"
)

// Resolve settles an interrupted no-transaction migration, under the lock so
// it cannot race a run that is applying migrations. It waits for the lock up
// to the configured wait timeout.
func (r *Runner) Resolve(ctx context.Context, version int64, action ResolveAction) error {
	if action != ResolveApplied && action != ResolveRetry {
		return fmt.Errorf("resolve: unknown action %q (want %q or %q)", action, ResolveApplied, ResolveRetry)
	}
	m := r.byVersion(version)
	if action == ResolveApplied && m == nil {
		return fmt.Errorf("resolve %d applied: %w: version %d is not in this migration set", version, ErrNothingToResolve, version)
	}
	won, err := r.locker.TryLock(ctx)
	if err != nil {
		return err
	}
	if !won {
		wctx, cancel := context.WithTimeoutCause(ctx, r.opts.WaitTimeout, ErrWaitTimeout)
		_, err := r.locker.Wait(wctx)
		cancel()
		if err != nil {
			if errors.Is(err, ErrWaitTimeout) {
				return fmt.Errorf("%w after %s", ErrWaitTimeout, r.opts.WaitTimeout)
			}
			return err
		}
	}
	defer func() {
		if uerr := r.locker.Unlock(ctx); uerr != nil {
			r.log.LogAttrs(ctx, slog.LevelWarn, "advisory unlock failed; the lock is released when the connection closes",
				slog.String("error", uerr.Error()))
		}
	}()
	var sql string
	args := []any{version}
	switch action {
	case ResolveApplied:
		// A backfill's statements_done counts its batches: kept.
		sql = `UPDATE ` + r.hist.ident + ` SET state = 'applied', checksum = $2,
       statements_done = CASE WHEN $6 THEN statements_done ELSE $3 END,
       applied_at = clock_timestamp(), applied_by = $4, run_id = $5::uuid
 WHERE version = $1 AND state = 'running'`
		args = append(args, m.Checksum, len(m.statements), r.opts.AppliedBy, r.opts.RunID.String(), m.Backfill != nil)
	case ResolveRetry:
		sql = `DELETE FROM ` + r.hist.ident + ` WHERE version = $1 AND state = 'running'`
	}
	tag, err := r.conn.Exec(ctx, sql, args...)
	if err != nil && r.hist.readErr(err) == nil { // no history table at all
		return fmt.Errorf("resolve %d %s: %w: there is no history table %s", version, action, ErrNothingToResolve, r.hist.ident)
	}
	if err != nil {
		return fmt.Errorf("resolve %d %s: %w", version, action, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("resolve %d %s: %w: version %d has no interrupted (running) row in %s",
			version, action, ErrNothingToResolve, version, r.hist.ident)
	}
	r.log.LogAttrs(ctx, slog.LevelInfo, "interrupted migration resolved",
		slog.Int64("version", version), slog.String("action", string(action)))
	return nil
}
