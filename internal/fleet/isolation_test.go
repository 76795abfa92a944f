package fleet_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockmigrate/lockmigrate/internal/fleet"
	"github.com/lockmigrate/lockmigrate/lock"
	"github.com/lockmigrate/lockmigrate/runner"
)

func exec(t testing.TB, url, sql string) {
	t.Helper()
	if _, err := conn(t, url).Exec(context.Background(), sql); err != nil {
		t.Fatal(err)
	}
}

// TestFailureIsolation: a tenant whose migration fails is rolled back and
// reported while the others are migrated; with fail-fast no tenant is
// started after it. A rerun after the fix migrates that tenant only.
func TestFailureIsolation(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name     string
		failFast bool
	}{{"continue", false}, {"fail-fast", true}} {
		t.Run(tt.name, func(t *testing.T) {
			const n = 30
			url := newTenantDB(t, n)
			// tenant_0003 already has what migration 2 creates.
			exec(t, url, `CREATE TABLE tenant_0003.gadgets (id int)`)
			var c counter
			opts := options(t, url, "fleet-iso", &c, 1) // one worker: a deterministic order
			opts.FailFast = tt.failFast
			sum, err := fleet.Run(ctx, opts)
			var tfe *fleet.TenantsFailedError
			if !errors.As(err, &tfe) {
				t.Fatalf("error %v, want a TenantsFailedError", err)
			}
			if sum.Failed != 1 || len(tfe.Failures) != 1 || tfe.Failures[0].Tenant != "tenant_0003" || tfe.Failures[0].Kind != "migration" {
				t.Fatalf("failures %+v (summary %+v)", tfe.Failures, sum)
			}
			var me *runner.MigrationError
			if !errors.As(tfe.Failures[0].Err, &me) || me.Version != 2 || !strings.Contains(err.Error(), "tenant_0003") {
				t.Fatalf("failure %v, want migration 2 of tenant_0003", tfe.Failures[0].Err)
			}
			wantApplied, wantNot := n-1, 0
			if tt.failFast {
				wantApplied, wantNot = 2, n-3 // tenants 1 and 2 before it; none after
			}
			if sum.Applied != wantApplied || sum.NotAttempted != wantNot || sum.Pending() != 1+wantNot {
				t.Fatalf("applied %d, not attempted %d, pending %d; want %d, %d, %d", sum.Applied, sum.NotAttempted, sum.Pending(), wantApplied, wantNot, 1+wantNot)
			}
			// Migration 1 of tenant_0003 committed (one transaction each),
			// migration 2 rolled back: its log row is not there.
			var logged int
			conn(t, url).QueryRow(ctx, `SELECT count(*) FROM public.migration_log WHERE tenant = 'tenant_0003'`).Scan(&logged)
			if logged != 1 {
				t.Fatalf("tenant_0003 logged %d migrations, want 1", logged)
			}
			noAdvisoryLocks(t, url)

			exec(t, url, `DROP TABLE tenant_0003.gadgets`)
			sum, err = fleet.Run(ctx, options(t, url, "fleet-iso", &c, 4))
			if err != nil {
				t.Fatal(err)
			}
			if sum.Applied != 1+wantNot || sum.Current != n-1-wantNot || sum.Failed != 0 {
				t.Fatalf("rerun: %+v", sum)
			}
			checkExactlyOnce(t, url, n, 5)
		})
	}
}

// TestValidationAndSkip: a tenant whose history disagrees with the set (a
// changed checksum) fails as a validation failure; a tenant whose lock is
// held elsewhere is skipped (ON_LOCKED=skip) or waited for (wait), the
// others are migrated; a tenant ahead of the set is current.
func TestValidationAndSkip(t *testing.T) {
	ctx := context.Background()
	const n = 12
	url := newTenantDB(t, n)
	var c counter
	if _, err := fleet.Run(ctx, options(t, url, "fleet-val", &c, 3)); err != nil {
		t.Fatal(err)
	}
	exec(t, url, `UPDATE tenant_0002.lockmigrate_history SET checksum = 'edited' WHERE version = 4;
INSERT INTO tenant_0005.lockmigrate_history (version, name, checksum) VALUES (99, 'newer', 'x');
DELETE FROM tenant_0007.lockmigrate_history WHERE version = 5; DROP TABLE tenant_0007.widgets CASCADE;
CREATE TABLE tenant_0007.widgets (id int PRIMARY KEY, name text, price numeric);
DELETE FROM public.migration_log WHERE tenant = 'tenant_0007' AND version = 5;`)
	holder := conn(t, url)
	hl := lock.New(holder, lock.DefaultKey("tenant_0007", table), nil)
	if ok, err := hl.TryLock(ctx); !ok || err != nil {
		t.Fatalf("lock: %v %v", ok, err)
	}
	sum, err := fleet.Run(ctx, options(t, url, "fleet-val", &c, 3))
	var tfe *fleet.TenantsFailedError
	if !errors.As(err, &tfe) || len(tfe.Failures) != 1 || tfe.Failures[0].Tenant != "tenant_0002" || tfe.Failures[0].Kind != "validation" {
		t.Fatalf("error %v, want tenant_0002 failing validation", err)
	}
	if sum.Current != n-2 || sum.Skipped != 1 || sum.Ahead != 1 || sum.Applied != 0 {
		t.Fatalf("summary %+v: want %d current (one ahead), tenant_0007 skipped", sum, n-2)
	}

	// Wait mode: the run waits for the holder, then applies.
	opts := options(t, url, "fleet-val", &c, 3)
	opts.Runner.OnLocked, opts.Runner.WaitTimeout = runner.Wait, time.Minute
	exec(t, url, `UPDATE tenant_0002.lockmigrate_history h SET checksum = (SELECT checksum FROM tenant_0001.lockmigrate_history WHERE version = 4) WHERE version = 4`)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sum, err = fleet.Run(ctx, opts)
	}()
	waitForWaiter(t, url, "fleet-val")
	if err := hl.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	<-done
	if err != nil || sum.Applied != 1 || sum.MigrationsApplied != 1 || sum.Skipped != 0 {
		t.Fatalf("wait run: %v %+v", err, sum)
	}
	checkExactlyOnce(t, url, n, 5)
}

// waitForWaiter waits until a session of app has tried an advisory lock and
// not got it (it polls pg_try_advisory_lock: the server shows it idle), by
// watching pg_locks for a second session wanting the key held.
func waitForWaiter(t testing.TB, url, app string) {
	t.Helper()
	c := conn(t, url)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var n int
		// A waiter re-tries; its session exists and has no advisory lock.
		c.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity a
			WHERE a.application_name = $1
			  AND NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory')
			  AND a.query LIKE '%pg_try_advisory_lock%'`, app).Scan(&n)
		if n > 0 {
			return
		}
		time.Sleep(10 * time.Millisecond) // polling an observable state, not synchronising on time
	}
	t.Fatal("no session waiting for the lock")
}

// TestShards: the shard function splits tenants into disjoint shards that
// cover them all, independently of order, and a sharded run migrates only
// its own.
func TestShards(t *testing.T) {
	const n, shards = 2000, 4
	counts := make([]int, shards)
	for i := 1; i <= n; i++ {
		name := tenantName(i)
		owners := 0
		for s := range shards {
			if (fleet.Shard{Index: s, Count: shards}).Owns(name) {
				owners++
				counts[s]++
			}
		}
		if owners != 1 {
			t.Fatalf("%s owned by %d shards", name, owners)
		}
	}
	for _, c := range counts {
		if c < n/shards*8/10 || c > n/shards*12/10 {
			t.Fatalf("shard sizes %v: too uneven", counts)
		}
	}
	// FNV-1a 64 of "tenant_0001", mod 4: a fixed value other tools can
	// reproduce.
	if got := fleet.ShardOf("tenant_0001", shards); got != int(fnv1a("tenant_0001")%shards) {
		t.Fatalf("ShardOf = %d", got)
	}

	ctx := context.Background()
	url := newTenantDB(t, 40)
	var c counter
	opts := options(t, url, "fleet-shard", &c, 2)
	opts.Shard = fleet.Shard{Index: 2, Count: shards}
	sum, err := fleet.Run(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	var migrated []string
	rows, _ := conn(t, url).Query(ctx, `SELECT DISTINCT tenant FROM public.migration_log ORDER BY 1`)
	migrated, _ = pgx.CollectRows(rows, pgx.RowTo[string])
	for _, m := range migrated {
		if fleet.ShardOf(m, shards) != 2 {
			t.Fatalf("%s migrated by shard 2", m)
		}
	}
	if sum.Listed != 40 || sum.Total != len(migrated) || sum.Applied != sum.Total || sum.Total == 0 {
		t.Fatalf("summary %+v, migrated %d", sum, len(migrated))
	}
	t.Logf("shard sizes of %d names over %d shards: %v; shard 2 of 40 tenants: %d", n, shards, counts, sum.Total)
}

func fnv1a(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// TestBadQueryAndEdges: a tenants query the server refuses or with two
// columns is a QueryError; names that need quoting work.
func TestBadQueryAndEdges(t *testing.T) {
	ctx := context.Background()
	url := newTenantDB(t, 2)
	var c counter
	for _, q := range []string{`SELECT nspname FROM no_such_table`, `SELECT nspname, oid FROM pg_namespace`, `SELECT 1`} {
		opts := options(t, url, "fleet-q", &c, 1)
		opts.Query = q
		_, err := fleet.Run(ctx, opts)
		var qe *fleet.QueryError
		if !errors.As(err, &qe) {
			t.Fatalf("query %q: error %v, want a QueryError", q, err)
		}
	}
	exec(t, url, `CREATE SCHEMA "Tenant ""Q"" x"; CREATE SCHEMA "tenant;drop"`)
	opts := options(t, url, "fleet-q", &c, 2)
	opts.Query = `SELECT nspname FROM pg_namespace WHERE nspname LIKE 'Tenant%' OR nspname LIKE 'tenant%' UNION ALL SELECT NULL`
	sum, err := fleet.Run(ctx, opts)
	if err != nil || sum.Applied != 4 {
		t.Fatalf("%v %+v", err, sum)
	}
	var n int
	conn(t, url).QueryRow(ctx, `SELECT count(*) FROM "Tenant ""Q"" x".widgets`).Scan(&n)
	if n != 1 {
		t.Fatalf("quoted tenant: %d widgets", n)
	}
	checkExactlyOnce(t, url, 4, 5)
}

// TestLostConnection: a worker whose session is terminated mid-tenant
// reports that tenant (kind connect) and goes on with a new connection.
func TestLostConnection(t *testing.T) {
	ctx := context.Background()
	url := newTenantDB(t, 6)
	var c counter
	opts := options(t, url, "fleet-lost", &c, 1)
	tx, wait := blockTenant2(t, url, &opts)
	res := make(chan runResult, 1)
	go func() {
		s, err := fleet.Run(ctx, opts)
		res <- runResult{s, err}
	}()
	pid := wait()
	w := conn(t, url)
	// With a timeout, pg_terminate_backend returns once the backend has
	// exited: the client reads its FATAL before the backend releases its
	// session locks on the way out, and the check below must not race that.
	var gone bool
	if err := w.QueryRow(ctx, `SELECT pg_terminate_backend($1, 10000)`, pid).Scan(&gone); err != nil || !gone {
		t.Fatalf("terminate backend %d: %v, %v", pid, gone, err)
	}
	tx.Rollback(ctx)
	o := <-res
	var tfe *fleet.TenantsFailedError
	if !errors.As(o.err, &tfe) || len(tfe.Failures) != 1 || tfe.Failures[0].Tenant != "tenant_0002" || tfe.Failures[0].Kind != "connect" {
		t.Fatalf("error %v", o.err)
	}
	if o.sum.Applied != 5 || o.sum.Connections != 2 {
		t.Fatalf("summary %+v: want the 5 others applied on a second connection", o.sum)
	}
	noAdvisoryLocks(t, url)
}

// setCopy copies tenantSet, so a test can change a file.
func setCopy() fstest.MapFS {
	out := fstest.MapFS{}
	for k, v := range tenantSet {
		c := *v
		out[k] = &c
	}
	return out
}

// TestCancel: cancelling the run (a signal) rolls back the tenant in
// flight, starts no other, and returns the cause.
func TestCancel(t *testing.T) {
	url := newTenantDB(t, 5)
	var c counter
	opts := options(t, url, "fleet-cancel", &c, 1)
	_, wait := blockTenant2(t, url, &opts)
	ctx, cancel := context.WithCancelCause(context.Background())
	cause := errors.New("stopped by terminated")
	res := make(chan runResult, 1)
	go func() {
		s, err := fleet.Run(ctx, opts)
		res <- runResult{s, err}
	}()
	wait()
	w := conn(t, url)
	cancel(cause)
	o := <-res
	if !errors.Is(o.err, cause) {
		t.Fatalf("error %v, want the cause", o.err)
	}
	if o.sum.Applied != 1 || o.sum.Failed != 1 || o.sum.NotAttempted != 3 || o.sum.Failures[0].Kind != "signal" {
		t.Fatalf("summary %+v", o.sum)
	}
	var n int
	w.QueryRow(context.Background(), `SELECT count(*) FROM public.migration_log WHERE tenant = 'tenant_0002'`).Scan(&n)
	if n != 0 {
		t.Fatal("tenant_0002's migration not rolled back")
	}
	noAdvisoryLocks(t, url)
}

type runResult struct {
	sum *fleet.Summary
	err error
}

// blockTenant2 makes tenant_0002's first migration wait on a table lock the
// test holds in the returned transaction (rolled back at cleanup), so the
// test knows which tenant is in flight and on which backend. wait polls
// pg_stat_activity until that backend waits and returns its pid.
func blockTenant2(t *testing.T, url string, opts *fleet.Options) (tx pgx.Tx, wait func() int) {
	t.Helper()
	ctx := context.Background()
	exec(t, url, `CREATE TABLE public.gate (id int)`)
	tx, err := conn(t, url).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Rollback(ctx) })
	if _, err := tx.Exec(ctx, `LOCK public.gate IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	set := setCopy()
	set["1_widgets.sql"].Data = []byte("DO $$ BEGIN IF current_schema() = 'tenant_0002' THEN PERFORM * FROM public.gate; END IF; END $$;\n" + string(set["1_widgets.sql"].Data))
	if opts.Migrations, err = runner.Load(set); err != nil {
		t.Fatal(err)
	}
	app := opts.Runner.AppliedBy
	w := conn(t, url)
	return tx, func() int {
		var pid int
		deadline := time.Now().Add(30 * time.Second)
		for pid == 0 && time.Now().Before(deadline) {
			w.QueryRow(ctx, `SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'`, app).Scan(&pid)
			time.Sleep(10 * time.Millisecond) // polling an observable state
		}
		if pid == 0 {
			t.Fatal("the worker never blocked")
		}
		return pid
	}
}

// TestSessionResetBetweenTenants: tenants share a worker's connection; a
// role one tenant's migration switched to (SET ROLE outlives its
// transaction) and its temporary tables must not reach the next tenant.
func TestSessionResetBetweenTenants(t *testing.T) {
	url := newTenantDB(t, 3)
	db := url[strings.LastIndex(url, "/")+1 : strings.Index(url, "?")]
	role := "r_" + db
	exec(t, url, fmt.Sprintf(`CREATE TABLE public.who (tenant text, usr text, temp_seen bool);
DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %[1]s) THEN CREATE ROLE %[2]s SUPERUSER NOLOGIN; END IF; END $$;`,
		quote(role), pgx.Identifier{role}.Sanitize()))
	var c counter
	opts := options(t, url, "fleet-reset", &c, 1)
	migs, err := runner.Load(fstest.MapFS{"1_who.sql": {Data: []byte(fmt.Sprintf(
		`INSERT INTO public.who SELECT current_schema(), current_user, to_regclass('pg_temp.leftover') IS NOT NULL;
CREATE TEMP TABLE IF NOT EXISTS leftover (id int);
SET ROLE %s;`, pgx.Identifier{role}.Sanitize()))}})
	if err != nil {
		t.Fatal(err)
	}
	opts.Migrations = migs
	if _, err := fleet.Run(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	rows, err := conn(t, url).Query(context.Background(), `SELECT tenant, usr, temp_seen, usr = session_user FROM public.who ORDER BY tenant`)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rows.Next() {
		var tenant, usr string
		var tempSeen, original bool
		if err := rows.Scan(&tenant, &usr, &tempSeen, &original); err != nil {
			t.Fatal(err)
		}
		n++
		if !original || tempSeen {
			t.Errorf("%s ran as %s (original user: %v), saw the previous tenant's temp table: %v", tenant, usr, original, tempSeen)
		}
	}
	if n != 3 {
		t.Fatalf("%d tenants ran, want 3", n)
	}
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
