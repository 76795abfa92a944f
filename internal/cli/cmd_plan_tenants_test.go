package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockmigrate/lockmigrate/internal/bintest"
	"github.com/lockmigrate/lockmigrate/internal/fleet"
	"github.com/lockmigrate/lockmigrate/internal/pgtest"
	"github.com/lockmigrate/lockmigrate/lock"
)

// planTenantSet is tenantMigrations plus a no-transaction file of two
// statements.
func planTenantSet() map[string]string {
	return bintest.With(tenantMigrations, "6_gadgets_idx.sql", "-- lockmigrate:no-transaction\n"+
		"CREATE INDEX CONCURRENTLY gadgets_id ON gadgets (id);\nINSERT INTO public.migration_log VALUES (current_schema(), 6);\n")
}

// subset is the files of set with a version up to max.
func subset(set map[string]string, maxVersion int) map[string]string {
	out := map[string]string{}
	for name, body := range set {
		var v int
		fmt.Sscanf(name, "%d_", &v)
		if v <= maxVersion {
			out[name] = body
		}
	}
	return out
}

func tenantRange(from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf("tenant_%04d", i))
	}
	return out
}

// planJSON is the part of plan --json a tenants test reads.
type planJSON struct {
	DatabaseConsulted bool  `json:"database_consulted"`
	Schemas           []any `json:"schemas"`
	Tenants           *struct {
		HistoryTable   string `json:"history_table"`
		Listed         bool   `json:"listed"`
		TenantsListed  int    `json:"tenants_listed"`
		TenantsTotal   int    `json:"tenants_total"`
		TenantsCurrent int    `json:"tenants_current"`
		Queries        int    `json:"queries"`
		EachTenant     *struct {
			Pending []planJSONMig `json:"pending"`
		} `json:"each_tenant"`
		Groups []struct {
			Tenants        []string            `json:"tenants"`
			WithoutHistory int                 `json:"without_history_table"`
			Pending        []planJSONMig       `json:"pending"`
			Problems       map[string][]string `json:"problems"`
		} `json:"groups"`
	} `json:"tenants"`
}

type planJSONMig struct {
	Version    int64  `json:"version"`
	Mode       string `json:"mode"`
	Statements int    `json:"statements"`
}

func (m planJSONMig) String() string { return fmt.Sprintf("%d:%s:%d", m.Version, m.Mode, m.Statements) }

// group is one expected group: its tenants and "version:mode:statements"
// of each pending migration.
type group struct {
	tenants []string
	pending string
}

func pendingString(ms []planJSONMig) string {
	var parts []string
	for _, m := range ms {
		parts = append(parts, m.String())
	}
	return strings.Join(parts, " ")
}

// TestPlanTenants: 30 tenants in four states (10 current, 5 at version 3,
// 5 at version 2, 10 never migrated, without a history table). plan groups
// the 20 not current by identical pending lists in 3 queries, shards and
// baselines them as a run would, names the tenants a run would stop on
// (exit 5, with validate's messages), plans offline once for every tenant,
// takes no lock and changes nothing; then a real run applies exactly what
// the plan listed.
func TestPlanTenants(t *testing.T) {
	ctx := context.Background()
	url, env := tenantDB(t, 30)
	set := planTenantSet()
	full := bintest.WriteDir(t, set)
	env = bintest.With(env, "LOCKMIGRATE_DIR", full)
	only := func(to int) string {
		return fmt.Sprintf(`SELECT nspname FROM pg_namespace WHERE nspname LIKE 'tenant\_%%' AND nspname <= 'tenant_%04d'`, to)
	}
	for _, step := range []struct{ upTo, tenants int }{{2, 20}, {3, 15}, {6, 10}} {
		r := runIn(t, ctx, bintest.With(env, "LOCKMIGRATE_DIR", bintest.WriteDir(t, subset(set, step.upTo)), "LOCKMIGRATE_TENANTS_QUERY", only(step.tenants)))
		if r.Code != 0 {
			t.Fatalf("migrate tenants 1..%d to version %d: exit %d\n%s", step.tenants, step.upTo, r.Code, r.Stderr)
		}
	}
	check := pgtest.Connect(t, url)
	tx, nt := "transaction", "no-transaction"
	from3 := fmt.Sprintf("3:%s:0 4:%s:0 5:%s:0 6:%s:2", tx, tx, tx, nt)
	from4 := fmt.Sprintf("4:%s:0 5:%s:0 6:%s:2", tx, tx, nt)
	all := "1:" + tx + ":0 2:" + tx + ":0 " + from3
	edited := bintest.WriteDir(t, bintest.With(set, "2_gadgets.sql", "CREATE TABLE gadgets (id bigint PRIMARY KEY);\nINSERT INTO public.migration_log VALUES (current_schema(), 2);\n"))
	shard1 := func(names []string) []string {
		return slices.DeleteFunc(slices.Clone(names), func(n string) bool { return fleet.ShardOf(n, 3) != 1 })
	}
	tests := []struct {
		name      string
		env       []string
		setup     string // SQL run before plan, undone by undo
		undo      string
		code      int
		total     int
		current   int
		groups    []group // in the expected order
		want      []string
		problems  map[string]string // tenant → a problem kind it must have
		sameAsVal []string          // tenants whose problems must read as validate's
		more      string            // in the validation failed event, beyond the 10 tenants it names
	}{
		{name: "groups", total: 30, current: 10,
			groups: []group{{tenantRange(21, 30), all}, {tenantRange(11, 15), from4}, {tenantRange(16, 20), from3}},
			want: []string{"tenants: 30 listed, 30 in this shard, 10 current, 20 not current; history table <tenant>.lockmigrate_history, transaction mode each",
				"histories read without any lock in 3 queries",
				"10 tenant(s): versions 1..6 (6 migrations: 5 transaction, 1 no-transaction with 2 statements); 10 without a history table yet",
				"5 tenant(s): versions 4..6 (3 migrations: 2 transaction, 1 no-transaction with 2 statements)",
				"tenant_0011, tenant_0012, tenant_0013, tenant_0014, tenant_0015",
				"6 gadgets_idx no-transaction 2", "20 tenant(s) would be migrated"}},
		{name: "shard 1 of 3", env: []string{"LOCKMIGRATE_SHARDS", "3", "JOB_COMPLETION_INDEX", "1"},
			total: len(shard1(tenantRange(1, 30))), current: len(shard1(tenantRange(1, 10))),
			groups: []group{{shard1(tenantRange(21, 30)), all}, {shard1(tenantRange(11, 15)), from4}, {shard1(tenantRange(16, 20)), from3}},
			want:   []string{"in this shard (shard 1 of 3)"}},
		{name: "baseline", env: []string{"LOCKMIGRATE_BASELINE_VERSION", "3"}, total: 30, current: 10,
			groups: []group{{tenantRange(21, 30), "1:baseline:0 2:baseline:0 3:baseline:0 " + from4}, {tenantRange(11, 15), from4}, {tenantRange(16, 20), from3}},
			want: []string{"10 tenant(s): versions 1..6 (6 migrations: 3 baseline (not run), 2 transaction, 1 no-transaction with 2 statements)",
				"note: LOCKMIGRATE_BASELINE_VERSION=3 and the history is empty: a run records 3 migration(s) (versions 1, 2, 3) as baseline",
				"note: LOCKMIGRATE_BASELINE_VERSION=3 is ignored: the history is not empty", "1 widgets baseline (not run) -"}},
		{name: "running row and out of order",
			setup: `UPDATE tenant_0012.lockmigrate_history SET state = 'running' WHERE version = 3;
DELETE FROM tenant_0004.lockmigrate_history WHERE version = 4 RETURNING 1`,
			undo: `UPDATE tenant_0012.lockmigrate_history SET state = 'applied' WHERE version = 3;
INSERT INTO tenant_0004.lockmigrate_history SELECT * FROM tenant_0005.lockmigrate_history WHERE version = 4`,
			code: exitValidation, total: 30, current: 9,
			groups: []group{{[]string{"tenant_0004"}, "4:transaction:0"}, {[]string{"tenant_0012"}, from4},
				{tenantRange(21, 30), all}, {tenantRange(16, 20), from3}, {[]string{"tenant_0011", "tenant_0013", "tenant_0014", "tenant_0015"}, from4}},
			problems: map[string]string{"tenant_0004": "out_of_order", "tenant_0012": "interrupted"},
			want: []string{"tenant_0004: problem: validation failed (out_of_order): 4_price.sql: pending migration is older than the highest applied version 6",
				"tenant_0012: problem: validation failed (interrupted): 3_widget_name.sql: in progress or interrupted:",
				"a run would stop 2 tenant(s) on the problem(s) above (exit 5 here) and migrate the other 19"},
			sameAsVal: []string{"tenant_0004"}},
		{name: "edited file", env: []string{"LOCKMIGRATE_DIR", edited}, code: exitValidation, total: 30, current: 0,
			groups:    []group{{tenantRange(1, 10), ""}, {tenantRange(11, 15), from4}, {tenantRange(16, 20), from3}, {tenantRange(21, 30), all}},
			problems:  map[string]string{"tenant_0001": "checksum_mismatch", "tenant_0020": "checksum_mismatch"},
			want:      []string{"tenant_0001: problem: validation failed (checksum_mismatch): 2_gadgets.sql: file changed after it was applied"},
			sameAsVal: []string{"tenant_0001", "tenant_0016"}, more: "and 10 more tenants with problems (plan lists them all)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.setup != "" {
				if _, err := check.Exec(ctx, tt.setup); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() {
					if _, err := check.Exec(ctx, tt.undo); err != nil {
						t.Fatal(err)
					}
				})
			}
			e := bintest.With(env, tt.env...)
			tables := countTables(t, check)
			r := runIn(t, ctx, e, "plan")
			t.Logf("plan: exit %d\n%s", r.Code, r.Stdout)
			if r.Code != tt.code {
				t.Fatalf("exit %d, want %d\n%s", r.Code, tt.code, r.Stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(squash(r.Stdout), w) {
					t.Errorf("stdout lacks %q", w)
				}
			}
			j := runIn(t, ctx, e, "plan", "--json")
			var rep planJSON
			if err := json.Unmarshal([]byte(j.Stdout), &rep); err != nil || j.Code != tt.code || rep.Tenants == nil {
				t.Fatalf("plan --json: exit %d, %v\n%s", j.Code, err, j.Stdout)
			}
			tp := rep.Tenants
			if !rep.DatabaseConsulted || len(rep.Schemas) != 0 || !tp.Listed || tp.TenantsListed != 30 || tp.TenantsTotal != tt.total ||
				tp.TenantsCurrent != tt.current || tp.Queries != 3 || tp.HistoryTable != "<tenant>.lockmigrate_history" {
				t.Fatalf("plan --json: %s", j.Stdout)
			}
			var got []group
			for _, g := range tp.Groups {
				got = append(got, group{g.Tenants, pendingString(g.Pending)})
				if want := 0; slices.Equal(g.Tenants, tenantRange(21, 30)) || slices.Equal(g.Tenants, shard1(tenantRange(21, 30))) {
					if g.WithoutHistory != len(g.Tenants) {
						t.Errorf("group %v: %d without a history table", g.Tenants, g.WithoutHistory)
					}
				} else if g.WithoutHistory != want {
					t.Errorf("group %v: %d without a history table", g.Tenants, g.WithoutHistory)
				}
				for tenant, kind := range tt.problems {
					if slices.Contains(g.Tenants, tenant) && !strings.Contains(strings.Join(g.Problems[tenant], "\n"), "("+kind+")") {
						t.Errorf("%s: problems %q, want %s", tenant, g.Problems[tenant], kind)
					}
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.groups) {
				t.Fatalf("groups\n %v\nwant\n %v", got, tt.groups)
			}
			ev := validationError(t, r)
			if !strings.Contains(ev, tt.more) || strings.Count(ev, ": validation failed (") != min(len(tt.problems), 10) && tt.more == "" {
				t.Errorf("validation failed event: %q", ev)
			}
			for tenant := range tt.problems {
				if (tt.more == "" || tenant <= "tenant_0010") && !strings.Contains(ev, "tenant "+tenant+": validation failed (") {
					t.Errorf("validation failed event does not name %s: %q", tenant, ev)
				}
			}
			// A tenant's problem reads as validate's on that tenant alone.
			for _, tenant := range tt.sameAsVal {
				v := runIn(t, ctx, bintest.With(e, "LOCKMIGRATE_TENANTS_QUERY", "", "LOCKMIGRATE_SCHEMA", tenant), "validate")
				want := validationError(t, v)
				var probs []string
				for _, g := range tp.Groups {
					probs = append(probs, g.Problems[tenant]...)
				}
				if v.Code != exitValidation || want == "" || strings.Join(probs, "\n") != want {
					t.Errorf("%s: plan says %q, validate (exit %d) %q", tenant, probs, v.Code, want)
				}
			}
			if n := countTables(t, check); n != tables {
				t.Errorf("plan changed the database: %d tables before, %d after", tables, n)
			}
		})
	}

	t.Run("offline", func(t *testing.T) {
		for _, bv := range []string{"0", "2"} {
			e := bintest.With(env, "DATABASE_URL", "", "LOCKMIGRATE_BASELINE_VERSION", bv)
			r := runIn(t, ctx, e, "plan")
			t.Logf("offline plan, baseline %s: exit %d\n%s", bv, r.Code, r.Stdout)
			want := []string{"the tenant list (LOCKMIGRATE_TENANTS_QUERY) needs one",
				"each tenant the query returns would get, as on an empty schema (history table <tenant>.lockmigrate_history",
				"6 gadgets_idx no-transaction 2", "6 migration(s) would run, in this order, in each tenant"}
			if bv == "2" {
				want = []string{"1 widgets baseline (not run) -", "3 widget_name transaction -",
					"2 migration(s) would be recorded as baseline (not run), then 4 would run, in this order, in each tenant"}
			}
			for _, w := range want {
				if r.Code != 0 || !strings.Contains(squash(r.Stdout), w) {
					t.Errorf("baseline %s: exit %d, stdout lacks %q", bv, r.Code, w)
				}
			}
			var rep planJSON
			j := runIn(t, ctx, e, "plan", "--json")
			if err := json.Unmarshal([]byte(j.Stdout), &rep); err != nil || rep.DatabaseConsulted || rep.Tenants == nil ||
				rep.Tenants.Listed || rep.Tenants.EachTenant == nil || len(rep.Tenants.EachTenant.Pending) != 6 {
				t.Fatalf("offline --json: %v\n%s", err, j.Stdout)
			}
			if m := rep.Tenants.EachTenant.Pending[1].Mode; (bv == "2") != (m == "baseline") {
				t.Errorf("baseline %s: version 2 mode %q", bv, m)
			}
		}
	})

	// No lock: plan succeeds while the test holds a tenant's advisory lock
	// and blocks plan's read of another tenant's history; caught there,
	// plan's backend holds no advisory lock and only AccessShareLocks.
	t.Run("takes no lock", func(t *testing.T) {
		holder := pgtest.Connect(t, url)
		pgtest.MustLock(t, holder, lock.DefaultKey("tenant_0016", "lockmigrate_history"))
		blocker := pgtest.Connect(t, url)
		btx, err := blocker.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := btx.Exec(ctx, `LOCK TABLE tenant_0013.lockmigrate_history IN ACCESS EXCLUSIVE MODE`); err != nil {
			t.Fatal(err)
		}
		tables := countTables(t, check)
		done := make(chan result, 1)
		go func() { done <- runIn(t, ctx, bintest.With(env, "POD_NAME", "plan-probe"), "plan", "--json") }()
		pid := waitForLockWait(t, check, "lockmigrate/plan-probe")
		rows, err := check.Query(ctx, `SELECT locktype, mode, granted FROM pg_locks WHERE pid = $1`, pid)
		if err != nil {
			t.Fatal(err)
		}
		type lk struct {
			Type, Mode string
			Granted    bool
		}
		locks, err := pgx.CollectRows(rows, pgx.RowToStructByPos[lk])
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range locks {
			if l.Type == "advisory" || (l.Type == "relation" && l.Mode != "AccessShareLock") {
				t.Errorf("plan's backend %d holds or wants %+v", pid, l)
			}
		}
		t.Logf("plan's backend %d while blocked: %+v", pid, locks)
		if err := btx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		r := <-done
		var rep planJSON
		if err := json.Unmarshal([]byte(r.Stdout), &rep); err != nil || r.Code != 0 || rep.Tenants.TenantsCurrent != 10 {
			t.Fatalf("plan: exit %d, %v\n%s%s", r.Code, err, r.Stdout, r.Stderr)
		}
		assertHolds(t, holder, lock.DefaultKey("tenant_0016", "lockmigrate_history"))
		var advisory, histories int
		if err := check.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'),
		  (SELECT count(*) FROM pg_tables WHERE tablename = 'lockmigrate_history' AND schemaname BETWEEN 'tenant_0021' AND 'tenant_0030')`).Scan(&advisory, &histories); err != nil {
			t.Fatal(err)
		}
		if advisory != 1 || histories != 0 || countTables(t, check) != tables {
			t.Fatalf("after plan: %d advisory locks (want the test's 1), %d history tables in never-migrated tenants", advisory, histories)
		}
	})

	// A real run applies exactly what the plan listed, tenant by tenant.
	var rep planJSON
	j := runIn(t, ctx, env, "plan", "--json")
	if err := json.Unmarshal([]byte(j.Stdout), &rep); err != nil || j.Code != 0 {
		t.Fatalf("plan --json: exit %d, %v", j.Code, err)
	}
	var planned []string
	for _, g := range rep.Tenants.Groups {
		for _, tenant := range g.Tenants {
			for _, m := range g.Pending {
				planned = append(planned, fmt.Sprintf("%s/%d", tenant, m.Version))
			}
		}
	}
	if _, err := check.Exec(ctx, `CREATE TABLE before_run AS SELECT * FROM public.migration_log`); err != nil {
		t.Fatal(err)
	}
	if r := runIn(t, ctx, env); r.Code != 0 {
		t.Fatalf("migrate: exit %d\n%s", r.Code, r.Stderr)
	}
	rows, err := check.Query(ctx, `SELECT tenant || '/' || version FROM (SELECT * FROM public.migration_log EXCEPT ALL SELECT * FROM before_run) x ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	applied, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(planned)
	if !slices.Equal(applied, planned) || len(planned) != 10*6+5*3+5*4 {
		t.Fatalf("the run applied %d (%v),\nthe plan listed %d (%v)", len(applied), applied, len(planned), planned)
	}
}

// waitForLockWait polls until a backend of application app waits for a
// lock, and returns its pid.
func waitForLockWait(t testing.TB, conn *pgx.Conn, app string) int32 {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var pid int32
		err := conn.QueryRow(context.Background(), `SELECT pid FROM pg_stat_activity
		  WHERE application_name = $1 AND wait_event_type = 'Lock'`, app).Scan(&pid)
		if err == nil {
			return pid
		}
		if err != pgx.ErrNoRows {
			t.Fatal(err)
		}
	}
	t.Fatalf("no session %s waited for a lock within 30s", app)
	return 0
}
