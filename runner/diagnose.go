package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// invalidIndexes lists the INVALID indexes (qualified names) in the schemas a
// migration can touch without qualifying names (the search path) and in the
// history schema. A failed or interrupted CREATE INDEX CONCURRENTLY leaves
// such an index behind: it costs writes, serves no reads, and makes a re-run
// of the same CREATE fail, so operators must hear about it.
func (r *Runner) invalidIndexes(ctx context.Context) ([]string, error) {
	rows, err := r.conn.Query(ctx, `SELECT format('%I.%I', n.nspname, c.relname)
  FROM pg_index i
  JOIN pg_class c ON c.oid = i.indexrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE NOT i.indisvalid
   AND (n.nspname = ANY (current_schemas(false)) OR n.nspname = $1)
 ORDER BY 1`, r.opts.Schema)
	if err != nil {
		return nil, fmt.Errorf("look up invalid indexes: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// lockHolder is a session holding a lock on a user relation, reported when a
// migration hits lock_timeout so the operator sees who was in the way.
type lockHolder struct {
	PID       int32     `json:"pid"`
	App       string    `json:"application_name"`
	State     string    `json:"state"`
	XactStart time.Time `json:"xact_start"`
	Relations []string  `json:"relations"`
	Query     string    `json:"query"`
}

// blockers lists (for a log attribute) the other sessions that hold relation locks in open
// transactions, oldest transaction first. By the time lock_timeout fired our
// own wait is over, so pg_blocking_pids(our pid) would be empty; the holders
// that were in the way are still there, holding their locks.
func (r *Runner) blockers(ctx context.Context) any {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rows, err := r.conn.Query(ctx, `SELECT a.pid, coalesce(a.application_name, ''), coalesce(a.state, ''),
       a.xact_start, array_agg(DISTINCT format('%I.%I', n.nspname, c.relname)),
       left(coalesce(a.query, ''), 200)
  FROM pg_locks l
  JOIN pg_stat_activity a ON a.pid = l.pid
  JOIN pg_class c ON c.oid = l.relation
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE l.granted AND l.pid <> pg_backend_pid() AND a.xact_start IS NOT NULL
   AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
 GROUP BY 1, 2, 3, 4, 6
 ORDER BY a.xact_start
 LIMIT 5`)
	if err != nil {
		return "lookup failed: " + err.Error() // diagnostics only
	}
	hs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (lockHolder, error) {
		var h lockHolder
		err := row.Scan(&h.PID, &h.App, &h.State, &h.XactStart, &h.Relations, &h.Query)
		return h, err
	})
	if err != nil {
		return "lookup failed: " + err.Error()
	}
	return hs
}

// clientCheckInterval makes the server notice a vanished client (a pod
// killed with SIGKILL, a node lost) while a statement runs, so a long
// migration statement is aborted and the advisory lock freed within about a
// second instead of when the statement ends. The setting exists from
// PostgreSQL 14; on older servers the attempt fails harmlessly.
const clientCheckInterval = "SET client_connection_check_interval = 1000"

// sessionCheckSQL is checkWritable's query with clientCheckInterval in it
// (set_config(..., false) is SET), so that the lock holder's two session
// checks cost one round trip. The version guard keeps PostgreSQL 13 and
// older, which have no such setting, from failing the whole statement;
// any other failure (a server that refuses the setting) sends the two
// statements apart, as they were.
const sessionCheckSQL = `SELECT pg_is_in_recovery(), current_setting('transaction_read_only')::bool,
       CASE WHEN current_setting('server_version_num')::int >= 140000
            THEN set_config('client_connection_check_interval', '1000', false) END`

func (r *Runner) watchClient(ctx context.Context) {
	_, err := r.conn.Exec(ctx, clientCheckInterval)
	var pgErr *pgconn.PgError
	if err != nil && !(errors.As(err, &pgErr) && pgErr.Code == "42704") {
		r.log.LogAttrs(ctx, slog.LevelDebug, "client_connection_check_interval not set", slog.String("error", err.Error()))
	}
}

// prepareSession readies the lock holder's session: watchClient, then
// checkWritable, in one statement when it can.
func (r *Runner) prepareSession(ctx context.Context) error {
	var recovery, readOnly bool
	var set *string
	err := r.conn.QueryRow(ctx, sessionCheckSQL).Scan(&recovery, &readOnly, &set)
	if err == nil {
		return writableError(recovery, readOnly)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("check that the server accepts writes: %w", err)
	}
	r.watchClient(ctx)
	return r.checkWritable(ctx)
}

func (r *Runner) checkWritable(ctx context.Context) error {
	var recovery, readOnly bool
	if err := r.conn.QueryRow(ctx, `SELECT pg_is_in_recovery(), current_setting('transaction_read_only')::bool`).Scan(&recovery, &readOnly); err != nil {
		return fmt.Errorf("check that the server accepts writes: %w", err)
	}
	return writableError(recovery, readOnly)
}

// writableError is checkWritable's verdict on what the server reported.
func writableError(recovery, readOnly bool) error {
	switch {
	case recovery:
		return fmt.Errorf("%w: the server is a standby (in recovery); point DATABASE_URL at the primary, "+
			"or list all hosts with target_session_attrs=read-write", ErrReadOnly)
	case readOnly:
		return fmt.Errorf("%w: transactions are read-only (default_transaction_read_only=on); "+
			"point DATABASE_URL at a writable primary, or use target_session_attrs=read-write", ErrReadOnly)
	}
	return nil
}
