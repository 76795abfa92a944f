package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/lockmigrate/lockmigrate/internal/dbconn"

	"github.com/lockmigrate/lockmigrate/runner"
)

// plan in multi-tenant mode (LOCKMIGRATE_TENANTS_QUERY): the tenants of
// this runner's shard, which of them the fleet's lock-free survey finds
// current, and what would run in each of the others, grouped by identical
// pending lists so that thousands of tenants stay readable.

// listedTenants is how many tenant names the text output gives per group;
// --json gives them all.
const listedTenants = 20

// loggedProblemTenants is how many tenants' problems the "validation
// failed" event carries; the text output and --json have the others.
const loggedProblemTenants = 10

// tenantsPlan is plan's report of a multi-tenant run.
type tenantsPlan struct {
	// HistoryTable is "<tenant>.<table>": each tenant has its own.
	HistoryTable string                 `json:"history_table"`
	Transaction  runner.TransactionMode `json:"transaction"`
	// Listed is false offline: the tenants query needs a database, and
	// EachTenant is what every tenant it returns would get on an empty
	// schema.
	Listed     bool               `json:"listed"`
	EachTenant *runner.SchemaPlan `json:"each_tenant,omitempty"`
	Shard      int                `json:"shard"`
	Shards     int                `json:"shards"`
	// TenantsListed counts the query's distinct tenants; TenantsTotal those
	// of this shard; TenantsCurrent those the survey found current.
	TenantsListed  int `json:"tenants_listed"`
	TenantsTotal   int `json:"tenants_total"`
	TenantsCurrent int `json:"tenants_current"`
	// TenantsAhead are current tenants with versions unknown to this
	// migration set (a newer release migrated them).
	TenantsAhead []string `json:"tenants_ahead,omitempty"`
	// Queries is how many queries the plan sent, all on one connection:
	// 2 + ceil(tenants with a history table / 500), whatever the number of
	// tenants not current.
	Queries int `json:"queries"`
	// Groups are the tenants not current, grouped by identical plans:
	// groups with problems first, then the largest.
	Groups []tenantGroup `json:"groups"`
}

// tenantGroup is a set of tenants that would get the same migrations in the
// same modes, and stop on the same kinds of problem, if any.
type tenantGroup struct {
	Tenants []string `json:"tenants"`
	// WithoutHistory counts the group's tenants with no history table yet
	// (a run creates it, holding the tenant's lock).
	WithoutHistory int                       `json:"without_history_table"`
	Pending        []runner.PlannedMigration `json:"pending"`
	// Notes are the distinct remarks over the group's tenants.
	Notes []string `json:"notes,omitempty"`
	// Problems gives, per tenant of the group, the validation failures a run
	// would stop that tenant on (the messages validate and migrate give).
	Problems map[string][]string `json:"problems,omitempty"`
	key      string
}

// planTenants makes the multi-tenant plan. The returned problems name
// their tenants; err is what kept the plan from being made.
func (a *app) planTenants(ctx context.Context, online bool) (rep *planReport, problems, err error) {
	opts := a.opts.runner
	tp := &tenantsPlan{HistoryTable: "<tenant>." + a.cfg.Table, Transaction: runner.TransactionMode(a.cfg.Transaction),
		Shard: a.cfg.ShardIndex, Shards: a.cfg.Shards, Groups: []tenantGroup{}}
	rep = &planReport{DatabaseConsulted: online, Schemas: []planSection{}, Tenants: tp}
	if tp.Transaction == "" {
		tp.Transaction = runner.TransactionEach
	}
	if !online {
		opts.Schema = "<tenant>"
		sp, problems := runner.PlanHistory(a.migs, nil, false, opts)
		if sp == nil {
			return nil, nil, problems
		}
		tp.EachTenant = sp
		return rep, problems, nil
	}
	conn, err := a.connect(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer dbconn.Close(ctx, conn)
	sv, err := a.surveyor(conn, true).Survey(ctx)
	if err != nil {
		return nil, nil, err
	}
	tp.Listed, tp.TenantsListed, tp.TenantsTotal = true, sv.Listed, len(sv.Tenants)
	tp.TenantsCurrent, tp.TenantsAhead, tp.Queries = len(sv.Tenants)-len(sv.Pending), sv.Ahead, sv.Queries
	groups := map[string]*tenantGroup{}
	var errs []error
	for _, tenant := range sv.Pending {
		rows, exists := sv.Rows[tenant]
		opts.Schema = tenant
		sp, perr := runner.PlanHistory(a.migs, rows, exists, opts)
		if sp == nil {
			return nil, nil, perr
		}
		key := planKey(sp, perr)
		g := groups[key]
		if g == nil {
			g = &tenantGroup{Pending: sp.Pending, key: key}
			groups[key] = g
		}
		g.Tenants = append(g.Tenants, tenant)
		if !exists {
			g.WithoutHistory++
		}
		for _, n := range sp.Notes {
			if !slices.Contains(g.Notes, n) {
				g.Notes = append(g.Notes, n)
			}
		}
		if perr != nil {
			if g.Problems == nil {
				g.Problems = map[string][]string{}
			}
			g.Problems[tenant] = sp.Problems
			errs = append(errs, fmt.Errorf("tenant %s: %w", tenant, perr))
		}
	}
	for _, g := range groups {
		tp.Groups = append(tp.Groups, *g)
	}
	clean := func(g tenantGroup) int { return min(len(g.Problems), 1) * -1 } // groups with problems first
	slices.SortFunc(tp.Groups, func(a, b tenantGroup) int {
		return cmp.Or(cmp.Compare(clean(a), clean(b)), cmp.Compare(len(b.Tenants), len(a.Tenants)),
			cmp.Compare(a.Tenants[0], b.Tenants[0]))
	})
	return rep, tenantProblems(errs), nil
}

// planKey identifies what a tenant would get: each pending migration's
// version and mode, and the kind and version of each problem (whose
// messages differ per tenant: when and by whom a changed file was applied).
func planKey(sp *runner.SchemaPlan, problems error) string {
	var b strings.Builder
	for _, m := range sp.Pending {
		fmt.Fprintf(&b, "%d:%s:%d,", m.Version, m.Mode, m.Statements)
	}
	var kinds []string
	for _, err := range unjoin(problems) {
		var ve *runner.ValidationError
		if errors.As(err, &ve) {
			kinds = append(kinds, fmt.Sprintf("%s:%d", ve.Kind, ve.Version))
		} else {
			kinds = append(kinds, err.Error())
		}
	}
	slices.Sort(kinds)
	b.WriteString("|" + strings.Join(kinds, ","))
	return b.String()
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

// tenantProblems joins the first tenants' problems (each naming its
// tenant) and says how many more tenants have some: one log event must stay
// readable when an edited file makes every tenant fail.
func tenantProblems(errs []error) error {
	if len(errs) <= loggedProblemTenants {
		return errors.Join(errs...)
	}
	return errors.Join(append(slices.Clip(errs[:loggedProblemTenants]),
		fmt.Errorf("and %d more tenants with problems (plan lists them all)", len(errs)-loggedProblemTenants))...)
}

func writeTenantsPlan(w io.Writer, tp *tenantsPlan) {
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
func writeTenantsPlanOffline(w io.Writer, tp *tenantsPlan) {
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
func writeTenantGroup(w io.Writer, g tenantGroup) (stopped int) {
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
		var vs []string
		for i, m := range ms {
			if i == 10 {
				vs = append(vs, fmt.Sprintf("and %d more", len(ms)-10))
				break
			}
			vs = append(vs, fmt.Sprint(m.Version))
		}
		versions = "versions " + strings.Join(vs, ", ")
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
