package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lockmigrate/lockmigrate/lock"
)

// unlockReport is unlock's --json document: the history table and key,
// then what lock.Release found and did.
type unlockReport struct {
	HistoryTable string `json:"history_table"`
	LockKey      int64  `json:"lock_key"`
	*lock.ReleaseReport
}

var unlockCmd = &command{
	name: "unlock",
	usage: []string{"lockmigrate unlock [--tenant SCHEMA] [--force [--pid PID] [--timeout 30s]] [--json]",
		"show who holds the migration lock; --force terminates that backend",
		"(pg_terminate_backend, only while it still holds the lock) and waits for the release"},
	run: runUnlock,
}

func runUnlock(ctx context.Context, a *app, args []string) int {
	fl := flag.NewFlagSet("unlock", flag.ContinueOnError)
	fl.SetOutput(a.stderr)
	force := fl.Bool("force", false, "terminate the holder's backend (pg_terminate_backend) and wait until the lock is released")
	pid := fl.Int("pid", 0, "with --force: terminate only if this backend pid holds the lock")
	timeout := fl.Duration("timeout", lock.DefaultReleaseTimeout, "with --force: longest wait for the lock to be released")
	asJSON := fl.Bool("json", false, "print JSON instead of text")
	tenant := fl.String("tenant", "", "the tenant schema whose lock to show or free (multi-tenant mode: each tenant has its own)")
	if err := fl.Parse(args); err != nil {
		return exitUsage
	}
	if fl.NArg() > 0 || (*pid != 0 && !*force) || *pid < 0 || *timeout <= 0 {
		fmt.Fprintln(a.stderr, "lockmigrate: usage: lockmigrate unlock [--tenant SCHEMA] [--force [--pid PID] [--timeout DURATION]] [--json]")
		return exitUsage
	}
	if err := a.setup(ctx, lockOnly); err != nil {
		return exitCode(ctx, err)
	}
	t := a.opts.target
	switch {
	case *tenant != "":
		// The tenant's lock is the default key of its history table, as
		// the fleet derives it.
		t = a.opts.tenantTarget(*tenant)
	case a.cfg.TenantsQuery != "":
		fmt.Fprintln(a.stderr, "lockmigrate: unlock: LOCKMIGRATE_TENANTS_QUERY is set and every tenant has its own lock: "+
			"name the tenant with --tenant SCHEMA (lockmigrate status lists the pending ones)")
		return exitUsage
	}
	var rep *unlockReport
	err := a.withRunner(ctx, t, func(s session) error {
		r, err := s.lock.Release(ctx, lock.ReleaseOptions{Force: *force, PID: int32(*pid), Timeout: *timeout})
		if r != nil {
			rep = &unlockReport{HistoryTable: t.historyTable(), LockKey: t.key, ReleaseReport: r}
		}
		return err
	})
	if rep != nil {
		if *asJSON {
			writeJSON(a.stdout, rep)
		} else {
			writeUnlock(a.stdout, rep)
		}
	}
	if err != nil {
		return a.fail(ctx, "unlock failed", err)
	}
	return exitOK
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
	case lock.ReleaseNone:
		if h != nil {
			fmt.Fprintf(w, "nothing terminated; if this runner is hung or gone, end its backend with:\n"+
				"  lockmigrate unlock --force --pid %d\n", h.PID)
		}
	case lock.ReleaseTerminated:
		name := ""
		if h != nil && h.PID == rep.TargetPID {
			name = fmt.Sprintf(" (%s)", h.ApplicationName)
		}
		fmt.Fprintf(w, "terminated backend %d%s with pg_terminate_backend", rep.TargetPID, name)
		if rep.ReleasedMS != nil {
			fmt.Fprintf(w, "; the lock was released %s later", time.Duration(*rep.ReleasedMS*float64(time.Millisecond)))
		}
		fmt.Fprintln(w)
	case lock.ReleaseFailed:
		fmt.Fprintf(w, "nothing terminated: terminating backend %d failed (the error is logged on stderr)\n", rep.TargetPID)
	case lock.ReleaseNotTerminated:
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
