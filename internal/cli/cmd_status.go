package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockmigrate/lockmigrate/internal/fleet"
	"github.com/lockmigrate/lockmigrate/lock"
	"github.com/lockmigrate/lockmigrate/runner"
)

var statusCmd = &command{
	name:  "status",
	usage: []string{"lockmigrate status [--json]", "show applied and pending migrations and the lock holder"},
	run:   runStatus,
}

// statusReport is status's --json document.
type statusReport struct {
	*runner.Status
	HistoryTable string       `json:"history_table"`
	LockKey      int64        `json:"lock_key"`
	LockHolder   *lock.Holder `json:"lock_holder"`
}

// tenantsStatus is status's --json document in multi-tenant mode: the
// fleet fast path's counts and the tenants not current.
type tenantsStatus struct {
	Listed  int      `json:"tenants_listed"`
	Total   int      `json:"tenants_total"`
	Current int      `json:"tenants_current"`
	Pending []string `json:"tenants_pending"`
	Ahead   []string `json:"tenants_ahead,omitempty"`
	Queries int      `json:"queries"`
}

func runStatus(ctx context.Context, a *app, args []string) int {
	asJSON, ok := a.parseJSONFlag("status", args)
	if !ok {
		return exitUsage
	}
	if err := a.setup(ctx, withMigrations); err != nil {
		return exitCode(ctx, err)
	}
	if a.cfg.TenantsQuery != "" {
		rep, err := a.statusTenants(ctx)
		if err != nil {
			return a.fail(ctx, "status failed", err)
		}
		if asJSON {
			writeJSON(a.stdout, rep)
		} else {
			writeTenantsStatus(a.stdout, rep, a.cfg.Table)
		}
		return exitOK
	}
	rep, err := a.status(ctx)
	if err != nil {
		return a.fail(ctx, "status failed", err)
	}
	if asJSON {
		writeJSON(a.stdout, rep)
	} else {
		writeStatus(a.stdout, rep)
	}
	return exitOK
}

func (a *app) status(ctx context.Context) (rep *statusReport, err error) {
	t := a.opts.target
	err = a.withRunner(ctx, t, func(s session) error {
		st, err := s.runner.Status(ctx)
		if err != nil {
			return err
		}
		holder, err := s.lock.Holder(ctx)
		if err != nil {
			return err
		}
		rep = &statusReport{Status: st, HistoryTable: t.historyTable(), LockKey: t.key, LockHolder: holder}
		return nil
	})
	return rep, err
}

func (a *app) statusTenants(ctx context.Context) (rep *tenantsStatus, err error) {
	err = a.withConn(ctx, func(conn *pgx.Conn) error {
		sv, err := a.surveyor(conn, false).Survey(ctx)
		if err != nil {
			return err
		}
		rep = &tenantsStatus{Listed: sv.Listed, Total: len(sv.Tenants), Current: len(sv.Tenants) - len(sv.Pending),
			Pending: sv.Pending, Ahead: sv.Ahead, Queries: sv.Queries}
		if rep.Pending == nil {
			rep.Pending = []string{}
		}
		return nil
	})
	return rep, err
}

// surveyor is the fleet's lock-free survey of this runner's tenants.
func (a *app) surveyor(conn *pgx.Conn, keepRows bool) fleet.Surveyor {
	o := a.opts.fleet
	return fleet.Surveyor{Conn: conn, Query: o.Query, Table: a.cfg.Table, Migrations: a.migs,
		Shard: o.Shard, Logger: a.log, KeepRows: keepRows}
}

func writeStatus(w io.Writer, rep *statusReport) {
	fmt.Fprintf(w, "history table: %s  lock key: %d\n", rep.HistoryTable, rep.LockKey)
	fmt.Fprintf(w, "schema version: %d  applied: %d  pending: %d\n", rep.SchemaVersion, rep.Applied, rep.Pending)
	writeStatusPhases(w, rep.Status)
	if h := rep.LockHolder; h != nil {
		fmt.Fprintf(w, "lock: held by pid %d (%s) from %s, user %s, connected since %s, %s\n",
			h.PID, h.ApplicationName, h.ClientAddr, h.User, h.Since.UTC().Format(time.RFC3339), h.State)
	} else {
		fmt.Fprintln(w, "lock: free")
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(w, "problem: %s\n", p)
	}
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "\nVERSION\tNAME\tSTATE\tAPPLIED AT\tBY\tDURATION")
	for _, m := range rep.Migrations {
		at, dur := "-", "-"
		if m.AppliedAt != nil {
			at = m.AppliedAt.UTC().Format(time.RFC3339)
			dur = (time.Duration(m.DurationMS) * time.Millisecond).String()
		}
		by := m.AppliedBy
		if by == "" {
			by = "-"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", m.Version, statusName(m), statusState(m), at, by, dur)
	}
	tw.Flush()
}

func writeTenantsStatus(w io.Writer, rep *tenantsStatus, table string) {
	fmt.Fprintf(w, "tenants: %d listed, %d in this shard, %d current, %d pending (history table <tenant>.%s)\n",
		rep.Listed, rep.Total, rep.Current, len(rep.Pending), table)
	if len(rep.Ahead) > 0 {
		fmt.Fprintf(w, "ahead of this binary: %d tenants\n", len(rep.Ahead))
	}
	for _, p := range rep.Pending {
		fmt.Fprintf(w, "pending: %s\n", p)
	}
}

// writeJSON writes v as indented JSON, the form of every --json output.
func writeJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
