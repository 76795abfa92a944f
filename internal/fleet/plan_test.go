package fleet_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/lockmigrate/lockmigrate/internal/fleet"
	"github.com/lockmigrate/lockmigrate/runner"
)

// planGroup is one expected group: its tenants, "version:mode" of each
// pending migration, how many have no history table, its notes and the
// problem kind of each tenant with one.
type planGroup struct {
	tenants        []string
	pending        string
	withoutHistory int
	notes          []string
	problems       map[string]runner.ValidationKind
}

func tenants(is ...int) []string {
	var out []string
	for _, i := range is {
		out = append(out, tenantName(i))
	}
	return out
}

func pendingOf(ms []runner.PlannedMigration) string {
	var parts []string
	for _, m := range ms {
		parts = append(parts, fmt.Sprintf("%d:%s", m.Version, m.Mode))
	}
	return strings.Join(parts, " ")
}

// makePlan plans the fleet on a connection of its own, counting the
// queries it sends, and checks that the plan counted the same.
func makePlan(t *testing.T, url string, o fleet.PlanOptions) (*fleet.Plan, error) {
	t.Helper()
	var qc counter
	c, err := connector(t, url, "fleet-plan", &qc)(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	o.Conn, o.Query, o.Logger = c, tenantsQuery, testLogger(t)
	if o.Migrations == nil {
		o.Migrations = migrations(t)
	}
	o.Runner.Table = table
	p, problems, err := fleet.MakePlan(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if int64(p.Queries) != qc.queries.Load() {
		t.Fatalf("the plan says %d queries, %d were sent", p.Queries, qc.queries.Load())
	}
	return p, problems
}

// notesAhead is the note of a tenant with versions vs applied by a newer
// release.
func notesAhead(vs ...int64) string {
	return fmt.Sprintf("the database has applied versions unknown to this migration set %v "+
		"(a newer release migrated it): a run logs a warning and continues", vs)
}

// TestMakePlan: 15 tenants in several states. Tenants whose pending lists
// (and problem kinds) are identical share a group; groups with problems
// come first, then the largest, then by first tenant; a group counts its
// tenants without a history table and merges their distinct notes; the
// current tenants are counted (those ahead listed), and the plan costs 2 +
// ceil(tenants with a history table / chunk size) queries. The problems
// error names each tenant with problems, up to PlanProblemTenants of them,
// then says how many more.
func TestMakePlan(t *testing.T) {
	const n = 15
	ctx := context.Background()
	url := newTenantDB(t, n)
	var c counter
	if _, err := fleet.Run(ctx, options(t, url, "fleet-plan-run", &c, 2)); err != nil {
		t.Fatal(err)
	}
	opts := fleet.PlanOptions{Runner: runner.Options{AllowOutOfOrder: true}}
	p, problems := makePlan(t, url, opts)
	if problems != nil || p.TenantsCurrent != n || p.Groups == nil || len(p.Groups) != 0 || p.Queries != 3 {
		t.Fatalf("all current: %+v, %v", p, problems)
	}
	if doc, _ := json.Marshal(p); !strings.Contains(string(doc), `"groups":[]`) {
		t.Fatalf("all current: JSON %s lacks an empty groups list", doc)
	}

	exec(t, url, `INSERT INTO tenant_0002.lockmigrate_history (version, name, checksum) VALUES (6, 'newer', 'n6');
DELETE FROM tenant_0003.lockmigrate_history WHERE version >= 4;
DELETE FROM tenant_0004.lockmigrate_history WHERE version >= 4;
DELETE FROM tenant_0005.lockmigrate_history WHERE version = 5;
UPDATE tenant_0006.lockmigrate_history SET checksum = 'edited' WHERE version = 2;
UPDATE tenant_0007.lockmigrate_history SET state = 'running', statements_done = 1 WHERE version = 5;
DROP TABLE tenant_0008.lockmigrate_history;
DROP TABLE tenant_0009.lockmigrate_history;
DELETE FROM tenant_0010.lockmigrate_history;
DELETE FROM tenant_0011.lockmigrate_history WHERE version = 5;
INSERT INTO tenant_0011.lockmigrate_history (version, name, checksum) VALUES (6, 'newer', 'n6');
DELETE FROM tenant_0012.lockmigrate_history WHERE version = 5;
INSERT INTO tenant_0012.lockmigrate_history (version, name, checksum) VALUES (7, 'newest', 'n7');
DELETE FROM tenant_0013.lockmigrate_history WHERE version = 5;
INSERT INTO tenant_0013.lockmigrate_history (version, name, checksum) VALUES (6, 'newer', 'n6')`)
	tx := "transaction"
	all := fmt.Sprintf("1:%s 2:%s 3:%s 4:%s 5:%s", tx, tx, tx, tx, tx)
	want := []planGroup{
		{tenants: tenants(6), problems: map[string]runner.ValidationKind{tenantName(6): runner.KindChecksumMismatch}},
		{tenants: tenants(7), problems: map[string]runner.ValidationKind{tenantName(7): runner.KindInterrupted}},
		{tenants: tenants(5, 11, 12, 13), pending: "5:" + tx, notes: []string{notesAhead(6), notesAhead(7)}},
		{tenants: tenants(8, 9, 10), pending: all, withoutHistory: 2},
		{tenants: tenants(3, 4), pending: "4:" + tx + " 5:" + tx},
	}
	// 13 tenants have a history table: 2 + ceil(13/500) queries, or
	// 2 + ceil(13/4) in chunks of 4.
	for _, chunk := range []struct{ size, queries int }{{0, 3}, {4, 6}} {
		o := opts
		o.ChunkSize = chunk.size
		p, problems := makePlan(t, url, o)
		if p.Queries != chunk.queries {
			t.Errorf("chunk size %d: %d queries, want %d", chunk.size, p.Queries, chunk.queries)
		}
		checkPlan(t, p, want)
		if !p.Listed || p.TenantsListed != n || p.TenantsTotal != n || p.TenantsCurrent != 4 ||
			!slices.Equal(p.TenantsAhead, tenants(2)) || p.Shard != 0 || p.Shards != 1 ||
			p.Transaction != runner.TransactionEach || p.HistoryTable != "<tenant>.lockmigrate_history" {
			t.Fatalf("plan %+v", p)
		}
		errs := unjoin(problems)
		var ve *runner.ValidationError
		if len(errs) != 2 || !strings.HasPrefix(errs[0].Error(), "tenant tenant_0006: validation failed (checksum_mismatch)") ||
			!strings.HasPrefix(errs[1].Error(), "tenant tenant_0007: validation failed (interrupted)") || !errors.As(problems, &ve) {
			t.Fatalf("problems %v", problems)
		}
	}

	t.Run("shard", func(t *testing.T) {
		o := opts
		o.Shard = fleet.Shard{Index: 1, Count: 3}
		p, _ := makePlan(t, url, o)
		var owned, grouped []string
		for i := 1; i <= n; i++ {
			if o.Shard.Owns(tenantName(i)) {
				owned = append(owned, tenantName(i))
			}
		}
		for _, g := range p.Groups {
			grouped = append(grouped, g.Tenants...)
		}
		slices.Sort(grouped)
		notCurrent := slices.DeleteFunc(slices.Clone(owned), func(s string) bool { return slices.Contains(tenants(1, 2, 14, 15), s) })
		if p.Shard != 1 || p.Shards != 3 || p.TenantsListed != n || p.TenantsTotal != len(owned) || !slices.Equal(grouped, notCurrent) {
			t.Fatalf("shard 1 of 3: %+v, grouped %v; want %v of %v", p, grouped, notCurrent, owned)
		}
	})

	t.Run("more tenants with problems than the error names", func(t *testing.T) {
		edited := setCopy()
		edited["2_gadgets.sql"].Data = []byte("CREATE TABLE gadgets (id bigint PRIMARY KEY);\n")
		migs, err := runner.Load(edited)
		if err != nil {
			t.Fatal(err)
		}
		o := opts
		o.Migrations = migs
		p, problems := makePlan(t, url, o)
		// Every tenant with version 2 applied: all but 8, 9 and 10.
		withProblems := tenants(1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 14, 15)
		var listed []string
		for _, g := range p.Groups {
			for tenant := range g.Problems {
				listed = append(listed, tenant)
			}
		}
		slices.Sort(listed)
		if !slices.Equal(listed, withProblems) {
			t.Fatalf("tenants with problems in the plan %v, want %v", listed, withProblems)
		}
		errs := unjoin(problems)
		if len(errs) != fleet.PlanProblemTenants+1 ||
			errs[fleet.PlanProblemTenants].Error() != "and 2 more tenants with problems (plan lists them all)" {
			t.Fatalf("problems: %d errors: %v", len(errs), problems)
		}
		for i, tenant := range withProblems[:fleet.PlanProblemTenants] {
			if !strings.HasPrefix(errs[i].Error(), "tenant "+tenant+": validation failed (checksum_mismatch): 2_gadgets.sql") {
				t.Errorf("problem %d: %v; want tenant %s's", i, errs[i], tenant)
			}
		}
	})
}

// checkPlan compares p's groups with want, in order.
func checkPlan(t *testing.T, p *fleet.Plan, want []planGroup) {
	t.Helper()
	if len(p.Groups) != len(want) {
		t.Fatalf("%d groups, want %d: %+v", len(p.Groups), len(want), p.Groups)
	}
	for i, g := range p.Groups {
		w := want[i]
		if !slices.Equal(g.Tenants, w.tenants) || pendingOf(g.Pending) != w.pending || g.WithoutHistory != w.withoutHistory ||
			!slices.Equal(g.Notes, w.notes) || len(g.Problems) != len(w.problems) {
			t.Fatalf("group %d: %+v\nwant %+v", i, g, w)
		}
		for tenant, kind := range w.problems {
			if msgs := g.Problems[tenant]; len(msgs) != 1 || !strings.HasPrefix(msgs[0], "validation failed ("+string(kind)+")") {
				t.Fatalf("group %d: %s's problems %q, want one %s", i, tenant, msgs, kind)
			}
		}
	}
}

func unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// TestMakePlanChunks: the history queries cover DefaultChunkSize tenants
// each, so 500 tenants with a history table cost 3 queries and 501 cost 4.
// The tenants' tables are copies of a migrated one's.
func TestMakePlanChunks(t *testing.T) {
	const n = fleet.DefaultChunkSize + 1
	ctx := context.Background()
	url := newTenantDB(t, n)
	var c counter
	o := options(t, url, "fleet-chunks", &c, 1)
	o.Query = `SELECT 'tenant_0001'`
	if _, err := fleet.Run(ctx, o); err != nil {
		t.Fatal(err)
	}
	exec(t, url, fmt.Sprintf(`DO $$ BEGIN
  FOR i IN 2..%d LOOP
    EXECUTE format('CREATE TABLE %%I.lockmigrate_history (LIKE tenant_0001.lockmigrate_history INCLUDING ALL)', 'tenant_' || lpad(i::text, 4, '0'));
    EXECUTE format('INSERT INTO %%I.lockmigrate_history SELECT * FROM tenant_0001.lockmigrate_history', 'tenant_' || lpad(i::text, 4, '0'));
  END LOOP;
END $$;
DELETE FROM tenant_0501.lockmigrate_history WHERE version = 5`, n))
	p, problems := makePlan(t, url, fleet.PlanOptions{})
	if problems != nil || p.Queries != 4 || p.TenantsTotal != n || p.TenantsCurrent != n-1 {
		t.Fatalf("501 tenants with a history table: %d queries, want 4; %+v, %v", p.Queries, p, problems)
	}
	checkPlan(t, p, []planGroup{{tenants: tenants(501), pending: "5:transaction"}})
	exec(t, url, `DROP TABLE tenant_0250.lockmigrate_history`)
	if p, _ = makePlan(t, url, fleet.PlanOptions{}); p.Queries != 3 || p.TenantsCurrent != n-2 {
		t.Fatalf("500 tenants with a history table: %d queries, want 3; %+v", p.Queries, p)
	}
}

// TestOfflinePlan: without a database, every tenant gets the plan of an
// empty schema, baseline included; the header is the online plan's.
func TestOfflinePlan(t *testing.T) {
	migs := migrations(t)
	shard := fleet.Shard{Index: 1, Count: 3}
	p, problems, err := fleet.OfflinePlan(migs, runner.Options{Table: table, BaselineVersion: 2}, shard)
	if err != nil || problems != nil {
		t.Fatalf("OfflinePlan: %v, %v", problems, err)
	}
	sp := p.EachTenant
	if p.Listed || p.Shard != 1 || p.Shards != 3 || p.Transaction != runner.TransactionEach || p.HistoryTable != "<tenant>.lockmigrate_history" ||
		p.Groups == nil || len(p.Groups) != 0 || p.TenantsTotal != 0 || sp == nil || sp.Schema != "<tenant>" || sp.Table != table ||
		pendingOf(sp.Pending) != "1:baseline 2:baseline 3:transaction 4:transaction 5:transaction" || len(sp.Notes) != 1 {
		t.Fatalf("offline plan %+v, each tenant %+v", p, sp)
	}
	doc, err := json.Marshal(p)
	if err != nil || !strings.Contains(string(doc), `"each_tenant":{`) || !strings.Contains(string(doc), `"groups":[]`) {
		t.Fatalf("offline JSON %s, %v", doc, err)
	}

	noTx := fstest.MapFS{"1_a.sql": {Data: []byte("-- lockmigrate:no-transaction\nCREATE INDEX CONCURRENTLY a ON t (id);\n")}}
	migs, err = runner.Load(noTx)
	if err != nil {
		t.Fatal(err)
	}
	p, problems, err = fleet.OfflinePlan(migs, runner.Options{Table: table, Transaction: runner.TransactionAll}, fleet.Shard{})
	var ve *runner.ValidationError
	if err != nil || p == nil || p.Shards != 1 || p.Transaction != runner.TransactionAll || !errors.As(problems, &ve) ||
		ve.Kind != runner.KindTransactionMode || len(p.EachTenant.Problems) != 1 {
		t.Fatalf("offline plan of a refused set: %+v, %v, %v", p, problems, err)
	}
	if p, _, err = fleet.OfflinePlan(migs, runner.Options{Table: table, OnLocked: "bogus"}, fleet.Shard{}); p != nil || err == nil {
		t.Fatalf("invalid options: %+v, %v", p, err)
	}
}

// TestPlanJSON: a plan's JSON is, field for field and in order, the
// "tenants" object plan --json gave before Plan existed (that command's
// types, copied here).
func TestPlanJSON(t *testing.T) {
	type tenantGroup struct {
		Tenants        []string                  `json:"tenants"`
		WithoutHistory int                       `json:"without_history_table"`
		Pending        []runner.PlannedMigration `json:"pending"`
		Notes          []string                  `json:"notes,omitempty"`
		Problems       map[string][]string       `json:"problems,omitempty"`
	}
	type tenantsPlan struct {
		HistoryTable   string                 `json:"history_table"`
		Transaction    runner.TransactionMode `json:"transaction"`
		Listed         bool                   `json:"listed"`
		EachTenant     *runner.SchemaPlan     `json:"each_tenant,omitempty"`
		Shard          int                    `json:"shard"`
		Shards         int                    `json:"shards"`
		TenantsListed  int                    `json:"tenants_listed"`
		TenantsTotal   int                    `json:"tenants_total"`
		TenantsCurrent int                    `json:"tenants_current"`
		TenantsAhead   []string               `json:"tenants_ahead,omitempty"`
		Queries        int                    `json:"queries"`
		Groups         []tenantGroup          `json:"groups"`
	}
	url := newTenantDB(t, 4)
	var c counter
	if _, err := fleet.Run(context.Background(), options(t, url, "fleet-plan-json", &c, 2)); err != nil {
		t.Fatal(err)
	}
	exec(t, url, `INSERT INTO tenant_0001.lockmigrate_history (version, name, checksum) VALUES (6, 'newer', 'n6');
UPDATE tenant_0002.lockmigrate_history SET checksum = 'edited' WHERE version = 2;
DROP TABLE tenant_0003.lockmigrate_history`)
	online, _ := makePlan(t, url, fleet.PlanOptions{Runner: runner.Options{BaselineVersion: 1}})
	offline, _, err := fleet.OfflinePlan(migrations(t), runner.Options{Table: table}, fleet.Shard{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []*fleet.Plan{online, offline} {
		old := tenantsPlan{HistoryTable: p.HistoryTable, Transaction: p.Transaction, Listed: p.Listed, EachTenant: p.EachTenant,
			Shard: p.Shard, Shards: p.Shards, TenantsListed: p.TenantsListed, TenantsTotal: p.TenantsTotal,
			TenantsCurrent: p.TenantsCurrent, TenantsAhead: p.TenantsAhead, Queries: p.Queries, Groups: []tenantGroup{}}
		for _, g := range p.Groups {
			old.Groups = append(old.Groups, tenantGroup{Tenants: g.Tenants, WithoutHistory: g.WithoutHistory, Pending: g.Pending,
				Notes: g.Notes, Problems: g.Problems})
		}
		want, err := json.MarshalIndent(old, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		got, err := json.MarshalIndent(p, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("plan JSON\n%s\nwant\n%s", got, want)
		}
	}
	if len(online.Groups) != 2 || len(online.TenantsAhead) != 1 || len(online.Groups[0].Problems) != 1 || len(online.Groups[1].Notes) != 1 {
		t.Fatalf("the online plan does not have every field filled: %+v", online)
	}
}
