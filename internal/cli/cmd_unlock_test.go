package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockmigrate/lockmigrate/internal/bintest"
	"github.com/lockmigrate/lockmigrate/internal/pgtest"
	"github.com/lockmigrate/lockmigrate/lock"
)

var defaultKey = lock.DefaultKey("public", "lockmigrate_history")

// sessionAlive reports whether conn's session still answers.
func sessionAlive(conn *pgx.Conn) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var one int
	return conn.QueryRow(ctx, "SELECT 1").Scan(&one) == nil && one == 1
}

// assertHolds fails unless conn's session is alive and holds key.
func assertHolds(t testing.TB, conn *pgx.Conn, key int64) {
	t.Helper()
	if !sessionAlive(conn) {
		t.Fatalf("session %d (holding %d) was terminated", conn.PgConn().PID(), key)
	}
	held, err := lock.New(conn, key, nil).Held(context.Background(), int32(conn.PgConn().PID()))
	if err != nil || !held {
		t.Fatalf("session %d no longer holds %d (%v)", conn.PgConn().PID(), key, err)
	}
}

// waitForQuery polls until the session named app has run a statement
// containing fragment (pg_stat_activity keeps the last one of an idle
// session): the test proceeds at a known point, not after a guessed delay.
func waitForQuery(t testing.TB, conn *pgx.Conn, app, fragment string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var n int
		if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
		  WHERE application_name = $1 AND strpos(query, $2) > 0`, app, fragment).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
	}
	t.Fatalf("no session %s ran %q within 30s", app, fragment)
}

func roleOf(t testing.TB, dbURL string) string {
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	return u.User.Username()
}

// TestUnlockForceFreesHungRunner is issue 9's case: a runner stopped with
// SIGSTOP while holding the lock in the middle of a migration; a wait-mode
// runner queues behind it; unlock shows the stopped runner, unlock --force
// terminates exactly its backend; the waiting runner then applies the rest,
// every migration exactly once, and unrelated sessions are untouched.
func TestUnlockForceFreesHungRunner(t *testing.T) {
	ctx := context.Background()
	dbURL, _ := secretDB(t)
	dir := bintest.WriteDir(t, map[string]string{
		"1_log.sql": "CREATE TABLE run_log (version int NOT NULL, app text NOT NULL DEFAULT current_setting('application_name'));\n" +
			"INSERT INTO run_log (version) VALUES (1);\n",
		// Blocks on a lock the test holds, so the runner is mid-migration.
		"2_blocked.sql": "SELECT pg_advisory_xact_lock(777);\nINSERT INTO run_log (version) VALUES (2);\n",
		"3_after.sql":   "INSERT INTO run_log (version) VALUES (3);\n",
	})
	env := bintest.With(baseEnv(dbURL), "LOCKMIGRATE_DIR", dir)
	// Unrelated sessions of the same role, which unlock could terminate:
	// one blocks migration 2, one holds another advisory lock.
	blocker, bystander, watcher := pgtest.Connect(t, dbURL), pgtest.Connect(t, dbURL), pgtest.Connect(t, dbURL)
	pgtest.MustLock(t, blocker, 777)
	pgtest.MustLock(t, bystander, 4242)

	var aOut, aErr, bOut, bErr bytes.Buffer
	a := startBinary(t, bintest.With(env, "POD_NAME", "runner-a"), &aOut, &aErr)
	aDone := false
	t.Cleanup(func() {
		if !aDone {
			a.Process.Kill() // works on a stopped process too
			a.Wait()
		}
	})
	waitForActive(t, watcher, "pg_advisory_xact_lock(777)")
	h, err := lock.New(watcher, defaultKey, nil).Holder(ctx)
	if err != nil || h == nil || h.ApplicationName != "lockmigrate/runner-a" {
		t.Fatalf("holder = %+v, %v; want runner-a", h, err)
	}
	aPID := h.PID
	if err := a.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}

	b := startBinary(t, bintest.With(env, "POD_NAME", "runner-b", "LOCKMIGRATE_ON_LOCKED", "wait", "LOCKMIGRATE_WAIT_TIMEOUT", "60s"), &bOut, &bErr)
	t.Cleanup(func() { b.Process.Kill() })
	waitForQuery(t, watcher, "lockmigrate/runner-b", "pg_try_advisory_lock")

	r := runIn(t, ctx, env, "unlock")
	t.Logf("unlock:\n%s", r.Stdout)
	for _, w := range []string{fmt.Sprintf("pid %d", aPID), "lockmigrate/runner-a", "client_addr 127.0.0.1",
		"state active", "SELECT pg_advisory_xact_lock(777); INSERT INTO run_log", "backend_start", "query_start",
		"no grant time", fmt.Sprintf("unlock --force --pid %d", aPID)} {
		if !strings.Contains(squash(r.Stdout), w) {
			t.Errorf("unlock output lacks %q", w)
		}
	}
	if r.Code != 0 {
		t.Fatalf("unlock: exit %d\n%s", r.Code, r.Stderr)
	}
	if held, err := lock.New(watcher, defaultKey, nil).Held(ctx, aPID); err != nil || !held {
		t.Fatalf("unlock without --force freed the lock: held %v, %v", held, err)
	}

	r = runIn(t, ctx, env, "unlock", "--force")
	t.Logf("unlock --force:\n%s", r.Stdout)
	if r.Code != 0 || !strings.Contains(r.Stdout, fmt.Sprintf("terminated backend %d (lockmigrate/runner-a) with pg_terminate_backend; the lock was released", aPID)) {
		t.Fatalf("unlock --force: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if !strings.Contains(r.Stderr, "advisory lock holder terminated") {
		t.Errorf("no log event for the termination:\n%s", r.Stderr)
	}
	if err := lock.New(blocker, 777, nil).Unlock(ctx); err != nil { // migration 2 may now proceed
		t.Fatal(err)
	}
	err = b.Wait()
	rb := result{Code: b.ProcessState.ExitCode(), Stderr: bErr.String()}
	bintest.CheckNoSecrets(t, bOut.String(), rb.Stderr)
	if ev := rb.Finished(t); rb.Code != 0 || ev["outcome"] != "applied" || ev["applied"] != 2.0 {
		t.Fatalf("waiting runner: exit %d (%v)\n%s", rb.Code, err, rb.Stderr)
	}

	// Exactly once: runner-a's migration 2 was rolled back with its backend.
	rows, err := watcher.Query(ctx, `SELECT version || ' ' || app FROM run_log ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	log, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"1 lockmigrate/runner-a", "2 lockmigrate/runner-b", "3 lockmigrate/runner-b"}
	if !slices.Equal(log, want) {
		t.Fatalf("run_log = %q, want %q", log, want)
	}
	rows, err = watcher.Query(ctx, `SELECT version || ' ' || applied_by || ' ' || state FROM lockmigrate_history ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	hist, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"1 runner-a applied", "2 runner-b applied", "3 runner-b applied"}; !slices.Equal(hist, want) {
		t.Fatalf("history = %q, want %q", hist, want)
	}
	assertHolds(t, bystander, 4242)
	if !sessionAlive(blocker) {
		t.Fatal("blocker session was terminated")
	}

	// The stopped runner resumes and finds its session gone: exit 3 (retryable).
	if err := a.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	err = a.Wait()
	aDone = true
	ra := result{Code: a.ProcessState.ExitCode(), Stderr: aErr.String()}
	bintest.CheckNoSecrets(t, aOut.String(), ra.Stderr)
	ev := ra.Finished(t)
	if ra.Code != exitUnreachable || !strings.Contains(fmt.Sprint(ev["error"]), "connection to the database lost") ||
		!strings.Contains(fmt.Sprint(ev["error"]), "57P01") {
		t.Fatalf("resumed runner: exit %d (%v), want 3\n%s", ra.Code, err, ra.Stderr)
	}
	t.Logf("resumed runner: exit %d: %s", ra.Code, ev["error"])
	if err := lock.New(bystander, 4242, nil).Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	pgtest.AssertNoAdvisoryLocks(t, pgtest.Connect(t, dbURL))
}

// TestUnlock covers the cases around the hung runner: nobody holds the
// lock, unlock without --force, --pid naming another backend, and roles
// that may not terminate the holder.
func TestUnlock(t *testing.T) {
	ctx := context.Background()
	srv := pgtest.Shared()
	type setupFn func(t *testing.T, dbURL string) (holder *pgx.Conn)
	holdAs := func(connURL func(t *testing.T, dbURL string) string) setupFn {
		return func(t *testing.T, dbURL string) *pgx.Conn {
			c := pgtest.Connect(t, connURL(t, dbURL))
			if _, err := c.Exec(ctx, "SET application_name = 'deploy-job-xyz'"); err != nil {
				t.Fatal(err)
			}
			pgtest.MustLock(t, c, defaultKey)
			if _, err := c.Exec(ctx, "SELECT 'still working' AS status"); err != nil {
				t.Fatal(err)
			}
			return c
		}
	}
	sameRole := holdAs(func(_ *testing.T, dbURL string) string { return dbURL })
	superuser := holdAs(func(_ *testing.T, dbURL string) string {
		return srv.AdminURL(dbURL[strings.LastIndex(dbURL, "/")+1 : strings.Index(dbURL, "?")])
	})
	otherRole := holdAs(func(t *testing.T, dbURL string) string {
		b := make([]byte, 6)
		rand.Read(b)
		name, pw := "other_"+hex.EncodeToString(b), "pw-"+hex.EncodeToString(b)
		srv.CreateRole(t, name, pw)
		bintest.AddSecret(pw)
		return srv.URLFor(dbURL[strings.LastIndex(dbURL, "/")+1:strings.Index(dbURL, "?")], name, pw)
	})
	grantSignal := func(t *testing.T, dbURL string) {
		role := roleOf(t, dbURL)
		if err := srv.Exec(ctx, "postgres", fmt.Sprintf(`GRANT pg_signal_backend TO %q`, role)); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name   string
		hold   setupFn // nil: nobody holds the lock
		before func(t *testing.T, dbURL string)
		args   []string
		// pidArg, when set, appends --pid of the bystander.
		pidArg         bool
		code           int
		want           []string // in stdout
		wantErr        string   // in stderr
		wantTerminated bool
	}{
		{name: "free", args: []string{"unlock"}, want: []string{"is free: nobody holds it"}},
		{name: "free, --force", args: []string{"unlock", "--force"}, want: []string{"is free: nobody holds it"}},
		{name: "held, no --force", hold: sameRole, args: []string{"unlock"},
			want: []string{"deploy-job-xyz", "SELECT 'still working' AS status", "state idle", "nothing terminated"}},
		{name: "--force --pid of another backend", hold: sameRole, args: []string{"unlock", "--force"}, pidArg: true,
			code: exitMigration, want: []string{"did not hold the lock when --force ran", "deploy-job-xyz"},
			wantErr: "nothing terminated"},
		{name: "superuser holder: denied", hold: superuser, args: []string{"unlock", "--force"},
			code: exitUnreachable, wantErr: "permission denied", want: []string{"nothing terminated: terminating backend"}},
		{name: "other role's holder: denied", hold: otherRole, args: []string{"unlock", "--force"},
			code: exitUnreachable, wantErr: "member of pg_signal_backend", want: []string{"user other_", "state -", "query <insufficient privilege>"}},
		{name: "other role's holder, with pg_signal_backend", hold: otherRole, before: grantSignal,
			args: []string{"unlock", "--force"}, want: []string{"terminated backend", "(deploy-job-xyz)", "the lock was released"},
			wantTerminated: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dbURL, _ := secretDB(t)
			bystander := pgtest.Connect(t, dbURL)
			pgtest.MustLock(t, bystander, 4242)
			var holder *pgx.Conn
			if tt.hold != nil {
				holder = tt.hold(t, dbURL)
			}
			if tt.before != nil {
				tt.before(t, dbURL)
			}
			args := tt.args
			if tt.pidArg {
				args = append(slices.Clone(args), "--pid", fmt.Sprint(bystander.PgConn().PID()))
			}
			r := runIn(t, ctx, baseEnv(dbURL), args...)
			t.Logf("%s: exit %d\n%s", strings.Join(args, " "), r.Code, r.Stdout)
			if r.Code != 0 {
				t.Logf("error: %s", validationError(t, r))
			}
			if r.Code != tt.code {
				t.Fatalf("exit %d, want %d\n%s%s", r.Code, tt.code, r.Stdout, r.Stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(squash(r.Stdout), w) {
					t.Errorf("stdout lacks %q", w)
				}
			}
			if !strings.Contains(r.Stderr, tt.wantErr) {
				t.Errorf("stderr lacks %q:\n%s", tt.wantErr, r.Stderr)
			}
			if holder != nil {
				if tt.wantTerminated == sessionAlive(holder) {
					t.Fatalf("holder alive = %v, want %v", !tt.wantTerminated, !tt.wantTerminated)
				}
				if !tt.wantTerminated {
					assertHolds(t, holder, defaultKey)
				}
			}
			assertHolds(t, bystander, 4242)
		})
	}
}

// TestUnlockJSONAndUsage: --json reports the holder and the action; usage
// errors exit 2; a broken migration set does not stop unlock.
func TestUnlockJSONAndUsage(t *testing.T) {
	ctx := context.Background()
	dbURL, _ := secretDB(t)
	holder := pgtest.Connect(t, dbURL)
	pgtest.MustLock(t, holder, defaultKey)
	if _, err := holder.Exec(ctx, "SELECT 'json holder'"); err != nil {
		t.Fatal(err)
	}
	broken := bintest.WriteDir(t, map[string]string{"one_bad.sql": "SELECT 1"})
	r := runIn(t, ctx, bintest.With(baseEnv(dbURL), "LOCKMIGRATE_DIR", broken), "unlock", "--json")
	var rep struct {
		LockKey int64 `json:"lock_key"`
		Holder  *struct {
			PID        int32      `json:"pid"`
			Query      string     `json:"query"`
			QueryStart *time.Time `json:"query_start"`
		} `json:"holder"`
		Action string `json:"action"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &rep); err != nil || r.Code != 0 {
		t.Fatalf("unlock --json: exit %d, %v\n%s%s", r.Code, err, r.Stdout, r.Stderr)
	}
	if rep.LockKey != defaultKey || rep.Holder == nil || rep.Holder.PID != int32(holder.PgConn().PID()) ||
		rep.Holder.QueryStart == nil || rep.Holder.Query != "SELECT 'json holder'" || rep.Action != "none" {
		t.Fatalf("report %+v", rep)
	}
	r = runIn(t, ctx, baseEnv(dbURL), "unlock", "--force", "--json")
	var forced struct {
		Action     string   `json:"action"`
		TargetPID  int32    `json:"target_pid"`
		ReleasedMS *float64 `json:"released_ms"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &forced); err != nil || r.Code != 0 || forced.Action != "terminated" ||
		forced.TargetPID != int32(holder.PgConn().PID()) || forced.ReleasedMS == nil {
		t.Fatalf("unlock --force --json: exit %d, %v %+v\n%s", r.Code, err, forced, r.Stderr)
	}
	if sessionAlive(holder) {
		t.Fatal("holder survived --force")
	}
	for _, args := range [][]string{{"unlock", "extra"}, {"unlock", "--pid", "5"}, {"unlock", "--force", "--timeout", "0s"}, {"unlock", "--nope"}} {
		if r := runIn(t, ctx, baseEnv(dbURL), args...); r.Code != exitUsage {
			t.Errorf("%q: exit %d, want 2", args, r.Code)
		}
	}
}

// TestUnlockTenant: in multi-tenant mode every tenant has its own lock;
// unlock refuses to guess which one and, with --tenant, shows and frees
// exactly that tenant's.
func TestUnlockTenant(t *testing.T) {
	ctx := context.Background()
	dbURL, _ := secretDB(t)
	env := bintest.With(baseEnv(dbURL), "LOCKMIGRATE_TENANTS_QUERY", "SELECT 'tenant_a'")
	if r := runIn(t, ctx, env, "unlock"); r.Code != exitUsage || !strings.Contains(r.Stderr, "--tenant") {
		t.Fatalf("unlock without --tenant in tenant mode: exit %d\n%s", r.Code, r.Stderr)
	}
	holder := pgtest.Connect(t, dbURL)
	pgtest.MustLock(t, holder, lock.DefaultKey("tenant_a", "lockmigrate_history"))
	other := pgtest.Connect(t, dbURL)
	pgtest.MustLock(t, other, defaultKey) // public's lock: not this tenant's
	r := runIn(t, ctx, env, "unlock", "--tenant", "tenant_a", "--force")
	if r.Code != exitOK || !strings.Contains(r.Stdout, fmt.Sprint(holder.PgConn().PID())) {
		t.Fatalf("unlock --tenant tenant_a --force: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if err := holder.Ping(ctx); err == nil {
		t.Fatal("the tenant's lock holder was not terminated")
	}
	if err := other.Ping(ctx); err != nil {
		t.Fatalf("another lock's holder was touched: %v", err)
	}
}
