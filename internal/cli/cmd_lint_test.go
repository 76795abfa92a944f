package cli

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lockmigrate/lockmigrate/internal/bintest"
	"github.com/lockmigrate/lockmigrate/internal/lint/pgparse"
	"github.com/lockmigrate/lockmigrate/internal/pgtest"
	"github.com/lockmigrate/lockmigrate/internal/pushtest"
	"github.com/lockmigrate/lockmigrate/lock"
)

func needParser(t *testing.T) {
	t.Helper()
	if !pgparse.Available() {
		t.Skip("built without cgo: no parser")
	}
}

// lintSet is a set whose second file builds an index without
// CONCURRENTLY on a table the first one did not create (an existing,
// populated one).
var lintSet = map[string]string{
	"1_notes.sql": "CREATE TABLE notes (id bigint PRIMARY KEY, body text);\nCREATE INDEX notes_body_idx ON notes (body);\n",
	"2_index.sql": "-- the dangerous one\nCREATE INDEX accounts_plan_idx ON accounts (plan);\n",
}

// TestLintCommandOffline: text, JSON and SARIF output, exit 5 on an error,
// 0 on the examples, named files, and usage errors.
func TestLintCommandOffline(t *testing.T) {
	needParser(t)
	ctx := context.Background()
	dir := bintest.WriteDir(t, lintSet)
	r := runIn(t, ctx, map[string]string{"LOCKMIGRATE_DIR": dir}, "lint")
	if r.Code != exitValidation || !strings.Contains(r.Stdout, "2_index.sql:2:1: error [index-concurrently] CREATE INDEX on accounts") ||
		!strings.Contains(r.Stdout, "fix: use CREATE INDEX CONCURRENTLY") || !strings.Contains(r.Stdout, "1 error(s), 0 warning(s) in 2 file(s)") {
		t.Fatalf("lint: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	r = runIn(t, ctx, map[string]string{"LOCKMIGRATE_DIR": dir}, "lint", "--format", "json")
	var doc struct {
		Findings []struct{ File, Rule string }
		Summary  struct{ Errors int }
	}
	if err := json.Unmarshal([]byte(r.Stdout), &doc); err != nil || r.Code != exitValidation || doc.Summary.Errors != 1 || doc.Findings[0].Rule != "index-concurrently" {
		t.Fatalf("json: exit %d, %v, %s", r.Code, err, r.Stdout)
	}
	r = runIn(t, ctx, map[string]string{"LOCKMIGRATE_DIR": dir}, "lint", "--format", "sarif")
	var sarif struct {
		Version string
		Runs    []struct{ Results []struct{ RuleID string } }
	}
	if err := json.Unmarshal([]byte(r.Stdout), &sarif); err != nil || sarif.Version != "2.1.0" || sarif.Runs[0].Results[0].RuleID != "index-concurrently" {
		t.Fatalf("sarif: %v, %s", err, r.Stdout)
	}
	examples, err := filepath.Abs("../../examples/zero-downtime")
	if err != nil {
		t.Fatal(err)
	}
	if r := runIn(t, ctx, map[string]string{"LOCKMIGRATE_DIR": examples}, "lint"); r.Code != exitOK || !strings.Contains(r.Stdout, "0 error(s), 0 warning(s) in 7 file(s)") {
		t.Fatalf("examples: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	// The whole set: notes is created by 1_notes.sql, so indexing it in
	// the set is free. A new file named on its own has the set as applied
	// context: notes exists, and the index is an error.
	newFile := filepath.Join(t.TempDir(), "3_notes_idx.sql")
	if err := os.WriteFile(newFile, []byte("CREATE INDEX ON notes (id, body);\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = runIn(t, ctx, map[string]string{"LOCKMIGRATE_DIR": dir}, "lint", newFile)
	if r.Code != exitValidation || !strings.Contains(r.Stdout, "3_notes_idx.sql:1:1: error [index-concurrently] CREATE INDEX on notes") || !strings.Contains(r.Stdout, "in 1 file(s)") {
		t.Fatalf("named file: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if r := runIn(t, ctx, map[string]string{"LOCKMIGRATE_DIR": dir}, "lint", filepath.Join(dir, "1_notes.sql")); r.Code != exitOK {
		t.Fatalf("named file of the set: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	for _, args := range [][]string{{"lint", "--format", "xml"}, {"lint", "/nonexistent.sql"}} {
		if r := runIn(t, ctx, nil, args...); r.Code != exitUsage {
			t.Errorf("%v: exit %d, want %d\n%s", args, r.Code, exitUsage, r.Stderr)
		}
	}
	if r := runIn(t, ctx, map[string]string{"LOCKMIGRATE_LINT_ENABLE": "no-such-rule"}, "lint"); r.Code != exitUsage || !strings.Contains(r.Stderr, "LOCKMIGRATE_LINT_ENABLE") {
		t.Errorf("unknown rule: exit %d\n%s", r.Code, r.Stderr)
	}
}

// populated creates accounts, 100,000 rows, ANALYZEd: an index on it
// without CONCURRENTLY is an error online.
func populated(t *testing.T, url string) {
	t.Helper()
	if _, err := pgtest.Connect(t, url).Exec(context.Background(), `
CREATE TABLE accounts (id bigint PRIMARY KEY, plan text);
INSERT INTO accounts SELECT g, 'free' FROM generate_series(1, 100000) g;
ANALYZE accounts;`); err != nil {
		t.Fatal(err)
	}
}

// TestLintGateError: LOCKMIGRATE_LINT=error with a dangerous pending file:
// exit 5, nothing applied, the finding in the log, the termination message
// and the metrics. lint against the database sees the same.
func TestLintGateError(t *testing.T) {
	needParser(t)
	ctx := context.Background()
	url, _ := secretDB(t)
	populated(t, url)
	gw := pushtest.Start(t, false)
	term := filepath.Join(t.TempDir(), "termination-log")
	env := bintest.With(baseEnv(url), "LOCKMIGRATE_DIR", bintest.WriteDir(t, lintSet), "LOCKMIGRATE_LINT", "error",
		"LOCKMIGRATE_PUSHGATEWAY_URL", gw.URL, "LOCKMIGRATE_TERMINATION_LOG", term)
	r := runIn(t, ctx, env)
	ev := r.Finished(t)
	if r.Code != exitValidation || ev["outcome"] != "failed" || ev["lint_errors"] != 1.0 || !strings.Contains(ev["error"].(string), "validation failed (lint)") ||
		!strings.Contains(ev["error"].(string), "2_index.sql:2:1: error [index-concurrently]") {
		t.Fatalf("exit %d, run finished %v", r.Code, ev)
	}
	if n := r.Count("lint finding"); n != 1 {
		t.Errorf("%d lint finding events, want 1\n%s", n, r.Stderr)
	}
	conn := pgtest.Connect(t, url)
	if n := pgtest.QueryInt(t, conn, `SELECT count(*) FROM lockmigrate_history`); n != 0 {
		t.Errorf("history has %d rows: something was applied", n)
	}
	if n := pgtest.QueryInt(t, conn, `SELECT count(*) FROM pg_class WHERE relname IN ('notes', 'accounts_plan_idx')`); n != 0 {
		t.Errorf("%d objects of the run exist", n)
	}
	if m := readTermination(t, term); m["exit_code"] != 5.0 || !strings.Contains(m["error"].(string), "index-concurrently") {
		t.Errorf("termination message %v", m)
	}
	s := series(t, gw.Metrics(t))
	if got, ok := value(t, s, "lockmigrate_lint_findings", `severity="error"`); !ok || got != 1 {
		t.Errorf("lint_findings{error} = %v (present %v)", got, ok)
	}
	if got, _ := value(t, s, "lockmigrate_last_failure", `kind="validation"`); got != 1 {
		t.Errorf("last_failure{validation} = %v", got)
	}
	lr := runIn(t, ctx, bintest.With(baseEnv(url), "LOCKMIGRATE_DIR", env["LOCKMIGRATE_DIR"]), "lint", "--format", "json")
	if lr.Code != exitValidation || !strings.Contains(lr.Stdout, `"online": true`) || !strings.Contains(lr.Stdout, "accounts has about 100000 rows") {
		t.Errorf("lint against the database: exit %d\n%s%s", lr.Code, lr.Stdout, lr.Stderr)
	}
}

// TestLintGateWarn: with the default (warn) the set is applied and the
// finding logged and counted; the next run finds everything applied and
// parses nothing (the parser is never touched on the fast path).
func TestLintGateWarn(t *testing.T) {
	needParser(t)
	ctx := context.Background()
	url, _ := secretDB(t)
	populated(t, url)
	gw := pushtest.Start(t, false)
	env := bintest.With(baseEnv(url), "LOCKMIGRATE_DIR", bintest.WriteDir(t, lintSet), "LOCKMIGRATE_PUSHGATEWAY_URL", gw.URL)
	r := runIn(t, ctx, env)
	if ev := r.Finished(t); r.Code != exitOK || ev["outcome"] != "applied" || ev["applied"] != 2.0 || ev["lint_errors"] != 1.0 {
		t.Fatalf("exit %d, run finished %v", r.Code, ev)
	}
	found := false
	for _, ev := range r.Events(t) {
		if ev["msg"] == "lint finding" {
			found = ev["rule"] == "index-concurrently" && ev["file"] == "2_index.sql" && ev["line"] == 2.0 && ev["level"] == "WARN"
		}
	}
	if !found {
		t.Fatalf("no warn-level lint finding for 2_index.sql:2\n%s", r.Stderr)
	}
	if got, ok := value(t, series(t, gw.Metrics(t)), "lockmigrate_lint_findings", `severity="error"`); !ok || got != 1 {
		t.Errorf("lint_findings{error} = %v (present %v)", got, ok)
	}
	before := pgparse.Parses()
	r = runIn(t, ctx, env)
	if ev := r.Finished(t); r.Code != exitOK || ev["outcome"] != "up_to_date" || ev["lint_errors"] != nil || r.Count("lint finished") != 0 {
		t.Fatalf("no-op run: exit %d, %v\n%s", r.Code, ev, r.Stderr)
	}
	if got := pgparse.Parses(); got != before {
		t.Fatalf("the no-op run parsed %d texts", got-before)
	}
	// The up_to_date run pushed no lint_findings: the count of the run
	// that linted stays.
	if got, ok := value(t, series(t, gw.Metrics(t)), "lockmigrate_lint_findings", `severity="error"`); !ok || got != 1 {
		t.Errorf("after the no-op run, lint_findings{error} = %v (present %v)", got, ok)
	}
}

// noTxSet's second file is transactional and holds CREATE INDEX
// CONCURRENTLY: no run can apply it.
var noTxSet = map[string]string{
	"1_t.sql": "CREATE TABLE t (x int);\n",
	"2_i.sql": "SELECT 1;\nCREATE INDEX CONCURRENTLY t_x ON t (x);\n",
}

// TestNoTxStatementRefused: validate (offline and against the database),
// plan and migrate refuse the set with exit 5 and the directive hint,
// before anything is applied, also with 8 replicas at once (wait mode, so
// each of them ends up holding the lock and refusing).
func TestNoTxStatementRefused(t *testing.T) {
	ctx := context.Background()
	url, _ := secretDB(t)
	dir := bintest.WriteDir(t, noTxSet)
	// The log is JSON: the quotes in the message are escaped there.
	hint := `2_i.sql: line 2: \"CREATE INDEX CONCURRENTLY t_x ON t (x)\": CREATE INDEX CONCURRENTLY cannot run inside a transaction block`
	check := func(what string, r result) {
		t.Helper()
		if r.Code != exitValidation || !strings.Contains(r.Stderr, hint) || !strings.Contains(r.Stderr, `make \"-- lockmigrate:no-transaction\" the file's first line`) ||
			!strings.Contains(r.Stderr, "needs_no_transaction") {
			t.Errorf("%s: exit %d, want %d with the hint\n%s", what, r.Code, exitValidation, r.Stderr)
		}
	}
	check("validate offline", runIn(t, ctx, map[string]string{"LOCKMIGRATE_DIR": dir}, "validate"))
	env := bintest.With(baseEnv(url), "LOCKMIGRATE_DIR", dir)
	check("validate", runIn(t, ctx, env, "validate"))
	check("plan", runIn(t, ctx, env, "plan"))
	check("migrate", runIn(t, ctx, env))
	wait := bintest.With(env, "LOCKMIGRATE_ON_LOCKED", "wait", "LOCKMIGRATE_WAIT_TIMEOUT", "60s")
	procs := make([]*gatedProc, 8)
	for i := range procs {
		procs[i] = startGated(t, wait)
	}
	releaseAll(procs)
	for i, p := range procs {
		r, _ := p.wait(t)
		check("replica "+string(rune('1'+i)), r)
	}
	conn := pgtest.Connect(t, url)
	if n := pgtest.QueryInt(t, conn, `SELECT count(*) FROM lockmigrate_history`); n != 0 {
		t.Errorf("history has %d rows", n)
	}
	if n := pgtest.QueryInt(t, conn, `SELECT count(*) FROM pg_class WHERE relname = 't'`); n != 0 {
		t.Errorf("1_t.sql was applied")
	}
	// Marked no-transaction, it runs.
	fixed := bintest.WriteDir(t, map[string]string{"1_t.sql": noTxSet["1_t.sql"], "2_i.sql": "-- lockmigrate:no-transaction\n" + noTxSet["2_i.sql"]})
	if r := runIn(t, ctx, bintest.With(env, "LOCKMIGRATE_DIR", fixed)); r.Code != exitOK {
		t.Fatalf("fixed set: exit %d\n%s", r.Code, r.Stderr)
	}
}

// TestLintInHelp: the command and its variables are in --help.
func TestLintInHelp(t *testing.T) {
	r := runIn(t, context.Background(), nil, "--help")
	for _, w := range []string{"lockmigrate lint [--format text|json|sarif] [FILE...]", "LOCKMIGRATE_LINT ", "LOCKMIGRATE_LINT_SMALL_TABLE_ROWS"} {
		if !strings.Contains(r.Stdout, w) {
			t.Errorf("--help lacks %q", w)
		}
	}
}

// TestLintNeverOnFastPath: a replica that finds the lock held (skip) and
// one that finds everything applied parse nothing, whatever
// LOCKMIGRATE_LINT says; only the lock holder with work lints.
func TestLintNeverOnFastPath(t *testing.T) {
	needParser(t)
	ctx := context.Background()
	url, _ := secretDB(t)
	env := bintest.With(baseEnv(url), "LOCKMIGRATE_DIR", bintest.WriteDir(t, lintSet), "LOCKMIGRATE_LINT", "error")
	holder := pgtest.Connect(t, url)
	if _, err := holder.Exec(ctx, `CREATE TABLE accounts (id bigint PRIMARY KEY, plan text);
INSERT INTO accounts SELECT g, 'free' FROM generate_series(1, 10) g; ANALYZE accounts;`); err != nil {
		t.Fatal(err)
	}
	pgtest.MustLock(t, holder, lock.DefaultKey("public", "lockmigrate_history"))
	before := pgparse.Parses()
	if r := runIn(t, ctx, env); r.Code != exitOK || r.Finished(t)["outcome"] != "skipped" {
		t.Fatalf("skipping replica: exit %d\n%s", r.Code, r.Stderr)
	}
	if got := pgparse.Parses(); got != before {
		t.Fatalf("the skipping replica parsed %d texts", got-before)
	}
	if _, err := holder.Exec(ctx, `SELECT pg_advisory_unlock_all()`); err != nil {
		t.Fatal(err)
	}
	// accounts has 10 rows: online the index is only a warning, applied.
	if r := runIn(t, ctx, env); r.Code != exitOK || r.Finished(t)["outcome"] != "applied" {
		t.Fatalf("lock holder: exit %d\n%s", r.Code, r.Stderr)
	}
	if pgparse.Parses() == before {
		t.Fatal("the lock holder did not lint")
	}
	before = pgparse.Parses()
	if r := runIn(t, ctx, env); r.Code != exitOK || r.Finished(t)["outcome"] != "up_to_date" {
		t.Fatalf("up to date: exit %d\n%s", r.Code, r.Stderr)
	}
	if got := pgparse.Parses(); got != before {
		t.Fatalf("the up_to_date run parsed %d texts", got-before)
	}
}
