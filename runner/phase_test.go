package runner

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

// TestLoadDirectives: the directives in a file's leading comment lines,
// alone and together, and the ones refused.
func TestLoadDirectives(t *testing.T) {
	const upd = "UPDATE t SET b = a WHERE id IN (SELECT id FROM t WHERE b IS NULL LIMIT 100);\n"
	ok := []struct {
		name, body string
		notx       bool
		phase      Phase
		backfill   *BackfillOptions
	}{
		{name: "none", body: "SELECT 1", phase: ""},
		{name: "contract", body: "-- lockmigrate:phase contract\nALTER TABLE t DROP COLUMN a;", phase: PhaseContract},
		{name: "explicit expand", body: "-- lockmigrate:phase expand\nSELECT 1", phase: PhaseExpand},
		{name: "below a comment and a blank line", body: "-- drop the old column\n\n-- lockmigrate:phase contract\nSELECT 1", phase: PhaseContract},
		{name: "after SQL it is a comment", body: "SELECT 1;\n-- lockmigrate:phase contract\n"},
		{name: "contract no-transaction", body: "-- lockmigrate:no-transaction\r\n-- lockmigrate:phase contract\r\nDROP INDEX CONCURRENTLY i;",
			notx: true, phase: PhaseContract},
		{name: "backfill defaults", body: "-- lockmigrate:backfill\n" + upd, notx: true,
			backfill: &BackfillOptions{MaxBatches: DefaultBackfillMaxBatches}},
		{name: "backfill options, contract", body: "-- lockmigrate:backfill sleep=250ms  max_batches=40 max_rows=4000\n-- lockmigrate:phase contract\n" + upd,
			notx: true, phase: PhaseContract, backfill: &BackfillOptions{Sleep: 250 * time.Millisecond, MaxBatches: 40, MaxRows: 4000}},
		{name: "backfill max_rows only", body: "-- lockmigrate:backfill max_rows=10\nDELETE FROM t WHERE id IN (SELECT id FROM t WHERE old LIMIT 5)", notx: true,
			backfill: &BackfillOptions{MaxRows: 10}},
		{name: "backfill with a CTE", body: "-- lockmigrate:backfill\nWITH b AS (SELECT id FROM t WHERE b IS NULL LIMIT 9) UPDATE t SET b = 1 FROM b WHERE t.id = b.id", notx: true,
			backfill: &BackfillOptions{MaxBatches: DefaultBackfillMaxBatches}},
	}
	for _, tt := range ok {
		t.Run(tt.name, func(t *testing.T) {
			migs, err := Load(fstest.MapFS{"1_a.sql": {Data: []byte(tt.body)}})
			if err != nil {
				t.Fatal(err)
			}
			m := migs[0]
			if m.NoTransaction != tt.notx || m.Phase != tt.phase {
				t.Fatalf("NoTransaction %v phase %q, want %v %q", m.NoTransaction, m.Phase, tt.notx, tt.phase)
			}
			if (m.Backfill == nil) != (tt.backfill == nil) || m.Backfill != nil && *m.Backfill != *tt.backfill {
				t.Fatalf("Backfill = %+v, want %+v", m.Backfill, tt.backfill)
			}
		})
	}
	bad := []struct{ name, body, want string }{
		{"unknown phase", "-- lockmigrate:phase later\nSELECT 1", `the phase must be "contract" or "expand"`},
		{"phase twice", "-- lockmigrate:phase contract\n-- lockmigrate:phase contract\nSELECT 1", "given twice"},
		{"unknown directive below a comment", "-- hi\n-- lockmigrate:phase-contract\nSELECT 1", "unknown directive"},
		{"unknown backfill option", "-- lockmigrate:backfill limit=5\n" + upd, `unknown option "limit"`},
		{"bad sleep", "-- lockmigrate:backfill sleep=fast\n" + upd, `sleep="fast"`},
		{"zero bound", "-- lockmigrate:backfill max_batches=0\n" + upd, "must be positive"},
		{"option without value", "-- lockmigrate:backfill max_rows\n" + upd, "not a single option=value"},
		{"two statements", "-- lockmigrate:backfill\n" + upd + upd, "exactly one statement"},
		{"no statement", "-- lockmigrate:backfill\n-- nothing\n", "exactly one statement (it runs once per batch), found 0"},
		{"select", "-- lockmigrate:backfill\nSELECT backfill_batch()", "must change rows"},
		{"do block", "-- lockmigrate:backfill\nDO $$ BEGIN UPDATE t SET b = 1; END $$", "must change rows"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(fstest.MapFS{"1_a.sql": {Data: []byte(tt.body)}})
			var ve *ValidationError
			if !errors.As(err, &ve) || ve.File != "1_a.sql" || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Load: %v, want a validation error of 1_a.sql containing %q", err, tt.want)
			}
		})
	}
}

// TestMakePlanPhases: what a run in each phase applies, defers and refuses.
func TestMakePlanPhases(t *testing.T) {
	// 1 expand, 2 contract, 3 expand (a later release's), 4 contract.
	migs := []*Migration{
		{Version: 1, File: "1_add.sql", Checksum: "c1"},
		{Version: 2, File: "2_drop.sql", Checksum: "c2", Phase: PhaseContract},
		{Version: 3, File: "3_add.sql", Checksum: "c3"},
		{Version: 4, File: "4_drop.sql", Checksum: "c4", Phase: PhaseContract},
	}
	applied := func(vs ...int64) []HistoryRow {
		var rows []HistoryRow
		for _, v := range vs {
			rows = append(rows, HistoryRow{Version: v, Checksum: migs[v-1].Checksum, State: StateApplied})
		}
		return rows
	}
	tests := []struct {
		name              string
		rows              []HistoryRow
		phase             Phase
		pending, deferred []int64
		problems          []ValidationKind
		expand, contract  int
	}{
		{name: "all, empty", phase: PhaseAll, pending: []int64{1, 2, 3, 4}, expand: 2, contract: 2},
		{name: "expand, empty", phase: PhaseExpand, pending: []int64{1, 3}, deferred: []int64{2, 4}, expand: 2, contract: 2},
		{name: "contract, empty: both wait", phase: PhaseContract, pending: []int64{2, 4}, deferred: []int64{1, 3},
			problems: []ValidationKind{KindContractWaiting, KindContractWaiting}, expand: 2, contract: 2},
		{name: "contract after release 1's expand: 4 waits for 3", rows: applied(1), phase: PhaseContract,
			pending: []int64{2, 4}, deferred: []int64{3}, problems: []ValidationKind{KindContractWaiting}, expand: 1, contract: 2},
		{name: "expand after everything expand: up to date", rows: applied(1, 3), phase: PhaseExpand, deferred: []int64{2, 4}, contract: 2},
		// A later release's expand (3) was applied before release 1's
		// contract (2): not out of order for a contract file.
		{name: "contract overtaken by a later expand", rows: applied(1, 3), phase: PhaseContract, pending: []int64{2, 4}, contract: 2},
		{name: "all, the same history", rows: applied(1, 3), phase: PhaseAll, pending: []int64{2, 4}, contract: 2},
		{name: "contract files stay in order among themselves", rows: applied(1, 3, 4), phase: PhaseContract, pending: []int64{2},
			problems: []ValidationKind{KindOutOfOrder}, contract: 1},
		{name: "an expand file below an applied contract file is out of order", rows: applied(2, 3), phase: PhaseExpand, pending: []int64{1},
			deferred: []int64{4}, problems: []ValidationKind{KindOutOfOrder}, expand: 1, contract: 1},
		{name: "expand below an applied expand is still out of order", rows: applied(2, 3), phase: PhaseAll, pending: []int64{1, 4},
			problems: []ValidationKind{KindOutOfOrder}, expand: 1, contract: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := makePlan(migs, tt.rows, Options{Phase: tt.phase})
			if got := versionsOf(p.pending); !slices.Equal(got, tt.pending) {
				t.Errorf("pending %v, want %v", got, tt.pending)
			}
			if got := versionsOf(p.deferred); !slices.Equal(got, tt.deferred) {
				t.Errorf("deferred %v, want %v", got, tt.deferred)
			}
			if p.pendingExpand != tt.expand || p.pendingContract != tt.contract {
				t.Errorf("pending per phase: expand %d contract %d, want %d %d", p.pendingExpand, p.pendingContract, tt.expand, tt.contract)
			}
			var kinds []ValidationKind
			for _, e := range p.problems {
				kinds = append(kinds, e.(*ValidationError).Kind)
			}
			if !slices.Equal(kinds, tt.problems) {
				t.Fatalf("problems %v, want kinds %v", p.problems, tt.problems)
			}
		})
	}
	// The refusal names the expand files the contract file waits for.
	p := makePlan(migs, applied(1), Options{Phase: PhaseContract})
	if msg := p.problems[0].Error(); !strings.Contains(msg, "4_drop.sql") || !strings.Contains(msg, "versions 3 (3_add.sql)") ||
		!strings.Contains(msg, "LOCKMIGRATE_PHASE=expand") {
		t.Errorf("message: %s", msg)
	}
}

// TestMakePlanRunningRowsByPhase: a row left running by the other phase's
// file does not stop a run (an init container must not queue behind the
// contract Job), and a backfill's running row is resumed, not refused.
func TestMakePlanRunningRowsByPhase(t *testing.T) {
	migs := []*Migration{
		{Version: 1, File: "1_idx.sql", Checksum: "c1", NoTransaction: true},
		{Version: 2, File: "2_fill.sql", Checksum: "c2", NoTransaction: true, Phase: PhaseContract, Backfill: &BackfillOptions{MaxBatches: 9}},
		{Version: 3, File: "3_drop.sql", Checksum: "c3", NoTransaction: true, Phase: PhaseContract},
	}
	rows := []HistoryRow{{Version: 1, Checksum: "c1", State: StateApplied},
		{Version: 2, Checksum: "old", State: StateRunning, StatementsDone: 7}}
	p := makePlan(migs, rows, Options{Phase: PhaseExpand})
	if !p.upToDate() {
		t.Fatalf("expand run not up to date with a contract backfill running: %+v", p)
	}
	p = makePlan(migs, rows, Options{Phase: PhaseContract})
	if got := versionsOf(p.pending); !slices.Equal(got, []int64{2, 3}) || len(p.running) != 0 || len(p.problems) != 0 {
		t.Fatalf("contract run: pending %v running %v problems %v", got, p.running, p.problems)
	}
	if p.resumed[2].StatementsDone != 7 {
		t.Fatalf("resumed %+v", p.resumed)
	}
	// A plain no-transaction contract file left running blocks the
	// contract run only.
	rows = append(rows[:1], HistoryRow{Version: 3, Checksum: "c3", State: StateRunning})
	if p := makePlan(migs, rows, Options{Phase: PhaseExpand}); !p.upToDate() {
		t.Fatalf("expand run blocked by a contract file's running row: %+v", p.running)
	}
	if p := makePlan(migs, rows, Options{Phase: PhaseContract}); len(p.running) != 1 {
		t.Fatalf("contract run does not see its interrupted file: %+v", p.running)
	}
}
