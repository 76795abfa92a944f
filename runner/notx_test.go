package runner_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/lockmigrate/lockmigrate/internal/pgtest"
	"github.com/lockmigrate/lockmigrate/runner"
)

// contend releases n runners at one barrier, half in skip mode and half in
// wait mode, and returns their outcomes. Every runner must succeed.
func contend(t *testing.T, url string, migs []*runner.Migration, n int, opts runner.Options) map[runner.Outcome]int {
	t.Helper()
	runners := make([]*runner.Runner, n)
	for i := range runners {
		o := opts
		o.AppliedBy = fmt.Sprintf("contender-%d", i)
		if i%2 == 1 {
			o.OnLocked, o.WaitTimeout = runner.Wait, time.Minute
		}
		runners[i], _ = newRunner(t, url, migs, o)
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		barrier = make(chan struct{})
		out     = map[runner.Outcome]int{}
	)
	for i, r := range runners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-barrier
			res, err := r.Migrate(context.Background())
			if err != nil {
				t.Errorf("runner %d: %v", i, err)
				return
			}
			mu.Lock()
			out[res.Outcome]++
			mu.Unlock()
		}()
	}
	close(barrier)
	wg.Wait()
	t.Logf("outcomes of %d contending runners: %v", n, out)
	if out[runner.OutcomeApplied] != 1 {
		t.Fatalf("outcomes %v: want exactly one applied", out)
	}
	return out
}

// TestNoTransactionUnderContention: a no-transaction file with CREATE INDEX
// CONCURRENTLY, a dollar-quoted function body with semicolons and comments
// with semicolons applies while 10 other runs contend for the lock. CIC
// waits for every transaction that could see the table; had a contender
// waited inside a transaction, the index build would block on it (and the
// statement_timeout below would fail the test instead of hanging it).
func TestNoTransactionUnderContention(t *testing.T) {
	url := pgtest.Shared().NewDB(t)
	migs := load(t, fstest.MapFS{
		"1_items.sql": {Data: []byte(`CREATE TABLE items (id int PRIMARY KEY, name text);
INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 10000) g;
CREATE TABLE observed (pid int, state text, in_xact bool);`)},
		"2_concurrently.sql": {Data: []byte(`-- lockmigrate:no-transaction
-- Wait (bounded) until at least 5 contenders are polling for the lock, then
-- record what their sessions look like; the test asserts none is inside a
-- transaction. Semicolons here; are fine.
DO $$
BEGIN
  FOR i IN 1..1000 LOOP
    EXIT WHEN (SELECT count(*) FROM pg_stat_activity
                WHERE query LIKE '%pg_try_advisory_lock%' AND pid <> pg_backend_pid()) >= 5;
    PERFORM pg_sleep(0.01);
  END LOOP;
END $$;
INSERT INTO observed
SELECT pid, state, xact_start IS NOT NULL AND state <> 'active'
  FROM pg_stat_activity
 WHERE query LIKE '%pg_try_advisory_lock%' AND pid <> pg_backend_pid();
/* block comment; with a semicolon /* nested; */ still comment */
CREATE INDEX CONCURRENTLY items_name_idx ON items (name);
CREATE FUNCTION item_label(i int) RETURNS text LANGUAGE plpgsql AS $body$
DECLARE
  n text; -- a semicolon in a comment inside the body;
BEGIN
  SELECT name INTO n FROM items WHERE id = i;
  RETURN n || ';';
END;
$body$;
CREATE INDEX CONCURRENTLY items_upper_idx ON items (upper(name))`)},
	})
	if !migs[1].NoTransaction {
		t.Fatal("directive not recognised")
	}
	contend(t, url, migs, 11, runner.Options{StatementTimeout: 30 * time.Second})

	conn := connect(t, url)
	if n := pgtest.QueryInt(t, conn, `SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
	   WHERE c.relname IN ('items_name_idx', 'items_upper_idx') AND i.indisvalid`); n != 2 {
		t.Fatalf("%d valid concurrent indexes, want 2", n)
	}
	var label string
	if err := conn.QueryRow(context.Background(), `SELECT item_label(7)`).Scan(&label); err != nil || label != "item 7;" {
		t.Fatalf("item_label(7) = %q, %v", label, err)
	}
	waiting := pgtest.QueryInt(t, conn, `SELECT count(*) FROM observed`)
	inXact := pgtest.QueryInt(t, conn, `SELECT count(*) FROM observed WHERE in_xact OR state LIKE 'idle in transaction%'`)
	t.Logf("contenders seen polling during the migration: %d, inside a transaction: %d", waiting, inXact)
	if waiting < 5 || inXact != 0 {
		t.Fatalf("observed %d polling contenders, %d inside a transaction; want >= 5 and 0", waiting, inXact)
	}
	if n := pgtest.QueryInt(t, conn, `SELECT statements_done FROM lockmigrate_history WHERE version = 2 AND state = 'applied'`); n != 5 {
		t.Fatalf("statements_done = %d, want 5", n)
	}
	pgtest.AssertNoAdvisoryLocks(t, conn)
}

// TestZeroDowntimeExamples applies the documented example set while 10 other
// runs contend, with the lock_timeout the README recommends.
func TestZeroDowntimeExamples(t *testing.T) {
	url := pgtest.Shared().NewDB(t)
	migs, err := runner.Load(os.DirFS("../examples/zero-downtime"))
	if err != nil {
		t.Fatal(err)
	}
	contend(t, url, migs, 11, runner.Options{LockTimeout: 2 * time.Second, LockRetries: 3})
	conn := connect(t, url)
	if n := pgtest.QueryInt(t, conn, `SELECT count(*) FROM accounts WHERE plan = 'free'`); n != 5000 {
		t.Fatalf("backfilled %d rows, want 5000", n)
	}
	if n := pgtest.QueryInt(t, conn, `SELECT count(*) FROM information_schema.columns
	   WHERE table_name = 'accounts' AND column_name = 'plan' AND is_nullable = 'NO'`); n != 1 {
		t.Fatal("plan is not NOT NULL")
	}
	if n := pgtest.QueryInt(t, conn, `SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
	   WHERE c.relname = 'accounts_plan_idx' AND i.indisvalid`); n != 1 {
		t.Fatal("accounts_plan_idx missing or invalid")
	}
	if n := pgtest.QueryInt(t, conn, `SELECT accounts_on_plan('free')`); n != 5000 {
		t.Fatalf("accounts_on_plan = %d", n)
	}
	pgtest.AssertNoAdvisoryLocks(t, conn)
}

// TestNoTransactionLockTimeoutDropsInvalidIndex: a CREATE INDEX
// CONCURRENTLY that hits lock_timeout leaves an INVALID index; the runner
// drops it and retries the statement, which succeeds once the blocking
// transaction ends.
func TestNoTransactionLockTimeoutDropsInvalidIndex(t *testing.T) {
	ctx := context.Background()
	url := pgtest.Shared().NewDB(t)
	blocker := connect(t, url)
	if _, err := blocker.Exec(ctx, `CREATE TABLE t (a int); CREATE INDEX old_broken ON t (a)`); err != nil {
		t.Fatal(err)
	}
	// An INVALID index that predates the migration must be left alone.
	if _, err := blocker.Exec(ctx, `UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'old_broken'::regclass`); err != nil {
		t.Fatal(err)
	}
	tx, err := blocker.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO t VALUES (1)`); err != nil { // holds ROW EXCLUSIVE on t
		t.Fatal(err)
	}
	logs := &eventLog{want: "lock_timeout reached; retrying the statement", seen: make(chan struct{})}
	migs := load(t, fstest.MapFS{"1_idx.sql": {Data: []byte("-- lockmigrate:no-transaction\nCREATE INDEX CONCURRENTLY t_a_idx ON t (a);\n")}})
	r, conn := newRunner(t, url, migs, runner.Options{LockTimeout: 100 * time.Millisecond, LockRetries: 3, Logger: slog.New(logs)})
	unblocked, migrated := make(chan error, 1), make(chan struct{})
	go func() {
		select {
		case <-logs.seen:
		case <-migrated:
		}
		unblocked <- tx.Rollback(ctx)
	}()
	res, err := r.Migrate(ctx)
	close(migrated)
	if err := <-unblocked; err != nil {
		t.Fatal(err)
	}
	if err != nil || res.Outcome != runner.OutcomeApplied || res.LockTimeoutRetries < 1 {
		t.Fatalf("Migrate = %+v, %v; want applied after a retry", res, err)
	}
	var invalid []string
	rows, _ := conn.Query(ctx, `SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE NOT i.indisvalid ORDER BY 1`)
	for rows.Next() {
		var s string
		rows.Scan(&s)
		invalid = append(invalid, s)
	}
	if strings.Join(invalid, ",") != "old_broken" {
		t.Fatalf("INVALID indexes after the run: %v, want only the pre-existing old_broken", invalid)
	}
	if n := pgtest.QueryInt(t, conn, `SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = 't_a_idx' AND i.indisvalid`); n != 1 {
		t.Fatal("t_a_idx not built")
	}
}

// TestInterruptedByFailureThenResolved: a failing CREATE UNIQUE INDEX
// CONCURRENTLY leaves an INVALID index and a running row; the next run
// refuses and names both; after the operator cleans up and resolves with
// retry, the file runs again.
func TestInterruptedByFailureThenResolved(t *testing.T) {
	ctx := context.Background()
	url := pgtest.Shared().NewDB(t)
	admin := connect(t, url)
	if _, err := admin.Exec(ctx, `CREATE TABLE dup (a int); INSERT INTO dup VALUES (1), (2), (2)`); err != nil {
		t.Fatal(err)
	}
	migs := load(t, fstest.MapFS{
		"1_unique.sql": {Data: []byte("-- lockmigrate:no-transaction\nCREATE TABLE before_idx (id int);\n\nCREATE UNIQUE INDEX CONCURRENTLY dup_a_key ON dup (a);\nCREATE TABLE after_idx (id int);\n")},
		"2_next.sql":   {Data: []byte("CREATE TABLE next_one (id int);")},
	})
	r, _ := newRunner(t, url, migs, runner.Options{})
	_, err := r.Migrate(ctx)
	var me *runner.MigrationError
	if !errors.As(err, &me) || me.StatementIndex != 2 || me.Line != 4 || !strings.Contains(err.Error(), "public.dup_a_key") || !strings.Contains(err.Error(), "23505") {
		t.Fatalf("Migrate = %v; want a MigrationError at statement 2, line 4, naming the INVALID index", err)
	}
	pgtest.AssertNoAdvisoryLocks(t, admin)

	_, err = r.Migrate(ctx)
	var ve *runner.ValidationError
	if !errors.As(err, &ve) || ve.Kind != runner.KindInterrupted {
		t.Fatalf("second Migrate = %v; want interrupted", err)
	}
	for _, want := range []string{"1_unique.sql", "after 1 completed statement", "statement 2 of 3", "line 4",
		"CREATE UNIQUE INDEX CONCURRENTLY dup_a_key ON dup (a)", "INVALID indexes left behind: public.dup_a_key", "lockmigrate resolve 1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if n := pgtest.QueryInt(t, admin, `SELECT count(*) FROM pg_tables WHERE tablename = 'next_one'`); n != 0 {
		t.Fatal("a later migration ran past an interrupted one")
	}
	// Validate (lock-free) reports it too.
	if err := r.Validate(ctx); !errors.As(err, &ve) || ve.Kind != runner.KindInterrupted {
		t.Fatalf("Validate = %v", err)
	}
	if err := r.Resolve(ctx, 2, runner.ResolveRetry); !errors.Is(err, runner.ErrNothingToResolve) {
		t.Fatalf("Resolve of a version without a running row = %v", err)
	}

	// The operator fixes the data, drops the broken index and the table the
	// first statement made, and asks for a retry of the whole file.
	for _, sql := range []string{`DELETE FROM dup WHERE a = 2`, `DROP INDEX CONCURRENTLY dup_a_key`} {
		if _, err := admin.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := admin.Exec(ctx, `DROP TABLE before_idx`); err != nil {
		t.Fatal(err)
	}
	if err := r.Resolve(ctx, 1, runner.ResolveRetry); err != nil {
		t.Fatal(err)
	}
	res, err := r.Migrate(ctx)
	if err != nil || res.Outcome != runner.OutcomeApplied || len(res.Applied) != 2 {
		t.Fatalf("Migrate after resolve = %+v, %v", res, err)
	}
	pgtest.AssertNoAdvisoryLocks(t, admin)
}
