package runner_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockmigrate/lockmigrate/internal/dbconn"
	"github.com/lockmigrate/lockmigrate/internal/pgtest"
	"github.com/lockmigrate/lockmigrate/lock"
	"github.com/lockmigrate/lockmigrate/migrations"
	"github.com/lockmigrate/lockmigrate/runner"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, pgtest.Options{})) }

const lockKey = 4242

// connect opens a connection configured as the binary configures its own
// (cancellation sends a cancel request instead of closing the socket).
func connect(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	cfg, err := dbconn.Config(url, func(string) string { return "" }, "runnertest", dbconn.Keepalive{})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func load(t testing.TB, fsys fstest.MapFS) []*runner.Migration {
	t.Helper()
	migs, err := runner.Load(fsys)
	if err != nil {
		t.Fatal(err)
	}
	return migs
}

// newRunner returns a runner on its own connection, as one replica has.
func newRunner(t testing.TB, url string, migs []*runner.Migration, opts runner.Options) (*runner.Runner, *pgx.Conn) {
	t.Helper()
	conn := connect(t, url)
	if opts.Schema == "" {
		opts.Schema, opts.Table = "public", "lockmigrate_history"
	}
	r, err := runner.New(conn, lock.New(conn, lockKey, nil), migs, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r, conn
}

// assertExactlyOnce checks the embedded set's audit log: one row per version.
func assertExactlyOnce(t testing.TB, conn *pgx.Conn, versions int) {
	t.Helper()
	if n := pgtest.QueryInt(t, conn, `SELECT count(*) FROM schema_audit`); n != versions {
		t.Fatalf("schema_audit has %d rows, want %d", n, versions)
	}
	if n := pgtest.QueryInt(t, conn, `SELECT count(DISTINCT version) FROM schema_audit`); n != versions {
		t.Fatalf("schema_audit has %d distinct versions, want %d", n, versions)
	}
	if n := pgtest.QueryInt(t, conn, `SELECT count(*) FROM lockmigrate_history WHERE state = 'applied'`); n != versions {
		t.Fatalf("history has %d applied rows, want %d", n, versions)
	}
}

func embedded(t testing.TB) []*runner.Migration {
	migs, err := runner.Load(migrations.FS)
	if err != nil {
		t.Fatal(err)
	}
	return migs
}

// TestConcurrentRunnersApplyExactlyOnce releases 50 runners, each on its own
// connection, at one barrier against an empty database.
func TestConcurrentRunnersApplyExactlyOnce(t *testing.T) {
	const replicas = 50
	url := pgtest.Shared().NewDB(t)
	migs := embedded(t)
	runners := make([]*runner.Runner, replicas)
	for i := range runners {
		runners[i], _ = newRunner(t, url, migs, runner.Options{AppliedBy: fmt.Sprintf("replica-%d", i)})
	}
	var (
		wg      sync.WaitGroup
		barrier = make(chan struct{})
		results = make([]*runner.Result, replicas)
		errs    = make([]error, replicas)
	)
	for i, r := range runners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-barrier
			results[i], errs[i] = r.Migrate(context.Background())
		}()
	}
	close(barrier)
	wg.Wait()
	outcomes := map[runner.Outcome]int{}
	for i := range runners {
		if errs[i] != nil {
			t.Fatalf("replica %d: %v", i, errs[i])
		}
		outcomes[results[i].Outcome]++
	}
	t.Logf("outcomes of %d concurrent runners: %v", replicas, outcomes)
	if outcomes[runner.OutcomeApplied] != 1 {
		t.Fatalf("outcomes = %v, want exactly one applied", outcomes)
	}
	if outcomes[runner.OutcomeApplied]+outcomes[runner.OutcomeSkipped]+outcomes[runner.OutcomeUpToDate] != replicas {
		t.Fatalf("unexpected outcomes %v", outcomes)
	}
	check := connect(t, url)
	assertExactlyOnce(t, check, len(migs))
	pgtest.AssertNoAdvisoryLocks(t, check)
}

// TestFastPathIgnoresHeldLock: with the schema current, a run must not even
// look at the lock, so it reports up_to_date although the lock is held.
func TestFastPathIgnoresHeldLock(t *testing.T) {
	ctx := context.Background()
	url := pgtest.Shared().NewDB(t)
	migs := embedded(t)
	r, _ := newRunner(t, url, migs, runner.Options{})
	if res, err := r.Migrate(ctx); err != nil || res.Outcome != runner.OutcomeApplied {
		t.Fatalf("first run: %+v, %v", res, err)
	}
	holder := connect(t, url)
	if ok, err := lock.New(holder, lockKey, nil).TryLock(ctx); !ok || err != nil {
		t.Fatalf("test could not take the lock: %v %v", ok, err)
	}
	r2, _ := newRunner(t, url, migs, runner.Options{OnLocked: runner.Wait, WaitTimeout: time.Millisecond})
	res, err := r2.Migrate(ctx)
	if err != nil || res.Outcome != runner.OutcomeUpToDate || res.LockAttempts != 0 {
		t.Fatalf("run with lock held elsewhere: %+v, %v; want up_to_date without lock attempts", res, err)
	}
	if res.SchemaVersion != 5 || res.Pending != 0 {
		t.Fatalf("schema version %d pending %d", res.SchemaVersion, res.Pending)
	}
}

func TestSkipWhenLocked(t *testing.T) {
	ctx := context.Background()
	url := pgtest.Shared().NewDB(t)
	holder := connect(t, url)
	hl := lock.New(holder, lockKey, nil)
	if ok, _ := hl.TryLock(ctx); !ok {
		t.Fatal("no lock")
	}
	r, conn := newRunner(t, url, embedded(t), runner.Options{})
	res, err := r.Migrate(ctx)
	if err != nil || res.Outcome != runner.OutcomeSkipped || res.LockAcquired || res.Pending != 5 {
		t.Fatalf("Migrate = %+v, %v; want skipped with 5 pending", res, err)
	}
	// Nothing was created by the skipping replica, not even the history table.
	if n := pgtest.QueryInt(t, conn, `SELECT count(*) FROM pg_tables WHERE tablename = 'lockmigrate_history'`); n != 0 {
		t.Fatal("a skipping replica created the history table")
	}
	if err := hl.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	pgtest.AssertNoAdvisoryLocks(t, conn)
}

func TestWaitMode(t *testing.T) {
	ctx := context.Background()

	t.Run("waits, then finds the work done", func(t *testing.T) {
		url := pgtest.Shared().NewDB(t)
		migs := embedded(t)
		// The "holder" is a runner that applies everything while the test
		// holds its lock for it: it takes the lock first, then the waiter
		// starts, then the holder migrates and releases.
		holderConn := connect(t, url)
		hl := lock.New(holderConn, lockKey, nil)
		if ok, _ := hl.TryLock(ctx); !ok {
			t.Fatal("no lock")
		}
		logs := &eventLog{want: "advisory lock held elsewhere, waiting", seen: make(chan struct{})}
		waiter, conn := newRunner(t, url, migs, runner.Options{OnLocked: runner.Wait, WaitTimeout: time.Minute,
			Logger: slog.New(logs)})
		type out struct {
			res *runner.Result
			err error
		}
		done := make(chan out, 1)
		go func() {
			res, err := waiter.Migrate(ctx)
			done <- out{res, err}
		}()
		<-logs.seen // the waiter is waiting
		// Apply everything on the holder's session, then release.
		hr, err := runner.New(holderConn, noLock{}, migs, runner.Options{Schema: "public", Table: "lockmigrate_history"})
		if err != nil {
			t.Fatal(err)
		}
		if res, err := hr.Migrate(ctx); err != nil || res.Outcome != runner.OutcomeApplied {
			t.Fatalf("holder: %+v %v", res, err)
		}
		if err := hl.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		o := <-done
		if o.err != nil || o.res.Outcome != runner.OutcomeWaited || len(o.res.Applied) != 0 || !o.res.LockAcquired {
			t.Fatalf("waiter: %+v, %v; want waited", o.res, o.err)
		}
		if o.res.LockAttempts < 2 {
			t.Fatalf("lock attempts = %d", o.res.LockAttempts)
		}
		assertExactlyOnce(t, conn, len(migs))
		pgtest.AssertNoAdvisoryLocks(t, conn)
	})

	t.Run("times out", func(t *testing.T) {
		url := pgtest.Shared().NewDB(t)
		holder := connect(t, url)
		if ok, _ := lock.New(holder, lockKey, nil).TryLock(ctx); !ok {
			t.Fatal("no lock")
		}
		r, conn := newRunner(t, url, embedded(t), runner.Options{OnLocked: runner.Wait, WaitTimeout: 300 * time.Millisecond})
		start := time.Now()
		res, err := r.Migrate(ctx)
		if !errors.Is(err, runner.ErrWaitTimeout) {
			t.Fatalf("Migrate = %v, want ErrWaitTimeout", err)
		}
		if res.LockAcquired || res.LockWait < 300*time.Millisecond {
			t.Fatalf("result %+v", res)
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("timeout took %v", time.Since(start))
		}
		// Release the test's own lock synchronously (a Close is processed by
		// the server after it returns); what remains must be none of ours.
		if err := lock.New(holder, lockKey, nil).Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		pgtest.AssertNoAdvisoryLocks(t, conn)
	})
}

// noLock lets a test apply migrations on a session that already holds the lock.
type noLock struct{}

func (noLock) TryLock(context.Context) (bool, error) { return true, nil }
func (noLock) Wait(context.Context) (int, error)     { return 1, nil }
func (noLock) Unlock(context.Context) error          { return nil }

// eventLog is a slog handler that signals when a message is logged, so tests
// synchronise on what the code does instead of sleeping.
type eventLog struct {
	mu   sync.Mutex
	want string
	seen chan struct{}
	once sync.Once
	msgs []string
}

func (h *eventLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *eventLog) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.msgs = append(h.msgs, r.Message)
	h.mu.Unlock()
	if strings.Contains(r.Message, h.want) {
		h.once.Do(func() { close(h.seen) })
	}
	return nil
}
func (h *eventLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *eventLog) WithGroup(string) slog.Handler      { return h }

func threeWithFailingThird() fstest.MapFS {
	return fstest.MapFS{
		"1_t1.sql":  {Data: []byte("CREATE TABLE t1 (id int);\nINSERT INTO t1 VALUES (1);")},
		"2_t2.sql":  {Data: []byte("CREATE TABLE t2 (id int);")},
		"3_bad.sql": {Data: []byte("CREATE TABLE t3 (id int);\n-- the typo below fails\nINSERT INTO t3 VALUES (1);\nSELECT * FROM no_such_table;\n")},
	}
}

func TestTransactionModes(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		mode        runner.TransactionMode
		wantApplied int
		wantTables  int
	}{
		{runner.TransactionAll, 0, 0},
		{runner.TransactionEach, 2, 2},
	}
	for _, tt := range tests {
		t.Run(string(tt.mode), func(t *testing.T) {
			url := pgtest.Shared().NewDB(t)
			r, conn := newRunner(t, url, load(t, threeWithFailingThird()), runner.Options{Transaction: tt.mode})
			res, err := r.Migrate(ctx)
			var me *runner.MigrationError
			if !errors.As(err, &me) {
				t.Fatalf("Migrate = %v, want *MigrationError", err)
			}
			if me.Version != 3 || me.File != "3_bad.sql" || me.Line != 4 || me.Statement != "SELECT * FROM no_such_table;" {
				t.Fatalf("error does not locate the statement: %+v", me)
			}
			for _, want := range []string{"3_bad.sql", "line 4", "no_such_table", "42P01"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
			if len(res.Applied) != tt.wantApplied {
				t.Fatalf("Applied = %v, want %d", res.Applied, tt.wantApplied)
			}
			if n := pgtest.QueryInt(t, conn, `SELECT count(*) FROM lockmigrate_history`); n != tt.wantApplied {
				t.Fatalf("history rows = %d, want %d", n, tt.wantApplied)
			}
			if n := pgtest.QueryInt(t, conn, `SELECT count(*) FROM pg_tables WHERE tablename IN ('t1', 't2', 't3')`); n != tt.wantTables {
				t.Fatalf("tables = %d, want %d", n, tt.wantTables)
			}
			if tt.wantApplied == 2 {
				if n := pgtest.QueryInt(t, conn, `SELECT count(*) FROM lockmigrate_history WHERE version IN (1, 2) AND state = 'applied' AND checksum <> ''`); n != 2 {
					t.Fatalf("history inconsistent: %d rows for versions 1, 2", n)
				}
			}
			pgtest.AssertNoAdvisoryLocks(t, conn)
		})
	}
}

func TestValidationAgainstHistory(t *testing.T) {
	ctx := context.Background()
	base := fstest.MapFS{
		"1_a.sql": {Data: []byte("CREATE TABLE a (id int);")},
		"3_c.sql": {Data: []byte("CREATE TABLE c (id int);")},
	}
	url := pgtest.Shared().NewDB(t)
	r, conn := newRunner(t, url, load(t, base), runner.Options{})
	if _, err := r.Migrate(ctx); err != nil {
		t.Fatal(err)
	}

	t.Run("checksum mismatch names file and both checksums", func(t *testing.T) {
		edited := fstest.MapFS{"1_a.sql": {Data: []byte("CREATE TABLE a (id bigint);")}, "3_c.sql": base["3_c.sql"]}
		migs := load(t, edited)
		r, _ := newRunner(t, url, migs, runner.Options{})
		_, err := r.Migrate(ctx)
		var ve *runner.ValidationError
		if !errors.As(err, &ve) || ve.Kind != runner.KindChecksumMismatch {
			t.Fatalf("Migrate = %v, want checksum mismatch", err)
		}
		old := load(t, base)[0].Checksum
		// The fast path reads only versions, checksums and states; the
		// error still says when the file was applied, from the full row.
		applied := "applied " + time.Now().UTC().Format("2006-")
		for _, want := range []string{"1_a.sql", old, migs[0].Checksum, applied} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q lacks %q", err, want)
			}
		}
	})

	t.Run("out of order refused, then allowed", func(t *testing.T) {
		withTwo := fstest.MapFS{"1_a.sql": base["1_a.sql"], "2_b.sql": {Data: []byte("CREATE TABLE b (id int);")}, "3_c.sql": base["3_c.sql"]}
		r, _ := newRunner(t, url, load(t, withTwo), runner.Options{})
		_, err := r.Migrate(ctx)
		var ve *runner.ValidationError
		if !errors.As(err, &ve) || ve.Kind != runner.KindOutOfOrder || !strings.Contains(err.Error(), "2_b.sql") {
			t.Fatalf("Migrate = %v, want out_of_order naming 2_b.sql", err)
		}
		r, _ = newRunner(t, url, load(t, withTwo), runner.Options{AllowOutOfOrder: true})
		res, err := r.Migrate(ctx)
		if err != nil || res.Outcome != runner.OutcomeApplied || len(res.Applied) != 1 || res.Applied[0].Version != 2 {
			t.Fatalf("Migrate = %+v, %v", res, err)
		}
	})

	t.Run("database ahead of the binary is a warning", func(t *testing.T) {
		logs := &eventLog{want: "unknown to this binary", seen: make(chan struct{})}
		r, _ := newRunner(t, url, load(t, fstest.MapFS{"1_a.sql": base["1_a.sql"]}),
			runner.Options{Logger: slog.New(logs)})
		res, err := r.Migrate(ctx)
		if err != nil || res.Outcome != runner.OutcomeUpToDate || !slices.Equal(res.Ahead, []int64{2, 3}) {
			t.Fatalf("Migrate = %+v, %v; want up_to_date with versions 2 and 3 ahead, in order", res, err)
		}
		select {
		case <-logs.seen:
		default:
			t.Fatal("no warning logged")
		}
	})
	pgtest.AssertNoAdvisoryLocks(t, conn)
}

// TestLockTimeoutRetry: a migration blocked by another transaction's lock
// gives up after lock_timeout, rolls back, and succeeds on a retry once the
// blocker is gone.
func TestLockTimeoutRetry(t *testing.T) {
	ctx := context.Background()
	url := pgtest.Shared().NewDB(t)
	blocker := connect(t, url)
	if _, err := blocker.Exec(ctx, `CREATE TABLE busy (id int)`); err != nil {
		t.Fatal(err)
	}
	tx, err := blocker.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE busy IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	logs := &eventLog{want: "lock_timeout reached", seen: make(chan struct{})}
	migs := load(t, fstest.MapFS{"1_alter.sql": {Data: []byte("ALTER TABLE busy ADD COLUMN name text;")}})
	r, conn := newRunner(t, url, migs, runner.Options{LockTimeout: 50 * time.Millisecond, LockRetries: 5, Logger: slog.New(logs)})
	unblocked, migrated := make(chan error, 1), make(chan struct{})
	go func() {
		select {
		case <-logs.seen:
		case <-migrated:
		}
		unblocked <- tx.Rollback(ctx) // the long transaction ends
	}()
	res, err := r.Migrate(ctx)
	close(migrated)
	if err := <-unblocked; err != nil {
		t.Fatal(err)
	}
	if err != nil || res.Outcome != runner.OutcomeApplied || res.LockTimeoutRetries < 1 {
		t.Fatalf("Migrate = %+v, %v; want applied after >= 1 retry", res, err)
	}
	if n := pgtest.QueryInt(t, conn, `SELECT count(*) FROM information_schema.columns WHERE table_name = 'busy' AND column_name = 'name'`); n != 1 {
		t.Fatal("column not added")
	}

	t.Run("gives up after the retries", func(t *testing.T) {
		tx, err := blocker.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		if _, err := tx.Exec(ctx, `LOCK TABLE busy IN ACCESS EXCLUSIVE MODE`); err != nil {
			t.Fatal(err)
		}
		migs := load(t, fstest.MapFS{"1_alter.sql": migsFile(migs[0]), "2_more.sql": {Data: []byte("ALTER TABLE busy ADD COLUMN more text;")}})
		r, conn := newRunner(t, url, migs, runner.Options{LockTimeout: 20 * time.Millisecond, LockRetries: 2})
		res, err := r.Migrate(ctx)
		var me *runner.MigrationError
		if !errors.As(err, &me) || !strings.Contains(err.Error(), "55P03") || res.LockTimeoutRetries != 2 {
			t.Fatalf("Migrate = %+v, %v; want a 55P03 failure after exactly 2 retries", res, err)
		}
		if n := pgtest.QueryInt(t, conn, `SELECT count(*) FROM lockmigrate_history WHERE version = 2`); n != 0 {
			t.Fatal("the failed migration was recorded")
		}
		pgtest.AssertNoAdvisoryLocks(t, conn)
	})
}

func migsFile(m *runner.Migration) *fstest.MapFile { return &fstest.MapFile{Data: []byte(m.SQL)} }

// TestCancelRollsBackAndUnlocks: cancelling the context (what SIGTERM does)
// stops the running statement, rolls back, and releases the lock.
func TestCancelRollsBackAndUnlocks(t *testing.T) {
	url := pgtest.Shared().NewDB(t)
	migs := load(t, fstest.MapFS{"1_slow.sql": {Data: []byte("CREATE TABLE slow (id int);\nSELECT pg_sleep(60);")}})
	conn := connect(t, url)
	r, err := runner.New(conn, lock.New(conn, lockKey, nil), migs, runner.Options{Schema: "public", Table: "lockmigrate_history"})
	if err != nil {
		t.Fatal(err)
	}
	watcher := connect(t, url)
	ctx, cancel := context.WithCancelCause(context.Background())
	go func() {
		// Cancel once the migration's sleep is running on the server.
		for {
			var n int
			if err := watcher.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			  WHERE pid = $1 AND query LIKE '%pg_sleep(60)%' AND state = 'active'`, conn.PgConn().PID()).Scan(&n); err != nil || n > 0 {
				cancel(errors.New("test stop"))
				return
			}
		}
	}()
	start := time.Now()
	res, err := r.Migrate(ctx)
	if err == nil || len(res.Applied) != 0 {
		t.Fatalf("Migrate = %+v, %v; want an error", res, err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("cancel took %v", d)
	}
	if !res.LockAcquired || res.LockHeld == 0 {
		t.Fatalf("result %+v", res)
	}
	if conn.IsClosed() {
		t.Fatal("connection was closed instead of cancelling the statement")
	}
	if n := pgtest.QueryInt(t, watcher, `SELECT count(*) FROM pg_tables WHERE tablename = 'slow'`); n != 0 {
		t.Fatal("the cancelled migration's table exists: not rolled back")
	}
	pgtest.AssertNoAdvisoryLocks(t, watcher)
}

// TestCancelBeforeCommit: a context cancelled after a transaction's last
// statement (SIGTERM between a backfill batch and its commit) rolls the
// transaction back and leaves the connection open: pgx would close it on a
// Commit that fails inside the transaction.
func TestCancelBeforeCommit(t *testing.T) {
	url := pgtest.Shared().NewDB(t)
	r, conn := newRunner(t, url, load(t, fstest.MapFS{"1_a.sql": {Data: []byte("SELECT 1;")}}), runner.Options{})
	if _, err := conn.Exec(context.Background(), `CREATE TABLE marks (id int)`); err != nil {
		t.Fatal(err)
	}
	cause := errors.New("stopped by terminated")
	ctx, cancel := context.WithCancelCause(context.Background())
	err := runner.TryTx(r, ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO marks VALUES (1)`); err != nil {
			return err
		}
		cancel(cause)
		return nil
	})
	if !errors.Is(err, cause) {
		t.Fatalf("tryTx = %v, want the cause", err)
	}
	if conn.IsClosed() {
		t.Fatal("connection closed")
	}
	if n := pgtest.QueryInt(t, conn, `SELECT count(*) FROM marks`); n != 0 {
		t.Fatalf("%d rows: the cancelled transaction committed", n)
	}
}
