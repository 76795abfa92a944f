package runner

import (
	"context"
	"errors"
	"fmt"

	"github.com/lockmigrate/lockmigrate/internal/listfmt"
)

// Plan is what a migrate run would do, worked out without the lock and
// without changing anything. It has one section per history table: a single
// one today, so that a run over several schemas can list each of its own.
type Plan struct {
	// DatabaseConsulted is false for PlanOffline: no history was read, and
	// every migration is listed as it would run on an empty database.
	DatabaseConsulted bool         `json:"database_consulted"`
	Schemas           []SchemaPlan `json:"schemas"`
}

// SchemaPlan is the plan for one history table.
type SchemaPlan struct {
	Schema string `json:"schema"`
	Table  string `json:"table"`
	// HistoryExists is false when the table is missing (a run would create
	// it under the lock) and for an offline plan.
	HistoryExists bool  `json:"history_exists"`
	SchemaVersion int64 `json:"schema_version"`
	// Transaction is the configured grouping of transactional migrations.
	Transaction TransactionMode `json:"transaction"`
	// Phase is the run's phase (Options.Phase).
	Phase Phase `json:"phase"`
	// Pending is what would run, in order.
	Pending []PlannedMigration `json:"pending"`
	// Deferred are pending migrations of the other phase, which a run in
	// this phase leaves alone (empty for PhaseAll).
	Deferred []PlannedMigration `json:"deferred,omitempty"`
	// Ahead are applied versions unknown to this migration set: a newer
	// release migrated the database (a warning, not an error).
	Ahead []int64 `json:"ahead,omitempty"`
	// Notes are remarks that do not stop a run.
	Notes []string `json:"notes,omitempty"`
	// Problems are the validation failures a run would stop on (exit 5),
	// with the messages migrate and validate give.
	Problems []string `json:"problems,omitempty"`
}

// How a planned migration would run.
const (
	// ModeTransaction: in its own transaction (LOCKMIGRATE_TRANSACTION=each).
	ModeTransaction = "transaction"
	// ModeSharedTransaction: in one transaction with every other pending
	// migration (LOCKMIGRATE_TRANSACTION=all).
	ModeSharedTransaction = "shared-transaction"
	// ModeNoTransaction: outside any transaction, one statement at a time.
	ModeNoTransaction = "no-transaction"
	// ModeBaseline: recorded as applied (state baseline) without being run,
	// because Options.BaselineVersion is set and the history is empty.
	ModeBaseline = "baseline"
	// ModeBackfill: its one statement repeated in batches, each in its own
	// transaction, until it changes no row (backfill.go).
	ModeBackfill = "backfill"
)

// PlannedMigration is one migration a run would apply (or, in
// ModeBaseline, record without running it).
type PlannedMigration struct {
	Version  int64  `json:"version"`
	Name     string `json:"name"`
	File     string `json:"file"`
	Checksum string `json:"checksum"`
	Mode     string `json:"mode"`
	// Statements counts the statements of a no-transaction migration, each
	// executed and recorded on its own; 0 for a transactional migration,
	// which is sent to the server whole.
	Statements int `json:"statements,omitempty"`
	// Phase is the file's phase.
	Phase Phase `json:"phase"`
	// Backfill describes a ModeBackfill migration.
	Backfill *PlannedBackfill `json:"backfill,omitempty"`
}

// PlannedBackfill is a pending backfill: its bounds and throttle, and how
// far an interrupted run got (a run continues from there).
type PlannedBackfill struct {
	// Sleep is the file's sleep= as a Go duration ("" for none);
	// MaxBatches and MaxRows its bounds (BackfillOptions).
	Sleep      string `json:"sleep,omitempty"`
	MaxBatches int64  `json:"max_batches,omitempty"`
	MaxRows    int64  `json:"max_rows,omitempty"`
	// Resume is set when a run left the backfill running: it is continued,
	// not refused. BatchesDone and RowsDone are what it committed.
	Resume      bool  `json:"resume,omitempty"`
	BatchesDone int64 `json:"batches_done,omitempty"`
	RowsDone    int64 `json:"rows_done,omitempty"`
}

// Plan reads the history without the lock, as the fast path does, and
// reports what Migrate would apply. It writes nothing: a missing history
// table is reported, not created. Rows left "running" are reported as
// Validate reports them, since without the lock they may be a migration in
// progress or an interrupted one. The returned error joins the plan's
// *ValidationError values; the plan is returned with them.
func (r *Runner) Plan(ctx context.Context) (*Plan, error) {
	rows, exists, err := r.hist.read(ctx, r.conn)
	if err != nil {
		return nil, err
	}
	sp, problems := schemaPlanOf(r.migs, rows, r.opts, func(row HistoryRow) *ValidationError { return r.interrupted(ctx, row) })
	sp.HistoryExists = exists
	if err := r.planRowsDone(ctx, &sp); err != nil {
		return nil, err
	}
	if !exists {
		sp.Notes = append([]string{fmt.Sprintf("history table %s does not exist: the first run creates it, holding the lock", r.hist.ident)}, sp.Notes...)
	}
	return &Plan{DatabaseConsulted: true, Schemas: []SchemaPlan{sp}}, errors.Join(problems...)
}

// PlanHistory is Plan for a history already read by the caller: rows are
// the table's rows (every column; nil or empty for none) and exists says
// whether the table exists. It sends no query, so it suits a fleet of
// tenants whose rows one query per hundreds of tenants returned; a row left
// running is reported as Plan reports it, except that INVALID indexes are
// not looked up (the message says so). opts.Schema names the history's
// schema. A nil plan with an error means opts are invalid; otherwise the
// error joins the plan's *ValidationError values.
func PlanHistory(migs []*Migration, rows []HistoryRow, exists bool, opts Options) (*SchemaPlan, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	byVersion := make(map[int64]*Migration, len(migs))
	for _, m := range migs {
		byVersion[m.Version] = m
	}
	sp, problems := schemaPlanOf(migs, rows, opts, func(row HistoryRow) *ValidationError {
		return interruptedError(byVersion[row.Version], row, "INVALID indexes not checked by this plan "+
			"(lockmigrate validate with LOCKMIGRATE_SCHEMA="+opts.Schema+" looks them up)")
	})
	sp.HistoryExists = exists
	return &sp, errors.Join(problems...)
}

// PlanOffline lists what a run would apply to an empty database, without
// any connection: every migration, in order, in its mode (baseline for the
// files Options.BaselineVersion would record).
func PlanOffline(migs []*Migration, opts Options) (*Plan, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	sp, problems := schemaPlanOf(migs, nil, opts, nil)
	return &Plan{Schemas: []SchemaPlan{sp}}, errors.Join(problems...)
}

// schemaPlanOf plans one history table from its rows. interrupted explains
// a row left running (nil when there can be none: no rows). The problems
// are those a run would stop on, computed as Migrate computes them.
func schemaPlanOf(migs []*Migration, rows []HistoryRow, opts Options, interrupted func(HistoryRow) *ValidationError) (SchemaPlan, []error) {
	p := makePlan(migs, rows, opts)
	problems := append(p.problems, p.statementProblems()...)
	for _, row := range p.running {
		e := interrupted(row)
		e.Detail = "in progress or interrupted: " + e.Detail
		problems = append(problems, e)
	}
	sp := SchemaPlan{Schema: opts.Schema, Table: opts.Table, SchemaVersion: p.schemaVersion,
		Transaction: opts.Transaction, Phase: opts.Phase, Ahead: p.ahead, Pending: []PlannedMigration{}}
	for _, e := range problems {
		sp.Problems = append(sp.Problems, e.Error())
	}
	// A run holding the lock records these before anything else when the
	// history is empty (autoBaseline). Migrate's lock-free fast path checks
	// the plan of the history as it is first, so the problems above are
	// computed without them, as a run computes them.
	var baseline map[int64]bool
	if bv := opts.BaselineVersion; bv > 0 {
		set := autoBaselineSet(migs, bv)
		switch {
		case len(rows) > 0:
			sp.Notes = append(sp.Notes, fmt.Sprintf("LOCKMIGRATE_BASELINE_VERSION=%d is ignored: the history is not empty", bv))
		case len(set) == 0:
			sp.Notes = append(sp.Notes, fmt.Sprintf("LOCKMIGRATE_BASELINE_VERSION=%d is below every migration file: nothing is recorded as baseline", bv))
		default:
			baseline = make(map[int64]bool, len(set))
			for _, m := range set {
				baseline[m.Version] = true
			}
			sp.Notes = append(sp.Notes, fmt.Sprintf("LOCKMIGRATE_BASELINE_VERSION=%d and the history is empty: a run records %d migration(s) "+
				"(versions %s) as baseline without running them, then runs the newer ones", bv, len(set), listfmt.Versions(versionsOf(set))))
		}
	}
	for _, m := range p.pending {
		sp.Pending = append(sp.Pending, planned(m, p, baseline[m.Version], opts))
	}
	for _, m := range p.deferred {
		sp.Deferred = append(sp.Deferred, planned(m, p, baseline[m.Version], opts))
	}
	if len(p.ahead) > 0 {
		sp.Notes = append(sp.Notes, fmt.Sprintf("the database has applied versions unknown to this migration set %v "+
			"(a newer release migrated it): a run logs a warning and continues", p.ahead))
	}
	return sp, problems
}

// planned is how pending migration m would run.
func planned(m *Migration, p plan, baseline bool, opts Options) PlannedMigration {
	pm := PlannedMigration{Version: m.Version, Name: m.Name, File: m.File, Checksum: m.Checksum,
		Mode: ModeTransaction, Phase: phaseOf(m)}
	switch {
	case baseline:
		pm.Mode = ModeBaseline
	case m.Backfill != nil:
		pm.Mode = ModeBackfill
		pm.Backfill = &PlannedBackfill{MaxBatches: m.Backfill.MaxBatches, MaxRows: m.Backfill.MaxRows}
		if m.Backfill.Sleep > 0 {
			pm.Backfill.Sleep = m.Backfill.Sleep.String()
		}
		if row, ok := p.resumed[m.Version]; ok {
			pm.Backfill.Resume, pm.Backfill.BatchesDone = true, int64(row.StatementsDone)
		}
	case m.NoTransaction:
		pm.Mode, pm.Statements = ModeNoTransaction, len(m.statements)
	case opts.Transaction == TransactionAll:
		pm.Mode = ModeSharedTransaction
	}
	return pm
}
