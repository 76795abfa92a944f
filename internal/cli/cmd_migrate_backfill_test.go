package cli

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lockmigrate/lockmigrate/internal/bintest"
	"github.com/lockmigrate/lockmigrate/internal/pgtest"
	"github.com/lockmigrate/lockmigrate/internal/pushtest"
)

// Backfill of a 1,000,000-row table in batches of 20,000.
const (
	bigRows   = 1_000_000
	bigBatch  = 20_000
	bigSleep  = 20 * time.Millisecond
	stmtLimit = 10 * time.Second
)

// TestBackfillKilledAndResumed: the binary runs a backfill of 1,000,000
// rows and is SIGKILLed half-way; the next run resumes it without resolve
// and finishes; every row was updated exactly once (n counts the updates);
// no batch took as long as the statement timeout; the sleep between
// batches shows in the wall time; progress events and the pushed metrics
// say what happened.
func TestBackfillKilledAndResumed(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000,000 rows")
	}
	ctx := context.Background()
	gw := pushtest.Start(t, false)
	url, _ := secretDB(t)
	conn := pgtest.Connect(t, url)
	start := time.Now()
	if _, err := conn.Exec(ctx, `CREATE TABLE big (id int PRIMARY KEY, email text NOT NULL, email_new text, n int NOT NULL DEFAULT 0);
INSERT INTO big (id, email) SELECT g, 'User' || g || '@Example.com' FROM generate_series(1, 1000000) g;
CREATE INDEX big_todo ON big (id) WHERE email_new IS NULL;`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `VACUUM ANALYZE big`); err != nil {
		t.Fatal(err)
	}
	t.Logf("1,000,000 rows created in %v", time.Since(start).Round(time.Millisecond))
	dir := bintest.WriteDir(t, map[string]string{
		"1_fill.sql": "-- lockmigrate:backfill sleep=20ms max_batches=60\n" +
			"UPDATE big SET email_new = lower(email), n = n + 1\n" +
			" WHERE id IN (SELECT id FROM big WHERE email_new IS NULL ORDER BY id LIMIT 20000);\n",
		"2_after.sql": "CREATE TABLE after_fill (id int);",
	})
	env := bintest.With(baseEnv(url), "LOCKMIGRATE_DIR", dir, "LOCKMIGRATE_STATEMENT_TIMEOUT", stmtLimit.String(),
		"LOCKMIGRATE_BACKFILL_PROGRESS", "200ms", "LOCKMIGRATE_PUSHGATEWAY_URL", gw.URL)

	var stdout, stderr bytes.Buffer
	cmd := startBinary(t, env, &stdout, &stderr)
	for {
		var batches int
		err := conn.QueryRow(ctx, `SELECT coalesce(max(statements_done), 0) FROM lockmigrate_history WHERE version = 1`).Scan(&batches)
		if err == nil && batches >= bigRows/bigBatch/2 {
			break
		}
		if err != nil && !strings.Contains(err.Error(), "does not exist") {
			t.Fatal(err)
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	bintest.CheckNoSecrets(t, stdout.String(), stderr.String())
	var state string
	var batches, rows int64
	if err := conn.QueryRow(ctx, `SELECT state, statements_done, rows_done FROM lockmigrate_history WHERE version = 1`).Scan(&state, &batches, &rows); err != nil {
		t.Fatal(err)
	}
	done := pgtest.QueryInt(t, conn, `SELECT count(*) FROM big WHERE email_new IS NOT NULL`)
	t.Logf("killed after %d batches, %d rows (history), %d rows done (table)", batches, rows, done)
	if state != "running" || rows != batches*bigBatch || int64(done) != rows || batches >= bigRows/bigBatch {
		t.Fatalf("after SIGKILL: state %s, %d batches, %d rows in history, %d in the table", state, batches, rows, done)
	}

	// plan and status show the interrupted backfill, and the next run
	// continues it: no resolve.
	r := runIn(t, ctx, env, "plan")
	if want := "1 fill backfill - batches until 0 rows, sleep=20ms max_batches=60; resumes after"; r.Code != 0 || !strings.Contains(squash(r.Stdout), want) {
		t.Fatalf("plan lacks %q: exit %d\n%s%s", want, r.Code, r.Stdout, r.Stderr)
	}
	r = runIn(t, ctx, env, "status")
	if want := "1 fill (backfill) running (" + itoa(batches) + " batches, " + itoa(rows) + " rows)"; !strings.Contains(squash(r.Stdout), want) {
		t.Fatalf("status lacks %q:\n%s", want, r.Stdout)
	}
	r = runIn(t, ctx, bintest.With(env, "LOCKMIGRATE_ON_LOCKED", "wait", "LOCKMIGRATE_WAIT_TIMEOUT", "30s"))
	ev := r.Finished(t)
	t.Logf("resumed run: %v", ev)
	if r.Code != 0 || ev["outcome"] != "applied" || ev["applied"] != 2.0 {
		t.Fatalf("resumed run: %s", r.Brief())
	}
	if n := pgtest.QueryInt(t, conn, `SELECT count(*) FROM big WHERE n <> 1 OR email_new IS DISTINCT FROM lower(email)`); n != 0 {
		t.Fatalf("%d rows not updated exactly once", n)
	}
	thisRun := int64(ev["backfill_batches"].(float64))
	if thisRun+batches != bigRows/bigBatch || int64(ev["backfill_rows"].(float64)) != bigRows-rows {
		t.Fatalf("resumed run did %d batches, %v rows; %d were done before", thisRun, ev["backfill_rows"], batches)
	}
	if maxBatch := time.Duration(ev["backfill_max_batch_ms"].(float64)) * time.Millisecond; maxBatch >= stmtLimit || maxBatch <= 0 {
		t.Fatalf("longest batch %v, statement timeout %v", maxBatch, stmtLimit)
	}
	if wall := time.Duration(ev["duration_ms"].(float64)) * time.Millisecond; time.Duration(thisRun)*bigSleep > wall {
		t.Fatalf("%d batches x %v > wall time %v: no throttle", thisRun, bigSleep, wall)
	}
	checkBackfillEvents(t, r, batches)
	s := series(t, gw.Metrics(t))
	for name, want := range map[string]float64{"lockmigrate_backfill_rows": float64(bigRows - rows),
		"lockmigrate_backfill_batches": float64(thisRun)} {
		if v, ok := value(t, s, name); !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", name, v, ok, want)
		}
	}
	if v, ok := value(t, s, "lockmigrate_backfill_duration_seconds"); !ok || v <= 0 {
		t.Errorf("backfill_duration_seconds = %v (present %v)", v, ok)
	}
	var applied, hrows int64
	conn.QueryRow(ctx, `SELECT statements_done, rows_done FROM lockmigrate_history WHERE version = 1 AND state = 'applied'`).Scan(&applied, &hrows)
	if applied != bigRows/bigBatch || hrows != bigRows {
		t.Fatalf("history: %d batches, %d rows", applied, hrows)
	}
}

// checkBackfillEvents: the resumed run logs that it resumes, progress at
// the configured rate with rows and rows/s, and the end.
func checkBackfillEvents(t *testing.T, r result, before int64) {
	t.Helper()
	var resumed, progress, finished int
	for _, ev := range r.Events(t) {
		switch ev["msg"] {
		case "resuming interrupted backfill":
			resumed++
			if int64(ev["batches_done"].(float64)) != before {
				t.Errorf("resume event %v", ev)
			}
		case "backfill progress":
			progress++
			if ev["rows"].(float64) <= 0 || ev["rows_per_second"].(float64) <= 0 || ev["max_batch_ms"].(float64) >= float64(stmtLimit.Milliseconds()) {
				t.Errorf("progress event %v", ev)
			}
		case "backfill finished":
			finished++
			if ev["rows"] != float64(bigRows) {
				t.Errorf("finished event %v", ev)
			}
		}
	}
	if resumed != 1 || progress < 1 || finished != 1 {
		t.Fatalf("%d resume, %d progress, %d finished events:\n%s", resumed, progress, finished, r.Stderr)
	}
}

// TestBackfillNotConverging: a statement that never stops changing rows is
// stopped at max_batches with exit 1 and a message saying why; the next run
// stops there again without changing anything.
func TestBackfillNotConverging(t *testing.T) {
	ctx := context.Background()
	url, _ := secretDB(t)
	env := bintest.With(baseEnv(url), "LOCKMIGRATE_DIR", bintest.WriteDir(t, map[string]string{
		"1_t.sql":    "CREATE TABLE t (id int PRIMARY KEY, n int NOT NULL DEFAULT 0);\nINSERT INTO t (id) SELECT generate_series(1, 50);",
		"2_loop.sql": "-- lockmigrate:backfill max_batches=4\nUPDATE t SET n = n + 1 WHERE id IN (SELECT id FROM t ORDER BY id LIMIT 10);",
	}))
	for run := 0; run < 2; run++ {
		r := runIn(t, ctx, env)
		ev := r.Finished(t)
		if r.Code != exitMigration || ev["error_kind"] != "migration" {
			t.Fatalf("run %d: %s", run, r.Brief())
		}
		for _, w := range []string{"2_loop.sql", "backfill did not converge", "after max_batches=4", "must exclude the rows it already changed"} {
			if !strings.Contains(ev["error"].(string), w) {
				t.Errorf("run %d: error lacks %q: %s", run, w, ev["error"])
			}
		}
		if n := pgtest.QueryInt(t, pgtest.Connect(t, url), `SELECT max(n) FROM t`); n != 4 {
			t.Fatalf("run %d: rows updated %d times, want 4", run, n)
		}
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
