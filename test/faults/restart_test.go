package faults

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lockmigrate/lockmigrate/internal/bintest"
	"github.com/lockmigrate/lockmigrate/internal/pgtest"
)

// restartFiles is a set whose version 2 (transactional) or 3
// (no-transaction) sleeps a minute only for the pod named victim, so the
// next run applies the same files (same checksums) at once.
func restartFiles(notx bool) map[string]string {
	sleep := "SELECT pg_sleep(CASE WHEN current_setting('application_name') = 'lockmigrate/victim' THEN 60 ELSE 0 END);\n"
	files := map[string]string{
		"1_log.sql":  "CREATE TABLE applied_log (version int NOT NULL, step int NOT NULL);\nINSERT INTO applied_log VALUES (1, 1);\n",
		"2_slow.sql": "CREATE TABLE slow_t (id int);\nINSERT INTO applied_log VALUES (2, 1);\n" + sleep,
	}
	if notx {
		files["2_slow.sql"] = "CREATE TABLE slow_t (id int);\nINSERT INTO applied_log VALUES (2, 1);\n"
		files["3_notx.sql"] = "-- lockmigrate:no-transaction\nCREATE TABLE notx_t (id int);\nINSERT INTO applied_log VALUES (3, 1);\n" +
			sleep + "CREATE INDEX CONCURRENTLY notx_idx ON notx_t (id);\nINSERT INTO applied_log VALUES (3, 2);\n"
	}
	return files
}

// TestServerRestartMidRun interrupts a running migration from the server
// side: a fast-shutdown restart of the server, and pg_terminate_backend of
// the lock holder's session. The run must fail with a clear message, leave
// nothing half-applied, and the next run must complete.
func TestServerRestartMidRun(t *testing.T) {
	srv, err := pgtest.Start(pgtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	ctx := context.Background()
	var figures []string

	// interrupt starts the victim, waits for its sleep and calls stop; it
	// returns the victim's result and how long it took to exit after stop.
	interrupt := func(t *testing.T, d *testDB, dir string, stop func(pid int32) error) (result, time.Duration) {
		t.Helper()
		victim, err := startProc(bintest.With(d.env(dir), "POD_NAME", "victim"), runOpts{}, false)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { victim.kill() })
		watch := mustConnect(t, d.admin)
		pid, err := waitActive(ctx, watch, "lockmigrate/victim", "pg_sleep(CASE", 20*time.Second)
		if err != nil {
			r, _ := victim.wait(time.Second)
			t.Fatalf("%v\n%s", err, r.Brief())
		}
		watch.Close(ctx)
		at := time.Now()
		if err := stop(pid); err != nil {
			t.Fatal(err)
		}
		r, killed := victim.wait(30 * time.Second)
		took := time.Since(at)
		bintest.CheckNoSecrets(t, r.Stdout, r.Stderr)
		if killed {
			t.Fatalf("victim still running 30 s after the interruption:\n%s", r.Brief())
		}
		t.Logf("victim: exit %d %s after the interruption; error: %s", r.Code, ms(took), str(r.LastFinished(), "error"))
		return r, took
	}

	// clear checks the victim's failure: non-zero, the file named, and the
	// cause (the server's 57P01, or the lost connection) in the message.
	clear := func(t *testing.T, r result, file string) {
		t.Helper()
		e := str(r.LastFinished(), "error")
		if r.Code == 0 || r.LastFinished() == nil || !strings.Contains(e, file) {
			t.Errorf("victim: want a failure naming %s: %s", file, r.Brief())
		}
		if !strings.Contains(e, "57P01") && !strings.Contains(e, "terminating connection") {
			t.Errorf("victim's error does not say the server ended the session (57P01): %q", e)
		}
	}

	// settled checks the database after the interruption and after the rerun.
	settled := func(t *testing.T, d *testDB, wantVersions, wantRows int64) {
		t.Helper()
		var versions, rows, dups int64
		if err := mustConnect(t, d.admin).QueryRow(ctx, `SELECT
  (SELECT count(*) FROM lockmigrate_history WHERE state = 'applied'),
  (SELECT count(*) FROM applied_log),
  (SELECT count(*) FROM (SELECT 1 FROM applied_log GROUP BY version, step HAVING count(*) > 1) x)`).Scan(&versions, &rows, &dups); err != nil {
			t.Fatal(err)
		}
		if versions != wantVersions || rows != wantRows || dups != 0 {
			t.Errorf("history %d applied (want %d), applied_log %d rows (want %d), %d duplicated", versions, wantVersions, rows, wantRows, dups)
		}
	}

	rerun := func(t *testing.T, d *testDB, dir string, want int) result {
		t.Helper()
		r := runBin(bintest.With(d.env(dir), "POD_NAME", "rerun", "LOCKMIGRATE_ON_LOCKED", "wait", "LOCKMIGRATE_WAIT_TIMEOUT", "30s"), 60*time.Second, runOpts{})
		bintest.CheckNoSecrets(t, r.Stdout, r.Stderr)
		if r.Code != want {
			t.Fatalf("rerun: want exit %d: %s", want, r.Brief())
		}
		return r
	}

	t.Run("restart during a transactional migration", func(t *testing.T) {
		d := newTestDB(t, srv)
		dir := bintest.WriteDir(t, restartFiles(false))
		r, took := interrupt(t, d, dir, func(int32) error {
			rctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			start := time.Now()
			err := srv.Restart(rctx)
			t.Logf("server restart (fast shutdown) took %s", ms(time.Since(start)))
			return err
		})
		clear(t, r, "2_slow.sql")
		settled(t, d, 1, 1) // version 1 only: 2 rolled back with the session
		if n := mustInt(t, d.admin, `SELECT count(*) FROM pg_tables WHERE tablename = 'slow_t'`); n != 0 {
			t.Errorf("half-applied: slow_t exists")
		}
		rr := rerun(t, d, dir, 0)
		settled(t, d, 2, 2)
		figures = append(figures, fmt.Sprintf("restart: exit %d after %s, rerun %s", r.Code, ms(took), str(rr.LastFinished(), "outcome")))
	})

	t.Run("pg_terminate_backend of the lock holder", func(t *testing.T) {
		d := newTestDB(t, srv)
		dir := bintest.WriteDir(t, restartFiles(false))
		r, took := interrupt(t, d, dir, func(int32) error {
			// The lock holder, found the way an operator would: pg_locks.
			var ok bool
			return mustConnect(t, d.admin).QueryRow(ctx, `SELECT pg_terminate_backend(pid) FROM pg_locks
  WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&ok)
		})
		clear(t, r, "2_slow.sql")
		settled(t, d, 1, 1)
		rr := rerun(t, d, dir, 0)
		settled(t, d, 2, 2)
		figures = append(figures, fmt.Sprintf("terminate: exit %d after %s, rerun %s", r.Code, ms(took), str(rr.LastFinished(), "outcome")))
	})

	t.Run("restart during a no-transaction migration", func(t *testing.T) {
		d := newTestDB(t, srv)
		dir := bintest.WriteDir(t, restartFiles(true))
		r, took := interrupt(t, d, dir, func(int32) error {
			rctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			return srv.Restart(rctx)
		})
		clear(t, r, "3_notx.sql")
		// Statements 1 and 2 of the file ran: it is interrupted, and the
		// next run must say so instead of re-running it.
		settled(t, d, 2, 3)
		rr := rerun(t, d, dir, 5)
		e := str(rr.LastFinished(), "error")
		for _, w := range []string{"interrupted", "3_notx.sql", "statement 3 of 5", "lockmigrate resolve 3"} {
			if !strings.Contains(e, w) {
				t.Errorf("rerun's error lacks %q: %s", w, e)
			}
		}
		// The operator finishes the file by hand and resolves it.
		c := mustConnect(t, d.admin)
		for _, sql := range []string{"CREATE INDEX CONCURRENTLY notx_idx ON notx_t (id)", "INSERT INTO applied_log VALUES (3, 2)"} {
			if _, err := c.Exec(ctx, sql); err != nil {
				t.Fatal(err)
			}
		}
		if res := runBin(d.env(dir), 30*time.Second, runOpts{args: []string{"resolve", "3", "applied"}}); res.Code != 0 {
			t.Fatalf("resolve: %s", res.Brief())
		}
		rerun(t, d, dir, 0)
		settled(t, d, 3, 4)
		figures = append(figures, fmt.Sprintf("restart in no-tx file: exit %d after %s, rerun exit %d (interrupted), resolved", r.Code, ms(took), rr.Code))
	})

	t.Run("run started while the server restarts", func(t *testing.T) {
		d := newTestDB(t, srv)
		dir := bintest.WriteDir(t, restartFiles(false))
		addr := net.JoinHostPort(srv.Host(), strconv.Itoa(srv.Port()))
		done := make(chan error, 1)
		go func() {
			rctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			done <- srv.Restart(rctx)
		}()
		// Start the run as soon as the server refuses connections.
		down := time.Now().Add(15 * time.Second)
		for time.Now().Before(down) {
			c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
			if err != nil {
				break
			}
			c.Close()
			time.Sleep(2 * time.Millisecond)
		}
		r := runBin(bintest.With(d.env(dir), "POD_NAME", "early", "LOCKMIGRATE_CONNECT_TIMEOUT", "30s"), 60*time.Second, runOpts{})
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		bintest.CheckNoSecrets(t, r.Stdout, r.Stderr)
		retries := r.Count("connect failed, retrying")
		t.Logf("run started during the restart: exit %d in %s after %d connect retries", r.Code, ms(r.Elapsed), retries)
		if r.Code != 0 || str(r.LastFinished(), "outcome") != "applied" {
			t.Fatalf("%s", r.Brief())
		}
		if retries == 0 {
			t.Logf("note: the server was back before the first attempt (no retry needed)")
		}
		settled(t, d, 2, 2)
		figures = append(figures, fmt.Sprintf("started during restart: exit %d after %d retries in %s", r.Code, retries, ms(r.Elapsed)))
	})

	summary(t, "%s", strings.Join(figures, "; "))
}

// TestConnectionLossIsRetryable reproduces a product bug: a migration whose
// connection is lost (server restart, pg_terminate_backend, network
// partition) exits 1, which the README calls final for a Helm hook Job's
// podFailurePolicy, although nothing is wrong with the migration and a
// retry succeeds. It should exit 3 (retryable), like a connect failure.
func TestConnectionLossIsRetryable(t *testing.T) {
	d := newTestDB(t, pgtest.Shared())
	dir := bintest.WriteDir(t, restartFiles(false))
	victim, err := startProc(bintest.With(d.env(dir), "POD_NAME", "victim"), runOpts{}, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(victim.kill)
	watch := mustConnect(t, d.admin)
	pid, err := waitActive(context.Background(), watch, "lockmigrate/victim", "pg_sleep(CASE", 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Exec(context.Background(), "SELECT pg_terminate_backend($1)", pid); err != nil {
		t.Fatal(err)
	}
	r, _ := victim.wait(30 * time.Second)
	if r.Code != 3 {
		t.Fatalf("connection lost mid-migration: exit %d (error_kind %q), want 3 (retryable): %s",
			r.Code, str(r.LastFinished(), "error_kind"), str(r.LastFinished(), "error"))
	}
}
