package runner_test

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockmigrate/lockmigrate/internal/pgtest"
	"github.com/lockmigrate/lockmigrate/lock"
	"github.com/lockmigrate/lockmigrate/runner"
)

// phaseSet is a column change over two releases: release 1 adds email_new
// (expand) and drops email after its rollout (contract); release 2's
// expand file (4) is numbered after release 1's contract file (3).
func phaseSet() fstest.MapFS {
	return fstest.MapFS{
		"1_users.sql":     {Data: []byte("CREATE TABLE users (id int PRIMARY KEY, email text);")},
		"2_email_new.sql": {Data: []byte("ALTER TABLE users ADD COLUMN email_new text;")},
		"3_drop_email.sql": {Data: []byte("-- lockmigrate:phase contract\nALTER TABLE users DROP COLUMN email;\n" +
			"ALTER TABLE users RENAME COLUMN email_new TO email;")},
		"4_orders.sql": {Data: []byte("CREATE TABLE orders (id int);")},
	}
}

// runnerWith is newRunner with a given locker.
func runnerWith(t *testing.T, url string, migs []*runner.Migration, l runner.Locker, opts runner.Options) *runner.Runner {
	t.Helper()
	conn := connect(t, url)
	if l == nil {
		l = lock.New(conn, lockKey, nil)
	}
	opts.Schema, opts.Table = "public", "lockmigrate_history"
	r, err := runner.New(conn, l, migs, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func appliedVersions(res *runner.Result) []int64 {
	var out []int64
	for _, a := range res.Applied {
		out = append(out, a.Version)
	}
	return out
}

func columns(t *testing.T, conn *pgx.Conn, table string) string {
	t.Helper()
	var cols string
	if err := conn.QueryRow(context.Background(), `SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute
 WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped`, table).Scan(&cols); err != nil {
		t.Fatal(err)
	}
	return cols
}

// TestPhasesOnRealServer: an expand run applies only the expand files
// (release 2's expand file too); a second one is up to date without
// touching the lock, and so never waits for the rollout; the contract run
// then waits (BeforeLock) and applies the contract file, although a higher
// version is applied already.
func TestPhasesOnRealServer(t *testing.T) {
	ctx := context.Background()
	url := pgtest.Shared().NewDB(t)
	migs := load(t, phaseSet())
	check := connect(t, url)

	res, err := runnerWith(t, url, migs, nil, runner.Options{Phase: runner.PhaseExpand}).Migrate(ctx)
	if err != nil || res.Outcome != runner.OutcomeApplied || !slices.Equal(appliedVersions(res), []int64{1, 2, 4}) {
		t.Fatalf("expand run: %v, %+v", err, res)
	}
	if res.Pending != 0 || res.PendingExpand != 0 || res.PendingContract != 1 {
		t.Fatalf("expand run left pending %d (expand %d, contract %d), want 0 (0, 1)", res.Pending, res.PendingExpand, res.PendingContract)
	}
	if got := columns(t, check, "users"); got != "id,email,email_new" {
		t.Fatalf("after expand: users(%s)", got)
	}

	refuse := &refusingLock{}
	waited := 0
	before := func(context.Context) error { waited++; return nil }
	res, err = runnerWith(t, url, migs, refuse, runner.Options{Phase: runner.PhaseExpand, BeforeLock: before}).Migrate(ctx)
	if err != nil || res.Outcome != runner.OutcomeUpToDate || refuse.calls.Load() != 0 || waited != 0 {
		t.Fatalf("second expand run: %v, %+v, lock calls %d, BeforeLock calls %d", err, res, refuse.calls.Load(), waited)
	}
	// A run in phase all is not up to date: the contract file is pending.
	if res, err := runnerWith(t, url, migs, refuse, runner.Options{}).Migrate(ctx); err == nil || res.Pending != 1 {
		t.Fatalf("run in phase all took no lock: %v %+v", err, res)
	}

	res, err = runnerWith(t, url, migs, nil, runner.Options{Phase: runner.PhaseContract, BeforeLock: before}).Migrate(ctx)
	if err != nil || res.Outcome != runner.OutcomeApplied || !slices.Equal(appliedVersions(res), []int64{3}) || waited != 1 {
		t.Fatalf("contract run: %v, %+v, BeforeLock calls %d", err, res, waited)
	}
	if res.PendingExpand != 0 || res.PendingContract != 0 || res.SchemaVersion != 4 {
		t.Fatalf("contract run: pending expand %d contract %d, schema version %d", res.PendingExpand, res.PendingContract, res.SchemaVersion)
	}
	if got := columns(t, check, "users"); got != "id,email" {
		t.Fatalf("after contract: users(%s)", got)
	}
	for _, phase := range []runner.Phase{runner.PhaseExpand, runner.PhaseContract, runner.PhaseAll} {
		res, err := runnerWith(t, url, migs, refuse, runner.Options{Phase: phase, BeforeLock: before}).Migrate(ctx)
		if err != nil || res.Outcome != runner.OutcomeUpToDate || waited != 1 {
			t.Fatalf("%s run at the end: %v %+v (BeforeLock calls %d)", phase, err, res, waited)
		}
	}
	if refuse.calls.Load() != 1 { // the phase-all run above
		t.Fatalf("lock calls %d", refuse.calls.Load())
	}
}

// TestContractRefusedBelowPendingExpand: a contract run with a lower expand
// file pending stops on the fast path, naming the file, before the
// rollout wait and the lock; nothing is applied.
func TestContractRefusedBelowPendingExpand(t *testing.T) {
	ctx := context.Background()
	url := pgtest.Shared().NewDB(t)
	migs := load(t, phaseSet())
	refuse := &refusingLock{}
	waited := false
	r := runnerWith(t, url, migs, refuse, runner.Options{Phase: runner.PhaseContract,
		BeforeLock: func(context.Context) error { waited = true; return nil }})
	_, err := r.Migrate(ctx)
	var ve *runner.ValidationError
	if !errors.As(err, &ve) || ve.Kind != runner.KindContractWaiting || ve.Version != 3 || refuse.calls.Load() != 0 || waited {
		t.Fatalf("contract run: %v (lock calls %d, waited %v)", err, refuse.calls.Load(), waited)
	}
	for _, want := range []string{"3_drop_email.sql", "versions 1, 2 (1_users.sql, 2_email_new.sql"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	if n := pgtest.QueryInt(t, connect(t, url), `SELECT count(*) FROM pg_tables WHERE tablename IN ('users', 'lockmigrate_history')`); n != 0 {
		t.Fatalf("%d tables created", n)
	}
	// Status and plan say the same, per phase.
	st, err := r.Status(ctx)
	if err != nil || st.Phase != runner.PhaseContract || st.Pending != 1 || st.PendingExpand != 3 || st.PendingContract != 1 || len(st.Problems) != 1 {
		t.Fatalf("status: %v %+v", err, st)
	}
	p, err := r.Plan(ctx)
	sp := p.Schemas[0]
	if !errors.As(err, &ve) || sp.Phase != runner.PhaseContract || len(sp.Pending) != 1 || len(sp.Deferred) != 3 ||
		sp.Pending[0].Phase != runner.PhaseContract || sp.Deferred[0].Phase != runner.PhaseExpand {
		t.Fatalf("plan: %v %+v", err, sp)
	}
}

// TestBeforeLockError: the rollout wait's error ends the run before the
// lock, with nothing applied.
func TestBeforeLockError(t *testing.T) {
	url := pgtest.Shared().NewDB(t)
	refuse := &refusingLock{}
	boom := errors.New("rollout never completed")
	_, err := runnerWith(t, url, load(t, phaseSet()), refuse, runner.Options{
		BeforeLock: func(context.Context) error { return boom }}).Migrate(context.Background())
	if !errors.Is(err, boom) || refuse.calls.Load() != 0 {
		t.Fatalf("%v, lock calls %d", err, refuse.calls.Load())
	}
}

// TestExpandContractExample applies examples/expand-contract as a rollout
// does: the expand phase (11 contending runs), then writes of the old
// application version (which knows only email), then the contract phase
// (11 contending runs: the backfill and the swap). Every row ends with its
// normalised address in the NOT NULL column email, the trigger is gone, and
// the backfill's batches and rows are in the history.
func TestExpandContractExample(t *testing.T) {
	ctx := context.Background()
	url := pgtest.Shared().NewDB(t)
	migs, err := runner.Load(os.DirFS("../examples/expand-contract"))
	if err != nil {
		t.Fatal(err)
	}
	opts := runner.Options{LockTimeout: 2 * time.Second, LockRetries: 3}
	opts.Phase = runner.PhaseExpand
	contend(t, url, migs, 11, opts)
	conn := connect(t, url)
	if got := columns(t, conn, "users"); got != "id,email,created_at,email_new" {
		t.Fatalf("after expand: users(%s)", got)
	}
	// The old version, still serving during the rollout, writes email only.
	if _, err := conn.Exec(ctx, `INSERT INTO users (email) SELECT 'Late' || g || '@Example.COM' FROM generate_series(1, 100) g;
UPDATE users SET email = 'Changed@Example.COM' WHERE id = 7`); err != nil {
		t.Fatal(err)
	}
	opts.Phase = runner.PhaseContract
	contend(t, url, migs, 11, opts)
	if got := columns(t, conn, "users"); got != "id,created_at,email" {
		t.Fatalf("after contract: users(%s)", got)
	}
	for q, want := range map[string]int{
		`SELECT count(*) FROM users`: 20100,
		`SELECT count(*) FROM users WHERE email <> lower(email) OR email IS NULL`:                           0,
		`SELECT count(*) FROM users WHERE email = 'changed@example.com' AND id = 7`:                         1,
		`SELECT count(*) FROM users WHERE email = 'user20000@example.com'`:                                  1,
		`SELECT count(*) FROM information_schema.columns WHERE table_name = 'users' AND is_nullable = 'NO'`: 3,
		`SELECT count(*) FROM pg_trigger WHERE tgname = 'users_email_new_sync'`:                             0,
		`SELECT count(*) FROM pg_proc WHERE proname = 'users_email_new_sync'`:                               0,
		`SELECT statements_done FROM lockmigrate_history WHERE version = 3 AND state = 'applied'`:           20,
		`SELECT rows_done::int FROM lockmigrate_history WHERE version = 3`:                                  19999, // row 7 was filled by the trigger when the old version changed it
	} {
		if n := pgtest.QueryInt(t, conn, q); n != want {
			t.Errorf("%s = %d, want %d", q, n, want)
		}
	}
	pgtest.AssertNoAdvisoryLocks(t, conn)
}
