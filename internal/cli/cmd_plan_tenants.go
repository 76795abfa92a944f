package cli

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/lockmigrate/lockmigrate/internal/fleet"
	"github.com/lockmigrate/lockmigrate/internal/listfmt"
	"github.com/lockmigrate/lockmigrate/runner"
)

// plan in multi-tenant mode (LOCKMIGRATE_TENANTS_QUERY): the tenants of
// this runner's shard, which of them the fleet's lock-free survey finds
// current, and what would run in each of the others, grouped by identical
// pending lists so that thousands of tenants stay readable.

// listedTenants is how many tenant names the text output gives per group;
// --json gives them all.
const listedTenants = 20

// planTenants makes the multi-tenant plan (package fleet's). The returned
// problems name their tenants; err is what kept the plan from being made.
func (a *app) planTenants(ctx context.Context, online bool) (rep *planReport, problems, err error) {
	o := a.opts.fleet
	var p *fleet.Plan
	if !online {
		p, problems, err = fleet.OfflinePlan(a.migs, o.Runner, o.Shard)
	} else {
		err = a.withConn(ctx, func(conn *pgx.Conn) error {
			var err error
			p, problems, err = fleet.MakePlan(ctx, fleet.PlanOptions{Conn: conn, Query: o.Query, Migrations: a.migs,
				Runner: o.Runner, Shard: o.Shard, Logger: a.log})
			return err
		})
	}
	if err != nil {
		return nil, nil, err
	}
	return &planReport{DatabaseConsulted: online, Schemas: []planSection{}, Tenants: p}, problems, nil
}

func writeTenantsPlan(w io.Writer, tp *fleet.Plan) {
	if !tp.Listed {
		writeTenantsPlanOffline(w, tp)
		return
	}
	shard := ""
	if tp.Shards > 1 {
		shard = fmt.Sprintf(" (shard %d of %d)", tp.Shard, tp.Shards)
	}
	notCurrent := tp.TenantsTotal - tp.TenantsCurrent
	fmt.Fprintf(w, "tenants: %d listed, %d in this shard%s, %d current, %d not current; history table %s, transaction mode %s\n",
		tp.TenantsListed, tp.TenantsTotal, shard, tp.TenantsCurrent, notCurrent, tp.HistoryTable, tp.Transaction)
	fmt.Fprintf(w, "database: histories read without any lock in %d queries on one connection; tenant locks not checked\n", tp.Queries)
	if n := len(tp.TenantsAhead); n > 0 {
		fmt.Fprintf(w, "note: %d current tenant(s) have versions unknown to this migration set (a newer release migrated them)\n", n)
	}
	stopped := 0
	// writePending ends a non-empty table with an empty line already.
	separate := func(i int) {
		if i == 0 || len(tp.Groups[i-1].Pending) == 0 {
			fmt.Fprintln(w)
		}
	}
	for i, g := range tp.Groups {
		separate(i)
		stopped += writeTenantGroup(w, g)
	}
	if len(tp.Groups) > 0 {
		separate(len(tp.Groups))
	}
	switch {
	case notCurrent == 0:
		fmt.Fprintln(w, "nothing would run: every tenant is up to date")
	case stopped > 0:
		fmt.Fprintf(w, "a run would stop %d tenant(s) on the problem(s) above (exit 5 here) and migrate the other %d\n", stopped, notCurrent-stopped)
	default:
		fmt.Fprintf(w, "%d tenant(s) would be migrated\n", notCurrent)
	}
}

// writeTenantsPlanOffline is the plan without a database: what every
// tenant would get on an empty schema.
func writeTenantsPlanOffline(w io.Writer, tp *fleet.Plan) {
	fmt.Fprintln(w, "database: not consulted (no DATABASE_URL, DATABASE_URL_FILE or PG* connection variable is set);\n"+
		"          the tenant list (LOCKMIGRATE_TENANTS_QUERY) needs one")
	sp := tp.EachTenant
	fmt.Fprintf(w, "each tenant the query returns would get, as on an empty schema (history table %s, "+
		"a lock per tenant, transaction mode %s):\n", tp.HistoryTable, tp.Transaction)
	writeNotesProblems(w, "", sp.Notes, sp.Problems)
	writePending(w, "", sp.Pending)
	if len(sp.Problems) > 0 {
		fmt.Fprintf(w, "a run would stop on the problem(s) above in every tenant and apply nothing there; %s pending\n", countMigrations(sp.Pending))
	} else {
		fmt.Fprintf(w, "%s, in this order, in each tenant\n", wouldRun(sp.Pending))
	}
}

// writeTenantGroup prints one group of tenants and returns how many of them
// a run would stop on problems.
func writeTenantGroup(w io.Writer, g fleet.TenantGroup) (stopped int) {
	fmt.Fprintf(w, "%d tenant(s): %s", len(g.Tenants), describePending(g.Pending))
	if g.WithoutHistory > 0 {
		fmt.Fprintf(w, "; %d without a history table yet", g.WithoutHistory)
	}
	fmt.Fprintln(w)
	if len(g.Problems) > 0 {
		stopped = len(g.Tenants)
		fmt.Fprintln(w, "  a run would stop on these problems in each of them (the tenant fails; the others go on):")
		for i, t := range g.Tenants {
			if i == listedTenants {
				fmt.Fprintf(w, "  and %d more tenant(s) (--json lists them all)\n", len(g.Tenants)-listedTenants)
				break
			}
			for _, p := range g.Problems[t] {
				fmt.Fprintf(w, "  %s: problem: %s\n", t, p)
			}
		}
	} else {
		fmt.Fprintf(w, "  %s\n", listNames(g.Tenants))
	}
	writeNotesProblems(w, "  ", g.Notes, nil)
	writePending(w, "  ", g.Pending)
	return stopped
}

// listNames lists up to listedTenants names, then how many more.
func listNames(names []string) string {
	if len(names) <= listedTenants {
		return strings.Join(names, ", ")
	}
	return strings.Join(names[:listedTenants], ", ") + fmt.Sprintf(", and %d more (--json lists them all)", len(names)-listedTenants)
}

// describePending summarises a pending list: "versions 4..5 (2 migrations:
// 1 transaction, 1 no-transaction with 3 statements)".
func describePending(ms []runner.PlannedMigration) string {
	if len(ms) == 0 {
		return "no migration pending"
	}
	var versions string
	contiguous := true
	for i := 1; i < len(ms); i++ {
		contiguous = contiguous && ms[i].Version == ms[i-1].Version+1
	}
	switch {
	case len(ms) == 1:
		versions = fmt.Sprintf("version %d", ms[0].Version)
	case contiguous:
		versions = fmt.Sprintf("versions %d..%d", ms[0].Version, ms[len(ms)-1].Version)
	default:
		vs := make([]int64, len(ms))
		for i, m := range ms {
			vs[i] = m.Version
		}
		versions = "versions " + listfmt.Versions(vs)
	}
	count := map[string]int{}
	statements := 0
	for _, m := range ms {
		count[m.Mode]++
		statements += m.Statements
	}
	var parts []string
	for _, mode := range []string{runner.ModeBaseline, runner.ModeTransaction, runner.ModeSharedTransaction, runner.ModeNoTransaction} {
		if n := count[mode]; n > 0 {
			part := fmt.Sprintf("%d %s", n, modeLabel(mode))
			if mode == runner.ModeNoTransaction {
				part += fmt.Sprintf(" with %d statements", statements)
			}
			parts = append(parts, part)
		}
	}
	return fmt.Sprintf("%s (%s: %s)", versions, countMigrations(ms), strings.Join(parts, ", "))
}

func countMigrations(ms []runner.PlannedMigration) string {
	if len(ms) == 1 {
		return "1 migration"
	}
	return fmt.Sprintf("%d migrations", len(ms))
}
