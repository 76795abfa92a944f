package runner_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockmigrate/lockmigrate/internal/pgtest"
	"github.com/lockmigrate/lockmigrate/runner"
)

// backfillSet creates a table of rows ids and a backfill of batch rows
// that sets done and counts, in n, how often each row was updated.
func backfillSet(rows, batch int, directive string) fstest.MapFS {
	return fstest.MapFS{
		"1_items.sql": {Data: []byte(fmt.Sprintf("CREATE TABLE items (id int PRIMARY KEY, done bool NOT NULL DEFAULT false, n int NOT NULL DEFAULT 0);\n"+
			"INSERT INTO items (id) SELECT generate_series(1, %d);", rows))},
		"2_fill.sql": {Data: []byte(directive + "\n-- one batch: rows not done yet\n" +
			fmt.Sprintf("UPDATE items SET done = true, n = n + 1 WHERE id IN (SELECT id FROM items WHERE NOT done ORDER BY id LIMIT %d);\n", batch))},
		"3_after.sql": {Data: []byte("CREATE TABLE after_fill (id int);")},
	}
}

type backfillRow struct {
	state   string
	batches int32
	rows    int64
}

func backfillHistory(t testing.TB, conn *pgx.Conn, version int) backfillRow {
	t.Helper()
	var r backfillRow
	if err := conn.QueryRow(context.Background(), `SELECT state, statements_done, rows_done FROM lockmigrate_history WHERE version = $1`,
		version).Scan(&r.state, &r.batches, &r.rows); err != nil {
		t.Fatal(err)
	}
	return r
}

// assertEachRowOnce: every row was updated by exactly one committed batch.
func assertEachRowOnce(t testing.TB, conn *pgx.Conn, rows int) {
	t.Helper()
	if n := pgtest.QueryInt(t, conn, `SELECT count(*) FROM items WHERE n <> 1 OR NOT done`); n != 0 {
		t.Fatalf("%d rows not updated exactly once", n)
	}
	if n := pgtest.QueryInt(t, conn, `SELECT sum(n) FROM items`); n != rows {
		t.Fatalf("sum(n) = %d, want %d", n, rows)
	}
}

// recorder is a slog handler keeping every event with its attributes.
type recorder struct {
	mu     sync.Mutex
	events []map[string]any
}

func (h *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *recorder) Handle(_ context.Context, r slog.Record) error {
	ev := map[string]any{"msg": r.Message}
	r.Attrs(func(a slog.Attr) bool { ev[a.Key] = a.Value.Any(); return true })
	h.mu.Lock()
	h.events = append(h.events, ev)
	h.mu.Unlock()
	return nil
}
func (h *recorder) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recorder) WithGroup(string) slog.Handler      { return h }

func (h *recorder) named(msg string) []map[string]any {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []map[string]any
	for _, ev := range h.events {
		if ev["msg"] == msg {
			out = append(out, ev)
		}
	}
	return out
}

// TestBackfill: 10 batches that change rows, one that changes none; each
// row updated once; progress in the history row, the result and the log;
// the sleep between batches; the files after it applied in order.
func TestBackfill(t *testing.T) {
	ctx := context.Background()
	url := pgtest.Shared().NewDB(t)
	log := &recorder{}
	r, conn := newRunner(t, url, load(t, backfillSet(10000, 1000, "-- lockmigrate:backfill sleep=20ms")),
		runner.Options{Logger: slog.New(log), BackfillProgressInterval: time.Nanosecond, StatementTimeout: 5 * time.Second})
	start := time.Now()
	res, err := r.Migrate(ctx)
	wall := time.Since(start)
	if err != nil || res.Outcome != runner.OutcomeApplied || len(res.Applied) != 3 {
		t.Fatalf("%v %+v", err, res)
	}
	assertEachRowOnce(t, conn, 10000)
	if h := backfillHistory(t, conn, 2); h != (backfillRow{"applied", 10, 10000}) {
		t.Fatalf("history row %+v", h)
	}
	if len(res.Backfills) != 1 {
		t.Fatalf("backfills %+v", res.Backfills)
	}
	b := res.Backfills[0]
	if b.Batches != 10 || b.Rows != 10000 || b.TotalRows != 10000 || b.Resumed || !b.Done || b.MaxBatch <= 0 || b.MaxBatch > 5*time.Second {
		t.Fatalf("stats %+v", b)
	}
	// The throttle: a pause after each batch that changed rows.
	if min := 10 * 20 * time.Millisecond; wall < min || b.Duration < min {
		t.Fatalf("wall %v, backfill %v: less than 10 batches x 20ms", wall, b.Duration)
	}
	progress := log.named("backfill progress")
	if len(progress) != 10 || log.named("backfill finished") == nil {
		t.Fatalf("%d progress events, finished %v", len(progress), log.named("backfill finished"))
	}
	last := progress[len(progress)-1]
	if last["rows"] != int64(10000) || last["batches"] != int64(10) || last["rows_per_second"].(float64) <= 0 {
		t.Fatalf("last progress event %v", last)
	}
	// Nothing left: the fast path is up to date.
	if res, err := r.Migrate(ctx); err != nil || res.Outcome != runner.OutcomeUpToDate {
		t.Fatalf("second run: %v %+v", err, res)
	}
}

// TestBackfillResumes: a run stopped between batches (SIGTERM cancels its
// context) leaves the row running with exact counts; the next run continues
// without resolve, and no row is updated twice.
func TestBackfillResumes(t *testing.T) {
	url := pgtest.Shared().NewDB(t)
	migs := load(t, backfillSet(20000, 500, "-- lockmigrate:backfill"))
	watcher := connect(t, url)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The stopped run's connection may be gone: pgx closes a connection
	// whose query the cancelled context interrupted. Read through watcher.
	r, _ := newRunner(t, url, migs, runner.Options{})
	done := make(chan error, 1)
	go func() {
		_, err := r.Migrate(ctx)
		done <- err
	}()
	for {
		var batches int
		err := watcher.QueryRow(context.Background(), `SELECT coalesce(max(statements_done), 0) FROM lockmigrate_history WHERE version = 2`).Scan(&batches)
		if err != nil && !strings.Contains(err.Error(), "does not exist") {
			t.Fatal(err)
		}
		if batches >= 10 {
			break
		}
	}
	cancel()
	// Stopped in a batch (57014, the batch rolled back) or between two.
	if err := <-done; err == nil {
		t.Fatal("stopped run succeeded")
	}
	h := backfillHistory(t, watcher, 2)
	if h.state != "running" || h.batches < 10 || h.batches >= 40 || h.rows != int64(h.batches)*500 {
		t.Fatalf("after the stop: %+v", h)
	}
	if n := pgtest.QueryInt(t, watcher, `SELECT count(*) FROM items WHERE done`); n != int(h.rows) {
		t.Fatalf("%d rows done, history says %d", n, h.rows)
	}
	// Plan and status show the backfill and how far it got.
	r2, _ := newRunner(t, url, migs, runner.Options{})
	p, err := r2.Plan(context.Background())
	if err != nil || len(p.Schemas[0].Pending) != 2 {
		t.Fatalf("plan: %v %+v", err, p)
	}
	pb := p.Schemas[0].Pending[0]
	if pb.Mode != runner.ModeBackfill || pb.Backfill == nil || !pb.Backfill.Resume || pb.Backfill.BatchesDone != int64(h.batches) ||
		pb.Backfill.RowsDone != h.rows || pb.Backfill.MaxBatches != runner.DefaultBackfillMaxBatches {
		t.Fatalf("planned %+v %+v", pb, pb.Backfill)
	}
	st, err := r2.Status(context.Background())
	if err != nil || len(st.Problems) != 0 || st.Pending != 2 {
		t.Fatalf("status: %v %+v", err, st)
	}
	if ms := st.Migrations[1]; !ms.Backfill || ms.State != "running" || ms.RowsDone != h.rows || ms.StatementsDone != h.batches {
		t.Fatalf("status line %+v", ms)
	}
	if err := r2.Validate(context.Background()); err != nil {
		t.Fatalf("validate refuses a resumable backfill: %v", err)
	}

	res, err := r2.Migrate(context.Background())
	if err != nil || res.Outcome != runner.OutcomeApplied || len(res.Applied) != 2 {
		t.Fatalf("resumed run: %v %+v", err, res)
	}
	b := res.Backfills[0]
	if !b.Resumed || b.TotalBatches != 40 || b.TotalRows != 20000 || b.Batches != 40-int64(h.batches) {
		t.Fatalf("resumed stats %+v", b)
	}
	assertEachRowOnce(t, watcher, 20000)
	if h := backfillHistory(t, watcher, 2); h != (backfillRow{"applied", 40, 20000}) {
		t.Fatalf("history row %+v", h)
	}
}

// TestBackfillBound: a statement that never stops changing rows is stopped
// at max_batches (the batch past it rolled back) and at max_rows, and a
// later run stops there again at once: exit 1 material, not a loop.
func TestBackfillBound(t *testing.T) {
	for _, tt := range []struct {
		directive        string
		batches, rows, n int
		want             string
	}{
		{"-- lockmigrate:backfill max_batches=5", 5, 50, 5, "after max_batches=5"},
		{"-- lockmigrate:backfill max_rows=35", 3, 30, 3, "past max_rows=35"},
	} {
		t.Run(tt.directive, func(t *testing.T) {
			url := pgtest.Shared().NewDB(t)
			migs := load(t, fstest.MapFS{
				"1_items.sql": {Data: []byte("CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL DEFAULT 0);\nINSERT INTO items (id) SELECT generate_series(1, 100);")},
				// Never excludes what it changed: never converges.
				"2_loop.sql": {Data: []byte(tt.directive + "\nUPDATE items SET n = n + 1 WHERE id IN (SELECT id FROM items ORDER BY id LIMIT 10);")},
			})
			for run := 0; run < 2; run++ {
				r, conn := newRunner(t, url, migs, runner.Options{})
				res, err := r.Migrate(context.Background())
				var me *runner.MigrationError
				if !errors.As(err, &me) || !errors.Is(err, runner.ErrBackfillBound) || me.File != "2_loop.sql" || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("run %d: %v", run, err)
				}
				for _, w := range []string{"did not converge", "must exclude the rows it already changed", "lockmigrate resolve 2 retry"} {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error lacks %q: %v", w, err)
					}
				}
				if h := backfillHistory(t, conn, 2); h != (backfillRow{"running", int32(tt.batches), int64(tt.rows)}) {
					t.Fatalf("run %d: history %+v", run, h)
				}
				if n := pgtest.QueryInt(t, conn, `SELECT max(n) FROM items`); n != tt.n {
					t.Fatalf("run %d: rows updated %d times, want %d (the batch past the bound rolled back)", run, n, tt.n)
				}
				if run == 1 && res.Backfills[0].Batches != 0 {
					t.Fatalf("second run ran %d batches", res.Backfills[0].Batches)
				}
			}
			// An operator who settles it by hand keeps the counts.
			r, conn := newRunner(t, url, migs, runner.Options{})
			if err := r.Resolve(context.Background(), 2, runner.ResolveApplied); err != nil {
				t.Fatal(err)
			}
			if h := backfillHistory(t, conn, 2); h != (backfillRow{"applied", int32(tt.batches), int64(tt.rows)}) {
				t.Fatalf("after resolve applied: %+v", h)
			}
		})
	}
}

// TestBackfillLockTimeout: a batch that hits lock_timeout is rolled back
// and retried; the backfill then finishes.
func TestBackfillLockTimeout(t *testing.T) {
	ctx := context.Background()
	url := pgtest.Shared().NewDB(t)
	migs := load(t, backfillSet(3000, 1000, "-- lockmigrate:backfill"))
	setup, _ := newRunner(t, url, migs[:1], runner.Options{})
	if _, err := setup.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	holder := connect(t, url)
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT * FROM items WHERE id = 1 FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	log := &eventLog{want: "lock_timeout reached", seen: make(chan struct{})}
	r, conn := newRunner(t, url, migs, runner.Options{LockTimeout: 50 * time.Millisecond, LockRetries: 10, Logger: slog.New(log)})
	done := make(chan struct{})
	var res *runner.Result
	go func() {
		defer close(done)
		res, err = r.Migrate(ctx)
	}()
	<-log.seen
	tx.Rollback(ctx)
	<-done
	if err != nil || res.LockTimeoutRetries < 1 || res.Backfills[0].TotalBatches != 3 {
		t.Fatalf("%v %+v", err, res)
	}
	assertEachRowOnce(t, conn, 3000)
}

// TestBackfillReplicationLag: batches pause while the lag is above
// LOCKMIGRATE_BACKFILL_MAX_LAG, and a ceiling the role cannot check is an
// error before the first batch.
func TestBackfillReplicationLag(t *testing.T) {
	ctx := context.Background()
	url := pgtest.Shared().NewDB(t)
	migs := load(t, backfillSet(300, 100, "-- lockmigrate:backfill"))
	log := &recorder{}
	r, conn := newRunner(t, url, migs, runner.Options{BackfillMaxLag: time.Second, Logger: slog.New(log), BackfillProgressInterval: time.Nanosecond})
	calls := 0
	runner.SetLagProbe(r, time.Millisecond, func(context.Context) (time.Duration, int, int, error) {
		calls++
		if calls == 2 || calls == 3 { // before the second batch: lagging
			return 5 * time.Second, 1, 0, nil
		}
		return 200 * time.Millisecond, 1, 0, nil
	})
	res, err := r.Migrate(ctx)
	if err != nil || res.Backfills[0].LagPauses != 1 || calls != 6 {
		t.Fatalf("%v %+v, %d probes", err, res, calls)
	}
	paused := log.named("backfill paused: replication lag above LOCKMIGRATE_BACKFILL_MAX_LAG")
	if len(paused) != 2 || paused[0]["lag_ms"] != int64(5000) || paused[0]["standby"] != "standby-1" ||
		len(log.named("backfill resumed: replication lag within LOCKMIGRATE_BACKFILL_MAX_LAG")) != 1 {
		t.Fatalf("paused events %v", paused)
	}
	assertEachRowOnce(t, conn, 300)

	url = pgtest.Shared().NewDB(t)
	r, conn = newRunner(t, url, migs, runner.Options{BackfillMaxLag: time.Second})
	runner.SetLagProbe(r, time.Millisecond, func(context.Context) (time.Duration, int, int, error) { return 0, 2, 1, nil })
	if _, err := r.Migrate(ctx); err == nil || !strings.Contains(err.Error(), "pg_read_all_stats") {
		t.Fatalf("hidden standby: %v", err)
	}
	if h := backfillHistory(t, conn, 2); h.batches != 0 {
		t.Fatalf("batches ran: %+v", h)
	}
}

// TestBackfillRealLagQuery: without standbys, the ceiling never pauses
// (the query against pg_stat_replication finds no row).
func TestBackfillRealLagQuery(t *testing.T) {
	url := pgtest.Shared().NewDB(t)
	r, conn := newRunner(t, url, load(t, backfillSet(500, 100, "-- lockmigrate:backfill")), runner.Options{BackfillMaxLag: time.Millisecond})
	res, err := r.Migrate(context.Background())
	if err != nil || res.Backfills[0].LagPauses != 0 {
		t.Fatalf("%v %+v", err, res)
	}
	assertEachRowOnce(t, conn, 500)
}

// TestBackfillRefusedInSharedTransaction: a backfill commits per batch, so
// LOCKMIGRATE_TRANSACTION=all refuses it as it refuses no-transaction files.
func TestBackfillRefusedInSharedTransaction(t *testing.T) {
	url := pgtest.Shared().NewDB(t)
	r, _ := newRunner(t, url, load(t, backfillSet(10, 5, "-- lockmigrate:backfill")), runner.Options{Transaction: runner.TransactionAll})
	_, err := r.Migrate(context.Background())
	var ve *runner.ValidationError
	if !errors.As(err, &ve) || ve.Kind != runner.KindTransactionMode || ve.Version != 2 {
		t.Fatalf("%v", err)
	}
}
