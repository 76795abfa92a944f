package lock

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lockmigrate/lockmigrate/internal/backoff"
)

// holdsSQL is the condition "backend $3 holds the granted bigint advisory
// lock ($1, $2) in this database", shared by Terminate and Released so both
// test exactly the same thing.
const holdsSQL = `l.locktype = 'advisory'
   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND l.classid::int8 = $1 AND l.objid::int8 = $2 AND l.objsubid = 1
   AND l.granted AND l.pid = $3`

// terminateSQL signals backend $3 only if, when the statement reads
// pg_locks, that backend still holds the lock: pg_terminate_backend runs in
// the target list, which PostgreSQL evaluates only for rows that passed the
// WHERE clause. A holder that released the lock since the operator looked
// (or whose pid now belongs to another session) yields no row and is left
// alone. The remaining window, between pg_locks' snapshot and the signal
// within one statement, is microseconds; the alternative, a check and a
// terminate in two statements, leaves a round trip open. Our own backend is
// excluded: terminating it would only end this command.
const terminateSQL = `SELECT pg_terminate_backend(l.pid)
  FROM pg_locks l
 WHERE ` + holdsSQL + `
   AND l.pid <> pg_backend_pid()`

// Terminate ends backend pid with pg_terminate_backend if it holds the lock
// at that instant, re-checked in the same statement (see terminateSQL). It
// reports whether the backend was signalled; false with a nil error means
// pid no longer holds the lock (or had already exited) and nothing was done.
// The lock is freed only once the backend has exited: follow with
// WaitReleased.
//
// The server refuses unless the current role is a superuser, or a member of
// the holder's role or of pg_signal_backend (and only a superuser may end a
// superuser's backend); that refusal is a *TerminateError with Denied set.
func (a *Advisory) Terminate(ctx context.Context, pid int32) (bool, error) {
	hi, lo := SplitKey(a.Key)
	var signalled bool
	err := a.Conn.QueryRow(ctx, terminateSQL, hi, lo, pid).Scan(&signalled)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		var pgErr *pgconn.PgError
		denied := errors.As(err, &pgErr) && pgErr.Code == "42501" // insufficient_privilege
		return false, &TerminateError{Key: a.Key, PID: pid, Denied: denied, Err: err}
	}
	return signalled, nil
}

// TerminateError reports a failed pg_terminate_backend of a lock holder.
type TerminateError struct {
	Key int64
	PID int32
	// Denied is set when the server refused for lack of privilege.
	Denied bool
	Err    error
}

func (e *TerminateError) Error() string {
	if e.Denied {
		return fmt.Sprintf("terminate backend %d holding advisory lock %d: permission denied: "+
			"connect as a superuser, as the holder's role, or as a member of pg_signal_backend "+
			"(a superuser's backend can only be ended by a superuser): %v", e.PID, e.Key, e.Err)
	}
	return fmt.Sprintf("terminate backend %d holding advisory lock %d: %v", e.PID, e.Key, e.Err)
}

func (e *TerminateError) Unwrap() error { return e.Err }

// Held reports whether backend pid holds the lock now.
func (a *Advisory) Held(ctx context.Context, pid int32) (bool, error) {
	hi, lo := SplitKey(a.Key)
	var held bool
	if err := a.Conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks l WHERE `+holdsSQL+`)`,
		hi, lo, pid).Scan(&held); err != nil {
		return false, fmt.Errorf("check whether backend %d holds advisory lock %d: %w", pid, a.Key, err)
	}
	return held, nil
}

// ReleasePollInterval spaces WaitReleased's looks at pg_locks: a terminated
// backend normally exits within milliseconds.
const ReleasePollInterval = 20 * time.Millisecond

// WaitReleased polls pg_locks until backend pid no longer holds the lock and
// returns how long that took. It watches that one backend, not the key: a
// waiting replica may take the lock the moment it is freed. On ctx's end it
// returns an error wrapping context.Cause(ctx).
func (a *Advisory) WaitReleased(ctx context.Context, pid int32) (time.Duration, error) {
	start := time.Now()
	for {
		held, err := a.Held(ctx, pid)
		if err != nil {
			if ctx.Err() != nil {
				err = context.Cause(ctx)
			}
			return time.Since(start), fmt.Errorf("backend %d may still hold advisory lock %d: %w", pid, a.Key, err)
		}
		if !held {
			return time.Since(start), nil
		}
		if err := backoff.Sleep(ctx, ReleasePollInterval); err != nil {
			return time.Since(start), fmt.Errorf("backend %d still holds advisory lock %d after %s: %w",
				pid, a.Key, time.Since(start).Round(time.Millisecond), err)
		}
	}
}
