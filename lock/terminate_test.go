package lock_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/lockmigrate/lockmigrate/internal/pgtest"
	"github.com/lockmigrate/lockmigrate/lock"
)

// alive reports whether conn's session still answers.
func alive(conn *pgx.Conn) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var one int
	return conn.QueryRow(ctx, "SELECT 1").Scan(&one) == nil && one == 1
}

// plainRole creates a non-superuser login role and returns a URL for db.
func plainRole(t *testing.T, db string) string {
	t.Helper()
	b := make([]byte, 6)
	rand.Read(b)
	name, pw := "lt_"+hex.EncodeToString(b), "pw-"+hex.EncodeToString(b)
	pgtest.Shared().CreateRole(t, name, pw)
	return pgtest.Shared().URLFor(db, name, pw)
}

func dbOf(url string) string { return url[strings.LastIndex(url, "/")+1 : strings.Index(url, "?")] }

// TestTerminate: only the backend that holds the key at the moment of the
// statement is terminated; one that released it, or holds another key, is
// left alone; a role without the privilege gets a Denied error.
func TestTerminate(t *testing.T) {
	const key = 4711
	tests := []struct {
		name string
		// prepare takes the lock (or not) on holder and returns the pid to
		// terminate.
		prepare        func(t *testing.T, holder, bystander *pgx.Conn) int32
		superHolder    bool // holder connects as a superuser, terminator as a plain role
		wantTerminated bool
		wantDenied     bool
	}{
		{name: "holder terminated", wantTerminated: true,
			prepare: func(t *testing.T, holder, _ *pgx.Conn) int32 {
				pgtest.MustLock(t, holder, key)
				return int32(holder.PgConn().PID())
			}},
		{name: "released in between: not terminated",
			prepare: func(t *testing.T, holder, _ *pgx.Conn) int32 {
				pgtest.MustLock(t, holder, key)
				pid := int32(holder.PgConn().PID())
				if err := lock.New(holder, key, nil).Unlock(context.Background()); err != nil {
					t.Fatal(err)
				}
				return pid
			}},
		{name: "session holding another key: not terminated",
			prepare: func(t *testing.T, holder, bystander *pgx.Conn) int32 {
				pgtest.MustLock(t, holder, key)
				return int32(bystander.PgConn().PID())
			}},
		{name: "superuser holder, plain role: denied", superHolder: true, wantDenied: true,
			prepare: func(t *testing.T, holder, _ *pgx.Conn) int32 {
				pgtest.MustLock(t, holder, key)
				return int32(holder.PgConn().PID())
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			admin := pgtest.Shared().NewDB(t)
			holderURL, termURL := admin, admin
			if tt.superHolder {
				termURL = plainRole(t, dbOf(admin))
			}
			holder, bystander, term := connect(t, holderURL), connect(t, admin), connect(t, termURL)
			pgtest.MustLock(t, bystander, key+1)
			pid := tt.prepare(t, holder, bystander)
			a := lock.New(term, key, nil)
			terminated, err := a.Terminate(ctx, pid)
			var te *lock.TerminateError
			switch {
			case tt.wantDenied:
				if !errors.As(err, &te) || !te.Denied || !strings.Contains(err.Error(), "permission denied") {
					t.Fatalf("Terminate = %v, %v; want a denied TerminateError", terminated, err)
				}
			case err != nil || terminated != tt.wantTerminated:
				t.Fatalf("Terminate = %v, %v; want %v", terminated, err, tt.wantTerminated)
			}
			if tt.wantTerminated {
				wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				took, err := a.WaitReleased(wctx, pid)
				cancel()
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("lock released %v after the terminate", took)
				if h, err := a.Holder(ctx); err != nil || h != nil {
					t.Fatalf("holder after release = %+v, %v", h, err)
				}
				if alive(holder) {
					t.Fatal("terminated holder still answers")
				}
			} else {
				if !alive(holder) {
					t.Fatal("holder was terminated")
				}
				if held, err := a.Held(ctx, pid); err != nil || (tt.wantDenied && !held) {
					t.Fatalf("Held(%d) = %v, %v", pid, held, err)
				}
			}
			if !alive(bystander) {
				t.Fatal("bystander was terminated")
			}
			if held, err := lock.New(term, key+1, nil).Held(ctx, int32(bystander.PgConn().PID())); err != nil || !held {
				t.Fatalf("bystander's lock: held %v, %v", held, err)
			}
		})
	}
}

// TestWaitReleasedDeadline: a holder that keeps the lock makes WaitReleased
// return the deadline's cause, after polling until the deadline.
func TestWaitReleasedDeadline(t *testing.T) {
	url := pgtest.Shared().NewDB(t)
	holder, watcher := connect(t, url), connect(t, url)
	pgtest.MustLock(t, holder, 5)
	cause := errors.New("my deadline")
	ctx, cancel := context.WithTimeoutCause(context.Background(), 200*time.Millisecond, cause)
	defer cancel()
	took, err := lock.New(watcher, 5, nil).WaitReleased(ctx, int32(holder.PgConn().PID()))
	if !errors.Is(err, cause) || took < 200*time.Millisecond {
		t.Fatalf("WaitReleased = %v after %v; want %v after 200ms", err, took, cause)
	}
}

// TestHolderQuery: Holder shows the holder's current query, cut to
// QueryMaxLen characters, and when it started.
func TestHolderQuery(t *testing.T) {
	ctx := context.Background()
	url := pgtest.Shared().NewDB(t)
	holder, watcher := connect(t, url), connect(t, url)
	pgtest.MustLock(t, holder, 77)
	long := "SELECT '" + strings.Repeat("é", 300) + "'"
	if _, err := holder.Exec(ctx, long); err != nil {
		t.Fatal(err)
	}
	h, err := lock.New(watcher, 77, nil).Holder(ctx)
	if err != nil || h == nil {
		t.Fatalf("Holder = %+v, %v", h, err)
	}
	want := string([]rune(long)[:lock.QueryMaxLen]) + "…"
	if h.Query != want || utf8.RuneCountInString(h.Query) != lock.QueryMaxLen+1 {
		t.Fatalf("query = %q, want %q", h.Query, want)
	}
	if h.State != "idle" || h.QueryStart == nil || h.QueryStart.Before(h.Since) || h.ObservedAt.Before(*h.QueryStart) {
		t.Fatalf("holder = %+v", h)
	}
	if _, err := holder.Exec(ctx, "SELECT 2"); err != nil {
		t.Fatal(err)
	}
	if h, err = lock.New(watcher, 77, nil).Holder(ctx); err != nil || h.Query != "SELECT 2" {
		t.Fatalf("short query = %+v, %v", h, err)
	}
}
