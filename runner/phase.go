package runner

import (
	"errors"
	"fmt"
	"strings"

	"github.com/lockmigrate/lockmigrate/internal/listfmt"
)

// Phase is when, relative to an application rollout, a migration runs.
// A zero-downtime change is spread over a rollout: the expand files (new
// columns, tables, indexes) run before the new pods start, so both the old
// and the new version of the application work on the schema; the contract
// files (dropping what only the old version used) run once no pod of the
// old version is left.
type Phase string

const (
	// PhaseAll applies every pending migration in version order, whatever
	// its phase: the behaviour of a migrator without phases, and the
	// default, so nothing changes for a set that never says "contract".
	PhaseAll Phase = "all"
	// PhaseExpand is a migration file without a phase directive; a run in
	// this phase applies only expand files, and pending contract files do
	// not make it pending (its lock-free fast path still answers
	// up_to_date).
	PhaseExpand Phase = "expand"
	// PhaseContract is a file marked "-- lockmigrate:phase contract"; a run
	// in this phase applies only contract files, each once every expand
	// file with a lower version is applied.
	PhaseContract Phase = "contract"
)

// PhaseDirective marks a file as belonging to the contract phase. It is one
// of the directive lines at the top of a file (see Load).
const PhaseDirective = "-- lockmigrate:phase contract"

// KindContractWaiting: a contract run found a pending contract migration
// with a lower-versioned expand migration not applied yet. The expand phase
// (the pre-upgrade Job, the init containers) must run first; retrying the
// contract run cannot help.
const KindContractWaiting ValidationKind = "contract_waiting"

// parsePhase reads the argument of a phase directive.
func (m *Migration) parsePhase(arg string) error {
	switch Phase(arg) {
	case PhaseContract:
		m.Phase = PhaseContract
		return nil
	case PhaseExpand:
		m.Phase = PhaseExpand
		return nil
	}
	return &ValidationError{Kind: KindMalformedName, Version: m.Version, File: m.File,
		Detail: fmt.Sprintf("phase directive %q: the phase must be %q or %q (a file without the directive is %q)",
			"-- lockmigrate:phase "+arg, PhaseContract, PhaseExpand, PhaseExpand)}
}

// phaseOf is a migration's phase: expand unless its file says contract.
func phaseOf(m *Migration) Phase {
	if m.Phase == PhaseContract {
		return PhaseContract
	}
	return PhaseExpand
}

// InPhase reports whether a run in phase run applies m when it is pending,
// for a caller that surveys histories itself (the tenant fleet's fast path).
func (m *Migration) InPhase(run Phase) bool { return inPhase(run, m) }

// inPhase reports whether a run in phase run applies m.
func inPhase(run Phase, m *Migration) bool {
	return run == PhaseAll || run == "" || phaseOf(m) == run
}

// selectPhase narrows p.pending and p.running to what a run in phase run
// does, keeping the rest in p.deferred (pending, left to the other phase),
// and refuses, in a contract run, every pending contract migration that
// would overtake a pending expand migration.
func (p *plan) selectPhase(run Phase) {
	p.pendingExpand, p.pendingContract = 0, 0
	for _, m := range p.pending {
		if phaseOf(m) == PhaseContract {
			p.pendingContract++
		} else {
			p.pendingExpand++
		}
	}
	if run == PhaseAll || run == "" {
		return
	}
	var mine, other []*Migration
	for _, m := range p.pending {
		if inPhase(run, m) {
			mine = append(mine, m)
		} else {
			other = append(other, m)
		}
	}
	p.pending, p.deferred = mine, other
	// A row left running by a file of the other phase is that phase's
	// business: an init container must not queue behind a contract
	// migration the post-rollout Job is running. Rows of versions this set
	// does not know stay, as in every phase.
	running := p.running[:0:0]
	for _, row := range p.running {
		if m := p.known.get(row.Version); m == nil || inPhase(run, m) {
			running = append(running, row)
		}
	}
	p.running = running
	if run == PhaseContract {
		p.checkContractOrder(other)
	}
}

// checkContractOrder refuses each pending contract migration of p.pending
// that has a pending expand migration (of others) with a lower version:
// it would run before the schema it was written against exists.
func (p *plan) checkContractOrder(others []*Migration) {
	for _, c := range p.pending {
		var waiting []*Migration
		for _, e := range others {
			if e.Version < c.Version {
				waiting = append(waiting, e)
			}
		}
		if len(waiting) == 0 {
			continue
		}
		files := make([]string, len(waiting))
		for i, e := range waiting {
			files[i] = e.File
		}
		p.problems = append(p.problems, &ValidationError{Kind: KindContractWaiting, Version: c.Version, File: c.File,
			Detail: fmt.Sprintf("contract migration waits for %d expand migration(s) with a lower version that are not applied: "+
				"versions %s (%s); run the expand phase first (the pre-upgrade Job or the init containers, "+
				"LOCKMIGRATE_PHASE=expand), then the contract run again", len(waiting),
				listfmt.Versions(versionsOf(waiting)), strings.Join(files, ", "))})
	}
}

// orderFloor is the version below which pending migration m is out of
// order: the highest applied version, except that a contract migration is
// only compared with applied contract migrations. A later release's expand
// files may be applied (by its pre-upgrade Job) while an earlier contract
// file still waits for its rollout; contract files among themselves still
// apply in version order.
func (p *plan) orderFloor(m *Migration) (floor int64, what string) {
	if phaseOf(m) != PhaseContract {
		return p.schemaVersion, "version"
	}
	return p.contractVersion, "contract version"
}

func (o *Options) validatePhase() error {
	switch o.Phase {
	case "":
		o.Phase = PhaseAll
	case PhaseAll, PhaseExpand, PhaseContract:
	default:
		return fmt.Errorf("runner: unknown Phase %q (want %q, %q or %q)", o.Phase, PhaseAll, PhaseExpand, PhaseContract)
	}
	if o.BackfillSleep < 0 || o.BackfillMaxLag < 0 || o.BackfillProgressInterval < 0 {
		return errors.New("runner: BackfillSleep, BackfillMaxLag and BackfillProgressInterval must not be negative")
	}
	return nil
}

// countApplied takes the migrations res applied off the per-phase pending
// counts of p.
func (res *Result) countApplied(p plan) {
	for _, a := range res.Applied {
		if m := p.known.get(a.Version); m != nil && phaseOf(m) == PhaseContract {
			res.PendingContract--
		} else {
			res.PendingExpand--
		}
	}
}
