package lock_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockmigrate/lockmigrate/internal/pgtest"
	"github.com/lockmigrate/lockmigrate/lock"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, pgtest.Options{})) }

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["application_name"] = "locktest/" + t.Name()
	conn, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestKeyDerivation(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		// The documented default key (README): lockmigrate:public.lockmigrate_history.
		{"lockmigrate:public.lockmigrate_history", 5822053114866441799},
		{"", -2039914840885289964}, // sha256("") = e3b0c44298fc1c14...
	}
	for _, tt := range tests {
		if got := lock.KeyFromString(tt.in); got != tt.want {
			t.Errorf("KeyFromString(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
	if got := lock.DefaultKey("public", "lockmigrate_history"); got != 5822053114866441799 {
		t.Errorf("DefaultKey = %d", got)
	}
	if got := lock.ParseKey("-42"); got != -42 {
		t.Errorf("ParseKey(-42) = %d", got)
	}
	if got := lock.ParseKey("my-app"); got != lock.KeyFromString("my-app") {
		t.Errorf("ParseKey(my-app) = %d, want the hash", got)
	}
}

// TestDefaultKeyMatchesSQL shows that an operator can compute the key in psql.
func TestDefaultKeyMatchesSQL(t *testing.T) {
	conn := connect(t, pgtest.Shared().NewDB(t))
	var k int64
	err := conn.QueryRow(context.Background(),
		`SELECT ('x' || left(encode(sha256('lockmigrate:public.lockmigrate_history'), 'hex'), 16))::bit(64)::bigint`).Scan(&k)
	if err != nil {
		t.Fatal(err)
	}
	if k != lock.DefaultKey("public", "lockmigrate_history") {
		t.Fatalf("SQL key %d != Go key %d", k, lock.DefaultKey("public", "lockmigrate_history"))
	}
}

func TestTryLockUnlockHolder(t *testing.T) {
	ctx := context.Background()
	url := pgtest.Shared().NewDB(t)
	a, b := connect(t, url), connect(t, url)
	for _, key := range []int64{42, -1, 1 << 40, -5822053114866441799} {
		la, lb := lock.New(a, key, nil), lock.New(b, key, nil)
		if ok, err := la.TryLock(ctx); err != nil || !ok {
			t.Fatalf("key %d: first TryLock = %v, %v", key, ok, err)
		}
		if ok, err := lb.TryLock(ctx); err != nil || ok {
			t.Fatalf("key %d: second session TryLock = %v, %v; want false", key, ok, err)
		}
		h, err := lb.Holder(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if h == nil || h.PID != int32(a.PgConn().PID()) || h.ApplicationName != "locktest/"+t.Name() || h.ClientAddr != "127.0.0.1" {
			t.Fatalf("key %d: holder = %+v, want pid %d", key, h, a.PgConn().PID())
		}
		if h.Since.IsZero() || time.Since(h.Since) > time.Minute {
			t.Fatalf("holder since = %v", h.Since)
		}
		if err := lb.Unlock(ctx); !errors.Is(err, lock.ErrNotHeld) {
			t.Fatalf("Unlock by non-holder = %v, want ErrNotHeld", err)
		}
		if err := la.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		if h, err := lb.Holder(ctx); err != nil || h != nil {
			t.Fatalf("after unlock holder = %+v, %v", h, err)
		}
	}
}

// TestUnlockAfterCancel: the release must work on the shutdown path, where
// the caller's context is already cancelled.
func TestUnlockAfterCancel(t *testing.T) {
	conn := connect(t, pgtest.Shared().NewDB(t))
	l := lock.New(conn, 7, nil)
	if ok, err := l.TryLock(context.Background()); !ok || err != nil {
		t.Fatal(ok, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.Unlock(ctx); err != nil {
		t.Fatalf("Unlock with cancelled ctx: %v", err)
	}
	var n int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("advisory locks left: %d (%v)", n, err)
	}
}

func TestWait(t *testing.T) {
	ctx := context.Background()
	url := pgtest.Shared().NewDB(t)
	holder, waiter := connect(t, url), connect(t, url)
	lh, lw := lock.New(holder, 99, nil), lock.New(waiter, 99, nil)
	if ok, _ := lh.TryLock(ctx); !ok {
		t.Fatal("holder did not get the lock")
	}

	t.Run("timeout returns the cause", func(t *testing.T) {
		// A waiter of its own: the deadline may fall during a try, and
		// pgx's default context handling then closes the connection.
		lw := lock.New(connect(t, url), 99, nil)
		cause := errors.New("my timeout")
		wctx, cancel := context.WithTimeoutCause(ctx, 300*time.Millisecond, cause)
		defer cancel()
		n, err := lw.Wait(wctx)
		if !errors.Is(err, cause) {
			t.Fatalf("Wait = %v, want %v", err, cause)
		}
		if n < 2 {
			t.Fatalf("attempts = %d, want several", n)
		}
	})

	t.Run("acquires after release", func(t *testing.T) {
		// The holder releases once the waiter is seen polling: no sleeps.
		// The poller ends before the subtest does, even when Wait fails,
		// so it never uses the holder's connection while it is closed.
		released, done := make(chan error, 1), make(chan struct{})
		pctx, stop := context.WithCancel(ctx)
		defer func() { stop(); <-done }()
		go func() {
			defer close(done)
			for {
				var waiting bool
				// pg_stat_activity shows the waiter's last try-lock.
				err := holder.QueryRow(pctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
				   WHERE pid = $1 AND query LIKE '%pg_try_advisory_lock%')`, waiter.PgConn().PID()).Scan(&waiting)
				if err != nil {
					released <- err
					return
				}
				if waiting {
					released <- lh.Unlock(ctx)
					return
				}
			}
		}()
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if _, err := lw.Wait(wctx); err != nil {
			t.Fatalf("Wait: %v", err)
		}
		if err := <-released; err != nil {
			t.Fatal(err)
		}
		if err := lw.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

// countingQuerier counts the statements a lock sends.
type countingQuerier struct {
	lock.Querier
	n int
}

func (c *countingQuerier) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	c.n++
	return c.Querier.QueryRow(ctx, sql, args...)
}

// TestConflictHolder: with HolderOnConflict, a lost TryLock names the
// holder, exactly as Holder does, in its one statement; a won one names
// nobody and still verifies its lock.
func TestConflictHolder(t *testing.T) {
	ctx := context.Background()
	url := pgtest.Shared().NewDB(t)
	a, b := connect(t, url), connect(t, url)
	for _, key := range []int64{7, -5822053114866441799} {
		la := lock.New(a, key, nil)
		if ok, err := la.TryLock(ctx); err != nil || !ok {
			t.Fatalf("key %d: first TryLock = %v, %v", key, ok, err)
		}
		cq := &countingQuerier{Querier: b}
		lb := lock.New(cq, key, nil)
		lb.HolderOnConflict = true
		if ok, err := lb.TryLock(ctx); err != nil || ok {
			t.Fatalf("key %d: second session TryLock = %v, %v; want false", key, ok, err)
		}
		if cq.n != 1 {
			t.Fatalf("key %d: a lost TryLock sent %d statements, want 1", key, cq.n)
		}
		got := lb.ConflictHolder()
		want, err := lock.New(b, key, nil).Holder(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got == nil || want == nil || got.PID != int32(a.PgConn().PID()) || got.ApplicationName != "locktest/"+t.Name() ||
			got.ClientAddr != "127.0.0.1" || got.User == "" || !got.Since.Equal(want.Since) ||
			!got.StateChange.Equal(want.StateChange) || got.State != want.State || got.User != want.User {
			t.Fatalf("key %d: ConflictHolder = %+v, Holder = %+v", key, got, want)
		}
		// Without the flag the try names nobody.
		plain := lock.New(b, key, nil)
		if ok, err := plain.TryLock(ctx); err != nil || ok || plain.ConflictHolder() != nil {
			t.Fatalf("key %d: plain TryLock = %v, %v, holder %+v", key, ok, err, plain.ConflictHolder())
		}
		if err := la.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		// Won: no holder reported, and the lock is really held (verified).
		cq.n = 0
		if ok, err := lb.TryLock(ctx); err != nil || !ok || lb.ConflictHolder() != nil {
			t.Fatalf("key %d: TryLock after release = %v, %v, holder %+v", key, ok, err, lb.ConflictHolder())
		}
		if cq.n != 2 {
			t.Fatalf("key %d: a won TryLock sent %d statements, want 2 (try, verify)", key, cq.n)
		}
		if h, err := la.Holder(ctx); err != nil || h == nil || h.PID != int32(b.PgConn().PID()) {
			t.Fatalf("key %d: holder after b won = %+v, %v", key, h, err)
		}
		if err := lb.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	}
}
