package cli

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lockmigrate/lockmigrate/internal/bintest"
	"github.com/lockmigrate/lockmigrate/internal/pgtest"
	"github.com/lockmigrate/lockmigrate/internal/pushtest"
	"github.com/lockmigrate/lockmigrate/lock"
)

// tenantMigrations are five migrations written against the search_path;
// each appends (schema, version) to public.migration_log, so count =
// distinct proves each ran exactly once per tenant.
var tenantMigrations = map[string]string{
	"1_widgets.sql":     "CREATE TABLE widgets (id int PRIMARY KEY, name text);\nINSERT INTO public.migration_log VALUES (current_schema(), 1);\n",
	"2_gadgets.sql":     "CREATE TABLE gadgets (id int PRIMARY KEY);\nINSERT INTO public.migration_log VALUES (current_schema(), 2);\n",
	"3_widget_name.sql": "CREATE INDEX widgets_name ON widgets (name);\nINSERT INTO public.migration_log VALUES (current_schema(), 3);\n",
	"4_price.sql":       "ALTER TABLE widgets ADD COLUMN price numeric;\nINSERT INTO public.migration_log VALUES (current_schema(), 4);\n",
	"5_seed.sql":        "INSERT INTO widgets VALUES (1, 'first', 9.5);\nINSERT INTO public.migration_log VALUES (current_schema(), 5);\n",
}

const tenantsQuery = `SELECT nspname FROM pg_namespace WHERE nspname LIKE 'tenant\_%'`

// tenantDB returns a database owned by a password role, holding n tenant
// schemas (owned by that role) and the migration log, and the base
// environment of a multi-tenant run against it.
func tenantDB(t testing.TB, n int) (url string, env map[string]string) {
	t.Helper()
	url, _ = secretDB(t)
	if _, err := pgtest.Connect(t, url).Exec(context.Background(), fmt.Sprintf(`
CREATE TABLE public.migration_log (tenant text NOT NULL, version int NOT NULL);
DO $$ BEGIN
  FOR i IN 1..%d LOOP EXECUTE format('CREATE SCHEMA %%I', 'tenant_' || lpad(i::text, 4, '0')); END LOOP;
END $$;`, n)); err != nil {
		t.Fatal(err)
	}
	return url, bintest.With(baseEnv(url), "LOCKMIGRATE_DIR", bintest.WriteDir(t, tenantMigrations), "LOCKMIGRATE_TENANTS_QUERY", tenantsQuery)
}

func exactlyOnce(t testing.TB, url string, tenants int) {
	t.Helper()
	var rows, distinct, seen int
	if err := pgtest.Connect(t, url).QueryRow(context.Background(),
		`SELECT count(*), count(DISTINCT (tenant, version)), count(DISTINCT tenant) FROM public.migration_log`).Scan(&rows, &distinct, &seen); err != nil {
		t.Fatal(err)
	}
	if rows != 5*tenants || distinct != rows || seen != tenants {
		t.Fatalf("migration_log: %d rows, %d distinct, %d tenants; want %d, %d, %d", rows, distinct, seen, 5*tenants, 5*tenants, tenants)
	}
}

// TestTenantsFailureIsolation: of 1,000 tenants, the one with a conflicting
// object fails and is rolled back, the 999 others are migrated; the run
// exits 1 and its summary (log, termination message, metrics on a real
// Pushgateway) counts them and names the failed tenant. A rerun after the
// fix migrates that tenant only.
func TestTenantsFailureIsolation(t *testing.T) {
	const n = 1000
	ctx := context.Background()
	url, env := tenantDB(t, n)
	if _, err := pgtest.Connect(t, url).Exec(ctx, `CREATE TABLE tenant_0777.gadgets (id int)`); err != nil {
		t.Fatal(err)
	}
	gw := pushtest.Start(t, false)
	term := filepath.Join(t.TempDir(), "termination-log")
	env = bintest.With(env, "LOCKMIGRATE_TENANT_CONCURRENCY", "8", "LOCKMIGRATE_PUSHGATEWAY_URL", gw.URL, "LOCKMIGRATE_TERMINATION_LOG", term)

	r := runIn(t, ctx, env)
	ev := r.Finished(t)
	if r.Code != exitMigration || ev["outcome"] != "failed" || ev["tenants_failed"] != 1.0 || ev["tenants_applied"] != float64(n-1) ||
		ev["tenants_total"] != float64(n) || fmt.Sprint(ev["failed_tenants"]) != "[tenant_0777 (migration)]" {
		t.Fatalf("exit %d, run finished %v", r.Code, ev)
	}
	if !strings.Contains(ev["error"].(string), "tenant_0777") {
		t.Fatalf("error %q does not name the tenant", ev["error"])
	}
	m := readTermination(t, term)
	tm := m["tenants"].(map[string]any)
	if m["exit_code"] != 1.0 || tm["failed_count"] != 1.0 || tm["applied"] != float64(n-1) ||
		fmt.Sprint(tm["failed"]) != "[map[kind:migration tenant:tenant_0777]]" {
		t.Fatalf("termination message %v", m)
	}
	s := series(t, gw.Metrics(t))
	for name, want := range map[string]float64{"lockmigrate_tenants_total": n, "lockmigrate_tenants_failed": 1,
		"lockmigrate_tenants_applied": n - 1, "lockmigrate_tenants_pending": 1, "lockmigrate_migrations_applied": 5*(n-1) + 1} {
		if got, ok := value(t, s, name); !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", name, got, ok, want)
		}
	}
	if got, _ := value(t, s, "lockmigrate_run_outcome", `outcome="failed"`); got != 1 {
		t.Errorf("run_outcome{failed} = %v", got)
	}
	if _, ok := value(t, s, "lockmigrate_schema_version"); ok {
		t.Errorf("a multi-tenant run pushed schema_version")
	}
	t.Logf("1000 tenants, one conflicting: exit %d in %v; %v", r.Code, r.Elapsed.Round(time.Millisecond), ev["failed_tenants"])

	// Status lists the one pending tenant.
	st := runIn(t, ctx, env, "status")
	if st.Code != 0 || !strings.Contains(st.Stdout, "999 current, 1 pending") || !strings.Contains(st.Stdout, "pending: tenant_0777") {
		t.Fatalf("status: exit %d\n%s%s", st.Code, st.Stdout, st.Stderr)
	}

	if _, err := pgtest.Connect(t, url).Exec(ctx, `DROP TABLE tenant_0777.gadgets`); err != nil {
		t.Fatal(err)
	}
	r = runIn(t, ctx, env)
	ev = r.Finished(t)
	if r.Code != 0 || ev["outcome"] != "applied" || ev["tenants_applied"] != 1.0 || ev["tenants_up_to_date"] != float64(n-1) ||
		ev["migrations_applied"] != 4.0 {
		t.Fatalf("rerun: exit %d, %v", r.Code, ev)
	}
	if got, _ := value(t, series(t, gw.Metrics(t)), "lockmigrate_tenants_applied"); got != 1 {
		t.Errorf("after the rerun tenants_applied = %v, want 1", got)
	}
	exactlyOnce(t, url, n)
	pgtest.AssertNoAdvisoryLocks(t, pgtest.Connect(t, url))
	t.Logf("rerun after the fix: %v, applied %v tenant", r.Elapsed.Round(time.Millisecond), ev["tenants_applied"])
}

// TestTenantShards: four real processes with JOB_COMPLETION_INDEX=0..3 and
// LOCKMIGRATE_SHARDS=4, plus one unsharded run, released at one barrier:
// every tenant is migrated exactly once, the shards are disjoint and cover
// all tenants, and the overlapping full run skips what the shards hold.
func TestTenantShards(t *testing.T) {
	const n, shards = 1000, 4
	url, env := tenantDB(t, n)
	var procs []*gatedProc
	for i := range shards + 1 {
		e := bintest.With(env, "POD_NAME", fmt.Sprintf("migrate-%d", i))
		if i < shards {
			e = bintest.With(e, "LOCKMIGRATE_SHARDS", fmt.Sprint(shards), "JOB_COMPLETION_INDEX", fmt.Sprint(i))
		}
		procs = append(procs, startGated(t, e))
	}
	start := time.Now()
	releaseAll(procs)
	var shardTotal, applied, migrations int
	for i, p := range procs {
		r, err := p.wait(t)
		if err != nil || r.Code != 0 {
			t.Fatalf("process %d: exit %d (%v)\n%s", i, r.Code, err, r.Stderr)
		}
		ev := r.Finished(t)
		total, app := int(ev["tenants_total"].(float64)), int(ev["tenants_applied"].(float64))
		sum := app + int(ev["tenants_up_to_date"].(float64)) + int(ev["tenants_skipped"].(float64))
		if sum != total || ev["tenants_failed"] != 0.0 {
			t.Fatalf("process %d: %v", i, ev)
		}
		if i < shards {
			shardTotal += total
		} else if total != n {
			t.Fatalf("full run saw %d tenants", total)
		}
		applied += app
		migrations += int(ev["migrations_applied"].(float64))
		t.Logf("process %d (shard %v): %d tenants, %v applied, %v up to date, %v skipped, %v connections",
			i, map[bool]any{true: i, false: "all"}[i < shards], total, ev["tenants_applied"], ev["tenants_up_to_date"], ev["tenants_skipped"], ev["connections"])
	}
	t.Logf("5 processes, %d tenants × 5 migrations: %v", n, time.Since(start).Round(time.Millisecond))
	if shardTotal != n || applied != n || migrations != 5*n {
		t.Fatalf("shards covered %d tenants, %d tenants applied, %d migrations; want %d, %d, %d", shardTotal, applied, migrations, n, n, 5*n)
	}
	exactlyOnce(t, url, n)
	pgtest.AssertNoAdvisoryLocks(t, pgtest.Connect(t, url))
}

// TestTenantConfigErrors: sharding variables that cannot work exit 2
// naming the variable.
func TestTenantConfigErrors(t *testing.T) {
	ctx := context.Background()
	url, _ := secretDB(t)
	env := bintest.With(baseEnv(url), "LOCKMIGRATE_TENANTS_QUERY", tenantsQuery)
	for _, tt := range []struct {
		kv   []string
		name string
	}{
		{[]string{"LOCKMIGRATE_SHARDS", "4", "JOB_COMPLETION_INDEX", "4"}, "JOB_COMPLETION_INDEX"},
		{[]string{"LOCKMIGRATE_SHARDS", "4"}, "JOB_COMPLETION_INDEX"},
		{[]string{"LOCKMIGRATE_TENANT_CONCURRENCY", "0"}, "LOCKMIGRATE_TENANT_CONCURRENCY"},
		{[]string{"LOCKMIGRATE_TENANTS_QUERY", "SELECT nspname, oid FROM pg_namespace"}, "LOCKMIGRATE_TENANTS_QUERY"},
	} {
		r := runIn(t, ctx, bintest.With(env, tt.kv...))
		if r.Code != exitUsage || !strings.Contains(r.Stderr, tt.name) {
			t.Errorf("%v: exit %d, want 2 naming %s\n%s", tt.kv, r.Code, tt.name, r.Stderr)
		}
	}
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
	outcomes := releaseOutcomes(t, procs)
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
