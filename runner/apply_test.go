package runner_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lockmigrate/lockmigrate/internal/pgtest"
	"github.com/lockmigrate/lockmigrate/lock"
	"github.com/lockmigrate/lockmigrate/runner"
)

// countingConn counts the messages a runner sends that wait for an answer:
// with the exec query mode every call below is one round trip.
type countingConn struct {
	*pgx.Conn
	calls atomic.Int64
}

func (c *countingConn) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	c.calls.Add(1)
	return c.Conn.Exec(ctx, sql, args...)
}

func (c *countingConn) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	c.calls.Add(1)
	return c.Conn.Query(ctx, sql, args...)
}

func (c *countingConn) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	c.calls.Add(1)
	return c.Conn.QueryRow(ctx, sql, args...)
}

func (c *countingConn) Begin(ctx context.Context) (pgx.Tx, error) {
	c.calls.Add(1)
	return c.Conn.Begin(ctx)
}

func tables(n int) fstest.MapFS {
	fsys := fstest.MapFS{}
	for i := 1; i <= n; i++ {
		fsys[fmt.Sprintf("%04d_t%d.sql", i, i)] = &fstest.MapFile{
			Data: fmt.Appendf(nil, "CREATE TABLE t%d (id bigint primary key, v text);\nCREATE INDEX ON t%d (v);\n", i, i)}
	}
	return fsys
}

// TestOneRoundTripPerTransactionalMigration counts the round trips of a run
// applying 10 and then 30 migrations: the difference divided by 20 is the
// cost of one migration, whatever the fixed cost of the run.
func TestOneRoundTripPerTransactionalMigration(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts runner.Options
	}{
		{"each", runner.Options{}},
		{"each with timeouts", runner.Options{LockTimeout: time.Second, StatementTimeout: time.Minute}},
		{"all", runner.Options{Transaction: runner.TransactionAll}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			calls := map[int]int64{}
			for _, n := range []int{10, 30} {
				url := pgtest.Shared().NewDB(t)
				conn := &countingConn{Conn: connect(t, url)}
				opts := tt.opts
				opts.Schema, opts.Table = "public", "lockmigrate_history"
				r, err := runner.New(conn, lock.New(conn.Conn, lockKey, nil), load(t, tables(n)), opts)
				if err != nil {
					t.Fatal(err)
				}
				res, err := r.Migrate(context.Background())
				if err != nil || len(res.Applied) != n {
					t.Fatalf("Migrate = %+v, %v", res, err)
				}
				if got := pgtest.QueryInt(t, conn.Conn, `SELECT count(*) FROM lockmigrate_history WHERE state = 'applied'`); got != n {
					t.Fatalf("history rows = %d, want %d", got, n)
				}
				calls[n] = conn.calls.Load()
			}
			perMigration := float64(calls[30]-calls[10]) / 20
			t.Logf("round trips: %d for 10 migrations, %d for 30: %.2f per migration", calls[10], calls[30], perMigration)
			if perMigration != 1 {
				t.Fatalf("%.2f round trips per migration, want 1", perMigration)
			}
		})
	}
}

// TestHistoryRowLiterals: the history row travels as literals in the
// migration's query; values with quotes and backslashes must arrive intact
// whatever standard_conforming_strings says, and the duration is the
// server's measure of the file.
func TestHistoryRowLiterals(t *testing.T) {
	ctx := context.Background()
	appliedBy := `o'brien\pod-0 "x" ünïcode`
	for _, scs := range []string{"on", "off"} {
		t.Run("standard_conforming_strings="+scs, func(t *testing.T) {
			url := pgtest.Shared().NewDB(t)
			conn := connect(t, url)
			if _, err := conn.Exec(ctx, "SET standard_conforming_strings = "+scs); err != nil {
				t.Fatal(err)
			}
			migs := load(t, fstest.MapFS{"1_slow.sql": {Data: []byte("SELECT pg_sleep(0.2);")}})
			r, err := runner.New(conn, lock.New(conn, lockKey, nil), migs, runner.Options{
				Schema: "public", Table: "lockmigrate_history", AppliedBy: appliedBy})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := r.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			var by, name, sum, runID string
			var ms int64
			if err := conn.QueryRow(ctx, `SELECT applied_by, name, checksum, run_id::text, duration_ms FROM lockmigrate_history`).
				Scan(&by, &name, &sum, &runID, &ms); err != nil {
				t.Fatal(err)
			}
			if by != appliedBy || name != migs[0].Name || sum != migs[0].Checksum || runID == "" {
				t.Fatalf("history row = %q %q %q %q", by, name, sum, runID)
			}
			if ms < 200 {
				t.Fatalf("duration_ms = %d, want >= 200 (the file sleeps 200 ms)", ms)
			}
		})
	}
}

// TestFileShapes: the file is followed by more SQL in the same query, so its
// last line must not swallow or break what follows.
func TestFileShapes(t *testing.T) {
	ctx := context.Background()
	url := pgtest.Shared().NewDB(t)
	migs := load(t, fstest.MapFS{
		"1_comment_at_end.sql":  {Data: []byte("CREATE TABLE a (id int); -- trailing comment, no newline")},
		"2_no_semicolon.sql":    {Data: []byte("CREATE TABLE b (id int)")},
		"3_only_comments.sql":   {Data: []byte("-- nothing to do yet\n/* really */")},
		"4_dollar_body.sql":     {Data: []byte("CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $$ SELECT 'COMMIT; x' $$;")},
		"5_block_comment.sql":   {Data: []byte("CREATE TABLE c (id int) /* no semicolon, comment last */")},
		"6_windows_endings.sql": {Data: []byte("CREATE TABLE d (id int);\r\nCREATE TABLE e (id int);\r\n")},
	})
	r, conn := newRunner(t, url, migs, runner.Options{})
	res, err := r.Migrate(ctx)
	if err != nil || len(res.Applied) != len(migs) {
		t.Fatalf("Migrate = %+v, %v", res, err)
	}
	if n := pgtest.QueryInt(t, conn, `SELECT count(*) FROM pg_tables WHERE tablename IN ('a', 'b', 'c', 'd', 'e')`); n != 5 {
		t.Fatalf("%d of 5 tables created", n)
	}
	if n := pgtest.QueryInt(t, conn, `SELECT count(*) FROM lockmigrate_history WHERE state = 'applied'`); n != len(migs) {
		t.Fatalf("history rows = %d, want %d", n, len(migs))
	}
}

// TestErrorAttribution: an error of the combined query is reported against
// the file (with its own line numbers, whatever precedes it in the query) or
// against the history row, and the connection is left outside any
// transaction.
func TestErrorAttribution(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name      string
		opts      runner.Options
		file      string
		wantLine  int
		wantStmt  string
		inHistory bool
	}{
		{name: "syntax error", file: "CREATE TABLE x (id int);\nCREATE TABEL y (id int);\n",
			wantLine: 2, wantStmt: "CREATE TABEL y (id int);"},
		{name: "after SET LOCAL prefix", opts: runner.Options{LockTimeout: time.Second, StatementTimeout: time.Minute},
			file: "-- ünïcode before the error\nSELECT 1;\n\nSELECT * FROM nope;", wantLine: 4, wantStmt: "SELECT * FROM nope;"},
		{name: "unterminated string swallows the rest", file: "CREATE TABLE x (id int);\nSELECT 'oops;\n",
			wantLine: 2, wantStmt: "SELECT 'oops;"},
		{name: "runtime error without position", file: "CREATE TABLE x (id int);\nSELECT 1/0;\n"},
		{name: "unfinished last statement", file: "CREATE TABLE x (id int);\nALTER TABLE x ADD COLUMN\n\n",
			wantLine: 2, wantStmt: "ALTER TABLE x ADD COLUMN"},
		{name: "unfinished last statement, no newline", file: "CREATE TABLE x (id int);\nSELECT 'a' ||",
			wantLine: 2, wantStmt: "SELECT 'a' ||"},
		{name: "history row conflicts", inHistory: true,
			file: "INSERT INTO lockmigrate_history (version, name, checksum) VALUES (1, 'x', 'y');\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := pgtest.Shared().NewDB(t)
			migs := load(t, fstest.MapFS{"1_f.sql": {Data: []byte(tt.file)}})
			r, conn := newRunner(t, url, migs, tt.opts)
			_, err := r.Migrate(ctx)
			if err == nil {
				t.Fatal("Migrate succeeded")
			}
			var me *runner.MigrationError
			if tt.inHistory {
				if errors.As(err, &me) || !strings.Contains(err.Error(), "record migration 1_f.sql in history") {
					t.Fatalf("error = %v, want a history error", err)
				}
			} else if !errors.As(err, &me) || me.Line != tt.wantLine || me.Statement != tt.wantStmt || me.File != "1_f.sql" {
				t.Fatalf("error = %#v (%v), want line %d statement %q", me, err, tt.wantLine, tt.wantStmt)
			}
			if s := conn.PgConn().TxStatus(); s != 'I' {
				t.Fatalf("connection left in transaction status %q", s)
			}
			if n := pgtest.QueryInt(t, conn, `SELECT count(*) FROM lockmigrate_history`); n != 0 {
				t.Fatalf("%d history rows after a failed migration", n)
			}
			if n := pgtest.QueryInt(t, conn, `SELECT count(*) FROM pg_tables WHERE tablename = 'x'`); n != 0 {
				t.Fatal("the failed migration's table was committed")
			}
			pgtest.AssertNoAdvisoryLocks(t, conn)
		})
	}
}

// TestStatementTimeoutInSameQuery: the SET LOCAL statement_timeout that
// travels in the migration's own query applies to the file's statements
// (PostgreSQL 13+ times each statement of a multi-statement query).
func TestStatementTimeoutInSameQuery(t *testing.T) {
	url := pgtest.Shared().NewDB(t)
	migs := load(t, fstest.MapFS{"1_slow.sql": {Data: []byte("CREATE TABLE x (id int);\nSELECT pg_sleep(30);\n")}})
	r, conn := newRunner(t, url, migs, runner.Options{StatementTimeout: 200 * time.Millisecond})
	_, err := r.Migrate(context.Background())
	var me *runner.MigrationError
	var pgErr *pgconn.PgError
	if !errors.As(err, &me) || !errors.As(err, &pgErr) || pgErr.Code != "57014" || me.File != "1_slow.sql" {
		t.Fatalf("Migrate = %v; want statement_timeout (57014) in 1_slow.sql", err)
	}
	if n := pgtest.QueryInt(t, conn, `SELECT count(*) FROM pg_tables WHERE tablename = 'x'`); n != 0 {
		t.Fatal("the timed-out migration was committed")
	}
	if n := pgtest.QueryInt(t, conn, `SELECT setting::int FROM pg_settings WHERE name = 'statement_timeout'`); n != 0 {
		t.Fatalf("statement_timeout %d left on the session after the transaction", n)
	}
}
