package pgtest

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// connectTimeout bounds Connect: a test server answers at once or not at
// all.
const connectTimeout = 10 * time.Second

// Connect opens a connection to url that the test's cleanup closes.
func Connect(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// QueryInt runs a query returning one integer.
func QueryInt(t testing.TB, conn *pgx.Conn, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// AssertNoAdvisoryLocks fails t if any session of the server holds or waits
// for an advisory lock.
func AssertNoAdvisoryLocks(t testing.TB, conn *pgx.Conn) {
	t.Helper()
	if n := QueryInt(t, conn, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'`); n != 0 {
		t.Fatalf("%d advisory lock(s) left", n)
	}
}

// MustLock takes the session advisory lock key on conn, failing t when
// another session holds it.
func MustLock(t testing.TB, conn *pgx.Conn, key int64) {
	t.Helper()
	var ok bool
	if err := conn.QueryRow(context.Background(), `SELECT pg_try_advisory_lock($1)`, key).Scan(&ok); err != nil || !ok {
		t.Fatalf("taking advisory lock %d: ok=%v err=%v", key, ok, err)
	}
}
