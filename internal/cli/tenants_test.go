package cli

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lockmigrate/lockmigrate/internal/bintest"
	"github.com/lockmigrate/lockmigrate/internal/pgtest"

	"github.com/lockmigrate/lockmigrate/internal/pushtest"
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
