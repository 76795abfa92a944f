package cluster

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockmigrate/lockmigrate/internal/pgtest"
)

func sharedServer() *pgtest.Server { return pgtest.Shared() }

// historyRow is one row of a lockmigrate history table.
type historyRow struct {
	version   int64
	appliedBy string
	appliedAt time.Time
}

// history reads schema's history table (lockmigrate_history), by version.
func history(t testing.TB, db *pgx.Conn, schema string) []historyRow {
	t.Helper()
	rows, err := db.Query(context.Background(), fmt.Sprintf(
		`SELECT version, applied_by, applied_at FROM %s.lockmigrate_history ORDER BY version`,
		pgx.Identifier{schema}.Sanitize()))
	if err != nil {
		t.Fatalf("history of %s: %v", schema, err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (historyRow, error) {
		var h historyRow
		err := row.Scan(&h.version, &h.appliedBy, &h.appliedAt)
		return h, err
	})
	if err != nil {
		t.Fatalf("history of %s: %v", schema, err)
	}
	return out
}

// assertAuditOnce checks that schema's schema_audit table (every
// migration of the example set adds one row, with no unique constraint)
// holds exactly one row for each of versions 1..n.
func assertAuditOnce(t testing.TB, db *pgx.Conn, schema string, n int) {
	t.Helper()
	var rows, versions, maxVersion int
	err := db.QueryRow(context.Background(), fmt.Sprintf(
		`SELECT count(*), count(DISTINCT version), coalesce(max(version), 0) FROM %s.schema_audit`,
		pgx.Identifier{schema}.Sanitize())).Scan(&rows, &versions, &maxVersion)
	if err != nil {
		t.Fatalf("schema_audit of %s: %v", schema, err)
	}
	if rows != n || versions != n || maxVersion != n {
		t.Fatalf("%s.schema_audit: %d rows, %d versions, max %d; want each of the %d migrations exactly once",
			schema, rows, versions, maxVersion, n)
	}
}

// assertHistory checks that the history holds versions 1..n, with
// appliedBy(version) as applied_by of each.
func assertHistory(t testing.TB, h []historyRow, n int, appliedBy func(v int64) string) {
	t.Helper()
	if len(h) != n {
		t.Fatalf("history has %d rows, want %d: %+v", len(h), n, h)
	}
	for i, row := range h {
		if row.version != int64(i+1) {
			t.Fatalf("history row %d is version %d, want %d", i, row.version, i+1)
		}
		if want := appliedBy(row.version); row.appliedBy != want {
			t.Fatalf("version %d applied by %q, want %q", row.version, row.appliedBy, want)
		}
	}
}

// advisoryLocks counts the advisory locks held or awaited in the
// connection's database (other tests' databases share the server).
func advisoryLocks(t testing.TB, db *pgx.Conn) int {
	t.Helper()
	return pgtest.QueryInt(t, db, `SELECT count(*) FROM pg_locks
		WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`)
}

// session is a backend of the server, as pg_stat_activity shows it.
type session struct {
	pid     int32
	appName string
	query   string
}

// waitSession polls pg_stat_activity (there is nothing to wait on) until a
// session of this database whose application_name starts with prefix and
// whose current or last query contains queryPart exists.
func waitSession(t testing.TB, db *pgx.Conn, prefix, queryPart string, timeout time.Duration) session {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		var s session
		err := db.QueryRow(context.Background(), `SELECT pid, application_name, query FROM pg_stat_activity
			WHERE datname = current_database() AND application_name LIKE $1 || '%' AND query LIKE '%' || $2 || '%'
			ORDER BY backend_start LIMIT 1`, prefix, queryPart).Scan(&s.pid, &s.appName, &s.query)
		if err == nil {
			return s
		}
		if err != pgx.ErrNoRows {
			t.Fatalf("pg_stat_activity: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no session %s* with a query like %q after %s", prefix, queryPart, timeout)
		}
		<-tick.C
	}
}

// forwarder accepts TCP connections on the pod network and relays them to
// the shared server: the database's address, as the pods see it, that the
// test opens when it wants the database reachable.
type forwarder struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

// reserveAddr returns an address on the gateway where nothing listens.
func reserveAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(env.gateway, "0"))
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// forward starts relaying connections to addr to the database of dbURL,
// until t ends.
func forward(t testing.TB, addr, dbURL string) {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	f := &forwarder{ln: ln}
	go f.serve(u.Host)
	t.Cleanup(f.close)
}

func (f *forwarder) serve(target string) {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.DialTimeout("tcp", target, 5*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		f.mu.Lock()
		f.conns = append(f.conns, c, up)
		f.mu.Unlock()
		go relay(c, up)
		go relay(up, c)
	}
}

func relay(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
}

func (f *forwarder) close() {
	f.ln.Close()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		c.Close()
	}
}
