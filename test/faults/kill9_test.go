package faults

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lockmigrate/lockmigrate/internal/bintest"
	"github.com/lockmigrate/lockmigrate/internal/pgtest"
)

// TestKill9Trials SIGKILLs the binary at random moments of a migration run
// with slow transactional and no-transaction files, then recovers the way an
// operator would: run again (sometimes three replicas at once, in wait mode),
// and when a no-transaction file was interrupted, inspect, finish or undo it
// by hand and `lockmigrate resolve` it. After every round it checks that no
// migration ran twice (applied_log has no unique constraint, so a second run
// shows as a duplicate row), that the history says applied exactly when a
// migration's effects are complete, that an interrupted file is reported
// with exit 5 and never silently re-run, and that no advisory lock is left.
func TestKill9Trials(t *testing.T) {
	trials := envInt("LOCKMIGRATE_FAULT_TRIALS", 100)
	parallel := envInt("LOCKMIGRATE_FAULT_PARALLEL", 4)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("LOCKMIGRATE_FAULT_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("LOCKMIGRATE_FAULT_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("trials=%d parallel=%d seed=%d (LOCKMIGRATE_FAULT_SEED=%d reproduces the choices)", trials, parallel, seed, seed)
	testStart := time.Now()

	k := &kill9{t: t, srv: pgtest.Shared(), root: t.TempDir(), seed: seed,
		role: "lmf_kill9_" + randHex(3), password: "pw-" + randHex(10) + "/@:%"}
	k.srv.CreateRole(t, k.role, k.password)
	bintest.AddSecret(k.password)
	k.calibrate()

	var wg sync.WaitGroup
	next := make(chan int)
	for range parallel {
		wg.Go(func() {
			for i := range next {
				k.trial(i)
			}
		})
	}
	for i := range trials {
		next <- i
	}
	close(next)
	wg.Wait()

	st := &k.stats
	minR, medR, p90R, maxR := durStats(st.recovery)
	_, medF, _, maxF := durStats(st.full)
	t.Logf("kills=%d (by delay %d, at a log point %d, at a DB point %d), runs that finished before their kill=%d",
		st.kills, st.modes["delay"], st.modes["log"], st.modes["db"], st.finishedFirst)
	t.Logf("interrupted no-transaction files: expected %d, reported with exit 5 %d; resolved applied=%d retry=%d",
		st.interruptedExpected, st.interruptedReported, st.resolved["applied"], st.resolved["retry"])
	t.Logf("recovery rounds=%d (with 3 replicas %d); recovery run exit codes %v", st.rounds, st.rounds3, st.codes)
	t.Logf("recovery time (SIGKILL to the first recovery round's end, lock freed included): min %s median %s p90 %s max %s",
		ms(minR), ms(medR), ms(p90R), ms(maxR))
	t.Logf("trial to everything applied (incl. operator resolve): median %s max %s", ms(medF), ms(maxF))
	summary(t, "trials=%d double_applied=%d lost=%d interrupted_reported=%d/%d anomalies=%d recovery median=%s max=%s total=%s",
		trials, st.doubleApplied, st.lost, st.interruptedReported, st.interruptedExpected, st.anomalies,
		ms(medR), ms(maxR), ms(time.Since(testStart)))

	if st.doubleApplied != 0 {
		t.Errorf("%d double-applied migration(s)", st.doubleApplied)
	}
	if st.lost != 0 {
		t.Errorf("%d lost migration(s)", st.lost)
	}
	if st.interruptedReported != st.interruptedExpected {
		t.Errorf("%d interrupted file(s) but %d reported", st.interruptedExpected, st.interruptedReported)
	}
	if st.anomalies != 0 {
		t.Errorf("%d trial(s) with anomalies (see the log)", st.anomalies)
	}
}

const (
	kill9Versions = 6
	// Statement numbers (1-based) of the applied_log inserts in a
	// no-transaction file, for steps 1, 2 and 3.
	notxStatements = 7
)

var notxStepStatement = map[int]int{1: 2, 2: 5, 3: 7}

type kill9 struct {
	t              *testing.T
	srv            *pgtest.Server
	root           string
	seed           uint64
	role, password string
	overhead       time.Duration // a run of the set without sleeps

	mu    sync.Mutex
	stats kill9Stats
}

type kill9Stats struct {
	kills, finishedFirst                     int
	modes                                    map[string]int
	doubleApplied, lost, anomalies           int
	interruptedExpected, interruptedReported int
	resolved                                 map[string]int
	rounds, rounds3                          int
	codes                                    map[int]int
	recovery, full                           []time.Duration
}

// migSet is one trial's migration set.
type migSet struct {
	notx   map[int]bool
	files  map[string]string
	file   map[int]string // version -> file name
	sleeps time.Duration  // total pg_sleep
}

func newMigSet(rng *rand.Rand, withSleeps bool) migSet {
	s := migSet{notx: map[int]bool{}, files: map[string]string{}, file: map[int]string{}}
	// Two or three no-transaction files, never version 1 (which is plain).
	perm := rng.Perm(kill9Versions - 1)
	for _, i := range perm[:2+rng.IntN(2)] {
		s.notx[i+2] = true
	}
	sleep := func() string {
		if !withSleeps {
			return "0"
		}
		d := time.Duration(rng.IntN(51)) * time.Millisecond
		s.sleeps += d
		return fmt.Sprintf("%.3f", d.Seconds())
	}
	for v := 1; v <= kill9Versions; v++ {
		var name, body string
		if s.notx[v] {
			name = fmt.Sprintf("%d_notx_%d.sql", v, v)
			body = fmt.Sprintf(`-- lockmigrate:no-transaction
CREATE TABLE n_%[1]d (id int);
INSERT INTO applied_log (version, step) VALUES (%[1]d, 1);
SELECT pg_sleep(%[2]s);
CREATE INDEX CONCURRENTLY n_%[1]d_idx ON n_%[1]d (id);
INSERT INTO applied_log (version, step) VALUES (%[1]d, 2);
SELECT pg_sleep(%[3]s);
INSERT INTO applied_log (version, step) VALUES (%[1]d, 3);
`, v, sleep(), sleep())
		} else {
			name = fmt.Sprintf("%d_tx_%d.sql", v, v)
			body = fmt.Sprintf(`CREATE TABLE t_%[1]d (id int);
SELECT pg_sleep(%[2]s);
INSERT INTO applied_log (version, step) VALUES (%[1]d, 1);
SELECT pg_sleep(%[3]s);
`, v, sleep(), sleep())
		}
		s.files[name] = body
		s.file[v] = name
	}
	return s
}

// expectedSteps are the applied_log steps of a complete migration.
func (s migSet) expectedSteps(v int) []int {
	if s.notx[v] {
		return []int{1, 2, 3}
	}
	return []int{1}
}

// setupDB makes a fresh database for one trial, owned by the trials' role,
// with the applied_log table. It returns errors instead of failing the test
// because it runs on worker goroutines.
func (k *kill9) setupDB(i int) (*testDB, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d := &testDB{srv: k.srv, name: fmt.Sprintf("kill9_%d_%d", k.seed%100000, i+1), role: k.role, password: k.password}
	d.admin = k.srv.AdminURL(d.name)
	d.url = k.srv.URLFor(d.name, k.role, k.password)
	if err := k.srv.Exec(ctx, "postgres", "CREATE DATABASE "+ident(d.name)+" OWNER "+ident(k.role)); err != nil {
		return nil, err
	}
	if err := k.srv.Exec(ctx, d.name, "GRANT ALL ON SCHEMA public TO "+ident(k.role)); err != nil {
		return d, err
	}
	c, err := connectURL(ctx, d.url)
	if err != nil {
		return d, err
	}
	defer c.Close(context.Background())
	_, err = c.Exec(ctx, `CREATE TABLE applied_log (version int NOT NULL, step int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())`)
	return d, err
}

func (k *kill9) dropDB(d *testDB) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = k.srv.Exec(ctx, "postgres", "DROP DATABASE IF EXISTS "+ident(d.name)+" WITH (FORCE)")
}

func (k *kill9) trialEnv(d *testDB, dir string) map[string]string {
	return bintest.With(d.env(dir),
		"LOCKMIGRATE_ON_LOCKED", "wait",
		"LOCKMIGRATE_WAIT_TIMEOUT", "60s",
		"LOCKMIGRATE_CONNECT_TIMEOUT", "20s")
}

// calibrate times a run of a set without sleeps, the overhead that the
// random kill delays are spread over together with the sleeps.
func (k *kill9) calibrate() {
	t := k.t
	d, err := k.setupDB(-1)
	if d != nil {
		defer k.dropDB(d)
	}
	if err != nil {
		t.Fatal(err)
	}
	set := newMigSet(rand.New(rand.NewPCG(k.seed, 1<<40)), false)
	dir := filepath.Join(k.root, "calibrate")
	if err := writeFiles(dir, set.files); err != nil {
		t.Fatal(err)
	}
	r := runBin(k.trialEnv(d, dir), 60*time.Second, runOpts{})
	if r.Code != 0 {
		t.Fatalf("calibration run failed: %s", r.Brief())
	}
	k.overhead = r.Elapsed
	t.Logf("calibration: the %d-file set without sleeps applies in %s", kill9Versions, ms(r.Elapsed))
}

func writeFiles(dir string, files map[string]string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// trialLog collects one trial's story; it is logged when the trial ends.
type trialLog struct {
	i         int
	lines     []string
	anomalies []string
}

func (l *trialLog) add(format string, args ...any) {
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *trialLog) anomaly(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.anomalies = append(l.anomalies, msg)
	l.lines = append(l.lines, "ANOMALY: "+msg)
}

func (k *kill9) trial(i int) {
	rng := rand.New(rand.NewPCG(k.seed, uint64(i)))
	lg := &trialLog{i: i}
	start := time.Now()
	var (
		recovery             time.Duration
		expected, reported   int
		double, lost, nKills int
		finishedFirst        int
		modes                = map[string]int{}
		resolved             = map[string]int{}
		codes                = map[int]int{}
		rounds, rounds3      int
		fullDone             bool
	)
	defer func() {
		full := time.Since(start)
		k.mu.Lock()
		defer k.mu.Unlock()
		st := &k.stats
		if st.modes == nil {
			st.modes, st.resolved, st.codes = map[string]int{}, map[string]int{}, map[int]int{}
		}
		st.kills += nKills
		st.finishedFirst += finishedFirst
		for m, n := range modes {
			st.modes[m] += n
		}
		for a, n := range resolved {
			st.resolved[a] += n
		}
		for c, n := range codes {
			st.codes[c] += n
		}
		st.rounds += rounds
		st.rounds3 += rounds3
		st.doubleApplied += double
		st.lost += lost
		st.interruptedExpected += expected
		st.interruptedReported += reported
		if recovery > 0 {
			st.recovery = append(st.recovery, recovery)
		}
		if fullDone {
			st.full = append(st.full, full)
		}
		if len(lg.anomalies) > 0 {
			st.anomalies++
			k.t.Errorf("trial %d:\n  %s", i, strings.Join(lg.lines, "\n  "))
		} else {
			k.t.Logf("trial %d (%s): %s", i, ms(full), strings.Join(lg.lines, "; "))
		}
	}()

	d, err := k.setupDB(i)
	if d != nil {
		defer k.dropDB(d)
	}
	if err != nil {
		lg.anomaly("setup: %v", err)
		return
	}
	set := newMigSet(rng, true)
	dir := filepath.Join(k.root, fmt.Sprintf("trial-%d", i))
	if err := writeFiles(dir, set.files); err != nil {
		lg.anomaly("write files: %v", err)
		return
	}
	env := k.trialEnv(d, dir)
	var notx []int
	for v := range set.notx {
		notx = append(notx, v)
	}
	slices.Sort(notx)
	lg.add("no-transaction versions %v, sleeps %s", notx, ms(set.sleeps))

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	watch, err := connectURL(ctx, d.admin)
	if err != nil {
		lg.anomaly("connect: %v", err)
		return
	}
	defer watch.Close(context.Background())

	// Kill phase: one victim, sometimes a second one started right after
	// the first died (it waits for the dead session's lock, or finds the
	// interrupted file).
	victims := 1
	if rng.IntN(4) == 0 {
		victims = 2
	}
	killed := map[string]bool{} // run ids of killed runs
	var lastKill time.Time
	for v := range victims {
		app := fmt.Sprintf("victim-%d", v)
		p, err := startProc(bintest.With(env, "POD_NAME", app), runOpts{}, false)
		if err != nil {
			lg.anomaly("start: %v", err)
			return
		}
		mode, what := k.killPoint(ctx, rng, p, watch, "lockmigrate/"+app, set)
		var killedAt time.Time
		if !p.exited() {
			p.kill()
			killedAt = time.Now()
		}
		r, _ := p.wait(30 * time.Second)
		if bintest.Leaks(r.Stdout, r.Stderr) != nil {
			lg.anomaly("victim output leaks a password")
		}
		if evs := r.JSONEvents(); len(evs) > 0 {
			killed[str(evs[0], "run_id")] = true
		}
		if r.Code == 137 {
			nKills++
			modes[mode]++
			lastKill = killedAt
			lg.add("victim %d killed (%s %s) after %s", v, mode, what, ms(r.Elapsed))
		} else {
			finishedFirst++
			lg.add("victim %d finished before its kill (%s %s): exit %d", v, mode, what, r.Code)
			if r.Code != 0 && r.Code != 5 {
				lg.anomaly("unkilled victim exited %d: %s", r.Code, r.Brief())
			}
		}
	}

	// Recovery rounds: 1 or 3 wait-mode replicas released at once, until
	// every one exits 0; an exit 5 for an interrupted file is resolved by
	// the operator in between.
	for round := 0; round < 6; round++ {
		n := 1
		if rng.IntN(5) < 2 {
			n = 3
			rounds3++
		}
		rounds++
		envs := make([]map[string]string, n)
		for j := range envs {
			envs[j] = bintest.With(env, "POD_NAME", fmt.Sprintf("recover-%d-%d", round, j))
		}
		results, err := group(envs, 90*time.Second)
		if err != nil {
			lg.anomaly("start replicas: %v", err)
			return
		}
		if round == 0 && !lastKill.IsZero() {
			recovery = time.Since(lastKill)
		}
		var c0, c5 int
		var errs []string
		for _, r := range results {
			codes[r.Code]++
			if bintest.Leaks(r.Stdout, r.Stderr) != nil {
				lg.anomaly("replica output leaks a password")
			}
			switch r.Code {
			case 0:
				c0++
			case 5:
				c5++
				errs = append(errs, str(r.LastFinished(), "error"))
			default:
				lg.anomaly("recovery replica exited %d: %s", r.Code, r.Brief())
			}
		}
		lg.add("round %d: %d replica(s), %d exit 0, %d exit 5", round, n, c0, c5)
		if c0+c5 != len(results) {
			return
		}
		sn, err := snapshot(ctx, watch)
		if err != nil {
			lg.anomaly("snapshot: %v", err)
			return
		}
		var running []histRow
		for _, h := range sn.hist {
			if h.state == "running" {
				running = append(running, h)
			}
		}
		if round == 0 {
			for _, h := range running {
				if killed[h.runID] {
					expected++
				} else {
					lg.anomaly("running row for version %d from run %s, which was not killed", h.version, h.runID)
				}
			}
		}
		dd, ll, problems := check(set, sn, false)
		double += dd
		lost += ll
		for _, p := range problems {
			lg.anomaly("%s", p)
		}

		if c5 == 0 {
			if len(running) > 0 {
				lg.anomaly("all replicas exited 0 with interrupted version %d still running: silently ignored", running[0].version)
				return
			}
			dd, ll, problems := check(set, sn, true)
			double += dd
			lost += ll
			for _, p := range problems {
				lg.anomaly("final: %s", p)
			}
			if w, err := waitNoAdvisoryLocks(ctx, d.admin, 5*time.Second); err != nil {
				lg.anomaly("advisory lock left: %v", err)
			} else if w > time.Second {
				lg.add("advisory lock vanished %s after the final run", ms(w))
			}
			fullDone = len(lg.anomalies) == 0
			return
		}

		// Exit 5: every replica must have named an interrupted file.
		if len(running) == 0 {
			lg.anomaly("exit 5 without an interrupted row: %q", errs)
			return
		}
		if c0 > 0 {
			lg.anomaly("%d replica(s) exited 0 while version %d was interrupted", c0, running[0].version)
		}
		ok := true
		for _, e := range errs {
			file := set.file[int(running[0].version)]
			if !strings.Contains(e, "interrupted") || !strings.Contains(e, file) ||
				!strings.Contains(e, fmt.Sprintf("lockmigrate resolve %d", running[0].version)) {
				lg.anomaly("exit 5 does not name interrupted %s: %s", file, e)
				ok = false
			}
			if sn.invalid[fmt.Sprintf("n_%d_idx", running[0].version)] && !strings.Contains(e, fmt.Sprintf("n_%d_idx", running[0].version)) {
				lg.anomaly("exit 5 does not name the INVALID index n_%d_idx: %s", running[0].version, e)
				ok = false
			}
		}
		if ok && round == 0 {
			reported += len(running)
		}
		for _, h := range running {
			action := "applied"
			if rng.IntN(2) == 0 {
				action = "retry"
			}
			if err := operator(ctx, watch, int(h.version), action); err != nil {
				lg.anomaly("operator %s of version %d: %v", action, h.version, err)
				return
			}
			r := runBin(bintest.With(env, "POD_NAME", "operator"), 60*time.Second, runOpts{args: []string{"resolve", strconv.Itoa(int(h.version)), action}})
			if r.Code != 0 || !strings.Contains(r.Stdout, "marked "+action) {
				lg.anomaly("resolve %d %s: %s", h.version, action, r.Brief())
				return
			}
			resolved[action]++
			lg.add("version %d (stopped after %d statement(s)) resolved %s", h.version, h.done, action)
		}
	}
	lg.anomaly("not settled after 6 recovery rounds")
}

// killPoint waits for the moment to kill p and names it: a random delay
// within the expected run time, a random log event of the run, or a
// statement seen running in pg_stat_activity.
func (k *kill9) killPoint(ctx context.Context, rng *rand.Rand, p *proc, watch *pgx.Conn, app string, set migSet) (mode, what string) {
	expected := k.overhead + set.sleeps
	switch x := rng.IntN(10); {
	case x < 4:
		d := time.Duration(rng.Int64N(int64(expected)))
		select {
		case <-time.After(d):
		case <-p.done:
		}
		return "delay", ms(d)
	case x < 8:
		target := rng.IntN(kill9Versions) // 0: lock acquired, v: migration v applied
		extra := time.Duration(rng.IntN(21)) * time.Millisecond
		match := func(ev map[string]any) bool { return ev["msg"] == "advisory lock acquired" }
		what = "lock acquired"
		if target > 0 {
			what = fmt.Sprintf("migration %d applied", target)
			match = func(ev map[string]any) bool {
				return ev["msg"] == "migration applied" && num(ev, "version") == float64(target)
			}
		}
		if p.waitEvent(30*time.Second, match) {
			select {
			case <-time.After(extra):
			case <-p.done:
			}
		}
		return "log", fmt.Sprintf("%s +%s", what, ms(extra))
	default:
		fragment := "CREATE INDEX CONCURRENTLY"
		if rng.IntN(2) == 0 {
			fragment = "pg_sleep"
		}
		for !p.exited() && ctx.Err() == nil {
			var n int
			if err := watch.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
 WHERE application_name = $1 AND state = 'active' AND strpos(query, $2) > 0`, app, fragment).Scan(&n); err != nil || n > 0 {
				break
			}
		}
		return "db", fragment
	}
}

type histRow struct {
	version int64
	state   string
	done    int32
	runID   string
}

type snap struct {
	hist    map[int64]histRow
	log     map[int]map[int]int // version -> step -> rows
	invalid map[string]bool     // INVALID index names
}

func snapshot(ctx context.Context, c *pgx.Conn) (snap, error) {
	s := snap{hist: map[int64]histRow{}, log: map[int]map[int]int{}, invalid: map[string]bool{}}
	rows, err := c.Query(ctx, `SELECT version, state, statements_done, coalesce(run_id::text, '') FROM lockmigrate_history`)
	if err == nil {
		for rows.Next() {
			var h histRow
			if err := rows.Scan(&h.version, &h.state, &h.done, &h.runID); err != nil {
				return s, err
			}
			s.hist[h.version] = h
		}
		err = rows.Err()
	}
	var pgErr *pgconn.PgError
	if err != nil && !(errors.As(err, &pgErr) && pgErr.Code == "42P01") {
		return s, err
	}
	rows, err = c.Query(ctx, `SELECT version, step, count(*) FROM applied_log GROUP BY 1, 2`)
	if err != nil {
		return s, err
	}
	for rows.Next() {
		var v, step, n int
		if err := rows.Scan(&v, &step, &n); err != nil {
			return s, err
		}
		if s.log[v] == nil {
			s.log[v] = map[int]int{}
		}
		s.log[v][step] = n
	}
	if err := rows.Err(); err != nil {
		return s, err
	}
	rows, err = c.Query(ctx, `SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE NOT i.indisvalid`)
	if err != nil {
		return s, err
	}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return s, err
		}
		s.invalid[name] = true
	}
	return s, rows.Err()
}

// check verifies the invariants of a snapshot and returns the number of
// double-applied and lost migrations and a description of every problem.
// final additionally requires everything applied.
func check(set migSet, s snap, final bool) (double, lost int, problems []string) {
	for v := 1; v <= kill9Versions; v++ {
		steps := s.log[v]
		for step, n := range steps {
			if n > 1 {
				double++
				problems = append(problems, fmt.Sprintf("version %d step %d logged %d times (double-applied)", v, step, n))
			}
		}
		want := set.expectedSteps(v)
		complete := len(steps) == len(want)
		for _, w := range want {
			complete = complete && steps[w] > 0
		}
		h, hasRow := s.hist[int64(v)]
		applied := hasRow && h.state == "applied"
		switch {
		case applied && !complete:
			lost++
			problems = append(problems, fmt.Sprintf("version %d recorded applied but its log has steps %v of %v (lost)", v, keys(steps), want))
		case final && !applied:
			lost++
			problems = append(problems, fmt.Sprintf("version %d not applied after the final run (state %q, log %v)", v, h.state, keys(steps)))
		case !set.notx[v] && complete && !applied:
			problems = append(problems, fmt.Sprintf("transactional version %d logged but not in the history", v))
		case set.notx[v] && !hasRow && len(steps) > 0:
			problems = append(problems, fmt.Sprintf("no-transaction version %d has log steps %v but no history row", v, keys(steps)))
		case set.notx[v] && hasRow && h.state == "running":
			// Statements 1..done committed; statement done+1 may have
			// completed before the kill stopped the progress update.
			for step, st := range notxStepStatement {
				if st <= int(h.done) && steps[step] == 0 {
					problems = append(problems, fmt.Sprintf("version %d: statements_done=%d but step %d (statement %d) missing", v, h.done, step, st))
				}
				if st > int(h.done)+1 && steps[step] > 0 {
					problems = append(problems, fmt.Sprintf("version %d: statements_done=%d but step %d (statement %d) logged", v, h.done, step, st))
				}
			}
		}
	}
	return double, lost, problems
}

func keys(m map[int]int) []int {
	var out []int
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// operator does what an operator does before `resolve`: for applied, runs
// the statements of the interrupted file whose effects are missing (the
// INVALID index a killed CREATE INDEX CONCURRENTLY left is dropped and
// rebuilt); for retry, undoes everything the attempt did.
func operator(ctx context.Context, c *pgx.Conn, v int, action string) error {
	exec := func(sql string, args ...any) error {
		_, err := c.Exec(ctx, sql, args...)
		return err
	}
	tbl, idx := fmt.Sprintf("n_%d", v), fmt.Sprintf("n_%d_idx", v)
	if action == "retry" {
		return errors.Join(
			exec("DROP INDEX CONCURRENTLY IF EXISTS "+idx),
			exec("DROP TABLE IF EXISTS "+tbl),
			exec("DELETE FROM applied_log WHERE version = $1", v))
	}
	var valid *bool
	err := c.QueryRow(ctx, `SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = $1`, idx).Scan(&valid)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	logStep := func(step int) error {
		return exec(`INSERT INTO applied_log (version, step) SELECT $1::int, $2::int
 WHERE NOT EXISTS (SELECT 1 FROM applied_log WHERE version = $1::int AND step = $2::int)`, v, step)
	}
	if err := exec("CREATE TABLE IF NOT EXISTS " + tbl + " (id int)"); err != nil {
		return err
	}
	if err := logStep(1); err != nil {
		return err
	}
	if valid != nil && !*valid {
		if err := exec("DROP INDEX CONCURRENTLY " + idx); err != nil {
			return err
		}
		valid = nil
	}
	if valid == nil {
		if err := exec("CREATE INDEX CONCURRENTLY " + idx + " ON " + tbl + " (id)"); err != nil {
			return err
		}
	}
	return errors.Join(logStep(2), logStep(3))
}
