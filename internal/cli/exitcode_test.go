package cli

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lockmigrate/lockmigrate/internal/bintest"
	"github.com/lockmigrate/lockmigrate/internal/pgtest"
	"github.com/lockmigrate/lockmigrate/lock"
)

func TestExitCodes(t *testing.T) {
	ctx := context.Background()

	t.Run("1 migration failed", func(t *testing.T) {
		url, _ := secretDB(t)
		dir := bintest.WriteDir(t, map[string]string{
			"1_ok.sql":  "CREATE TABLE ok (id int);",
			"2_bad.sql": "CREATE TABLE bad (id int);\nINSERT INTO bad VALUES ('not a number');\n",
		})
		r := runIn(t, ctx, bintest.With(baseEnv(url), "LOCKMIGRATE_DIR", dir))
		ev := r.Finished(t)
		if r.Code != exitMigration || ev["error_kind"] != "migration" {
			t.Fatalf("exit %d\n%s", r.Code, r.Stderr)
		}
		for _, w := range []string{"2_bad.sql", "line 2", "INSERT INTO bad VALUES", "invalid input syntax", "22P02"} {
			if !strings.Contains(ev["error"].(string), w) {
				t.Errorf("error lacks %q: %s", w, ev["error"])
			}
		}
		pgtest.AssertNoAdvisoryLocks(t, pgtest.Connect(t, url))
	})

	t.Run("3 authentication failed, not retried", func(t *testing.T) {
		url, password := secretDB(t)
		bad := strings.Replace(url, strings.ReplaceAll(password, "/", "%2F"), "wrong", 1)
		bad = strings.Replace(url, urlEscaped(password), "wrong-password", 1)
		if bad == url {
			t.Fatalf("could not replace password in %s", url)
		}
		r := runIn(t, ctx, bintest.With(baseEnv(bad), "LOCKMIGRATE_CONNECT_TIMEOUT", "30s"))
		if r.Code != exitUnreachable || !strings.Contains(r.Stderr, "28P01") || !strings.Contains(r.Stderr, "not retried") {
			t.Fatalf("exit %d\n%s", r.Code, r.Stderr)
		}
		if r.Elapsed > time.Second || strings.Contains(r.Stderr, "retrying") {
			t.Fatalf("auth failure took %v or was retried:\n%s", r.Elapsed, r.Stderr)
		}
		t.Logf("auth failure reported in %v", r.Elapsed)
	})

	t.Run("3 database missing, not retried", func(t *testing.T) {
		url := pgtest.Shared().AdminURL("no_such_db")
		r := runIn(t, ctx, bintest.With(baseEnv(url), "LOCKMIGRATE_CONNECT_TIMEOUT", "30s"))
		if r.Code != exitUnreachable || !strings.Contains(r.Stderr, "3D000") || r.Elapsed > time.Second {
			t.Fatalf("exit %d in %v\n%s", r.Code, r.Elapsed, r.Stderr)
		}
	})

	t.Run("3 unreachable port, retried within the budget", func(t *testing.T) {
		url := "postgres://u:pw-unreachable-secret@127.0.0.1:1/db?sslmode=disable"
		bintest.AddSecret("pw-unreachable-secret")
		r := runIn(t, ctx, bintest.With(baseEnv(url), "LOCKMIGRATE_CONNECT_TIMEOUT", "2s"))
		if r.Code != exitUnreachable || !strings.Contains(r.Stderr, "connection refused") {
			t.Fatalf("exit %d\n%s", r.Code, r.Stderr)
		}
		retries := 0
		for _, ev := range r.Events(t) {
			if ev["msg"] == "connect failed, retrying" {
				retries++
			}
		}
		if retries < 3 || r.Elapsed > 3*time.Second || r.Elapsed < 1*time.Second {
			t.Fatalf("%d retries logged, took %v (budget 2s)", retries, r.Elapsed)
		}
		t.Logf("unreachable: exit 3 after %v with %d retries logged", r.Elapsed, retries)
	})

	t.Run("3 read-only server, before any DDL", func(t *testing.T) {
		url, _ := secretDB(t)
		db := url[strings.LastIndex(url, "/")+1 : strings.Index(url, "?")]
		if err := pgtest.Shared().Exec(ctx, "postgres", fmt.Sprintf(`ALTER DATABASE %q SET default_transaction_read_only = on`, db)); err != nil {
			t.Fatal(err)
		}
		r := runIn(t, ctx, baseEnv(url))
		if r.Code != exitUnreachable || !strings.Contains(r.Stderr, "read-only") || !strings.Contains(r.Stderr, "target_session_attrs=read-write") {
			t.Fatalf("exit %d\n%s", r.Code, r.Stderr)
		}
		pgtest.AssertNoAdvisoryLocks(t, pgtest.Connect(t, url))
	})

	t.Run("4 wait timeout", func(t *testing.T) {
		url, _ := secretDB(t)
		holder := pgtest.Connect(t, url)
		if ok, _ := lock.New(holder, lock.DefaultKey("public", "lockmigrate_history"), nil).TryLock(ctx); !ok {
			t.Fatal("no lock")
		}
		r := runIn(t, ctx, bintest.With(baseEnv(url), "LOCKMIGRATE_ON_LOCKED", "wait", "LOCKMIGRATE_WAIT_TIMEOUT", "500ms"))
		ev := r.Finished(t)
		if r.Code != exitWaitTimeout || !strings.Contains(ev["error"].(string), "timed out waiting for the advisory lock after 500ms") {
			t.Fatalf("exit %d\n%s", r.Code, r.Stderr)
		}
		if !strings.Contains(r.Stderr, "advisory lock held elsewhere, waiting") || !strings.Contains(r.Stderr, `"pid":`) {
			t.Fatalf("waiting replica did not log the holder:\n%s", r.Stderr)
		}
		// Release the test's own lock synchronously (a Close is processed by
		// the server after it returns); what remains must be none of ours.
		if err := lock.New(holder, lock.DefaultKey("public", "lockmigrate_history"), nil).Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		pgtest.AssertNoAdvisoryLocks(t, pgtest.Connect(t, url))
	})

	t.Run("5 checksum mismatch", func(t *testing.T) {
		url, _ := secretDB(t)
		dir := bintest.WriteDir(t, map[string]string{"1_a.sql": "CREATE TABLE a (id int);"})
		if r := runIn(t, ctx, bintest.With(baseEnv(url), "LOCKMIGRATE_DIR", dir)); r.Code != 0 {
			t.Fatalf("exit %d\n%s", r.Code, r.Stderr)
		}
		os.WriteFile(filepath.Join(dir, "1_a.sql"), []byte("CREATE TABLE a (id bigint);"), 0o644)
		r := runIn(t, ctx, bintest.With(baseEnv(url), "LOCKMIGRATE_DIR", dir))
		if r.Code != exitValidation || !strings.Contains(r.Stderr, "checksum_mismatch") || !strings.Contains(r.Stderr, "1_a.sql") {
			t.Fatalf("exit %d\n%s", r.Code, r.Stderr)
		}
		pgtest.AssertNoAdvisoryLocks(t, pgtest.Connect(t, url))
	})

	t.Run("5 malformed file name, offline", func(t *testing.T) {
		dir := bintest.WriteDir(t, map[string]string{"1_a.sql": "SELECT 1", "two_b.sql": "SELECT 2"})
		r := runIn(t, ctx, map[string]string{"LOCKMIGRATE_DIR": dir}, "validate")
		if r.Code != exitValidation || !strings.Contains(r.Stderr, "two_b.sql") || !strings.Contains(r.Stderr, "malformed_name") {
			t.Fatalf("exit %d\n%s", r.Code, r.Stderr)
		}
	})
}

func urlEscaped(p string) string {
	return strings.NewReplacer("/", "%2F", "@", "%40", ":", "%3A", "%", "%25").Replace(p)
}

// TestSignals: SIGTERM/SIGINT during a long migration cancel the statement,
// roll back, release the lock, and exit 143/130.
func TestSignals(t *testing.T) {
	for _, tt := range []struct {
		sig  syscall.Signal
		code int
	}{{syscall.SIGTERM, 143}, {syscall.SIGINT, 130}} {
		t.Run(tt.sig.String(), func(t *testing.T) {
			ctx := context.Background()
			url, _ := secretDB(t)
			dir := bintest.WriteDir(t, map[string]string{"1_slow.sql": "CREATE TABLE slow (id int);\nSELECT pg_sleep(120);\n"})
			var stdout, stderr bytes.Buffer
			cmd := startBinary(t, bintest.With(baseEnv(url), "LOCKMIGRATE_DIR", dir), &stdout, &stderr)
			watcher := pgtest.Connect(t, url)
			waitForActive(t, watcher, "pg_sleep(120)")
			sent := time.Now()
			cmd.Process.Signal(tt.sig)
			err := cmd.Wait()
			r := result{Code: cmd.ProcessState.ExitCode(), Stderr: stderr.String()}
			bintest.CheckNoSecrets(t, stdout.String(), r.Stderr)
			if r.Code != tt.code {
				t.Fatalf("exit %d (%v), want %d\n%s", r.Code, err, tt.code, r.Stderr)
			}
			if d := time.Since(sent); d > 5*time.Second {
				t.Fatalf("took %v to stop", d)
			}
			ev := r.Finished(t)
			if ev["outcome"] != "failed" || !strings.Contains(ev["error"].(string), "1_slow.sql") {
				t.Fatalf("finished event %v", ev)
			}
			if !strings.Contains(r.Stderr, "advisory lock released") {
				t.Fatalf("lock not released explicitly:\n%s", r.Stderr)
			}
			var n int
			watcher.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE tablename = 'slow'`).Scan(&n)
			if n != 0 {
				t.Fatal("migration not rolled back")
			}
			pgtest.AssertNoAdvisoryLocks(t, pgtest.Connect(t, url))
			t.Logf("%s: exit %d %v after the signal", tt.sig, r.Code, time.Since(sent))
		})
	}
}
