package runner_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/lockmigrate/lockmigrate/internal/pgtest"
	"github.com/lockmigrate/lockmigrate/runner"
)

// fiveTables is a set whose files fail if run twice (plain CREATE TABLE),
// so a baselined file that was executed anyway shows as "already exists".
func fiveTables(versions ...int) fstest.MapFS {
	fsys := fstest.MapFS{}
	for _, v := range versions {
		fsys[fmt.Sprintf("%04d_t%d.sql", v, v)] = &fstest.MapFile{Data: []byte(fmt.Sprintf("CREATE TABLE t%d (id int);", v))}
	}
	return fsys
}

// existingSchema creates the tables of versions as another tool would have.
func existingSchema(t testing.TB, conn *pgx.Conn, versions ...int) {
	t.Helper()
	for _, v := range versions {
		if _, err := conn.Exec(context.Background(), fmt.Sprintf("CREATE TABLE t%d (id int)", v)); err != nil {
			t.Fatal(err)
		}
	}
}

type histRow struct {
	version   int64
	state     string
	duration  int64
	appliedBy string
	runID     string
	checksum  string
}

func historyRows(t testing.TB, conn *pgx.Conn, table string) []histRow {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT version, state, duration_ms, applied_by, coalesce(run_id::text, ''), checksum FROM `+table+` ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (histRow, error) {
		var h histRow
		err := row.Scan(&h.version, &h.state, &h.duration, &h.appliedBy, &h.runID, &h.checksum)
		return h, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func states(rows []histRow) string {
	var parts []string
	for _, r := range rows {
		parts = append(parts, fmt.Sprintf("%d:%s", r.version, r.state))
	}
	return strings.Join(parts, " ")
}

// oldHistoryDDL is the history table as the release before the baseline
// state created it.
const oldHistoryDDL = `CREATE TABLE %s (
    version         bigint      PRIMARY KEY,
    name            text        NOT NULL,
    checksum        text        NOT NULL,
    applied_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    duration_ms     bigint      NOT NULL DEFAULT 0,
    applied_by      text        NOT NULL DEFAULT '',
    run_id          uuid,
    state           text        NOT NULL DEFAULT 'applied' CHECK (state IN ('applied', 'running')),
    statements_done integer     NOT NULL DEFAULT 0
)`

// stateChecks lists the definitions of the CHECK constraints on state.
func stateChecks(t testing.TB, conn *pgx.Conn, table string) []string {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT conname || ': ' || pg_get_constraintdef(c.oid) FROM pg_constraint c
 WHERE conrelid = $1::text::regclass AND contype = 'c' ORDER BY 1`, table)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestBaselineVersion(t *testing.T) {
	ctx := context.Background()

	t.Run("empty history: 3 of 5 baselined, 2 applied, then fast path", func(t *testing.T) {
		url := pgtest.Shared().NewDB(t)
		migs := load(t, fiveTables(1, 2, 3, 4, 5))
		runID := uuid.New()
		r, conn := newRunner(t, url, migs, runner.Options{BaselineVersion: 3, AppliedBy: "pod-a", RunID: runID})
		existingSchema(t, conn, 1, 2, 3)
		res, err := r.Migrate(ctx)
		if err != nil || res.Outcome != runner.OutcomeApplied || res.Baselined != 3 || len(res.Applied) != 2 ||
			res.Applied[0].Version != 4 || res.Applied[1].Version != 5 || res.SchemaVersion != 5 || res.Pending != 0 {
			t.Fatalf("Migrate = %+v, %v; want 3 baselined, 4 and 5 applied", res, err)
		}
		rows := historyRows(t, conn, "lockmigrate_history")
		if got := states(rows); got != "1:baseline 2:baseline 3:baseline 4:applied 5:applied" {
			t.Fatalf("history %s", got)
		}
		for i, row := range rows[:3] {
			if row.duration != 0 || row.appliedBy != "pod-a" || row.runID != runID.String() || row.checksum != migs[i].Checksum {
				t.Errorf("baseline row %+v: want duration 0, pod-a, run %s, checksum %s", row, runID, migs[i].Checksum)
			}
		}
		// Baseline counts as applied: the next run is the lock-free fast path.
		r2, _ := newRunner(t, url, migs, runner.Options{BaselineVersion: 3})
		res, err = r2.Migrate(ctx)
		if err != nil || res.Outcome != runner.OutcomeUpToDate || res.LockAttempts != 0 || res.SchemaVersion != 5 {
			t.Fatalf("second Migrate = %+v, %v; want up_to_date by the fast path", res, err)
		}
		st, err := r2.Status(ctx)
		if err != nil || st.Applied != 5 || st.Pending != 0 || st.SchemaVersion != 5 || st.Migrations[0].State != runner.StateBaseline ||
			st.Migrations[4].State != runner.StateApplied {
			t.Fatalf("Status = %+v, %v", st, err)
		}
		if err := r2.Validate(ctx); err != nil {
			t.Fatal(err)
		}
		pgtest.AssertNoAdvisoryLocks(t, conn)
	})

	t.Run("a changed baselined file is a checksum mismatch", func(t *testing.T) {
		url := pgtest.Shared().NewDB(t)
		r, conn := newRunner(t, url, load(t, fiveTables(1, 2)), runner.Options{BaselineVersion: 2})
		existingSchema(t, conn, 1, 2)
		if res, err := r.Migrate(ctx); err != nil || res.Baselined != 2 || res.Outcome != runner.OutcomeUpToDate {
			t.Fatalf("Migrate = %+v, %v; want 2 baselined, nothing applied", res, err)
		}
		edited := fiveTables(1, 2)
		edited["0002_t2.sql"] = &fstest.MapFile{Data: []byte("CREATE TABLE t2 (id bigint);")}
		r, _ = newRunner(t, url, load(t, edited), runner.Options{BaselineVersion: 2})
		_, err := r.Migrate(ctx)
		var ve *runner.ValidationError
		if !errors.As(err, &ve) || ve.Kind != runner.KindChecksumMismatch || ve.Version != 2 {
			t.Fatalf("Migrate = %v, want checksum_mismatch for version 2", err)
		}
		st, err := r.Status(ctx)
		if err != nil || st.Migrations[1].State != runner.StateChecksumMismatch {
			t.Fatalf("Status = %+v, %v", st, err)
		}
	})

	t.Run("non-empty history: ignored, and said so", func(t *testing.T) {
		url := pgtest.Shared().NewDB(t)
		r, conn := newRunner(t, url, load(t, fiveTables(1, 2)), runner.Options{})
		if _, err := r.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		logs := &eventLog{want: "LOCKMIGRATE_BASELINE_VERSION ignored", seen: make(chan struct{})}
		r, _ = newRunner(t, url, load(t, fiveTables(1, 2, 3, 4, 5)), runner.Options{BaselineVersion: 4, Logger: slog.New(logs)})
		res, err := r.Migrate(ctx)
		if err != nil || res.Baselined != 0 || len(res.Applied) != 3 {
			t.Fatalf("Migrate = %+v, %v; want 3 applied, none baselined", res, err)
		}
		if got := states(historyRows(t, conn, "lockmigrate_history")); got != "1:applied 2:applied 3:applied 4:applied 5:applied" {
			t.Fatalf("history %s", got)
		}
		select {
		case <-logs.seen:
		default:
			t.Fatalf("not logged; messages: %q", logs.msgs)
		}
	})

	t.Run("version that is no file: every file below it", func(t *testing.T) {
		url := pgtest.Shared().NewDB(t)
		r, conn := newRunner(t, url, load(t, fiveTables(1, 2, 5, 6)), runner.Options{BaselineVersion: 4})
		existingSchema(t, conn, 1, 2)
		res, err := r.Migrate(ctx)
		if err != nil || res.Baselined != 2 || len(res.Applied) != 2 {
			t.Fatalf("Migrate = %+v, %v", res, err)
		}
		if got := states(historyRows(t, conn, "lockmigrate_history")); got != "1:baseline 2:baseline 5:applied 6:applied" {
			t.Fatalf("history %s", got)
		}
	})

	t.Run("below every file: nothing baselined", func(t *testing.T) {
		url := pgtest.Shared().NewDB(t)
		r, conn := newRunner(t, url, load(t, fiveTables(5, 6)), runner.Options{BaselineVersion: 4})
		res, err := r.Migrate(ctx)
		if err != nil || res.Baselined != 0 || len(res.Applied) != 2 {
			t.Fatalf("Migrate = %+v, %v", res, err)
		}
		if got := states(historyRows(t, conn, "lockmigrate_history")); got != "5:applied 6:applied" {
			t.Fatalf("history %s", got)
		}
	})

	t.Run("replicas at one barrier baseline once", func(t *testing.T) {
		url := pgtest.Shared().NewDB(t)
		migs := load(t, fiveTables(1, 2, 3, 4, 5))
		conn := connect(t, url)
		existingSchema(t, conn, 1, 2, 3)
		out := contend(t, url, migs, 10, runner.Options{BaselineVersion: 3})
		if out[runner.OutcomeApplied] != 1 {
			t.Fatalf("outcomes %v", out)
		}
		if got := states(historyRows(t, conn, "lockmigrate_history")); got != "1:baseline 2:baseline 3:baseline 4:applied 5:applied" {
			t.Fatalf("history %s", got)
		}
		pgtest.AssertNoAdvisoryLocks(t, conn)
	})

	t.Run("negative refused", func(t *testing.T) {
		conn := connect(t, pgtest.Shared().NewDB(t))
		if _, err := runner.New(conn, noLock{}, nil, runner.Options{Schema: "public", Table: "h", BaselineVersion: -1}); err == nil {
			t.Fatal("no error for BaselineVersion -1")
		}
	})
}

// TestBaselineUpgradesOldHistoryTable: a history table created by the
// previous release (state check without 'baseline') is upgraded under the
// lock when a baseline is written, once; a table that needs no baseline is
// left alone.
// TestBaselineAllModeNoTransactionFile: a no-transaction file at or below
// the baseline is recorded, not run, so it does not stop a run in
// LOCKMIGRATE_TRANSACTION=all mode; one above it still does.
func TestBaselineAllModeNoTransactionFile(t *testing.T) {
	ctx := context.Background()
	set := fiveTables(1, 3)
	set["0002_idx.sql"] = &fstest.MapFile{Data: []byte("-- lockmigrate:no-transaction\nCREATE INDEX CONCURRENTLY t1_id ON t1 (id);\n")}
	url := pgtest.Shared().NewDB(t)
	r, conn := newRunner(t, url, load(t, set), runner.Options{BaselineVersion: 2, Transaction: runner.TransactionAll})
	existingSchema(t, conn, 1)
	res, err := r.Migrate(ctx)
	if err != nil || res.Baselined != 2 || len(res.Applied) != 1 || res.Applied[0].Version != 3 {
		t.Fatalf("Migrate = %+v, %v; want 1 and 2 baselined, 3 applied", res, err)
	}
	if got := states(historyRows(t, conn, "lockmigrate_history")); got != "1:baseline 2:baseline 3:applied" {
		t.Fatalf("history %s", got)
	}

	url = pgtest.Shared().NewDB(t)
	r, _ = newRunner(t, url, load(t, set), runner.Options{BaselineVersion: 1, Transaction: runner.TransactionAll})
	var ve *runner.ValidationError
	if _, err := r.Migrate(ctx); !errors.As(err, &ve) || ve.Version != 2 {
		t.Fatalf("Migrate with the no-transaction file above the baseline = %v; want its validation error", err)
	}
}

func TestBaselineUpgradesOldHistoryTable(t *testing.T) {
	ctx := context.Background()
	oldCheck := `lockmigrate_history_state_check: CHECK ((state = ANY (ARRAY['applied'::text, 'running'::text])))`

	t.Run("empty old table, BASELINE_VERSION", func(t *testing.T) {
		url := pgtest.Shared().NewDB(t)
		r, conn := newRunner(t, url, load(t, fiveTables(1, 2, 3)), runner.Options{BaselineVersion: 2})
		if _, err := conn.Exec(ctx, fmt.Sprintf(oldHistoryDDL, "lockmigrate_history")); err != nil {
			t.Fatal(err)
		}
		if got := stateChecks(t, conn, "lockmigrate_history"); !slices.Equal(got, []string{oldCheck}) {
			t.Fatalf("old DDL gives %q", got)
		}
		existingSchema(t, conn, 1, 2)
		res, err := r.Migrate(ctx)
		if err != nil || res.Baselined != 2 || len(res.Applied) != 1 {
			t.Fatalf("Migrate = %+v, %v", res, err)
		}
		want := []string{`lockmigrate_history_state_check: CHECK ((state = ANY (ARRAY['applied'::text, 'running'::text, 'baseline'::text])))`}
		if got := stateChecks(t, conn, "lockmigrate_history"); !slices.Equal(got, want) {
			t.Fatalf("after upgrade: %q, want %q", got, want)
		}
		// The upgraded check still refuses nonsense.
		if _, err := conn.Exec(ctx, `UPDATE lockmigrate_history SET state = 'bogus' WHERE version = 1`); err == nil || !strings.Contains(err.Error(), "23514") {
			t.Fatalf("state 'bogus' accepted: %v", err)
		}
		// A new table has the same check as an upgraded one.
		fresh := pgtest.Shared().NewDB(t)
		rf, cf := newRunner(t, fresh, load(t, fiveTables(1)), runner.Options{})
		if _, err := rf.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		if got := stateChecks(t, cf, "lockmigrate_history"); !slices.Equal(got, want) {
			t.Fatalf("new table: %q, want %q", got, want)
		}
	})

	t.Run("old table in another schema, Baseline twice", func(t *testing.T) {
		url := pgtest.Shared().NewDB(t)
		conn := connect(t, url)
		table := `"Ops Schema"."old hist"`
		if _, err := conn.Exec(ctx, `CREATE SCHEMA "Ops Schema"; `+fmt.Sprintf(oldHistoryDDL, table)); err != nil {
			t.Fatal(err)
		}
		opts := runner.Options{Schema: "Ops Schema", Table: "old hist"}
		r, _ := newRunner(t, url, load(t, fiveTables(1, 2, 3)), opts)
		br, err := r.Baseline(ctx, []int64{1, 2})
		if err != nil || !br.ConstraintUpgraded || br.AlreadyDone || !slices.Equal(br.Versions, []int64{1, 2}) {
			t.Fatalf("Baseline = %+v, %v; want 1, 2 with the check upgraded", br, err)
		}
		before := stateChecks(t, conn, table)
		if len(before) != 1 || !strings.Contains(before[0], "'baseline'") {
			t.Fatalf("checks %q", before)
		}
		br, err = r.Baseline(ctx, []int64{1, 2})
		if err != nil || !br.AlreadyDone || br.ConstraintUpgraded {
			t.Fatalf("second Baseline = %+v, %v; want already done, no upgrade", br, err)
		}
		if after := stateChecks(t, conn, table); !slices.Equal(after, before) {
			t.Fatalf("checks changed by an idempotent baseline: %q -> %q", before, after)
		}
		pgtest.AssertNoAdvisoryLocks(t, conn)
	})

	t.Run("old table with history: not upgraded", func(t *testing.T) {
		url := pgtest.Shared().NewDB(t)
		r, conn := newRunner(t, url, load(t, fiveTables(1, 2)), runner.Options{BaselineVersion: 2})
		if _, err := conn.Exec(ctx, fmt.Sprintf(oldHistoryDDL, "lockmigrate_history")+`;
INSERT INTO lockmigrate_history (version, name, checksum) VALUES (1, 't1', 'x')`); err != nil {
			t.Fatal(err)
		}
		_, err := r.Migrate(ctx) // checksum mismatch on 1; the baseline is not attempted
		var ve *runner.ValidationError
		if !errors.As(err, &ve) || ve.Kind != runner.KindChecksumMismatch {
			t.Fatalf("Migrate = %v", err)
		}
		if got := stateChecks(t, conn, "lockmigrate_history"); !slices.Equal(got, []string{oldCheck}) {
			t.Fatalf("checks %q, want the old one untouched", got)
		}
	})
}

func TestBaselineRefusals(t *testing.T) {
	ctx := context.Background()
	url := pgtest.Shared().NewDB(t)
	migs := load(t, fiveTables(1, 2, 3))
	r, conn := newRunner(t, url, migs, runner.Options{})

	_, err := r.Baseline(ctx, []int64{1, 4})
	var ve *runner.ValidationError
	if !errors.As(err, &ve) || ve.Kind != runner.KindUnknownVersion || !strings.Contains(err.Error(), "4") {
		t.Fatalf("Baseline(1, 4) = %v, want unknown_version", err)
	}
	if n := pgtest.QueryInt(t, conn, `SELECT count(*) FROM pg_class WHERE relname = 'lockmigrate_history'`); n != 0 {
		t.Fatal("history table created for a refused baseline")
	}
	if _, err := r.Baseline(ctx, []int64{1, 2}); err != nil {
		t.Fatal(err)
	}
	// A different baseline over an existing one, and a baseline over
	// applied rows, are refused.
	for _, vs := range [][]int64{{1}, {1, 2, 3}} {
		_, err = r.Baseline(ctx, vs)
		if !errors.As(err, &ve) || ve.Kind != runner.KindHistoryNotEmpty || !strings.Contains(err.Error(), "2 baseline") {
			t.Fatalf("Baseline(%v) = %v, want history_not_empty", vs, err)
		}
	}
	if _, err := r.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = r.Baseline(ctx, []int64{1, 2})
	if !errors.As(err, &ve) || ve.Kind != runner.KindHistoryNotEmpty || !strings.Contains(err.Error(), "1 applied, 2 baseline") {
		t.Fatalf("Baseline after migrate = %v, want history_not_empty", err)
	}
	if got := states(historyRows(t, conn, "lockmigrate_history")); got != "1:baseline 2:baseline 3:applied" {
		t.Fatalf("history %s", got)
	}
	pgtest.AssertNoAdvisoryLocks(t, conn)
}
