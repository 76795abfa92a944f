package runner_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/lockmigrate/lockmigrate/internal/pgtest"
	"github.com/lockmigrate/lockmigrate/runner"
)

// noTxStatements are statements PostgreSQL refuses in a transaction block
// (want true) and close variants it accepts.
var noTxStatements = []struct {
	sql  string
	want bool
}{
	{"CREATE INDEX CONCURRENTLY i ON t (x)", true},
	{"create unique /* c; */ index concurrently i on t (x)", true},
	{"CREATE INDEX i ON t (x)", false},
	{"CREATE INDEX concurrently_idx ON t (x)", false},
	{"DROP INDEX CONCURRENTLY IF EXISTS i", true},
	{"DROP INDEX i", false},
	{"REINDEX TABLE CONCURRENTLY t", true},
	{"REINDEX (VERBOSE, CONCURRENTLY) INDEX i", true},
	{"REINDEX (CONCURRENTLY false) TABLE t", false},
	{"REINDEX TABLE t", false},
	{"REINDEX SCHEMA s", true},
	{"REINDEX DATABASE d", true},
	{"ALTER TABLE p DETACH PARTITION p1 CONCURRENTLY", true},
	{"ALTER TABLE p DETACH PARTITION p1", false},
	{"VACUUM", true},
	{"VACUUM (ANALYZE) t", true},
	{"ANALYZE t", false},
	{"CREATE DATABASE d", true},
	{"DROP DATABASE IF EXISTS d", true},
	{"ALTER DATABASE d SET TABLESPACE ts", true},
	{"ALTER DATABASE d SET work_mem = '8MB'", false},
	{"ALTER SYSTEM SET work_mem = '8MB'", true},
	{"CREATE TABLESPACE ts LOCATION '/x'", true},
	{"CLUSTER", true},
	{"CLUSTER t USING i", false},
	{"DISCARD ALL", true},
	{"DISCARD PLANS", false},
	{"SELECT 'CREATE INDEX CONCURRENTLY'", false},
	{"COMMENT ON TABLE t IS 'VACUUM'", false},
}

func TestNeedsNoTransaction(t *testing.T) {
	for _, tc := range noTxStatements {
		migs := load(t, fstest.MapFS{"1_a.sql": {Data: []byte("SELECT 1;\n" + tc.sql + ";\n")}})
		err := runner.CheckNoTransactionStatements(migs, 0)
		var ve *runner.ValidationError
		if got := errors.As(err, &ve) && ve.Kind == runner.KindNeedsNoTransaction; got != tc.want {
			t.Errorf("%q: refused = %v, want %v (%v)", tc.sql, got, tc.want, err)
			continue
		}
		if tc.want && (!strings.Contains(err.Error(), "line 2") || !strings.Contains(err.Error(), runner.NoTransactionDirective)) {
			t.Errorf("%q: message lacks the line or the directive hint: %v", tc.sql, err)
		}
		// In a no-transaction file, and below the baseline, it is fine.
		notx := load(t, fstest.MapFS{"1_a.sql": {Data: []byte(runner.NoTransactionDirective + "\n" + tc.sql + ";\n")}})
		if err := runner.CheckNoTransactionStatements(notx, 0); err != nil {
			t.Errorf("%q in a no-transaction file: %v", tc.sql, err)
		}
		if err := runner.CheckNoTransactionStatements(migs, 1); err != nil {
			t.Errorf("%q below the baseline: %v", tc.sql, err)
		}
	}
}

// TestNoTxStatementRefusedBeforeApply: a pending transactional file
// holding CREATE INDEX CONCURRENTLY stops the run before anything of it is
// applied (the file before it included), and Plan and Validate say the
// same; BeforeApply is not reached.
func TestNoTxStatementRefusedBeforeApply(t *testing.T) {
	url := pgtest.Shared().NewDB(t)
	migs := load(t, fstest.MapFS{
		"1_t.sql": {Data: []byte("CREATE TABLE t (x int);\n")},
		"2_i.sql": {Data: []byte("-- lockmigrate:lint-ignore index-concurrently t is new\nCREATE INDEX CONCURRENTLY t_x ON t (x);\n")},
	})
	called := false
	r, conn := newRunner(t, url, migs, runner.Options{BeforeApply: func(context.Context, runner.Conn, []*runner.Migration, []*runner.Migration) error {
		called = true
		return nil
	}})
	ctx := context.Background()
	res, err := r.Migrate(ctx)
	var ve *runner.ValidationError
	if !errors.As(err, &ve) || ve.Kind != runner.KindNeedsNoTransaction || ve.File != "2_i.sql" || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("Migrate: %v, want a %s error for 2_i.sql line 2", err, runner.KindNeedsNoTransaction)
	}
	if res.ApplyStarted || len(res.Applied) > 0 || called {
		t.Fatalf("applied %v (started %v), BeforeApply called %v", res.Applied, res.ApplyStarted, called)
	}
	if n := pgtest.QueryInt(t, conn, `SELECT count(*) FROM lockmigrate_history`); n != 0 {
		t.Fatalf("history has %d rows", n)
	}
	if n := pgtest.QueryInt(t, conn, `SELECT count(*) FROM pg_class WHERE relname = 't'`); n != 0 {
		t.Fatal("1_t.sql was applied")
	}
	if _, err := r.Plan(ctx); !errors.As(err, &ve) || ve.Kind != runner.KindNeedsNoTransaction {
		t.Fatalf("Plan: %v", err)
	}
	if err := r.Validate(ctx); !errors.As(err, &ve) || ve.Kind != runner.KindNeedsNoTransaction {
		t.Fatalf("Validate: %v", err)
	}
}

// TestBeforeApply: the hook sees exactly the pending migrations, on the
// run's connection under the lock; its error stops the run with nothing
// applied; a run that finds everything applied never calls it.
func TestBeforeApply(t *testing.T) {
	url := pgtest.Shared().NewDB(t)
	fs := fstest.MapFS{"1_a.sql": {Data: []byte("CREATE TABLE a (x int);\n")}, "2_b.sql": {Data: []byte("CREATE TABLE b (x int);\n")}}
	refuse := errors.New("refused by the hook")
	var seen []string
	hook := func(ctx context.Context, conn runner.Conn, pending, applied []*runner.Migration) error {
		seen = nil
		for _, m := range pending {
			seen = append(seen, m.File)
		}
		if len(applied) != 1 || applied[0].File != "1_a.sql" {
			t.Errorf("hook: applied %v, want [1_a.sql]", applied)
		}
		var locks int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()`).Scan(&locks); err != nil || locks != 1 {
			t.Errorf("hook: advisory locks held on its connection %d (%v), want 1", locks, err)
		}
		return refuse
	}
	ctx := context.Background()
	r, conn := newRunner(t, url, load(t, fstest.MapFS{"1_a.sql": fs["1_a.sql"]}), runner.Options{})
	if _, err := r.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	r, _ = newRunner(t, url, load(t, fs), runner.Options{BeforeApply: hook})
	res, err := r.Migrate(ctx)
	if !errors.Is(err, refuse) || res.ApplyStarted || len(seen) != 1 || seen[0] != "2_b.sql" {
		t.Fatalf("Migrate: %v, started %v, hook saw %v; want the hook's error, nothing started, [2_b.sql]", err, res.ApplyStarted, seen)
	}
	if n := pgtest.QueryInt(t, conn, `SELECT count(*) FROM lockmigrate_history`); n != 1 {
		t.Fatalf("history has %d rows, want 1", n)
	}
	r, _ = newRunner(t, url, load(t, fstest.MapFS{"1_a.sql": fs["1_a.sql"]}), runner.Options{BeforeApply: hook})
	seen = []string{"not called"}
	if res, err := r.Migrate(ctx); err != nil || res.Outcome != runner.OutcomeUpToDate || len(seen) != 1 || seen[0] != "not called" {
		t.Fatalf("up to date: %v %v, hook saw %v", res, err, seen)
	}
}
