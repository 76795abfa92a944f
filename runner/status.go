package runner

import (
	"context"
	"slices"
	"time"
)

// Migration states reported by Status, beyond the history states.
const (
	StatePending          = "pending"
	StateChecksumMismatch = "checksum_mismatch"
	// StateUnknown is an applied version this migration set does not have.
	StateUnknown = "unknown"
)

// MigrationStatus is one line of Status.
type MigrationStatus struct {
	Version        int64      `json:"version"`
	Name           string     `json:"name"`
	File           string     `json:"file,omitempty"`
	State          string     `json:"state"`
	NoTransaction  bool       `json:"no_transaction,omitempty"`
	AppliedAt      *time.Time `json:"applied_at,omitempty"`
	AppliedBy      string     `json:"applied_by,omitempty"`
	DurationMS     int64      `json:"duration_ms,omitempty"`
	StatementsDone int32      `json:"statements_done,omitempty"`
	// Phase is the file's phase (empty for a version the set lacks).
	Phase Phase `json:"phase,omitempty"`
	// Backfill is set for a backfill file; its StatementsDone counts the
	// batches that changed rows, RowsDone the rows they changed.
	Backfill bool  `json:"backfill,omitempty"`
	RowsDone int64 `json:"rows_done,omitempty"`
}

// Status is the state of the schema as seen without the lock.
type Status struct {
	HistoryExists bool              `json:"history_exists"`
	SchemaVersion int64             `json:"schema_version"`
	Applied       int               `json:"applied"`
	Pending       int               `json:"pending"`
	Migrations    []MigrationStatus `json:"migrations"`
	Problems      []string          `json:"problems,omitempty"`
	// Phase is the configured phase; Pending counts its migrations, and
	// PendingExpand and PendingContract those of each phase.
	Phase           Phase `json:"phase"`
	PendingExpand   int   `json:"pending_expand"`
	PendingContract int   `json:"pending_contract"`
}

// Status reads the history without taking the lock, so it works while a
// migration runs, and merges it with the migration set.
func (r *Runner) Status(ctx context.Context) (*Status, error) {
	rows, exists, err := r.hist.read(ctx, r.conn)
	if err != nil {
		return nil, err
	}
	p := makePlan(r.migs, rows, r.opts)
	st := &Status{HistoryExists: exists, SchemaVersion: p.schemaVersion, Pending: len(p.pending),
		Phase: r.opts.Phase, PendingExpand: p.pendingExpand, PendingContract: p.pendingContract}
	rowsDone, err := r.backfillRowsDone(ctx)
	if err != nil {
		return nil, err
	}
	for _, e := range append(p.problems, p.statementProblems()...) {
		st.Problems = append(st.Problems, e.Error())
	}
	seen := map[int64]bool{}
	for _, row := range rows {
		seen[row.Version] = true
		ms := MigrationStatus{Version: row.Version, Name: row.Name, State: row.State,
			AppliedAt: &row.AppliedAt, AppliedBy: row.AppliedBy, DurationMS: row.DurationMS,
			StatementsDone: row.StatementsDone, RowsDone: rowsDone[row.Version]}
		if m := r.byVersion(row.Version); m == nil {
			ms.State = StateUnknown
		} else {
			ms.File, ms.NoTransaction = m.File, m.NoTransaction
			ms.Phase, ms.Backfill = phaseOf(m), m.Backfill != nil
			if countsAsApplied(row.State) && m.Checksum != row.Checksum {
				ms.State = StateChecksumMismatch
			}
		}
		if countsAsApplied(row.State) {
			st.Applied++
		}
		st.Migrations = append(st.Migrations, ms)
	}
	for _, m := range r.migs {
		if !seen[m.Version] {
			st.Migrations = append(st.Migrations, MigrationStatus{Version: m.Version, Name: m.Name,
				File: m.File, State: StatePending, NoTransaction: m.NoTransaction,
				Phase: phaseOf(m), Backfill: m.Backfill != nil})
		}
	}
	slices.SortFunc(st.Migrations, func(a, b MigrationStatus) int { return cmpInt64(a.Version, b.Version) })
	return st, nil
}
