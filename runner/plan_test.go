package runner_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/fstest"

	"github.com/lockmigrate/lockmigrate/internal/pgtest"
	"github.com/lockmigrate/lockmigrate/runner"
)

// refusingLock fails any use: Plan must never touch the lock.
type refusingLock struct{ calls atomic.Int32 }

func (l *refusingLock) TryLock(context.Context) (bool, error) {
	l.calls.Add(1)
	return false, errors.New("plan took the lock")
}
func (l *refusingLock) Wait(context.Context) (int, error) {
	l.calls.Add(1)
	return 0, errors.New("plan waited for the lock")
}
func (l *refusingLock) Unlock(context.Context) error {
	l.calls.Add(1)
	return errors.New("plan released the lock")
}

func planSet() fstest.MapFS {
	return fstest.MapFS{
		"1_a.sql": {Data: []byte("CREATE TABLE a (id int);")},
		"2_idx.sql": {Data: []byte("-- lockmigrate:no-transaction\nCREATE INDEX CONCURRENTLY a_id ON a (id);\n" +
			"-- a comment; with a semicolon\nCREATE INDEX CONCURRENTLY a_id2 ON a ((id + 1));\nANALYZE a;\n")},
		"3_c.sql": {Data: []byte("CREATE TABLE c (id int); INSERT INTO c VALUES (1);")},
	}
}

type planned struct {
	version    int64
	mode       string
	statements int
}

func pendingOf(sp runner.SchemaPlan) []planned {
	var out []planned
	for _, p := range sp.Pending {
		out = append(out, planned{p.Version, p.Mode, p.Statements})
	}
	return out
}

// TestPlan: the plan lists exactly what Migrate then applies, in its mode,
// and reports the problems Migrate would stop on, with the same messages;
// it creates nothing and never touches the lock.
func TestPlan(t *testing.T) {
	ctx := context.Background()
	all3 := []planned{{1, runner.ModeTransaction, 0}, {2, runner.ModeNoTransaction, 3}, {3, runner.ModeTransaction, 0}}
	tests := []struct {
		name string
		// history is applied first with the given set (nil: empty database).
		history  fstest.MapFS
		extraSQL string // run after history, e.g. to fake a running row
		set      fstest.MapFS
		opts     runner.Options
		want     []planned
		problem  runner.ValidationKind // "" when none
		note     string
	}{
		{name: "empty database", set: planSet(), want: all3, note: "does not exist"},
		{name: "partly applied", set: planSet(), history: fstest.MapFS{"1_a.sql": planSet()["1_a.sql"]},
			want: all3[1:]},
		{name: "up to date", set: planSet(), history: planSet(), want: nil},
		{name: "all mode, transactional only", opts: runner.Options{Transaction: runner.TransactionAll},
			set:  fstest.MapFS{"1_a.sql": planSet()["1_a.sql"], "3_c.sql": planSet()["3_c.sql"]},
			want: []planned{{1, runner.ModeSharedTransaction, 0}, {3, runner.ModeSharedTransaction, 0}}},
		{name: "all mode with a no-transaction file", opts: runner.Options{Transaction: runner.TransactionAll},
			set: planSet(), want: []planned{{1, runner.ModeSharedTransaction, 0}, {2, runner.ModeNoTransaction, 3},
				{3, runner.ModeSharedTransaction, 0}}, problem: runner.KindTransactionMode},
		{name: "checksum changed", history: fstest.MapFS{"1_a.sql": planSet()["1_a.sql"]},
			set:  fstest.MapFS{"1_a.sql": {Data: []byte("CREATE TABLE a (id bigint);")}, "3_c.sql": planSet()["3_c.sql"]},
			want: []planned{{3, runner.ModeTransaction, 0}}, problem: runner.KindChecksumMismatch},
		{name: "out of order", history: fstest.MapFS{"1_a.sql": planSet()["1_a.sql"], "3_c.sql": planSet()["3_c.sql"]},
			set: planSet(), want: []planned{{2, runner.ModeNoTransaction, 3}}, problem: runner.KindOutOfOrder},
		{name: "out of order allowed", history: fstest.MapFS{"1_a.sql": planSet()["1_a.sql"], "3_c.sql": planSet()["3_c.sql"]},
			set: planSet(), opts: runner.Options{AllowOutOfOrder: true}, want: []planned{{2, runner.ModeNoTransaction, 3}}},
		{name: "running row", history: fstest.MapFS{"1_a.sql": planSet()["1_a.sql"]},
			extraSQL: `INSERT INTO lockmigrate_history (version, name, checksum, state, statements_done) VALUES (2, 'idx', 'x', 'running', 1)`,
			set:      planSet(), want: all3[2:], problem: runner.KindInterrupted},
		{name: "database ahead", history: planSet(), set: fstest.MapFS{"1_a.sql": planSet()["1_a.sql"]},
			want: nil, note: "unknown to this migration set [2 3]"},
		// LOCKMIGRATE_BASELINE_VERSION: files up to it are recorded, not
		// run, on an empty history (no table, or no rows); N need not be a
		// file's version.
		{name: "baseline, no history table", set: planSet(), opts: runner.Options{BaselineVersion: 2},
			want: []planned{{1, runner.ModeBaseline, 0}, {2, runner.ModeBaseline, 0}, {3, runner.ModeTransaction, 0}},
			note: "LOCKMIGRATE_BASELINE_VERSION=2 and the history is empty: a run records 2 migration(s) (versions 1, 2) as baseline"},
		{name: "baseline, empty history table", set: planSet(), history: fstest.MapFS{}, extraSQL: "CREATE TABLE a (id int)",
			opts: runner.Options{BaselineVersion: 1},
			want: []planned{{1, runner.ModeBaseline, 0}, {2, runner.ModeNoTransaction, 3}, {3, runner.ModeTransaction, 0}}},
		{name: "baseline between versions", set: fstest.MapFS{"1_a.sql": planSet()["1_a.sql"], "3_c.sql": planSet()["3_c.sql"]},
			opts: runner.Options{BaselineVersion: 2}, want: []planned{{1, runner.ModeBaseline, 0}, {3, runner.ModeTransaction, 0}},
			note: "(versions 1) as baseline"},
		{name: "baseline below every file", set: fstest.MapFS{"3_c.sql": planSet()["3_c.sql"]},
			opts: runner.Options{BaselineVersion: 2}, want: []planned{{3, runner.ModeTransaction, 0}},
			note: "LOCKMIGRATE_BASELINE_VERSION=2 is below every migration file"},
		{name: "baseline ignored: history not empty", set: planSet(), history: fstest.MapFS{"1_a.sql": planSet()["1_a.sql"]},
			opts: runner.Options{BaselineVersion: 3}, want: all3[1:], note: "LOCKMIGRATE_BASELINE_VERSION=3 is ignored: the history is not empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := pgtest.Shared().NewDB(t)
			check := connect(t, url)
			if tt.history != nil {
				r, _ := newRunner(t, url, load(t, tt.history), runner.Options{})
				if _, err := r.Migrate(ctx); err != nil {
					t.Fatal(err)
				}
				if len(tt.history) == 0 { // an empty history table
					if _, err := check.Exec(ctx, `CREATE TABLE lockmigrate_history (version bigint PRIMARY KEY, name text NOT NULL,
  checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT clock_timestamp(), duration_ms bigint NOT NULL DEFAULT 0,
  applied_by text NOT NULL DEFAULT '', run_id uuid, state text NOT NULL DEFAULT 'applied', statements_done integer NOT NULL DEFAULT 0)`); err != nil {
						t.Fatal(err)
					}
				}
			}
			if tt.extraSQL != "" {
				if _, err := check.Exec(ctx, tt.extraSQL); err != nil {
					t.Fatal(err)
				}
			}
			tables := pgtest.QueryInt(t, check, `SELECT count(*) FROM pg_tables WHERE schemaname = 'public'`)
			opts := tt.opts
			opts.Schema, opts.Table = "public", "lockmigrate_history"
			l := &refusingLock{}
			r, err := runner.New(check, l, load(t, tt.set), opts)
			if err != nil {
				t.Fatal(err)
			}
			p, err := r.Plan(ctx)
			if p == nil || !p.DatabaseConsulted || len(p.Schemas) != 1 {
				t.Fatalf("Plan = %+v, %v", p, err)
			}
			sp := p.Schemas[0]
			if got := pendingOf(sp); !slices.Equal(got, tt.want) {
				t.Errorf("pending = %v, want %v", got, tt.want)
			}
			var ve *runner.ValidationError
			if tt.problem == "" {
				if err != nil || len(sp.Problems) != 0 {
					t.Errorf("Plan error = %v, problems %v", err, sp.Problems)
				}
			} else if !errors.As(err, &ve) || ve.Kind != tt.problem || len(sp.Problems) != 1 || sp.Problems[0] != err.Error() {
				t.Errorf("Plan error = %v, problems %v; want one %s", err, sp.Problems, tt.problem)
			}
			if tt.note != "" && !strings.Contains(strings.Join(sp.Notes, "\n"), tt.note) {
				t.Errorf("notes %q lack %q", sp.Notes, tt.note)
			}
			if n := l.calls.Load(); n != 0 {
				t.Errorf("Plan used the lock %d times", n)
			}
			if n := pgtest.QueryInt(t, check, `SELECT count(*) FROM pg_tables WHERE schemaname = 'public'`); n != tables {
				t.Errorf("Plan changed the tables: %d before, %d after", tables, n)
			}
			// Validate and Migrate agree with the plan: same messages, and
			// exactly the planned versions applied.
			if verr := r.Validate(ctx); (verr == nil) != (err == nil) || (err != nil && verr.Error() != err.Error()) {
				t.Errorf("Validate = %v, Plan = %v", verr, err)
			}
			if tt.problem != "" {
				return
			}
			m, _ := newRunner(t, url, load(t, tt.set), opts)
			res, err := m.Migrate(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var applied []int64
			for _, a := range res.Applied {
				applied = append(applied, a.Version)
			}
			var wantV []int64
			baselined := 0
			for _, w := range tt.want {
				if w.mode == runner.ModeBaseline {
					baselined++
					continue
				}
				wantV = append(wantV, w.version)
			}
			if !slices.Equal(applied, wantV) || res.Baselined != baselined {
				t.Errorf("Migrate applied %v and baselined %d, plan said %v and %d", applied, res.Baselined, wantV, baselined)
			}
		})
	}
}

// TestPlanOffline lists every migration as for an empty database and finds
// the problems that need no database.
func TestPlanOffline(t *testing.T) {
	migs := load(t, planSet())
	p, err := runner.PlanOffline(migs, runner.Options{Schema: "app", Table: "hist"})
	if err != nil || p.DatabaseConsulted || len(p.Schemas) != 1 {
		t.Fatalf("PlanOffline = %+v, %v", p, err)
	}
	sp := p.Schemas[0]
	want := []planned{{1, runner.ModeTransaction, 0}, {2, runner.ModeNoTransaction, 3}, {3, runner.ModeTransaction, 0}}
	if got := pendingOf(sp); !slices.Equal(got, want) || sp.Schema != "app" || sp.Table != "hist" || sp.Transaction != runner.TransactionEach {
		t.Fatalf("plan %+v", sp)
	}
	// Offline means an empty history: a baseline version applies.
	p, err = runner.PlanOffline(migs, runner.Options{Schema: "app", Table: "hist", BaselineVersion: 2})
	want = []planned{{1, runner.ModeBaseline, 0}, {2, runner.ModeBaseline, 0}, {3, runner.ModeTransaction, 0}}
	if got := pendingOf(p.Schemas[0]); err != nil || !slices.Equal(got, want) || !strings.Contains(strings.Join(p.Schemas[0].Notes, ""), "baseline") {
		t.Fatalf("offline with a baseline: %v, %v, notes %q", got, err, p.Schemas[0].Notes)
	}
	_, err = runner.PlanOffline(migs, runner.Options{Schema: "app", Table: "hist", Transaction: runner.TransactionAll})
	var ve *runner.ValidationError
	if !errors.As(err, &ve) || ve.Kind != runner.KindTransactionMode || ve.Version != 2 {
		t.Fatalf("all mode with a no-transaction file: %v", err)
	}
}
