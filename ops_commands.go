package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lockmigrate/lockmigrate/lock"
	"github.com/lockmigrate/lockmigrate/runner"
)

// Day-2 operations: unlock (show or end the lock holder) and plan (dry run).

// defaultReleaseTimeout bounds unlock --force's wait for the terminated
// backend to let go of the lock. A terminated backend normally exits in
// milliseconds; one that does not within this is stuck in the kernel or in
// a long rollback, and an operator must look at the server.
const defaultReleaseTimeout = 30 * time.Second

// unlockReport is what unlock found and did; also its --json document.
type unlockReport struct {
	HistoryTable string `json:"history_table"`
	LockKey      int64  `json:"lock_key"`
	// Holder is the session found holding the lock before any action.
	Holder *lock.Holder `json:"holder"`
	// Action is "none", "terminated", "not_terminated" (--force found that
	// the target did not hold the lock, so nothing was done) or "failed"
	// (the terminate was refused or failed: see the error).
	Action    string `json:"action"`
	TargetPID int32  `json:"target_pid,omitempty"`
	// ReleasedMS is the time from the terminate to the release, in
	// milliseconds with a tenth of a millisecond of precision.
	ReleasedMS *float64 `json:"released_ms,omitempty"`
	// NowHeldBy is the holder after a --force that terminated nothing.
	NowHeldBy *lock.Holder `json:"now_held_by,omitempty"`
}

// errReleaseTimeout ends unlock --force's wait for the release.
var errReleaseTimeout = errors.New("the terminated backend did not release the lock in time")

// holderChangedError: --force terminated nothing because the lock is now
// held by another backend than the one targeted. It maps to exit 1: the
// operator's request was not carried out, and running it again (after
// looking at the new holder) is the remedy.
type holderChangedError struct{ target, now int32 }

func (e holderChangedError) Error() string {
	return fmt.Sprintf("nothing terminated: backend %d does not hold the lock, backend %d does now; "+
		"run lockmigrate unlock to see it, then unlock --force --pid %d if it is hung", e.target, e.now, e.now)
}

func cmdUnlock(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("unlock", flag.ContinueOnError)
	fl.SetOutput(stderr)
	force := fl.Bool("force", false, "terminate the holder's backend (pg_terminate_backend) and wait until the lock is released")
	pid := fl.Int("pid", 0, "with --force: terminate only if this backend pid holds the lock")
	timeout := fl.Duration("timeout", defaultReleaseTimeout, "with --force: longest wait for the lock to be released")
	asJSON := fl.Bool("json", false, "print JSON instead of text")
	tenant := fl.String("tenant", "", "the tenant schema whose lock to show or free (multi-tenant mode: each tenant has its own)")
	if err := fl.Parse(args); err != nil {
		return exitUsage
	}
	if fl.NArg() > 0 || (*pid != 0 && !*force) || *pid < 0 || *timeout <= 0 {
		fmt.Fprintln(stderr, "lockmigrate: usage: lockmigrate unlock [--tenant SCHEMA] [--force [--pid PID] [--timeout DURATION]] [--json]")
		return exitUsage
	}
	e, err := setup(ctx, getenv, stderr, "unlock")
	if err != nil {
		return exitCode(ctx, err)
	}
	switch {
	case *tenant != "":
		// The tenant's lock is the default key of its history table, as
		// the fleet derives it.
		e.cfg.Schema, e.key = *tenant, lock.DefaultKey(*tenant, e.cfg.Table)
	case e.cfg.TenantsQuery != "":
		fmt.Fprintln(stderr, "lockmigrate: unlock: LOCKMIGRATE_TENANTS_QUERY is set and every tenant has its own lock: "+
			"name the tenant with --tenant SCHEMA (lockmigrate status lists the pending ones)")
		return exitUsage
	}
	rep, err := e.unlock(ctx, *force, int32(*pid), *timeout)
	if rep != nil {
		if *asJSON {
			writeJSON(stdout, rep)
		} else {
			writeUnlock(stdout, rep)
		}
	}
	if err != nil {
		code := exitCode(ctx, err)
		e.log.Error("unlock failed", "error", err.Error(), "exit_code", code)
		return code
	}
	return exitOK
}

func (e *env) unlock(ctx context.Context, force bool, pid int32, timeout time.Duration) (*unlockReport, error) {
	conn, err := e.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer closeConn(ctx, conn)
	adv := lock.New(conn, e.key, e.log)
	rep := &unlockReport{HistoryTable: e.cfg.Schema + "." + e.cfg.Table, LockKey: e.key, Action: "none"}
	if rep.Holder, err = adv.Holder(ctx); err != nil {
		return nil, err
	}
	if !force || (rep.Holder == nil && pid == 0) {
		return rep, nil
	}
	rep.TargetPID = pid
	if pid == 0 {
		rep.TargetPID = rep.Holder.PID
	}
	terminated, err := adv.Terminate(ctx, rep.TargetPID)
	if err != nil {
		rep.Action = "failed"
		return rep, err
	}
	if !terminated {
		rep.Action = "not_terminated"
		if rep.NowHeldBy, err = adv.Holder(ctx); err != nil {
			return rep, err
		}
		if rep.NowHeldBy != nil {
			return rep, holderChangedError{target: rep.TargetPID, now: rep.NowHeldBy.PID}
		}
		return rep, nil
	}
	rep.Action = "terminated"
	target := slog.Int("pid", int(rep.TargetPID))
	if rep.Holder != nil && rep.Holder.PID == rep.TargetPID {
		target = slog.Any("holder", *rep.Holder)
	}
	e.log.LogAttrs(ctx, slog.LevelWarn, "advisory lock holder terminated", slog.Int64("lock_key", e.key), target)
	wctx, cancel := context.WithTimeoutCause(ctx, timeout, errReleaseTimeout)
	defer cancel()
	took, err := adv.WaitReleased(wctx, rep.TargetPID)
	if err != nil {
		return rep, err
	}
	ms := float64(took.Round(100*time.Microsecond)) / float64(time.Millisecond)
	rep.ReleasedMS = &ms
	return rep, nil
}

func writeJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeUnlock(w io.Writer, rep *unlockReport) {
	lockName := fmt.Sprintf("advisory lock %d (history table %s)", rep.LockKey, rep.HistoryTable)
	h := rep.Holder
	if h == nil {
		fmt.Fprintf(w, "%s is free: nobody holds it\n", lockName)
	} else {
		fmt.Fprintf(w, "%s is held by:\n", lockName)
		writeHolder(w, h)
	}
	switch rep.Action {
	case "none":
		if h != nil {
			fmt.Fprintf(w, "nothing terminated; if this runner is hung or gone, end its backend with:\n"+
				"  lockmigrate unlock --force --pid %d\n", h.PID)
		}
	case "terminated":
		name := ""
		if h != nil && h.PID == rep.TargetPID {
			name = fmt.Sprintf(" (%s)", h.ApplicationName)
		}
		fmt.Fprintf(w, "terminated backend %d%s with pg_terminate_backend", rep.TargetPID, name)
		if rep.ReleasedMS != nil {
			fmt.Fprintf(w, "; the lock was released %s later", time.Duration(*rep.ReleasedMS*float64(time.Millisecond)))
		}
		fmt.Fprintln(w)
	case "failed":
		fmt.Fprintf(w, "nothing terminated: terminating backend %d failed (the error is logged on stderr)\n", rep.TargetPID)
	case "not_terminated":
		fmt.Fprintf(w, "nothing terminated: backend %d did not hold the lock when --force ran\n", rep.TargetPID)
		if rep.NowHeldBy != nil {
			fmt.Fprintln(w, "the lock is now held by:")
			writeHolder(w, rep.NowHeldBy)
		} else {
			fmt.Fprintln(w, "the lock is free now")
		}
	}
}

func writeHolder(w io.Writer, h *lock.Holder) {
	at := func(t time.Time) string {
		if t.IsZero() || t.Unix() == 0 {
			return "-"
		}
		return fmt.Sprintf("%s (%s ago)", t.UTC().Format(time.RFC3339), h.ObservedAt.Sub(t).Round(time.Millisecond))
	}
	queryStart := "-"
	if h.QueryStart != nil {
		queryStart = at(*h.QueryStart)
	}
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	for _, row := range [][2]string{
		{"pid", fmt.Sprint(h.PID)},
		{"application_name", dash(h.ApplicationName)},
		{"client_addr", dash(h.ClientAddr)},
		{"user", dash(h.User)},
		{"state", dash(h.State)},
		// pg_locks has no grant time: see lock.Holder.
		{"backend_start", at(h.Since)},
		{"query_start", queryStart},
		{"state_change", at(h.StateChange)},
		{"query", dash(strings.Join(strings.Fields(h.Query), " "))},
	} {
		fmt.Fprintf(tw, "  %s\t%s\n", row[0], row[1])
	}
	tw.Flush()
	fmt.Fprintln(w, "  (pg_locks records no grant time; a lockmigrate runner takes the lock right after connecting, so backend_start is close to it)")
}

// dash stands in for a value pg_stat_activity hides from this role.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// planReport is plan's --json document: one section per history table.
type planReport struct {
	DatabaseConsulted bool          `json:"database_consulted"`
	Schemas           []planSection `json:"schemas"`
	// Tenants replaces Schemas (then empty) in multi-tenant mode.
	Tenants *tenantsPlan `json:"tenants,omitempty"`
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

func cmdPlan(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("plan", flag.ContinueOnError)
	fl.SetOutput(stderr)
	asJSON := fl.Bool("json", false, "print JSON instead of a table")
	if err := fl.Parse(args); err != nil || fl.NArg() > 0 {
		return exitUsage
	}
	e, err := setup(ctx, getenv, stderr, "plan")
	if err != nil {
		return exitCode(ctx, err)
	}
	rep, problems, err := e.plan(ctx, databaseConfigured(e.cfg, getenv))
	if err != nil {
		code := exitCode(ctx, err)
		e.log.Error("plan failed", "error", err.Error(), "exit_code", code)
		return code
	}
	if *asJSON {
		writeJSON(stdout, rep)
	} else {
		writePlan(stdout, rep)
	}
	if problems != nil {
		// The same event validate logs, with the same messages.
		code := exitCode(ctx, problems)
		e.log.Error("validation failed", "error", problems.Error(), "exit_code", code)
		return code
	}
	return exitOK
}

// plan returns the report, the validation problems a run would stop on, and
// any error that kept the plan from being made.
func (e *env) plan(ctx context.Context, online bool) (rep *planReport, problems, err error) {
	if e.cfg.TenantsQuery != "" {
		return e.planTenants(ctx, online)
	}
	var (
		p      *runner.Plan
		holder *lock.Holder
	)
	if online {
		err = e.withRunner(ctx, func(r *runner.Runner, adv *lock.Advisory) error {
			if p, problems = r.Plan(ctx); p == nil {
				return problems
			}
			var err error
			holder, err = adv.Holder(ctx)
			return err
		})
	} else if p, problems = runner.PlanOffline(e.migs, e.runnerOptions()); p == nil {
		err = problems
	}
	if err != nil {
		return nil, nil, err
	}
	rep = &planReport{DatabaseConsulted: p.DatabaseConsulted}
	for _, sp := range p.Schemas {
		// One history table per run today, so its key and holder are e's.
		rep.Schemas = append(rep.Schemas, planSection{SchemaPlan: sp, HistoryTable: sp.Schema + "." + sp.Table,
			LockKey: e.key, LockHolder: holder})
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
		fmt.Fprintf(w, "history table %s  lock key %d  transaction mode %s\n", s.HistoryTable, s.LockKey, s.Transaction)
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
	fmt.Fprintf(tw, "\n%sVERSION\tNAME\tMODE\tSTATEMENTS\n", indent)
	for _, m := range pending {
		n := "-"
		if m.Mode == runner.ModeNoTransaction {
			n = fmt.Sprint(m.Statements)
		}
		fmt.Fprintf(tw, "%s%d\t%s\t%s\t%s\n", indent, m.Version, m.Name, modeLabel(m.Mode), n)
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
