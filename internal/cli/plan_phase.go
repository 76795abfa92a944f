package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/lockmigrate/lockmigrate/runner"
)

// phaseHeader is the plan header's phase, shown unless the run applies
// every phase.
func phaseHeader(p runner.Phase) string {
	if p == runner.PhaseAll || p == "" {
		return ""
	}
	return "  phase " + string(p)
}

// plannedDetail says what the MODE column does not: a contract file's
// phase, a backfill's bounds, throttle and progress.
func plannedDetail(m runner.PlannedMigration) string {
	var parts []string
	if m.Phase == runner.PhaseContract {
		parts = append(parts, "contract")
	}
	if b := m.Backfill; b != nil {
		o := []string{}
		if b.Sleep != "" {
			o = append(o, "sleep="+b.Sleep)
		}
		if b.MaxBatches > 0 {
			o = append(o, fmt.Sprintf("max_batches=%d", b.MaxBatches))
		}
		if b.MaxRows > 0 {
			o = append(o, fmt.Sprintf("max_rows=%d", b.MaxRows))
		}
		parts = append(parts, "batches until 0 rows, "+strings.Join(o, " "))
		if b.Resume {
			parts = append(parts, fmt.Sprintf("resumes after %d batches, %d rows (interrupted)", b.BatchesDone, b.RowsDone))
		}
	}
	return strings.Join(parts, "; ")
}

// writeDeferred lists the pending migrations a run in phase leaves to the
// other phase.
func writeDeferred(w io.Writer, phase runner.Phase, deferred []runner.PlannedMigration) {
	if len(deferred) == 0 {
		return
	}
	other := map[runner.Phase]string{
		runner.PhaseExpand:   "the contract phase (the post-rollout Job, LOCKMIGRATE_PHASE=contract)",
		runner.PhaseContract: "the expand phase (the pre-upgrade Job and init containers, LOCKMIGRATE_PHASE=expand)",
	}[phase]
	fmt.Fprintf(w, "left to %s: %d migration(s)\n", other, len(deferred))
	writePending(w, "", deferred)
}

// statusName is a migration's name in status's table, with what kind of
// file it is.
func statusName(m runner.MigrationStatus) string {
	var tags []string
	switch {
	case m.Backfill:
		tags = append(tags, "backfill")
	case m.NoTransaction:
		tags = append(tags, "no-transaction")
	}
	if m.Phase == runner.PhaseContract {
		tags = append(tags, "contract")
	}
	if len(tags) == 0 {
		return m.Name
	}
	return m.Name + " (" + strings.Join(tags, ", ") + ")"
}

// statusState is a migration's state in status's table, with a backfill's
// progress.
func statusState(m runner.MigrationStatus) string {
	if !m.Backfill || m.State == runner.StatePending {
		return m.State
	}
	return fmt.Sprintf("%s (%d batches, %d rows)", m.State, m.StatementsDone, m.RowsDone)
}

// writeStatusPhases prints the pending work per phase, when phases matter:
// the set has contract files or the run is limited to one phase.
func writeStatusPhases(w io.Writer, st *runner.Status) {
	contract := false
	for _, m := range st.Migrations {
		contract = contract || m.Phase == runner.PhaseContract
	}
	if !contract && (st.Phase == runner.PhaseAll || st.Phase == "") {
		return
	}
	fmt.Fprintf(w, "phase: %s  pending expand: %d  pending contract: %d\n", st.Phase, st.PendingExpand, st.PendingContract)
}
