// Package lock takes, waits for, releases and inspects PostgreSQL session-level
// advisory locks on one dedicated connection. It knows nothing of migrations:
// it is the mutual exclusion that lets many replicas agree on a single writer.
//
// Session-level locks belong to the backend process, so the connection that
// took the lock must stay the same one until Unlock (never a pool), and a
// transaction-pooling proxy in between cannot hold them.
package lock

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockmigrate/lockmigrate/internal/backoff"
)

// Querier is the part of *pgx.Conn the lock needs. It is an interface so a
// caller can wrap the connection (tracing, counting round trips) without the
// lock caring. A Querier that also has PgConn() *pgconn.PgConn (as
// *pgx.Conn and internal/dbconn's Session do) gets its try-locks sent on
// that protocol connection, decoded by the lock (try.go).
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// DefaultUnlockTimeout bounds the release call. Release runs on shutdown paths
// where the caller's context is often already cancelled.
const DefaultUnlockTimeout = 5 * time.Second

// DefaultWaitBackoff spaces the try-lock attempts of a waiting replica: short
// enough that a waiter takes over within about a second of the release, long
// enough that a hundred waiters cost the server nothing.
var DefaultWaitBackoff = backoff.Policy{Initial: 50 * time.Millisecond, Max: time.Second}

// holderLogEvery limits how often a waiting replica logs who holds the lock.
const holderLogEvery = 30 * time.Second

// Advisory is a session-level advisory lock identified by Key, taken on Conn.
// The zero values of the optional fields are usable.
type Advisory struct {
	Conn Querier
	Key  int64
	// Logger receives "waiting for lock" events with the holder; nil discards.
	Logger *slog.Logger
	// Backoff spaces Wait's attempts; zero means DefaultWaitBackoff.
	Backoff backoff.Policy
	// UnlockTimeout bounds Unlock; zero means DefaultUnlockTimeout.
	UnlockTimeout time.Duration

	// HolderOnConflict makes a TryLock that finds the lock held also look
	// up the holder, in the same statement, for ConflictHolder: a skipping
	// replica then reports who holds the lock without another round trip.
	// Left off for Wait, whose repeated tries need no holder each time.
	HolderOnConflict bool

	pid int32 // backend holding the lock, set by a verified TryLock
	// conflictHolder is the holder seen by the last TryLock that lost.
	conflictHolder *Holder
}

// ConflictHolder returns the session that held the lock when the last
// TryLock lost, as looked up by that TryLock with HolderOnConflict set; nil
// when it won, when the flag is off, or when the holder was gone by the time
// the statement looked.
func (a *Advisory) ConflictHolder() *Holder { return a.conflictHolder }

// New returns an advisory lock on conn with the default settings.
func New(conn Querier, key int64, logger *slog.Logger) *Advisory {
	return &Advisory{Conn: conn, Key: key, Logger: logger}
}

// tryLockSQL takes the lock ($1 = key; $2, $3 = its classid and objid).
// Session locks are re-entrant: had this backend held the lock already (a
// pooler sharing one server connection between replicas), the try would
// succeed for every replica. pg_locks is read first, in FROM, so it shows
// the state before the try.
const tryLockSQL = `SELECT b.held, pg_try_advisory_lock($1) AS ok, pg_backend_pid() AS pid
  FROM (SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()
          AND classid::int8 = $2 AND objid::int8 = $3 AND objsubid = 1 AND granted) AS held) b`

// tryLockOrHolderSQL is tryLockSQL plus, only when the try lost, the
// holder's row. The try is materialized and the lookup is a lateral join on
// its result, so the lookup runs after the try; the condition sits in a
// subquery kept from being pulled up (OFFSET 0), where it becomes a one-time
// filter: a won try never reads pg_stat_activity (EXPLAIN ANALYZE: "never
// executed"), while as a join condition the lookup ran and was discarded.
var tryLockOrHolderSQL = `WITH try AS MATERIALIZED (` + tryLockSQL + `)
SELECT try.held, try.ok, try.pid, h.*
  FROM try LEFT JOIN LATERAL (SELECT * FROM (` + holderQuery("$2", "$3") + `) hq WHERE NOT try.ok OFFSET 0) h ON true`

// TryLock calls pg_try_advisory_lock once and reports whether it was granted.
// It never blocks on the server, so the session never sits in a lock queue
// holding a snapshot that CREATE INDEX CONCURRENTLY would have to wait for.
//
// A granted lock is verified with a second statement: the lock must show in
// pg_locks for the very backend that took it, and that backend must still be
// ours. Behind a transaction-pooling proxy (PgBouncer pool_mode=transaction)
// consecutive statements run on different server connections, so a session
// lock protects nothing; TryLock then terminates the server connection that
// holds the stray lock (a role may end its own backends) so the lock does
// not linger in the pool, and returns a *PoolerError.
func (a *Advisory) TryLock(ctx context.Context) (bool, error) {
	var (
		ok, heldBefore bool
		pid            int32
	)
	hi, lo := SplitKey(a.Key)
	a.conflictHolder = nil
	var err error
	switch pc, raw := a.Conn.(pgConner); {
	case raw:
		var r tryResult
		r, err = tryPgConn(ctx, pc.PgConn(), a.HolderOnConflict, a.Key, hi, lo)
		heldBefore, ok, pid = r.heldBefore, r.ok, r.pid
		if err == nil && !ok {
			a.conflictHolder = r.holder
		}
	case a.HolderOnConflict:
		var h nullableHolder
		err = a.Conn.QueryRow(ctx, tryLockOrHolderSQL, a.Key, hi, lo).Scan(append([]any{&heldBefore, &ok, &pid}, h.dest()...)...)
		if err == nil && !ok {
			a.conflictHolder = h.holder()
		}
	default:
		err = a.Conn.QueryRow(ctx, tryLockSQL, a.Key, hi, lo).Scan(&heldBefore, &ok, &pid)
	}
	if err != nil {
		return false, fmt.Errorf("pg_try_advisory_lock(%d): %w", a.Key, err)
	}
	if !ok {
		return false, nil
	}
	if heldBefore {
		// Undo our re-entrant count only; the other holder keeps its lock.
		var released bool
		_ = a.Conn.QueryRow(ctx, "SELECT pg_advisory_unlock($1)", a.Key).Scan(&released)
		return false, &PoolerError{Key: a.Key, LockPID: pid, NextPID: pid, Shared: true, Released: true}
	}
	var (
		now  int32
		held bool
	)
	err = a.Conn.QueryRow(ctx, `SELECT pg_backend_pid(), EXISTS (SELECT 1 FROM pg_locks
   WHERE locktype = 'advisory' AND pid = $1 AND classid::int8 = $2 AND objid::int8 = $3 AND objsubid = 1 AND granted)`,
		pid, hi, lo).Scan(&now, &held)
	if err != nil {
		return false, fmt.Errorf("verify advisory lock %d: %w", a.Key, err)
	}
	if now == pid && held {
		a.pid = pid
		return true, nil
	}
	var terminated bool
	_ = a.Conn.QueryRow(ctx, "SELECT pg_terminate_backend($1)", pid).Scan(&terminated)
	return false, &PoolerError{Key: a.Key, LockPID: pid, NextPID: now, Released: terminated}
}

// PoolerError reports a connection whose statements do not all run on one
// server session, so it cannot hold a session-level advisory lock.
type PoolerError struct {
	Key      int64
	LockPID  int32 // backend that took the lock
	NextPID  int32 // backend that ran the next statement
	Shared   bool  // the backend already held the lock for another client
	Released bool  // the stray lock was released
}

func (e *PoolerError) Error() string {
	what := fmt.Sprintf("advisory lock %d was taken by backend %d but the next statement ran on backend %d", e.Key, e.LockPID, e.NextPID)
	if e.Shared {
		what = fmt.Sprintf("backend %d already held advisory lock %d for another client", e.LockPID, e.Key)
	}
	msg := what + ": the connection goes through a transaction-pooling proxy (e.g. PgBouncer pool_mode=transaction), " +
		"which cannot hold a session lock; connect lockmigrate directly to PostgreSQL or through a session-mode pool"
	if !e.Released {
		msg += fmt.Sprintf("; the lock may still be held by pooled backend %d (SELECT pg_terminate_backend(%d) frees it)", e.LockPID, e.LockPID)
	}
	return msg
}

// Wait retries TryLock with jittered backoff until it wins or ctx ends, and
// returns how many attempts it made. On ctx's end it returns context.Cause(ctx),
// so a caller can tell its own wait timeout from a shutdown signal.
func (a *Advisory) Wait(ctx context.Context) (int, error) {
	policy := a.Backoff
	if policy == (backoff.Policy{}) {
		policy = DefaultWaitBackoff
	}
	var lastLog time.Time
	for attempt := 1; ; attempt++ {
		ok, err := a.TryLock(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return attempt, context.Cause(ctx)
			}
			return attempt, err
		}
		if ok {
			return attempt, nil
		}
		if time.Since(lastLog) >= holderLogEvery {
			lastLog = time.Now()
			a.logHolder(ctx, "advisory lock held elsewhere, waiting", slog.Int("attempt", attempt))
		}
		if err := backoff.Sleep(ctx, policy.Delay(attempt)); err != nil {
			return attempt, err
		}
	}
}

// Unlock releases the lock. It ignores the caller's cancellation (but keeps
// its values) and applies its own short timeout, because it must run on every
// exit path, including after SIGTERM cancelled the run's context. Should the
// release fail, PostgreSQL still frees the lock when the session closes.
func (a *Advisory) Unlock(ctx context.Context) error {
	timeout := a.UnlockTimeout
	if timeout <= 0 {
		timeout = DefaultUnlockTimeout
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	var released bool
	if err := a.Conn.QueryRow(ctx, "SELECT pg_advisory_unlock($1)", a.Key).Scan(&released); err != nil {
		return fmt.Errorf("pg_advisory_unlock(%d): %w", a.Key, err)
	}
	if !released {
		return fmt.Errorf("pg_advisory_unlock(%d): %w", a.Key, ErrNotHeld)
	}
	return nil
}

// ErrNotHeld reports an Unlock of a lock this session did not hold.
var ErrNotHeld = errors.New("lock was not held by this session")

// Holder describes the session that holds an advisory lock, as far as
// pg_stat_activity shows it to the current role.
type Holder struct {
	PID             int32     `json:"pid"`
	ApplicationName string    `json:"application_name"`
	ClientAddr      string    `json:"client_addr"` // "local" for a Unix socket, "" when hidden
	User            string    `json:"user"`
	State           string    `json:"state"`
	Since           time.Time `json:"since"` // the holder's backend start: lock holders take the lock right after connecting
	StateChange     time.Time `json:"state_change"`
	// QueryStart is when the holder's current (or, when idle, last) query
	// started; nil when pg_stat_activity does not show it to this role.
	QueryStart *time.Time `json:"query_start,omitempty"`
	// Query is that query, cut to QueryMaxLen characters; pg_stat_activity
	// shows "<insufficient privilege>" for another role's session unless the
	// current role has pg_read_all_stats.
	Query string `json:"query,omitempty"`
	// ObservedAt is the server's clock at the lookup, so ages can be computed
	// without trusting the client's clock.
	ObservedAt time.Time `json:"observed_at"`
}

// QueryMaxLen bounds Holder.Query: enough to recognise a statement, short
// enough for one log line.
const QueryMaxLen = 200

// LogValue renders the holder as a group of log attributes.
func (h Holder) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Int("pid", int(h.PID)),
		slog.String("application_name", h.ApplicationName),
		slog.String("client_addr", h.ClientAddr),
		slog.String("user", h.User),
		slog.String("state", h.State),
		slog.Time("since", h.Since),
	)
}

// holderQuery finds the granted advisory lock with a bigint key, given the
// parameters holding its classid and objid: PostgreSQL stores such a key as
// classid = high 32 bits, objid = low 32 bits and objsubid = 1, scoped to
// the current database. pg_locks records no grant time (waitstart,
// PostgreSQL 14+, is when a wait began and is NULL once the lock is
// granted), so "since when" can only be approximated from pg_stat_activity:
// backend_start (a lockmigrate runner takes the lock right after connecting)
// and query_start/state_change (what the holder does now).
//
// The activity is read from pg_stat_get_activity(pid), the function behind
// the pg_stat_activity view, and the user and database through
// pg_get_userbyid and the own backend's row: the server plans the lookup
// even when tryLockOrHolderSQL does not run it (a won try), and in a new
// session the view's joins and the pg_database lookup cost more to plan
// than the try itself (cold backend on a fresh database, PostgreSQL 15:
// 3.2-3.8 ms for the whole try with the view, 1.8-2.4 ms this way, 1.0 ms
// for tryLockSQL alone).
func holderQuery(classid, objid string) string {
	return `
SELECT l.pid AS holder_pid,
       coalesce(a.application_name, '') AS holder_application_name,
       CASE WHEN a.pid IS NULL THEN ''
            WHEN a.client_addr IS NULL AND a.client_port = -1 THEN 'local'
            ELSE coalesce(host(a.client_addr), '') END AS holder_client_addr,
       coalesce(pg_get_userbyid(a.usesysid)::text, '') AS holder_user,
       coalesce(a.state, '') AS holder_state,
       coalesce(a.backend_start, 'epoch'::timestamptz) AS holder_since,
       coalesce(a.state_change, 'epoch'::timestamptz) AS holder_state_change,
       a.query_start AS holder_query_start,
       CASE WHEN length(a.query) > ` + strconv.Itoa(QueryMaxLen) + ` THEN left(a.query, ` + strconv.Itoa(QueryMaxLen) + `) || '…'
            ELSE coalesce(a.query, '') END AS holder_query,
       clock_timestamp() AS holder_observed_at
  FROM pg_locks l
  LEFT JOIN LATERAL pg_stat_get_activity(l.pid) a ON true
 WHERE l.locktype = 'advisory'
   AND l.database = (SELECT datid FROM pg_stat_get_activity(pg_backend_pid()))
   AND l.classid::int8 = ` + classid + ` AND l.objid::int8 = ` + objid + ` AND l.objsubid = 1
   AND l.granted
 LIMIT 1`
}

var holderSQL = holderQuery("$1", "$2")

// nullableHolder scans the holder columns of a lateral join that may have
// found no row.
type nullableHolder struct {
	pid                    *int32
	app, addr, user, state *string
	since, stateChange     *time.Time
	queryStart             *time.Time
	query                  *string
	observedAt             *time.Time
}

func (n *nullableHolder) dest() []any {
	return []any{&n.pid, &n.app, &n.addr, &n.user, &n.state, &n.since, &n.stateChange,
		&n.queryStart, &n.query, &n.observedAt}
}

func (n *nullableHolder) holder() *Holder {
	if n.pid == nil {
		return nil
	}
	return &Holder{PID: *n.pid, ApplicationName: *n.app, ClientAddr: *n.addr, User: *n.user,
		State: *n.state, Since: *n.since, StateChange: *n.stateChange,
		QueryStart: n.queryStart, Query: *n.query, ObservedAt: *n.observedAt}
}

// Holder looks up the session holding the lock. It returns (nil, nil) when
// nobody holds it.
func (a *Advisory) Holder(ctx context.Context) (*Holder, error) {
	hi, lo := SplitKey(a.Key)
	var h Holder
	err := a.Conn.QueryRow(ctx, holderSQL, hi, lo).Scan(
		&h.PID, &h.ApplicationName, &h.ClientAddr, &h.User, &h.State, &h.Since, &h.StateChange,
		&h.QueryStart, &h.Query, &h.ObservedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up holder of advisory lock %d: %w", a.Key, err)
	}
	return &h, nil
}

// SplitKey returns the (classid, objid) pair under which pg_locks shows a
// bigint advisory key.
func SplitKey(key int64) (classid, objid int64) {
	u := uint64(key)
	return int64(u >> 32), int64(u & 0xffffffff)
}

// logHolder logs msg with the current holder; a failed lookup is logged too
// but never fails the caller, since it is only diagnostics.
func (a *Advisory) logHolder(ctx context.Context, msg string, attrs ...slog.Attr) {
	if a.Logger == nil {
		return
	}
	attrs = append(attrs, slog.Int64("lock_key", a.Key))
	h, err := a.Holder(ctx)
	switch {
	case err != nil:
		attrs = append(attrs, slog.String("holder_error", err.Error()))
	case h != nil:
		attrs = append(attrs, slog.Any("holder", *h))
	}
	a.Logger.LogAttrs(ctx, slog.LevelInfo, msg, attrs...)
}
