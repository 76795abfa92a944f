package runner

import (
	"context"
	"fmt"
	"slices"
)

// plan is what a run must do, given the migration set and the history.
type plan struct {
	pending []*Migration
	// ahead are applied versions this binary does not know: the database was
	// migrated by a newer release. That is normal during an application
	// rollback, so it is a warning, not an error.
	ahead []int64
	// running are rows left in state "running". Seen without the lock they
	// may belong to a live run; seen under the lock they are interrupted.
	running []HistoryRow
	// problems are validation failures (checksum mismatches, out-of-order).
	problems []error
	// schemaVersion is the highest applied version (0 when none).
	schemaVersion int64
	// baselined: on an empty history, files up to this version are
	// recorded by the baseline, not run.
	baselined int64

	// Phases (phase.go): deferred are pending migrations of the other
	// phase, left by this run; pendingExpand and pendingContract count
	// the pending migrations of each phase before the run's phase was
	// selected; contractVersion is the highest applied contract version.
	deferred                       []*Migration
	pendingExpand, pendingContract int
	contractVersion                int64
	// known finds the set's migrations by version.
	known migIndex
	// resumed are the rows left running by backfills (backfill.go), which
	// a run continues instead of refusing them; their migrations are in
	// pending.
	resumed map[int64]HistoryRow
}

// upToDate reports whether there is nothing to do and nothing wrong.
func (p plan) upToDate() bool {
	return len(p.pending) == 0 && len(p.running) == 0 && len(p.problems) == 0
}

// fastPlan is the plan of the lock-free fast path, from the brief history
// read. Only when it finds problems does it read the full rows, so the
// errors say when and by whom the changed migrations were applied, exactly
// as a plan from the full history would.
func (r *Runner) fastPlan(ctx context.Context) (plan, error) {
	known := newMigIndex(r.migs)
	rows, err := r.hist.readBrief(ctx, r.conn, &known)
	if err != nil {
		return plan{}, err
	}
	p := makePlan(r.migs, rows, r.opts)
	if len(p.problems) == 0 {
		return p, nil
	}
	if rows, _, err = r.hist.read(ctx, r.conn); err != nil {
		return plan{}, err
	}
	return makePlan(r.migs, rows, r.opts), nil
}

// makePlan compares migs (sorted by version) with the history rows.
func makePlan(migs []*Migration, rows []HistoryRow, opts Options) plan {
	var p plan
	applied := p.readHistory(migs, rows)
	p.takeResumable()
	next := applied.walk()
	for _, m := range migs {
		if next(m.Version) || isRunning(p.running, m.Version) {
			continue
		}
		p.pending = append(p.pending, m)
	}
	p.selectPhase(opts.Phase)
	if !opts.AllowOutOfOrder {
		p.checkOrder()
	}
	// On an empty history, files up to BaselineVersion are recorded, not
	// run: their mode does not matter.
	if len(rows) == 0 {
		p.baselined = opts.BaselineVersion
	}
	if opts.Transaction == TransactionAll {
		p.checkSharedTransaction()
	}
	return p
}

// readHistory sorts the rows into p (schema version, running rows, versions
// ahead, checksum mismatches) and returns the versions whose effects are
// in the database.
func (p *plan) readHistory(migs []*Migration, rows []HistoryRow) (applied versionSet) {
	p.known = newMigIndex(migs)
	applied = make(versionSet, 0, len(rows))
	find := p.known.walk(rows)
	for _, r := range rows {
		p.schemaVersion = max(p.schemaVersion, r.Version)
		if r.State == StateRunning {
			p.running = append(p.running, r)
			continue
		}
		// applied and baseline rows alike: the effects are in the database,
		// and the file must not have changed since.
		applied = append(applied, r.Version)
		m := find(r.Version)
		if m == nil {
			p.ahead = append(p.ahead, r.Version)
			continue
		}
		if phaseOf(m) == PhaseContract {
			p.contractVersion = max(p.contractVersion, r.Version)
		}
		if m.Checksum != r.Checksum {
			p.problems = append(p.problems, &ValidationError{
				Kind: KindChecksumMismatch, Version: m.Version, File: m.File,
				Detail: fmt.Sprintf("file changed after it was applied: checksum in history %s, file %s "+
					"(applied %s by %q); restore the file or add a new migration instead of editing this one",
					r.Checksum, m.Checksum, r.AppliedAt.UTC().Format("2006-01-02T15:04:05Z"), r.AppliedBy),
			})
		}
	}
	if !slices.IsSorted(applied) {
		slices.Sort(applied)
	}
	return applied
}

// versionSet is a sorted list of versions. Every start looks up every
// file's version in the history and the history's in the set: a binary
// search over slices that come sorted costs less than building maps.
type versionSet []int64

func (s versionSet) has(v int64) bool {
	_, found := slices.BinarySearch(s, v)
	return found
}

// walk returns has for versions asked in ascending order, which it answers
// by walking s once.
func (s versionSet) walk() (has func(v int64) bool) {
	i := 0
	last := int64(0)
	return func(v int64) bool {
		if v < last { // not ascending after all
			return s.has(v)
		}
		last = v
		for i < len(s) && s[i] < v {
			i++
		}
		return i < len(s) && s[i] == v
	}
}

// migIndex finds a migration by version: by binary search in a set sorted
// by version, as Load returns it, else through a map.
type migIndex struct {
	sorted []*Migration
	byVer  map[int64]*Migration
	// next is where get looks first: the history usually comes back in
	// version order, and then each lookup is the one after the last.
	next int
}

func newMigIndex(migs []*Migration) migIndex {
	if slices.IsSortedFunc(migs, func(a, b *Migration) int { return cmpInt64(a.Version, b.Version) }) {
		return migIndex{sorted: migs}
	}
	byVer := make(map[int64]*Migration, len(migs))
	for _, m := range migs {
		byVer[m.Version] = m
	}
	return migIndex{byVer: byVer}
}

// walk returns get for the versions of rows in their order: when both are
// sorted by version, by walking the set once.
func (x *migIndex) walk(rows []HistoryRow) (get func(v int64) *Migration) {
	if x.byVer != nil || !slices.IsSortedFunc(rows, func(a, b HistoryRow) int { return cmpInt64(a.Version, b.Version) }) {
		return x.get
	}
	i := 0
	return func(v int64) *Migration {
		for i < len(x.sorted) && x.sorted[i].Version < v {
			i++
		}
		if i < len(x.sorted) && x.sorted[i].Version == v {
			return x.sorted[i]
		}
		return nil
	}
}

// len is the number of migrations of the set.
func (x *migIndex) len() int {
	if x.byVer != nil {
		return len(x.byVer)
	}
	return len(x.sorted)
}

// get returns the migration of version v, nil when the set has none (or
// x is nil).
func (x *migIndex) get(v int64) *Migration {
	if x == nil {
		return nil
	}
	if x.byVer != nil {
		return x.byVer[v]
	}
	if x.next < len(x.sorted) && x.sorted[x.next].Version == v {
		x.next++
		return x.sorted[x.next-1]
	}
	i, found := slices.BinarySearchFunc(x.sorted, v, func(m *Migration, v int64) int { return cmpInt64(m.Version, v) })
	if !found {
		return nil
	}
	x.next = i + 1
	return x.sorted[i]
}

// checkOrder refuses pending migrations older than the schema version (a
// contract migration: than the highest applied contract version, see
// orderFloor). A backfill being resumed started in order.
func (p *plan) checkOrder() {
	for _, m := range p.pending {
		if _, resumed := p.resumed[m.Version]; resumed {
			continue
		}
		if floor, what := p.orderFloor(m); m.Version < floor {
			p.problems = append(p.problems, &ValidationError{
				Kind: KindOutOfOrder, Version: m.Version, File: m.File,
				Detail: fmt.Sprintf("pending migration is older than the highest applied %s %d; "+
					"renumber it or set LOCKMIGRATE_ALLOW_OUT_OF_ORDER=true", what, floor),
			})
		}
	}
}

// checkSharedTransaction refuses, in TransactionAll mode, the pending
// no-transaction migrations a run would execute (not baseline ones).
func (p *plan) checkSharedTransaction() {
	for _, m := range p.pending {
		if m.NoTransaction && m.Version > p.baselined {
			p.problems = append(p.problems, &ValidationError{
				Kind: KindTransactionMode, Version: m.Version, File: m.File,
				Detail: "pending no-transaction migration cannot run with LOCKMIGRATE_TRANSACTION=all; use each",
			})
		}
	}
}

func isRunning(rows []HistoryRow, v int64) bool {
	for _, r := range rows {
		if r.Version == v {
			return true
		}
	}
	return false
}
