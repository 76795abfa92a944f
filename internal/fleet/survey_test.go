package fleet_test

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5"

	"github.com/lockmigrate/lockmigrate/internal/fleet"
	"github.com/lockmigrate/lockmigrate/runner"
)

// TestSurveyKeepRows: with KeepRows the survey returns each pending
// tenant's full history rows, exactly what a direct read of its table
// returns, from its own chunk queries (2 + ceil(tenants with a table /
// chunk size) queries, none per tenant); the verdicts are those of the
// brief survey the fleet runs. A chunk it cannot read is an error naming
// its tenants.
func TestSurveyKeepRows(t *testing.T) {
	const n = 7
	ctx := context.Background()
	url := newTenantDB(t, n)
	var c counter
	if _, err := fleet.Run(ctx, options(t, url, "fleet-keeprows", &c, 2)); err != nil {
		t.Fatal(err)
	}
	// 1, 2: current; 3: versions 4 and 5 missing; 4: a running row;
	// 5: a changed checksum; 6: an empty history table; 7: no table.
	exec(t, url, `DELETE FROM tenant_0003.lockmigrate_history WHERE version >= 4;
UPDATE tenant_0004.lockmigrate_history SET state = 'running', statements_done = 1 WHERE version = 5;
UPDATE tenant_0005.lockmigrate_history SET checksum = 'edited' WHERE version = 2;
DELETE FROM tenant_0006.lockmigrate_history;
DROP TABLE tenant_0007.lockmigrate_history`)
	check := conn(t, url)
	var brief, kept *fleet.Survey
	for _, keep := range []bool{false, true} {
		var qc counter
		control, err := connector(t, url, "fleet-survey", &qc)(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { control.Close(context.Background()) })
		sv, err := fleet.Surveyor{Conn: control, Query: tenantsQuery, Table: table, Migrations: migrations(t),
			ChunkSize: 2, KeepRows: keep}.Survey(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// 6 tenants have a table: 2 + ceil(6/2) queries.
		if sv.Queries != 5 || qc.queries.Load() != 5 {
			t.Fatalf("keep %v: %d queries reported, %d sent; want 5", keep, sv.Queries, qc.queries.Load())
		}
		if keep {
			kept = sv
		} else {
			brief = sv
		}
	}
	wantPending := []string{tenantName(3), tenantName(4), tenantName(5), tenantName(6), tenantName(7)}
	if !slices.Equal(brief.Pending, wantPending) || !slices.Equal(kept.Pending, wantPending) || brief.Rows != nil {
		t.Fatalf("pending: brief %v (rows %v), kept %v; want %v", brief.Pending, brief.Rows, kept.Pending, wantPending)
	}
	if _, ok := kept.Rows[tenantName(7)]; ok || len(kept.Rows) != 4 {
		t.Fatalf("rows kept for %d tenants (%v); want the 4 pending tenants with a table", len(kept.Rows), keys(kept.Rows))
	}
	for _, tenant := range wantPending[:4] {
		rows, err := check.Query(ctx, `SELECT version, name, checksum, applied_at, duration_ms, applied_by,
       coalesce(run_id::text, ''), state, statements_done FROM `+pgx.Identifier{tenant, table}.Sanitize()+` ORDER BY version`)
		if err != nil {
			t.Fatal(err)
		}
		want, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (runner.HistoryRow, error) {
			var h runner.HistoryRow
			err := row.Scan(&h.Version, &h.Name, &h.Checksum, &h.AppliedAt, &h.DurationMS, &h.AppliedBy, &h.RunID, &h.State, &h.StatementsDone)
			return h, err
		})
		if err != nil {
			t.Fatal(err)
		}
		got := kept.Rows[tenant]
		if len(got) != len(want) {
			t.Fatalf("%s: %d rows, want %d", tenant, len(got), len(want))
		}
		for i := range want {
			if !got[i].AppliedAt.Equal(want[i].AppliedAt) {
				t.Fatalf("%s row %d: applied_at %v, want %v", tenant, i, got[i].AppliedAt, want[i].AppliedAt)
			}
			got[i].AppliedAt = want[i].AppliedAt // compared with Equal above (locations differ)
			if got[i] != want[i] {
				t.Fatalf("%s row %d: %+v, want %+v", tenant, i, got[i], want[i])
			}
		}
	}
	if r := kept.Rows[tenantName(4)]; len(r) != 5 || r[4].State != runner.StateRunning || r[4].StatementsDone != 1 || r[4].AppliedBy != "fleet-keeprows" {
		t.Fatalf("tenant_0004 rows %+v", r)
	}

	// A history table the brief survey can read but the full one cannot
	// (a table of another shape) leaves it to the runners in a run, and is
	// an error naming the chunk's tenants with KeepRows.
	exec(t, url, `ALTER TABLE tenant_0003.lockmigrate_history DROP COLUMN applied_by`)
	control := conn(t, url)
	if _, err := (fleet.Surveyor{Conn: control, Query: tenantsQuery, Table: table, Migrations: migrations(t), ChunkSize: 2}).Survey(ctx); err != nil {
		t.Fatalf("brief survey: %v", err)
	}
	_, err := fleet.Surveyor{Conn: control, Query: tenantsQuery, Table: table, Migrations: migrations(t), ChunkSize: 2, KeepRows: true}.Survey(ctx)
	if err == nil || !strings.Contains(err.Error(), "tenants tenant_0003 to tenant_0004") || !strings.Contains(err.Error(), "applied_by") {
		t.Fatalf("KeepRows over an unreadable chunk: %v", err)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestSurveyPhase: a tenant is current for the phase a run applies. With
// a contract file pending everywhere, an expand run finds every tenant
// current (no tenant runner is started, as each would answer up_to_date)
// while an "all" or contract run finds them pending; a contract file left
// running is the contract run's business; a changed checksum is pending in
// every phase.
func TestSurveyPhase(t *testing.T) {
	const n = 3
	ctx := context.Background()
	url := newTenantDB(t, n)
	var c counter
	if _, err := fleet.Run(ctx, options(t, url, "fleet-phase", &c, 2)); err != nil {
		t.Fatal(err)
	}
	set := maps.Clone(tenantSet)
	set["6_drop_name.sql"] = &fstest.MapFile{Data: []byte(runner.PhaseDirective + "\nALTER TABLE widgets DROP COLUMN name;\n")}
	migs, err := runner.Load(set)
	if err != nil {
		t.Fatal(err)
	}
	exec(t, url, `INSERT INTO tenant_0002.lockmigrate_history (version, name, checksum, state, applied_by)
  SELECT 6, 'drop_name', 'x', 'running', 'other' FROM tenant_0002.lockmigrate_history WHERE version = 1;
UPDATE tenant_0003.lockmigrate_history SET checksum = 'edited' WHERE version = 2`)
	all := []string{tenantName(1), tenantName(2), tenantName(3)}
	for _, tt := range []struct {
		phase   runner.Phase
		pending []string
	}{
		{runner.PhaseExpand, []string{tenantName(3)}},
		{runner.PhaseAll, all},
		{"", all},
		{runner.PhaseContract, all},
	} {
		sv, err := fleet.Surveyor{Conn: conn(t, url), Query: tenantsQuery, Table: table, Migrations: migs, Phase: tt.phase}.Survey(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(sv.Pending, tt.pending) {
			t.Errorf("phase %q: pending %v, want %v", tt.phase, sv.Pending, tt.pending)
		}
	}
	// The run: only tenant 3 gets a runner (and fails on its checksum); the
	// others are current on the fast path.
	opts := options(t, url, "fleet-phase-expand", &c, 2)
	opts.Migrations, opts.Runner.Phase = migs, runner.PhaseExpand
	sum, _ := fleet.Run(ctx, opts)
	if sum.Current != 2 || sum.Failed != 1 || sum.Applied != 0 {
		t.Fatalf("expand run: %+v", sum)
	}
}
