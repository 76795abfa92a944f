package lint

import (
	"context"
	"testing"
	"testing/fstest"

	"github.com/lockmigrate/lockmigrate/internal/lint/pgparse"
	"github.com/lockmigrate/lockmigrate/runner"
)

// TestRunnerNoTxCheckAgrees: the runner's keyword check, which no
// suppression can override, refuses a statement only when this package's
// parser-based no-transaction-required rule flags it too; the rule flags
// more only for the statements the runner leaves to it (subscriptions).
func TestRunnerNoTxCheckAgrees(t *testing.T) {
	if !pgparse.Available() {
		t.Skip("built without cgo: no parser")
	}
	stmts := []string{
		"CREATE INDEX CONCURRENTLY i ON t (x)", "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS i ON t (x)",
		"CREATE /* c */ INDEX -- d\n CONCURRENTLY i ON t (x)", "CREATE INDEX i ON t (x)", "CREATE INDEX concurrently_i ON t (x)",
		"DROP INDEX CONCURRENTLY IF EXISTS i", "DROP INDEX i, j", "REINDEX TABLE CONCURRENTLY t", "REINDEX (VERBOSE) INDEX CONCURRENTLY i",
		"REINDEX (CONCURRENTLY) TABLE t", "REINDEX (CONCURRENTLY false) TABLE t", "REINDEX (CONCURRENTLY off) INDEX i", "REINDEX TABLE t",
		"REINDEX SCHEMA s", "REINDEX DATABASE d", "REINDEX SYSTEM d", "ALTER TABLE p DETACH PARTITION p1 CONCURRENTLY",
		"ALTER TABLE IF EXISTS ONLY s.p DETACH PARTITION s.p1 CONCURRENTLY", "ALTER TABLE p DETACH PARTITION p1 FINALIZE",
		"ALTER TABLE p DETACH PARTITION p1", "VACUUM", "VACUUM FULL t", "VACUUM (ANALYZE, VERBOSE) t", "ANALYZE t",
		"CREATE DATABASE d", "DROP DATABASE IF EXISTS d", "ALTER DATABASE d SET TABLESPACE ts", "ALTER DATABASE d SET work_mem = '8MB'",
		"ALTER DATABASE d RENAME TO e", "ALTER SYSTEM SET work_mem = '8MB'", "ALTER SYSTEM RESET ALL", "CREATE TABLESPACE ts LOCATION '/x'",
		"DROP TABLESPACE ts", "CLUSTER", "CLUSTER VERBOSE", "CLUSTER t USING i", "CLUSTER t", "DISCARD ALL", "DISCARD PLANS",
		"SELECT 'CREATE INDEX CONCURRENTLY'", "COMMENT ON TABLE t IS 'VACUUM'", "CREATE TABLE vacuum (x int)",
		"CREATE SUBSCRIPTION s CONNECTION 'x' PUBLICATION p", "CREATE SUBSCRIPTION s CONNECTION 'x' PUBLICATION p WITH (connect = false)",
		"DROP SUBSCRIPTION s",
	}
	leftToLint := map[string]bool{"CREATE SUBSCRIPTION s CONNECTION 'x' PUBLICATION p": true, "DROP SUBSCRIPTION s": true}
	for _, sql := range stmts {
		migs, err := runner.Load(fstest.MapFS{"1_a.sql": {Data: []byte(sql + ";\n")}})
		if err != nil {
			t.Fatal(err)
		}
		refused := runner.CheckNoTransactionStatements(migs, 0) != nil
		rep, err := Lint(context.Background(), []File{{Name: "1_a.sql", SQL: sql + ";\n"}}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		flagged := false
		for _, f := range rep.Findings {
			if f.Rule == RuleSyntax {
				t.Fatalf("%q does not parse: %s", sql, f.Message)
			}
			flagged = flagged || f.Rule == RuleNoTransaction
		}
		if refused != flagged && !(leftToLint[sql] && flagged && !refused) {
			t.Errorf("%q: runner refuses %v, lint flags %v", sql, refused, flagged)
		}
		if leftToLint[sql] && refused {
			t.Errorf("%q: the runner refuses a statement that can run in a transaction (no slot): it must leave it to lint", sql)
		}
	}
}
