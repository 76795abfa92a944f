package lock_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockmigrate/lockmigrate/internal/pgtest"
	"github.com/lockmigrate/lockmigrate/lock"
)

// records is a slog handler that keeps every record.
type records struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec.Clone())
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }

// find returns the attributes of the records with message msg.
func (r *records) find(msg string) []map[string]slog.Value {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []map[string]slog.Value
	for _, rec := range r.recs {
		if rec.Message != msg {
			continue
		}
		attrs := map[string]slog.Value{"level": slog.StringValue(rec.Level.String())}
		rec.Attrs(func(a slog.Attr) bool {
			attrs[a.Key] = a.Value.Resolve()
			return true
		})
		out = append(out, attrs)
	}
	return out
}

// busy starts query on conn in the background (a hung runner: its session
// is in the middle of a statement) and returns when the server shows it
// active; the returned channel yields the query's error.
func busy(t *testing.T, conn, watcher *pgx.Conn, query string) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := conn.Exec(context.Background(), query)
		done <- err
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var active bool
		if err := watcher.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
		  WHERE pid = $1 AND state = 'active' AND (query = $2 OR wait_event_type = 'Lock'))`,
			conn.PgConn().PID(), query).Scan(&active); err != nil {
			t.Fatal(err)
		}
		if active {
			return done
		}
		if time.Now().After(deadline) {
			t.Fatalf("backend %d not busy with %q within 30s", conn.PgConn().PID(), query)
		}
	}
}

// conns are the sessions of a TestRelease case.
type conns struct{ holder, bystander, waiter, watcher *pgx.Conn }

// TestRelease: Release reports the holder, terminates only with Force and
// only the backend that holds the lock at that instant, waits for the
// release, and leaves every other session alone.
func TestRelease(t *testing.T) {
	const key = 8128
	ctx := context.Background()
	tests := []struct {
		name string
		// hold makes the holder take the lock and returns what ends when
		// its backend does (nil when idle); nil leaves the lock free.
		hold func(t *testing.T, c conns) <-chan error
		// waiter, when set, blocks a third session in pg_advisory_lock.
		waiter bool
		// opts; pidOf, when set, chooses opts.PID among the sessions.
		opts    lock.ReleaseOptions
		pidOf   func(c conns) int32
		action  lock.ReleaseAction
		target  func(c conns) int32 // nil: 0
		holder  bool                // the report shows the holder
		nowHeld func(c conns) int32 // NowHeldBy's pid; nil: none
		changed bool                // a HolderChangedError
		// terminated: the holder's backend was ended and the lock released.
		terminated bool
	}{
		{name: "free", action: lock.ReleaseNone},
		{name: "free, force", opts: lock.ReleaseOptions{Force: true}, action: lock.ReleaseNone},
		{name: "held, no force", hold: idleHolder, opts: lock.ReleaseOptions{PID: 1}, action: lock.ReleaseNone, holder: true},
		{name: "force on a hung holder, a waiter queued", hold: hungHolder, waiter: true,
			opts: lock.ReleaseOptions{Force: true}, action: lock.ReleaseTerminated, holder: true, terminated: true,
			target: func(c conns) int32 { return pid(c.holder) }},
		{name: "force with the holder's pid", hold: idleHolder, opts: lock.ReleaseOptions{Force: true, Timeout: 10 * time.Second},
			pidOf: func(c conns) int32 { return pid(c.holder) }, action: lock.ReleaseTerminated, holder: true, terminated: true,
			target: func(c conns) int32 { return pid(c.holder) }},
		{name: "force with a pid not holding it, another holds it", hold: idleHolder, opts: lock.ReleaseOptions{Force: true},
			pidOf: func(c conns) int32 { return pid(c.bystander) }, action: lock.ReleaseNotTerminated, holder: true, changed: true,
			target: func(c conns) int32 { return pid(c.bystander) }, nowHeld: func(c conns) int32 { return pid(c.holder) }},
		{name: "force with a pid, lock free", opts: lock.ReleaseOptions{Force: true},
			pidOf: func(c conns) int32 { return pid(c.bystander) }, action: lock.ReleaseNotTerminated,
			target: func(c conns) int32 { return pid(c.bystander) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := pgtest.Shared().NewDB(t)
			c := conns{holder: connect(t, url), bystander: connect(t, url), waiter: connect(t, url), watcher: connect(t, url)}
			pgtest.MustLock(t, c.bystander, key+1)
			var hung <-chan error
			if tt.hold != nil {
				hung = tt.hold(t, c)
			}
			var waited <-chan error
			if tt.waiter {
				waited = busy(t, c.waiter, c.watcher, "SELECT pg_advisory_lock(8128)")
			}
			opts := tt.opts
			if tt.pidOf != nil {
				opts.PID = tt.pidOf(c)
			}
			logs := &records{}
			rep, err := lock.New(c.watcher, key, slog.New(logs)).Release(ctx, opts)
			t.Logf("Release(%+v) = %+v, %v", opts, rep, err)
			var hc lock.HolderChangedError
			switch {
			case rep == nil:
				t.Fatalf("no report (error %v)", err)
			case tt.changed:
				if !errors.As(err, &hc) || hc.Target != opts.PID || hc.Now != pid(c.holder) {
					t.Fatalf("error %v, want a HolderChangedError from %d to %d", err, opts.PID, pid(c.holder))
				}
			case err != nil:
				t.Fatalf("error %v", err)
			}
			var wantTarget, wantNow int32
			if tt.target != nil {
				wantTarget = tt.target(c)
			}
			if tt.nowHeld != nil {
				wantNow = tt.nowHeld(c)
			}
			if rep.Action != tt.action || rep.TargetPID != wantTarget || (rep.Holder != nil) != tt.holder ||
				(rep.Holder != nil && rep.Holder.PID != pid(c.holder)) || pidOrZero(rep.NowHeldBy) != wantNow {
				t.Fatalf("report %+v (holder %+v, now held by %+v); want action %s, target %d, holder %v, now held by %d",
					rep, rep.Holder, rep.NowHeldBy, tt.action, wantTarget, tt.holder, wantNow)
			}
			events := logs.find("advisory lock holder terminated")
			if !tt.terminated {
				if rep.ReleasedMS != nil || len(events) != 0 {
					t.Fatalf("released_ms %v, %d termination events; want none", rep.ReleasedMS, len(events))
				}
				if tt.hold != nil {
					assertHeld(t, c.watcher, key, pid(c.holder))
				}
			} else {
				if hung != nil {
					if err := <-hung; err == nil {
						t.Fatal("the hung holder's statement ended without an error")
					}
				}
				checkTerminated(t, rep, events, c.holder, key)
			}
			if tt.waiter {
				if err := <-waited; err != nil {
					t.Fatalf("the waiting session: %v", err)
				}
				assertHeld(t, c.watcher, key, pid(c.waiter)) // it was not terminated, and got the lock
			}
			assertHeld(t, c.watcher, key+1, pid(c.bystander))
		})
	}
}

// idleHolder takes the lock on the holder, idle afterwards.
func idleHolder(t *testing.T, c conns) <-chan error {
	pgtest.MustLock(t, c.holder, 8128)
	return nil
}

// hungHolder takes the lock, then keeps the holder busy in a statement
// that would last an hour.
func hungHolder(t *testing.T, c conns) <-chan error {
	pgtest.MustLock(t, c.holder, 8128)
	return busy(t, c.holder, c.watcher, "SELECT pg_sleep(3600)")
}

// checkTerminated checks a report of a terminated holder: released with a
// time, logged once with the key and the holder, the session gone.
func checkTerminated(t *testing.T, rep *lock.ReleaseReport, events []map[string]slog.Value, holder *pgx.Conn, key int64) {
	t.Helper()
	if rep.ReleasedMS == nil || *rep.ReleasedMS < 0 || *rep.ReleasedMS != float64(int64(*rep.ReleasedMS*10+0.5))/10 {
		t.Fatalf("released_ms %v, want a time to a tenth of a millisecond", rep.ReleasedMS)
	}
	if len(events) != 1 || events[0]["level"].String() != "WARN" || events[0]["lock_key"].Int64() != key ||
		groupInt(events[0]["holder"], "pid") != int64(pid(holder)) {
		t.Fatalf("termination events %v; want one warning with lock_key %d and the holder", events, key)
	}
	if alive(holder) {
		t.Fatal("the terminated holder still answers")
	}
}

// TestReleaseDenied: a role that may not end the holder's backend gets the
// server's refusal as Terminate returns it, with action failed; the holder
// keeps the lock.
func TestReleaseDenied(t *testing.T) {
	const key = 7
	ctx := context.Background()
	admin := pgtest.Shared().NewDB(t)
	holder, watcher := connect(t, admin), connect(t, admin)
	term := connect(t, plainRole(t, dbOf(admin)))
	pgtest.MustLock(t, holder, key)
	rep, err := lock.New(term, key, nil).Release(ctx, lock.ReleaseOptions{Force: true})
	var te *lock.TerminateError
	if !errors.As(err, &te) || !te.Denied || te.PID != pid(holder) || te.Key != key {
		t.Fatalf("Release = %+v, %v; want a denied TerminateError", rep, err)
	}
	if rep == nil || rep.Action != lock.ReleaseFailed || rep.TargetPID != pid(holder) || rep.Holder == nil || rep.ReleasedMS != nil {
		t.Fatalf("report %+v; want failed, target %d", rep, pid(holder))
	}
	if !alive(holder) {
		t.Fatal("holder was terminated")
	}
	assertHeld(t, watcher, key, pid(holder))
}

// TestReleaseReportJSON: embedded after the history table and the key,
// the report gives unlock --json's document as it was before Release
// existed (that command's own report type, copied here), field for field
// and in order.
func TestReleaseReportJSON(t *testing.T) {
	type unlockReport struct {
		HistoryTable string       `json:"history_table"`
		LockKey      int64        `json:"lock_key"`
		Holder       *lock.Holder `json:"holder"`
		Action       string       `json:"action"`
		TargetPID    int32        `json:"target_pid,omitempty"`
		ReleasedMS   *float64     `json:"released_ms,omitempty"`
		NowHeldBy    *lock.Holder `json:"now_held_by,omitempty"`
	}
	type embedded struct {
		HistoryTable string `json:"history_table"`
		LockKey      int64  `json:"lock_key"`
		*lock.ReleaseReport
	}
	at := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	h := &lock.Holder{PID: 42, ApplicationName: "lockmigrate/a", State: "active", Since: at, StateChange: at, QueryStart: &at,
		Query: "SELECT 1", ObservedAt: at}
	ms := 1.5
	for _, rep := range []lock.ReleaseReport{
		{Action: lock.ReleaseNone},
		{Holder: h, Action: lock.ReleaseNone},
		{Holder: h, Action: lock.ReleaseTerminated, TargetPID: 42, ReleasedMS: &ms},
		{Holder: h, Action: lock.ReleaseNotTerminated, TargetPID: 7, NowHeldBy: h},
		{Action: lock.ReleaseFailed, TargetPID: 7},
	} {
		want, err := json.MarshalIndent(unlockReport{HistoryTable: "public.lockmigrate_history", LockKey: -3, Holder: rep.Holder,
			Action: string(rep.Action), TargetPID: rep.TargetPID, ReleasedMS: rep.ReleasedMS, NowHeldBy: rep.NowHeldBy}, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		got, err := json.MarshalIndent(embedded{HistoryTable: "public.lockmigrate_history", LockKey: -3, ReleaseReport: &rep}, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("embedded report\n%s\nwant\n%s", got, want)
		}
	}
}

// TestHolderChangedErrorText: the message unlock has always given.
func TestHolderChangedErrorText(t *testing.T) {
	want := "nothing terminated: backend 12 does not hold the lock, backend 34 does now; " +
		"run lockmigrate unlock to see it, then unlock --force --pid 34 if it is hung"
	if got := (lock.HolderChangedError{Target: 12, Now: 34}).Error(); got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
	if got := lock.ErrReleaseTimeout.Error(); got != "the terminated backend did not release the lock in time" {
		t.Fatalf("ErrReleaseTimeout = %q", got)
	}
}

func pid(c *pgx.Conn) int32 { return int32(c.PgConn().PID()) }

func pidOrZero(h *lock.Holder) int32 {
	if h == nil {
		return 0
	}
	return h.PID
}

// groupInt is the integer attribute key of the group value v (0 if none).
func groupInt(v slog.Value, key string) int64 {
	if v.Kind() != slog.KindGroup {
		return 0
	}
	for _, a := range v.Group() {
		if a.Key == key {
			return a.Value.Int64()
		}
	}
	return 0
}

// assertHeld fails unless backend pid holds key.
func assertHeld(t *testing.T, watcher *pgx.Conn, key int64, pid int32) {
	t.Helper()
	if held, err := lock.New(watcher, key, nil).Held(context.Background(), pid); err != nil || !held {
		t.Fatalf("backend %d holds lock %d: %v, %v; want true", pid, key, held, err)
	}
}
