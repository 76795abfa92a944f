package cli

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/lockmigrate/lockmigrate/internal/fleet"
	"github.com/lockmigrate/lockmigrate/lock"
	"github.com/lockmigrate/lockmigrate/runner"
)

var planCmd = &command{
	name: "plan",
	usage: []string{"lockmigrate plan [--json]",
		"dry run: the pending migrations, their mode and statement count; takes no lock,",
		"changes nothing; offline (every migration) when no database is configured;",
		"with LOCKMIGRATE_TENANTS_QUERY, tenants grouped by what would run in them"},
	run: runPlan,
}

// planReport is plan's --json document: one section per history table.
type planReport struct {
	DatabaseConsulted bool          `json:"database_consulted"`
	Schemas           []planSection `json:"schemas"`
	// Tenants replaces Schemas (then empty) in multi-tenant mode.
	Tenants *fleet.Plan `json:"tenants,omitempty"`
}

// planSection adds the lock to runner's plan of one history table.
type planSection struct {
	runner.SchemaPlan
	HistoryTable string `json:"history_table"`
	LockKey      int64  `json:"lock_key"`
	// LockHolder is the current holder (nil when free or offline): a run
	// in progress may be applying the pending migrations right now.
	LockHolder *lock.Holder `json:"lock_holder"`
}

func runPlan(ctx context.Context, a *app, args []string) int {
	asJSON, ok := a.parseJSONFlag("plan", args)
	if !ok {
		return exitUsage
	}
	if err := a.setup(ctx, withMigrations); err != nil {
		return exitCode(ctx, err)
	}
	rep, problems, err := a.plan(ctx, a.cfg.DatabaseConfigured())
	if err != nil {
		return a.fail(ctx, "plan failed", err)
	}
	if asJSON {
		writeJSON(a.stdout, rep)
	} else {
		writePlan(a.stdout, rep)
	}
	if problems != nil {
		// The same event validate logs, with the same messages.
		return a.fail(ctx, "validation failed", problems)
	}
	return exitOK
}

// plan returns the report, the validation problems a run would stop on, and
// any error that kept the plan from being made.
func (a *app) plan(ctx context.Context, online bool) (rep *planReport, problems, err error) {
	if a.cfg.TenantsQuery != "" {
		return a.planTenants(ctx, online)
	}
	var (
		p      *runner.Plan
		holder *lock.Holder
		t      = a.opts.target
	)
	if online {
		err = a.withRunner(ctx, t, func(s session) error {
			if p, problems = s.runner.Plan(ctx); p == nil {
				return problems
			}
			var err error
			holder, err = s.lock.Holder(ctx)
			return err
		})
	} else if p, problems = runner.PlanOffline(a.migs, a.opts.runnerFor(t)); p == nil {
		err = problems
	}
	if err != nil {
		return nil, nil, err
	}
	rep = &planReport{DatabaseConsulted: p.DatabaseConsulted}
	for _, sp := range p.Schemas {
		// One history table per run today, so its key and holder are t's.
		rep.Schemas = append(rep.Schemas, planSection{SchemaPlan: sp, HistoryTable: sp.Schema + "." + sp.Table,
			LockKey: t.key, LockHolder: holder})
	}
	return rep, problems, nil
}

func writePlan(w io.Writer, rep *planReport) {
	if rep.Tenants != nil {
		writeTenantsPlan(w, rep.Tenants)
		return
	}
	if !rep.DatabaseConsulted {
		fmt.Fprintln(w, "database: not consulted (no DATABASE_URL, DATABASE_URL_FILE or PG* connection variable is set);\n"+
			"          every migration is listed as it would run on an empty database")
	}
	for i, s := range rep.Schemas {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "history table %s  lock key %d  transaction mode %s%s\n", s.HistoryTable, s.LockKey, s.Transaction, phaseHeader(s.Phase))
		if rep.DatabaseConsulted {
			if s.HistoryExists {
				fmt.Fprintf(w, "database: history read without the lock; schema version %d\n", s.SchemaVersion)
			} else {
				fmt.Fprintln(w, "database: history read without the lock; no history table yet")
			}
			if h := s.LockHolder; h != nil {
				name := h.ApplicationName
				if name == "" {
					name = "no application_name"
				}
				fmt.Fprintf(w, "lock: held by pid %d (%s) from %s: a run may be applying these right now\n",
					h.PID, name, h.ClientAddr)
			} else {
				fmt.Fprintln(w, "lock: free")
			}
		}
		writeNotesProblems(w, "", s.Notes, s.Problems)
		writePending(w, "", s.Pending)
		writeDeferred(w, s.Phase, s.Deferred)
		switch {
		case len(s.Problems) > 0:
			fmt.Fprintf(w, "a run would stop on the problem(s) above (exit 5) and apply nothing; %d migration(s) pending\n", len(s.Pending))
		case len(s.Pending) == 0:
			fmt.Fprintln(w, "nothing would run: up to date")
		default:
			fmt.Fprintf(w, "%s, in this order\n", wouldRun(s.Pending))
		}
	}
}

func writeNotesProblems(w io.Writer, indent string, notes, problems []string) {
	for _, n := range notes {
		fmt.Fprintf(w, "%snote: %s\n", indent, n)
	}
	for _, p := range problems {
		fmt.Fprintf(w, "%sproblem: %s\n", indent, p)
	}
}

// writePending prints the table of what would run, preceded and followed
// by an empty line; nothing when pending is empty.
func writePending(w io.Writer, indent string, pending []runner.PlannedMigration) {
	if len(pending) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	details := make([]string, len(pending))
	header := ""
	for i, m := range pending {
		if details[i] = plannedDetail(m); details[i] != "" {
			header = "\tDETAIL"
		}
	}
	fmt.Fprintf(tw, "\n%sVERSION\tNAME\tMODE\tSTATEMENTS%s\n", indent, header)
	for i, m := range pending {
		n := "-"
		if m.Mode == runner.ModeNoTransaction {
			n = fmt.Sprint(m.Statements)
		}
		detail := ""
		if header != "" {
			detail = "\t" + details[i]
		}
		fmt.Fprintf(tw, "%s%d\t%s\t%s\t%s%s\n", indent, m.Version, m.Name, modeLabel(m.Mode), n, detail)
	}
	tw.Flush()
	fmt.Fprintln(w)
}

// modeLabel is a mode as the text output shows it.
func modeLabel(mode string) string {
	if mode == runner.ModeBaseline {
		return "baseline (not run)"
	}
	return mode
}

// wouldRun counts what a run would do: "3 migration(s) would run", or with
// a baseline "2 migration(s) recorded as baseline (not run), then 3
// migration(s) would run".
func wouldRun(pending []runner.PlannedMigration) string {
	baseline := 0
	for _, m := range pending {
		if m.Mode == runner.ModeBaseline {
			baseline++
		}
	}
	if baseline == 0 {
		return fmt.Sprintf("%d migration(s) would run", len(pending))
	}
	return fmt.Sprintf("%d migration(s) would be recorded as baseline (not run), then %d would run", baseline, len(pending)-baseline)
}
