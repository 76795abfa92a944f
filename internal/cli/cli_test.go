package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lockmigrate/lockmigrate/internal/bintest"

	"github.com/jackc/pgx/v5"

	"github.com/lockmigrate/lockmigrate/internal/pgtest"
	"github.com/lockmigrate/lockmigrate/lock"
)

// binary is the lockmigrate binary built once for the process tests.
var binary string

// result is one captured run, in-process or of the binary.
type result = bintest.Result

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "lmbin")
	if err == nil {
		binary, err = bintest.Build(dir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "building lockmigrate for the process tests:", err)
		os.Exit(1)
	}
	code := pgtest.Main(m, pgtest.Options{})
	os.RemoveAll(dir)
	os.Exit(code)
}

// testVersion is the version the in-process runs report.
const testVersion = "test"

// runIn runs the program in-process with exactly the given environment.
func runIn(t testing.TB, ctx context.Context, env map[string]string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	start := time.Now()
	code := Run(ctx, args, func(k string) string { return env[k] }, &stdout, &stderr, testVersion)
	r := result{Code: code, Stdout: stdout.String(), Stderr: stderr.String(), Elapsed: time.Since(start)}
	bintest.CheckNoSecrets(t, r.Stdout, r.Stderr)
	return r
}

// secretDB returns a fresh database owned by a new role that logs in with a
// password, and that URL. The password is registered as a secret.
func secretDB(t testing.TB) (url, password string) {
	t.Helper()
	srv := pgtest.Shared()
	admin := srv.NewDB(t)
	db := admin[strings.LastIndex(admin, "/")+1 : strings.Index(admin, "?")]
	b := make([]byte, 12)
	rand.Read(b)
	password = "pw-" + hex.EncodeToString(b) + "/@:%"
	role := "r" + hex.EncodeToString(b[:6])
	srv.CreateRole(t, role, password)
	if err := srv.Exec(context.Background(), "postgres", fmt.Sprintf(`ALTER DATABASE %q OWNER TO %q`, db, role)); err != nil {
		t.Fatal(err)
	}
	bintest.AddSecret(password)
	return srv.URLFor(db, role, password), password
}

func baseEnv(url string) map[string]string {
	return map[string]string{"DATABASE_URL": url, "POD_NAME": "test-pod", "LOCKMIGRATE_CONNECT_TIMEOUT": "5s"}
}

func TestMigrateThenUpToDate(t *testing.T) {
	url, _ := secretDB(t)
	ctx := context.Background()
	r := runIn(t, ctx, baseEnv(url))
	if r.Code != 0 || r.Finished(t)["outcome"] != "applied" || r.Finished(t)["applied"] != 5.0 {
		t.Fatalf("first run: code %d\n%s", r.Code, r.Stderr)
	}
	r = runIn(t, ctx, baseEnv(url))
	if r.Code != 0 || r.Finished(t)["outcome"] != "up_to_date" {
		t.Fatalf("second run: code %d\n%s", r.Code, r.Stderr)
	}
	var by string
	conn := pgtest.Connect(t, url)
	if err := conn.QueryRow(ctx, `SELECT DISTINCT applied_by FROM lockmigrate_history`).Scan(&by); err != nil || by != "test-pod" {
		t.Fatalf("applied_by = %q, %v", by, err)
	}
	pgtest.AssertNoAdvisoryLocks(t, pgtest.Connect(t, url))
}

func TestApplicationName(t *testing.T) {
	url, _ := secretDB(t)
	ctx := context.Background()
	holder := pgtest.Connect(t, url)
	if ok, _ := lock.New(holder, 1, nil).TryLock(ctx); !ok {
		t.Fatal("no lock")
	}
	// A skipping run names the holder; the holder here is the test, so
	// check the name the binary gives its own session via the status of a
	// wait-mode run blocked behind the test.
	done := make(chan result, 1)
	go func() {
		done <- runIn(t, ctx, bintest.With(baseEnv(url), "LOCKMIGRATE_LOCK_KEY", "1", "LOCKMIGRATE_ON_LOCKED", "wait", "POD_NAME", "web-7f9c"))
	}()
	for {
		var n int
		if err := holder.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = 'lockmigrate/web-7f9c'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
	}
	holder.Close(ctx)
	if r := <-done; r.Code != 0 || r.Finished(t)["outcome"] != "applied" {
		t.Fatalf("code %d\n%s", r.Code, r.Stderr)
	}
}

func TestSkippedLogsHolder(t *testing.T) {
	url, _ := secretDB(t)
	ctx := context.Background()
	holder := pgtest.Connect(t, url)
	if _, err := holder.Exec(ctx, `SET application_name = 'deploy-job-xyz'`); err != nil {
		t.Fatal(err)
	}
	if ok, _ := lock.New(holder, lock.DefaultKey("public", "lockmigrate_history"), nil).TryLock(ctx); !ok {
		t.Fatal("no lock")
	}
	r := runIn(t, ctx, baseEnv(url))
	ev := r.Finished(t)
	h, _ := ev["holder"].(map[string]any)
	if r.Code != 0 || ev["outcome"] != "skipped" || h == nil || h["application_name"] != "deploy-job-xyz" ||
		h["pid"] != float64(holder.PgConn().PID()) || h["client_addr"] != "127.0.0.1" || h["since"] == nil {
		t.Fatalf("code %d, finished %v", r.Code, ev)
	}
}

func TestConfigErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope")
	tests := []struct {
		env  map[string]string
		want []string
	}{
		{map[string]string{"LOCKMIGRATE_ON_LOCKED": "sometimes"}, []string{"LOCKMIGRATE_ON_LOCKED", "skip, wait"}},
		{map[string]string{"LOCKMIGRATE_WAIT_TIMEOUT": "ten"}, []string{"LOCKMIGRATE_WAIT_TIMEOUT", "Go duration"}},
		{map[string]string{"LOCKMIGRATE_WAIT_TIMEOUT": "0s"}, []string{"LOCKMIGRATE_WAIT_TIMEOUT", "positive"}},
		{map[string]string{"LOCKMIGRATE_CONNECT_TIMEOUT": "-1s"}, []string{"LOCKMIGRATE_CONNECT_TIMEOUT", "not negative"}},
		{map[string]string{"LOCKMIGRATE_LOCK_TIMEOUT": "5"}, []string{"LOCKMIGRATE_LOCK_TIMEOUT", "Go duration"}},
		{map[string]string{"LOCKMIGRATE_STATEMENT_TIMEOUT": "1 hour"}, []string{"LOCKMIGRATE_STATEMENT_TIMEOUT", "Go duration"}},
		{map[string]string{"LOCKMIGRATE_LOCK_RETRIES": "x"}, []string{"LOCKMIGRATE_LOCK_RETRIES", "whole number"}},
		{map[string]string{"LOCKMIGRATE_LOCK_RETRIES": "-1"}, []string{"LOCKMIGRATE_LOCK_RETRIES", "0 or more"}},
		{map[string]string{"LOCKMIGRATE_TRANSACTION": "some"}, []string{"LOCKMIGRATE_TRANSACTION", "each, all"}},
		{map[string]string{"LOCKMIGRATE_ALLOW_OUT_OF_ORDER": "maybe"}, []string{"LOCKMIGRATE_ALLOW_OUT_OF_ORDER", "true or false"}},
		{map[string]string{"LOCKMIGRATE_LOG_FORMAT": "xml"}, []string{"LOCKMIGRATE_LOG_FORMAT", "json, text"}},
		{map[string]string{"LOCKMIGRATE_LOG_LEVEL": "loud"}, []string{"LOCKMIGRATE_LOG_LEVEL", "debug, info, warn, error"}},
		{map[string]string{"LOCKMIGRATE_SCHEMA": strings.Repeat("s", 64)}, []string{"LOCKMIGRATE_SCHEMA", "1 to 63 bytes"}},
		{map[string]string{"LOCKMIGRATE_TABLE": ""}, nil}, // empty means default: valid, but no DB here
		{map[string]string{"DATABASE_URL": "postgres://x@h/db", "DATABASE_URL_FILE": "/etc/hostname"}, []string{"DATABASE_URL_FILE", "only one of"}},
		{map[string]string{"DATABASE_URL_FILE": missing}, []string{"DATABASE_URL_FILE", "readable file"}},
		{map[string]string{"LOCKMIGRATE_DIR": missing}, []string{"LOCKMIGRATE_DIR", "directory"}},
		{map[string]string{"DATABASE_URL": "postgres://u:hunter2secret@localhost:notaport/db"}, []string{"DATABASE_URL", "accepted"}},
		{map[string]string{"DATABASE_URL": "host=h port=5432 password=hunter2secret sslmode=bogus"}, []string{"DATABASE_URL", "sslmode"}},
	}
	bintest.AddSecret("hunter2secret")
	for _, tt := range tests {
		if tt.want == nil {
			continue
		}
		name := strings.Join(tt.want[:1], "") + "=" + fmt.Sprint(tt.env)
		t.Run(name, func(t *testing.T) {
			r := runIn(t, context.Background(), tt.env)
			if r.Code != exitUsage {
				t.Fatalf("exit %d, want 2\n%s", r.Code, r.Stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(r.Stderr, w) {
					t.Errorf("message lacks %q:\n%s", w, r.Stderr)
				}
			}
		})
	}
	t.Run("unknown command", func(t *testing.T) {
		r := runIn(t, context.Background(), nil, "migrat")
		if r.Code != exitUsage || !strings.Contains(r.Stderr, `unknown command "migrat"`) {
			t.Fatalf("exit %d: %s", r.Code, r.Stderr)
		}
	})
}

func TestHelpAndVersion(t *testing.T) {
	r := runIn(t, context.Background(), nil, "--help")
	if r.Code != 0 {
		t.Fatal(r.Code)
	}
	for _, w := range []string{"migrate", "status", "validate", "version", "DATABASE_URL", "LOCKMIGRATE_WAIT_TIMEOUT", "10m",
		"LOCKMIGRATE_TABLE", "lockmigrate_history", "POD_NAME", "Exit codes"} {
		if !strings.Contains(r.Stdout, w) {
			t.Errorf("--help lacks %q", w)
		}
	}
	if r := runIn(t, context.Background(), nil, "version"); r.Code != 0 || !strings.HasPrefix(r.Stdout, "lockmigrate ") {
		t.Fatalf("version: %d %q", r.Code, r.Stdout)
	}
}

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

func TestStatusAndValidate(t *testing.T) {
	ctx := context.Background()
	url, _ := secretDB(t)
	r := runIn(t, ctx, baseEnv(url), "status", "--json")
	var st map[string]any
	if err := json.Unmarshal([]byte(r.Stdout), &st); r.Code != 0 || err != nil {
		t.Fatalf("status --json: exit %d, %v\n%s%s", r.Code, err, r.Stdout, r.Stderr)
	}
	if st["pending"] != 5.0 || st["history_exists"] != false || st["lock_holder"] != nil {
		t.Fatalf("status before: %v", st)
	}
	if r := runIn(t, ctx, baseEnv(url)); r.Code != 0 {
		t.Fatal(r.Stderr)
	}
	holder := pgtest.Connect(t, url)
	if ok, _ := lock.New(holder, lock.DefaultKey("public", "lockmigrate_history"), nil).TryLock(ctx); !ok {
		t.Fatal("no lock")
	}
	r = runIn(t, ctx, baseEnv(url), "status")
	for _, w := range []string{"schema version: 5", "applied: 5", "pending: 0",
		fmt.Sprintf("lock: held by pid %d", holder.PgConn().PID()), "backfill_display_name", "test-pod"} {
		if !strings.Contains(r.Stdout, w) {
			t.Errorf("status lacks %q:\n%s", w, r.Stdout)
		}
	}
	if r := runIn(t, ctx, baseEnv(url), "validate"); r.Code != 0 || !strings.Contains(r.Stdout, "against the database") {
		t.Fatalf("validate: %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
	if r := runIn(t, ctx, nil, "validate"); r.Code != 0 || !strings.Contains(r.Stdout, "ok: 5 migrations valid (offline)") {
		t.Fatalf("offline validate: %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
	// A transactional file that commits or rolls back on its own: offline
	// a warning naming it (it may be an adopted file a run never executes),
	// against the database a refusal while it is pending, and nothing once
	// it is recorded as applied (baseline).
	dir := bintest.WriteDir(t, map[string]string{"1_a.sql": "BEGIN;\nCREATE TABLE a (id int);\nCOMMIT;\n", "2_b.sql": "SELECT 1;"})
	if r := runIn(t, ctx, map[string]string{"LOCKMIGRATE_DIR": dir}, "validate"); r.Code != exitOK ||
		!strings.Contains(r.Stderr, "transaction_control") || !strings.Contains(r.Stderr, "1_a.sql") {
		t.Fatalf("offline validate of a file with BEGIN/COMMIT: %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
	txURL := pgtest.Shared().NewDB(t)
	txEnv := bintest.With(baseEnv(txURL), "LOCKMIGRATE_DIR", dir)
	if r := runIn(t, ctx, txEnv, "validate"); r.Code != exitValidation || !strings.Contains(r.Stderr, "transaction_control") {
		t.Fatalf("validate of a pending file with BEGIN/COMMIT: %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
	if r := runIn(t, ctx, bintest.With(txEnv, "LOCKMIGRATE_BASELINE_VERSION", "1")); r.Code != exitOK {
		t.Fatalf("migrate with the file baselined: %d %s", r.Code, r.Stderr)
	}
	if r := runIn(t, ctx, txEnv, "validate"); r.Code != exitOK {
		t.Fatalf("validate with the file applied as baseline: %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
}

// waitForActive polls, through conn, until another session runs a statement
// containing fragment: the test acts at a known point of the run, not after
// a guessed delay.
func waitForActive(t testing.TB, conn *pgx.Conn, fragment string) {
	t.Helper()
	for {
		var n int
		if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
		  WHERE strpos(query, $1) > 0 AND state = 'active' AND pid <> pg_backend_pid()`, fragment).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
	}
}

// startBinary starts the real binary with exactly env (plus PATH).
func startBinary(t testing.TB, env map[string]string, stdout, stderr *bytes.Buffer, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
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

// TestConcurrentProcesses releases 20 OS processes of the built binary at one
// barrier: each blocks reading its stdin until the test closes all the pipes,
// one after the other in a tight loop, once every process is running.
func TestConcurrentProcesses(t *testing.T) {
	const replicas = 20
	url, _ := secretDB(t)
	procs := make([]*gatedProc, replicas)
	for i := range procs {
		procs[i] = startGated(t, map[string]string{"DATABASE_URL": url, "POD_NAME": fmt.Sprintf("replica-%d", i)})
	}
	releaseAll(procs)
	outcomes := map[string]int{}
	for i, p := range procs {
		r, err := p.wait(t)
		if err != nil || r.Code != 0 {
			t.Fatalf("replica %d: exit %d (%v)\n%s", i, r.Code, err, r.Stderr)
		}
		outcomes[r.Finished(t)["outcome"].(string)]++
	}
	t.Logf("outcomes of %d processes: %v", replicas, outcomes)
	if outcomes["applied"] != 1 {
		t.Fatalf("outcomes %v: want exactly one applied", outcomes)
	}
	conn := pgtest.Connect(t, url)
	var rows, versions int
	if err := conn.QueryRow(context.Background(), `SELECT count(*), count(DISTINCT version) FROM schema_audit`).Scan(&rows, &versions); err != nil {
		t.Fatal(err)
	}
	if rows != 5 || versions != 5 {
		t.Fatalf("schema_audit: %d rows for %d versions, want 5 and 5", rows, versions)
	}
	pgtest.AssertNoAdvisoryLocks(t, pgtest.Connect(t, url))
}

// TestLockTimeoutExhausted: with a table locked ACCESS EXCLUSIVE that is never
// released, the run exits 1 after exactly LOCKMIGRATE_LOCK_RETRIES retries,
// each logged with the session in the way, and leaves nothing half-applied.
func TestLockTimeoutExhausted(t *testing.T) {
	ctx := context.Background()
	url, _ := secretDB(t)
	holder := pgtest.Connect(t, url)
	if _, err := holder.Exec(ctx, `CREATE TABLE hot (id int)`); err != nil {
		t.Fatal(err)
	}
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `LOCK TABLE hot IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	dir := bintest.WriteDir(t, map[string]string{"1_alter.sql": "CREATE TABLE side (id int);\nALTER TABLE hot ADD COLUMN v int;\n"})
	r := runIn(t, ctx, bintest.With(baseEnv(url), "LOCKMIGRATE_DIR", dir, "LOCKMIGRATE_LOCK_TIMEOUT", "50ms", "LOCKMIGRATE_LOCK_RETRIES", "2"))
	if r.Code != exitMigration || !strings.Contains(r.Finished(t)["error"].(string), "55P03") {
		t.Fatalf("exit %d\n%s", r.Code, r.Stderr)
	}
	retries := 0
	for _, ev := range r.Events(t) {
		if ev["msg"] == "lock_timeout reached; transaction rolled back, retrying" {
			retries++
			hs, _ := ev["lock_holders"].([]any)
			if len(hs) == 0 || hs[0].(map[string]any)["pid"] != float64(holder.PgConn().PID()) {
				t.Errorf("retry log does not name the holder pid %d: %v", holder.PgConn().PID(), ev["lock_holders"])
			}
		}
	}
	if retries != 2 {
		t.Fatalf("%d retries logged, want exactly 2\n%s", retries, r.Stderr)
	}
	check := pgtest.Connect(t, url)
	var n int
	check.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE tablename = 'side'`).Scan(&n)
	if n != 0 {
		t.Fatal("half-applied: table side exists")
	}
	pgtest.AssertNoAdvisoryLocks(t, pgtest.Connect(t, url))
}

// TestKilledMidNoTransactionMigration: SIGKILL between two statements of a
// no-transaction migration; the server notices the dead client within about
// a second (client_connection_check_interval) and frees the lock; the next
// run exits 5 naming the statement reached; after the operator finishes the
// file by hand and resolves it as applied, runs proceed.
func TestKilledMidNoTransactionMigration(t *testing.T) {
	ctx := context.Background()
	url, _ := secretDB(t)
	dir := bintest.WriteDir(t, map[string]string{
		"1_first.sql": "CREATE TABLE k (id int, name text);",
		"2_notx.sql": "-- lockmigrate:no-transaction\n-- three statements\nCREATE INDEX CONCURRENTLY k_id_idx ON k (id);\n" +
			"SELECT pg_sleep(120);\nCREATE INDEX CONCURRENTLY k_name_idx ON k (name);\n",
		"3_after.sql": "CREATE TABLE after_k (id int);",
	})
	env := bintest.With(baseEnv(url), "LOCKMIGRATE_DIR", dir)
	var stdout, stderr bytes.Buffer
	cmd := startBinary(t, env, &stdout, &stderr)
	watcher := pgtest.Connect(t, url)
	waitForActive(t, watcher, "pg_sleep(120)")
	killed := time.Now()
	cmd.Process.Kill()
	cmd.Wait()
	bintest.CheckNoSecrets(t, stdout.String(), stderr.String())

	// The next replica waits for the dead session's lock to go, then refuses.
	r := runIn(t, ctx, bintest.With(env, "LOCKMIGRATE_ON_LOCKED", "wait", "LOCKMIGRATE_WAIT_TIMEOUT", "30s"))
	ev := r.Finished(t)
	t.Logf("lock free and interruption reported %v after SIGKILL (lock wait %vms)", time.Since(killed).Round(time.Millisecond), ev["lock_wait_ms"])
	if r.Code != exitValidation {
		t.Fatalf("exit %d, want 5\n%s", r.Code, r.Stderr)
	}
	for _, want := range []string{"interrupted", "2_notx.sql", "statement 2 of 3", "line 4", "SELECT pg_sleep(120)", "no INVALID index found", "lockmigrate resolve 2"} {
		if !strings.Contains(ev["error"].(string), want) {
			t.Errorf("error lacks %q: %s", want, ev["error"])
		}
	}
	if w := ev["lock_wait_ms"].(float64); w > 5000 {
		t.Errorf("dead holder kept the lock for %vms", w)
	}
	// The operator finishes the file and resolves it.
	if _, err := watcher.Exec(ctx, `CREATE INDEX CONCURRENTLY k_name_idx ON k (name)`); err != nil {
		t.Fatal(err)
	}
	if r := runIn(t, ctx, env, "resolve", "2", "applied"); r.Code != 0 || !strings.Contains(r.Stdout, "migration 2 marked applied") {
		t.Fatalf("resolve: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if r := runIn(t, ctx, env, "resolve", "2", "applied"); r.Code != exitUsage || !strings.Contains(r.Stderr, "nothing to resolve") {
		t.Fatalf("second resolve: exit %d\n%s", r.Code, r.Stderr)
	}
	r = runIn(t, ctx, env)
	if r.Code != 0 || r.Finished(t)["outcome"] != "applied" || r.Finished(t)["applied"] != 1.0 {
		t.Fatalf("run after resolve: exit %d\n%s", r.Code, r.Stderr)
	}
	pgtest.AssertNoAdvisoryLocks(t, pgtest.Connect(t, url))
}

// gatedProc is the built binary started behind a gate: it blocks reading its
// stdin until releaseAll closes it, so many processes start work at once.
type gatedProc struct {
	cmd            *exec.Cmd
	gate           io.WriteCloser
	stdout, stderr bytes.Buffer
}

// startGated starts the binary with exactly env (plus PATH), held at the gate.
func startGated(t testing.TB, env map[string]string) *gatedProc {
	t.Helper()
	p := &gatedProc{cmd: exec.Command("sh", "-c", `cat >/dev/null; exec "$1"`, "sh", binary)}
	p.cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	var err error
	if p.gate, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return p
}

// releaseAll opens every gate, as close together as the loop allows.
func releaseAll(procs []*gatedProc) {
	for _, p := range procs {
		p.gate.Close()
	}
}

// wait waits for the process and checks its output for secrets.
func (p *gatedProc) wait(t testing.TB) (result, error) {
	t.Helper()
	err := p.cmd.Wait()
	r := result{Code: p.cmd.ProcessState.ExitCode(), Stdout: p.stdout.String(), Stderr: p.stderr.String()}
	bintest.CheckNoSecrets(t, r.Stdout, r.Stderr)
	return r, err
}
