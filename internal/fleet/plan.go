package fleet

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockmigrate/lockmigrate/runner"
)

// The dry run of a fleet (lockmigrate plan with LOCKMIGRATE_TENANTS_QUERY):
// the tenants of one shard, which of them the lock-free survey finds
// current, and what would run in each of the others, grouped by identical
// pending lists so that thousands of tenants stay readable.

// PlanProblemTenants is how many tenants' problems the problems error of
// MakePlan joins: one log event must stay readable when an edited file makes
// every tenant fail. The plan itself has them all.
const PlanProblemTenants = 10

// Plan is what a fleet run would do, worked out without any lock and
// without changing anything. Its JSON is the "tenants" object of
// lockmigrate plan --json.
type Plan struct {
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
	// 2 + ceil(tenants with a history table / chunk size, 500 by default),
	// whatever the number of tenants not current.
	Queries int `json:"queries"`
	// Groups are the tenants not current, grouped by identical plans:
	// groups with problems first, then the largest (then by first tenant).
	// Never nil, so that the JSON says [] when every tenant is current.
	Groups []TenantGroup `json:"groups"`
}

// TenantGroup is a set of tenants that would get the same migrations in the
// same modes, and stop on the same kinds of problem, if any.
type TenantGroup struct {
	// Tenants are the group's tenants, sorted.
	Tenants []string `json:"tenants"`
	// WithoutHistory counts the group's tenants with no history table yet
	// (a run creates it, holding the tenant's lock).
	WithoutHistory int                       `json:"without_history_table"`
	Pending        []runner.PlannedMigration `json:"pending"`
	// Notes are the distinct remarks over the group's tenants, in the
	// order the tenants first make them.
	Notes []string `json:"notes,omitempty"`
	// Problems gives, per tenant of the group, the validation failures a run
	// would stop that tenant on (the messages validate and migrate give).
	Problems map[string][]string `json:"problems,omitempty"`
	key      string
}

// PlanOptions configure MakePlan. Conn, Query and Runner.Table are
// required.
type PlanOptions struct {
	// Conn is the one connection every query goes on.
	Conn *pgx.Conn
	// Query returns one text column: the tenant schema names.
	Query string
	// Migrations is the set a run would apply to every tenant.
	Migrations []*runner.Migration
	// Runner is the template of every tenant's runner options, as in
	// Options.Runner; Schema is replaced by each tenant.
	Runner runner.Options
	// Shard restricts the plan to a subset of the tenants.
	Shard Shard
	// ChunkSize is how many tenants one history query covers; default
	// DefaultChunkSize.
	ChunkSize int
	// Timeout bounds each query; default DefaultQueryTimeout.
	Timeout time.Duration
	// Logger receives the survey's warnings; nil discards.
	Logger *slog.Logger
}

// MakePlan surveys the shard's tenants without any lock, reading the full
// history rows of those not current in the survey's own chunk queries (no
// query per tenant), and plans each of them as runner.PlanHistory does. The
// problems error joins, each naming its tenant, the validation failures a
// run would stop tenants on (at most PlanProblemTenants tenants, then how
// many more); the plan is returned with them. err is what kept the plan
// from being made (options, the tenants query as a *QueryError, a history
// chunk that cannot be read, the connection).
func MakePlan(ctx context.Context, o PlanOptions) (p *Plan, problems, err error) {
	if o.Conn == nil || o.Query == "" || o.Runner.Table == "" {
		return nil, nil, errors.New("fleet: Conn, Query and Runner.Table are required")
	}
	sv, err := Surveyor{Conn: o.Conn, Query: o.Query, Table: o.Runner.Table, Migrations: o.Migrations,
		Shard: o.Shard, ChunkSize: o.ChunkSize, Timeout: o.Timeout, Logger: o.Logger, KeepRows: true, Phase: o.Runner.Phase}.Survey(ctx)
	if err != nil {
		return nil, nil, err
	}
	p = newPlan(o.Runner, o.Shard)
	p.Listed, p.TenantsListed, p.TenantsTotal = true, sv.Listed, len(sv.Tenants)
	p.TenantsCurrent, p.TenantsAhead, p.Queries = len(sv.Tenants)-len(sv.Pending), sv.Ahead, sv.Queries
	var g grouping
	for _, tenant := range sv.Pending {
		rows, exists := sv.Rows[tenant]
		opts := o.Runner
		opts.Schema = tenant
		sp, perr := runner.PlanHistory(o.Migrations, rows, exists, opts)
		if sp == nil {
			return nil, nil, perr
		}
		g.add(tenant, exists, sp, perr)
	}
	p.Groups = g.sorted()
	return p, tenantProblems(g.errs), nil
}

// OfflinePlan is the plan without a database: the tenants query cannot
// run, so EachTenant says what every tenant it returns would get on an
// empty schema (history table "<tenant>.<table>"). problems joins the
// *runner.ValidationError values a run would stop every tenant on; err
// means opts are invalid.
func OfflinePlan(migs []*runner.Migration, opts runner.Options, shard Shard) (p *Plan, problems, err error) {
	p = newPlan(opts, shard)
	opts.Schema = "<tenant>"
	sp, problems := runner.PlanHistory(migs, nil, false, opts)
	if sp == nil {
		return nil, nil, problems
	}
	p.EachTenant = sp
	return p, problems, nil
}

// newPlan is a plan's header, with no tenant and no group.
func newPlan(opts runner.Options, shard Shard) *Plan {
	p := &Plan{HistoryTable: "<tenant>." + opts.Table, Transaction: opts.Transaction,
		Shard: shard.Index, Shards: max(shard.Count, 1), Groups: []TenantGroup{}}
	if p.Transaction == "" {
		p.Transaction = runner.TransactionEach
	}
	return p
}

// grouping collects the tenants' plans into groups and their problems.
type grouping struct {
	groups map[string]*TenantGroup
	errs   []error
}

// add files tenant's plan sp (with its problems, perr) in its group.
func (g *grouping) add(tenant string, exists bool, sp *runner.SchemaPlan, perr error) {
	if g.groups == nil {
		g.groups = map[string]*TenantGroup{}
	}
	key := planKey(sp, perr)
	tg := g.groups[key]
	if tg == nil {
		tg = &TenantGroup{Pending: sp.Pending, key: key}
		g.groups[key] = tg
	}
	tg.Tenants = append(tg.Tenants, tenant)
	if !exists {
		tg.WithoutHistory++
	}
	for _, n := range sp.Notes {
		if !slices.Contains(tg.Notes, n) {
			tg.Notes = append(tg.Notes, n)
		}
	}
	if perr != nil {
		if tg.Problems == nil {
			tg.Problems = map[string][]string{}
		}
		tg.Problems[tenant] = sp.Problems
		g.errs = append(g.errs, fmt.Errorf("tenant %s: %w", tenant, perr))
	}
}

// sorted returns the groups with problems first, then the largest, then
// by first tenant; never nil.
func (g *grouping) sorted() []TenantGroup {
	out := []TenantGroup{}
	for _, tg := range g.groups {
		out = append(out, *tg)
	}
	clean := func(tg TenantGroup) int { return min(len(tg.Problems), 1) * -1 } // groups with problems first
	slices.SortFunc(out, func(a, b TenantGroup) int {
		return cmp.Or(cmp.Compare(clean(a), clean(b)), cmp.Compare(len(b.Tenants), len(a.Tenants)),
			cmp.Compare(a.Tenants[0], b.Tenants[0]))
	})
	return out
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
// tenant) and says how many more tenants have some.
func tenantProblems(errs []error) error {
	if len(errs) <= PlanProblemTenants {
		return errors.Join(errs...)
	}
	return errors.Join(append(slices.Clip(errs[:PlanProblemTenants]),
		fmt.Errorf("and %d more tenants with problems (plan lists them all)", len(errs)-PlanProblemTenants))...)
}
