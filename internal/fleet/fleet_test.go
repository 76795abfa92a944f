package fleet_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockmigrate/lockmigrate/internal/dbconn"
	"github.com/lockmigrate/lockmigrate/internal/fleet"
	"github.com/lockmigrate/lockmigrate/internal/pgtest"
	"github.com/lockmigrate/lockmigrate/runner"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, pgtest.Options{})) }

const table = "lockmigrate_history"

// tenantSet is five migrations written against the search_path (no schema
// in any name); each appends (schema, version) to public.migration_log, so
// count = distinct proves every migration ran exactly once per tenant.
var tenantSet = fstest.MapFS{
	"1_widgets.sql":     {Data: []byte("CREATE TABLE widgets (id int PRIMARY KEY, name text);\nINSERT INTO public.migration_log VALUES (current_schema(), 1);\n")},
	"2_gadgets.sql":     {Data: []byte("CREATE TABLE gadgets (id int PRIMARY KEY);\nINSERT INTO public.migration_log VALUES (current_schema(), 2);\n")},
	"3_widget_name.sql": {Data: []byte("CREATE INDEX widgets_name ON widgets (name);\nINSERT INTO public.migration_log VALUES (current_schema(), 3);\n")},
	"4_price.sql":       {Data: []byte("ALTER TABLE widgets ADD COLUMN price numeric;\nINSERT INTO public.migration_log VALUES (current_schema(), 4);\n")},
	"5_seed.sql":        {Data: []byte("INSERT INTO widgets VALUES (1, 'first', 9.5);\nINSERT INTO public.migration_log VALUES (current_schema(), 5);\n")},
}

func migrations(t testing.TB) []*runner.Migration {
	t.Helper()
	migs, err := runner.Load(tenantSet)
	if err != nil {
		t.Fatal(err)
	}
	return migs
}

// tenantName is the name of tenant i (1-based), sorting like i.
func tenantName(i int) string { return fmt.Sprintf("tenant_%04d", i) }

// newTenantDB creates a database holding n empty tenant schemas and the
// global migration log, in one statement.
func newTenantDB(t testing.TB, n int) string {
	t.Helper()
	srv := pgtest.Shared()
	url := srv.NewDB(t)
	db := url[strings.LastIndex(url, "/")+1 : strings.Index(url, "?")]
	err := srv.Exec(context.Background(), db, fmt.Sprintf(`
CREATE TABLE public.migration_log (tenant text NOT NULL, version int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
DO $$ BEGIN
  FOR i IN 1..%d LOOP EXECUTE format('CREATE SCHEMA %%I', 'tenant_' || lpad(i::text, 4, '0')); END LOOP;
END $$;`, n))
	if err != nil {
		t.Fatal(err)
	}
	return url
}

const tenantsQuery = `SELECT nspname FROM pg_namespace WHERE nspname LIKE 'tenant\_%'`

// counter counts the connections opened and the queries sent on them.
type counter struct {
	connects, queries atomic.Int64
}

func (c *counter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.queries.Add(1)
	return ctx
}

func (c *counter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// connector returns a Connect function that opens connections the way the
// binary does (dbconn), as application app, counted by c.
func connector(t testing.TB, url, app string, c *counter) func(context.Context) (*pgx.Conn, error) {
	t.Helper()
	cfg, err := dbconn.Config(url, func(string) string { return "" }, app, dbconn.Keepalive{})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Tracer = c
	return func(ctx context.Context) (*pgx.Conn, error) {
		conn, _, err := dbconn.Connect(ctx, cfg, 10*time.Second, slog.New(slog.DiscardHandler))
		if err == nil {
			c.connects.Add(1)
		}
		return conn, err
	}
}

// testLogger logs to the test at info level.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func options(t testing.TB, url, app string, c *counter, concurrency int) fleet.Options {
	return fleet.Options{
		Connect:     connector(t, url, app, c),
		Migrations:  migrations(t),
		Runner:      runner.Options{Table: table, AppliedBy: app},
		Query:       tenantsQuery,
		Concurrency: concurrency,
		Logger:      testLogger(t),
	}
}

func conn(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// sampleConnections counts, every few milliseconds until stop is called,
// the sessions of application app, and returns the largest count seen.
func sampleConnections(t testing.TB, url, app string) (stop func() int) {
	c := conn(t, url)
	done := make(chan struct{})
	maxSeen := make(chan int)
	go func() {
		peak := 0
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			var n int
			if err := c.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, app).Scan(&n); err == nil {
				peak = max(peak, n)
			}
			select {
			case <-done:
				maxSeen <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return func() int { close(done); return <-maxSeen }
}

// checkExactlyOnce asserts every tenant ran every migration once, and has
// them all in its history.
func checkExactlyOnce(t testing.TB, url string, tenants, migs int) {
	t.Helper()
	c := conn(t, url)
	var rows, distinct, tenantsSeen int
	if err := c.QueryRow(context.Background(),
		`SELECT count(*), count(DISTINCT (tenant, version)), count(DISTINCT tenant) FROM public.migration_log`).Scan(&rows, &distinct, &tenantsSeen); err != nil {
		t.Fatal(err)
	}
	if rows != tenants*migs || distinct != rows || tenantsSeen != tenants {
		t.Fatalf("migration_log: %d rows, %d distinct, %d tenants; want %d, %d, %d", rows, distinct, tenantsSeen, tenants*migs, tenants*migs, tenants)
	}
	var wrong int
	if err := c.QueryRow(context.Background(), `SELECT count(*) FROM (SELECT tenant FROM public.migration_log GROUP BY tenant HAVING count(*) <> $1) x`, migs).Scan(&wrong); err != nil || wrong != 0 {
		t.Fatalf("%d tenants with a wrong number of migrations (%v)", wrong, err)
	}
}

func noAdvisoryLocks(t testing.TB, url string) {
	t.Helper()
	var n int
	if err := conn(t, url).QueryRow(context.Background(), `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d advisory locks left (%v)", n, err)
	}
}

// TestThousandTenants: 1,000 schemas × 5 migrations with concurrency 8 are
// all applied exactly once on at most 8 + 1 connections; a second run then
// finds them all current on one connection in 2 + ceil(1000/500) = 4
// queries, under a second.
func TestThousandTenants(t *testing.T) {
	const n, concurrency = 1000, 8
	url := newTenantDB(t, n)
	ctx := context.Background()

	var c counter
	stop := sampleConnections(t, url, "fleet-first")
	start := time.Now()
	sum, err := fleet.Run(ctx, options(t, url, "fleet-first", &c, concurrency))
	wall := time.Since(start)
	peak := stop()
	if err != nil {
		t.Fatal(err)
	}
	if sum.Total != n || sum.Applied != n || sum.MigrationsApplied != 5*n || sum.Failed+sum.Skipped+sum.NotAttempted != 0 {
		t.Fatalf("first run: %+v", sum)
	}
	if sum.Connections > concurrency+1 || int(c.connects.Load()) != sum.Connections || peak > concurrency+1 {
		t.Fatalf("connections: %d opened (%d counted), %d at once; want at most %d", sum.Connections, c.connects.Load(), peak, concurrency+1)
	}
	t.Logf("first run: %d tenants × 5 migrations, concurrency %d: wall %v, %d connections opened, at most %d at once (pg_stat_activity), %d queries in all",
		n, concurrency, wall.Round(time.Millisecond), sum.Connections, peak, c.queries.Load())
	checkExactlyOnce(t, url, n, 5)
	noAdvisoryLocks(t, url)

	var c2 counter
	start = time.Now()
	sum, err = fleet.Run(ctx, options(t, url, "fleet-second", &c2, concurrency))
	wall = time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	wantQueries := 2 + (n+fleet.DefaultChunkSize-1)/fleet.DefaultChunkSize
	if sum.UpToDate != n || sum.Current != n || sum.Applied != 0 || c2.connects.Load() != 1 {
		t.Fatalf("second run: %+v, %d connections", sum, c2.connects.Load())
	}
	if got := c2.queries.Load(); got != int64(wantQueries) || sum.ControlQueries != wantQueries {
		t.Fatalf("second run: %d queries (summary says %d), want %d", got, sum.ControlQueries, wantQueries)
	}
	// The time is reported, not asserted: the round trips above are the
	// deterministic part, the wall time goes into the figures.
	t.Logf("second run: all %d current in %d round trips on %d connection, wall %v (fast path %v)",
		n, c2.queries.Load(), c2.connects.Load(), wall.Round(time.Millisecond), sum.FastPath.Round(time.Millisecond))
	checkExactlyOnce(t, url, n, 5)
}

// TestBaselineRowsAreCurrent: rows recorded by a baseline (adopt or
// LOCKMIGRATE_BASELINE_VERSION) count as applied on the fleet's fast path,
// so an adopted tenant does not cost a connection of its own.
func TestBaselineRowsAreCurrent(t *testing.T) {
	const n = 3
	url := newTenantDB(t, n)
	ctx := context.Background()
	var c counter
	if _, err := fleet.Run(ctx, options(t, url, "fleet-baseline", &c, 2)); err != nil {
		t.Fatal(err)
	}
	if _, err := conn(t, url).Exec(ctx, `UPDATE tenant_0002.lockmigrate_history SET state = 'baseline' WHERE version <= 3`); err != nil {
		t.Fatal(err)
	}
	var c2 counter
	sum, err := fleet.Run(ctx, options(t, url, "fleet-baseline-2", &c2, 2))
	if err != nil {
		t.Fatal(err)
	}
	if sum.Current != n || sum.UpToDate != n || c2.connects.Load() != 1 {
		t.Fatalf("after baseline rows: %+v, %d connections; want all %d current on the control connection", sum, c2.connects.Load(), n)
	}
}
