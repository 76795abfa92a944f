package runner

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The history of a backfill: statements_done counts its batches that
// changed rows, rows_done (a column added the first time a backfill runs,
// so the table of a set without backfills never changes) the rows they
// changed, duration_ms the time spent in it so far, over every run.

// ensureRowsDone adds the rows_done column to the history table when it
// lacks it. The caller holds the lock. The catalog is looked at first, so
// the ALTER TABLE (a brief ACCESS EXCLUSIVE lock on the history table,
// which every replica's fast path reads) runs once per table, not once per
// backfill.
func (h history) ensureRowsDone(ctx context.Context, conn Conn) error {
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_attribute
 WHERE attrelid = $1::regclass AND attname = 'rows_done' AND NOT attisdropped)`, h.ident).Scan(&exists); err != nil {
		return fmt.Errorf("inspect history table %s: %w", h.ident, err)
	}
	if exists {
		return nil
	}
	if _, err := conn.Exec(ctx, `ALTER TABLE `+h.ident+` ADD COLUMN IF NOT EXISTS rows_done bigint NOT NULL DEFAULT 0`); err != nil {
		return fmt.Errorf("add column rows_done to history table %s: %w", h.ident, err)
	}
	return nil
}

// readRowsDone returns rows_done by version for the rows that have any, for
// status and plan; a table without the column (no backfill ever ran) or
// without rows gives none.
func (h history) readRowsDone(ctx context.Context, conn Conn) (map[int64]int64, error) {
	rows, err := conn.Query(ctx, `SELECT version, rows_done FROM `+h.ident+` WHERE rows_done > 0`)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42703" { // undefined_column
			return nil, nil
		}
		return nil, h.readErr(err)
	}
	out := map[int64]int64{}
	var v, n int64
	_, err = pgx.ForEachRow(rows, []any{&v, &n}, func() error { out[v] = n; return nil })
	if err != nil {
		return nil, h.readErr(err)
	}
	return out, nil
}

// planRowsDone fills in the rows done by the backfills sp resumes.
func (r *Runner) planRowsDone(ctx context.Context, sp *SchemaPlan) error {
	byVersion := map[int64]*PlannedBackfill{}
	for _, list := range [][]PlannedMigration{sp.Pending, sp.Deferred} {
		for _, pm := range list {
			if pm.Backfill != nil && pm.Backfill.Resume {
				byVersion[pm.Version] = pm.Backfill
			}
		}
	}
	if len(byVersion) == 0 {
		return nil
	}
	done, err := r.hist.readRowsDone(ctx, r.conn)
	if err != nil {
		return err
	}
	for v, b := range byVersion {
		b.RowsDone = done[v]
	}
	return nil
}

// backfillRowsDone is readRowsDone when the set has a backfill; a set
// without one costs status no query.
func (r *Runner) backfillRowsDone(ctx context.Context) (map[int64]int64, error) {
	for _, m := range r.migs {
		if m.Backfill != nil {
			return r.hist.readRowsDone(ctx, r.conn)
		}
	}
	return nil, nil
}
