package runner

import (
	"context"
	"errors"
	"fmt"
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
	// Pending is what would run, in order.
	Pending []PlannedMigration `json:"pending"`
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
)

// PlannedMigration is one migration a run would apply.
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
	p := makePlan(r.migs, rows, r.opts)
	problems := p.problems
	for _, row := range p.running {
		e := r.interrupted(ctx, row)
		e.Detail = "in progress or interrupted: " + e.Detail
		problems = append(problems, e)
	}
	sp := newSchemaPlan(p, r.opts, problems)
	sp.HistoryExists = exists
	if !exists {
		sp.Notes = append(sp.Notes, fmt.Sprintf("history table %s does not exist: the first run creates it, holding the lock", r.hist.ident))
	}
	if len(p.ahead) > 0 {
		sp.Notes = append(sp.Notes, fmt.Sprintf("the database has applied versions unknown to this migration set %v "+
			"(a newer release migrated it): a run logs a warning and continues", p.ahead))
	}
	return &Plan{DatabaseConsulted: true, Schemas: []SchemaPlan{sp}}, errors.Join(problems...)
}

// PlanOffline lists what a run would apply to an empty database, without
// any connection: every migration, in order, in its mode.
func PlanOffline(migs []*Migration, opts Options) (*Plan, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	p := makePlan(migs, nil, opts)
	sp := newSchemaPlan(p, opts, p.problems)
	return &Plan{Schemas: []SchemaPlan{sp}}, errors.Join(p.problems...)
}

func newSchemaPlan(p plan, opts Options, problems []error) SchemaPlan {
	sp := SchemaPlan{Schema: opts.Schema, Table: opts.Table, SchemaVersion: p.schemaVersion,
		Transaction: opts.Transaction, Ahead: p.ahead, Pending: []PlannedMigration{}}
	for _, e := range problems {
		sp.Problems = append(sp.Problems, e.Error())
	}
	for _, m := range p.pending {
		pm := PlannedMigration{Version: m.Version, Name: m.Name, File: m.File, Checksum: m.Checksum, Mode: ModeTransaction}
		switch {
		case m.NoTransaction:
			pm.Mode, pm.Statements = ModeNoTransaction, len(m.statements)
		case opts.Transaction == TransactionAll:
			pm.Mode = ModeSharedTransaction
		}
		sp.Pending = append(sp.Pending, pm)
	}
	return sp
}
