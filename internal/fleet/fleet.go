// Package fleet applies one migration set to many tenant schemas of one
// database: each tenant keeps its own history table inside its schema and
// has its own advisory lock, so tenants migrate independently and two
// runners never migrate the same tenant at once. It only orchestrates: the
// lock (package lock) and the runner (package runner) do the work, per
// tenant, exactly as they do for a single schema.
//
// A run lists the tenants with an operator-supplied query on a control
// connection, keeps the tenants of its shard, decides which of them are
// already current in a bounded number of queries (the fleet fast path), and
// hands only the others to a fixed number of workers, each on one dedicated
// connection reused across tenants.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockmigrate/lockmigrate/internal/dbconn"
	"github.com/lockmigrate/lockmigrate/lock"
	"github.com/lockmigrate/lockmigrate/runner"
)

// Defaults of the optional Options fields.
const (
	DefaultConcurrency      = 4
	DefaultChunkSize        = 500
	DefaultProgressInterval = 5 * time.Second
	DefaultQueryTimeout     = 2 * time.Minute
)

// Shard selects a stable subset of the tenants: those whose ShardOf is
// Index. A Count of 0 or 1 selects every tenant.
type Shard struct {
	Index, Count int
}

// ShardOf is the shard of tenant among count shards: FNV-1a (64 bits) of the
// schema name modulo count. It depends on the name only, so every runner,
// whatever order its query returns the tenants in, agrees on it.
func ShardOf(tenant string, count int) int {
	if count <= 1 {
		return 0
	}
	h := fnv.New64a()
	h.Write([]byte(tenant))
	return int(h.Sum64() % uint64(count))
}

// Owns reports whether tenant belongs to the shard.
func (s Shard) Owns(tenant string) bool {
	return s.Count <= 1 || ShardOf(tenant, s.Count) == s.Index
}

// Options configure a fleet run. Connect, Migrations, Runner.Table and Query
// are required.
type Options struct {
	// Connect opens one dedicated connection (never a pool); the fleet
	// closes what it opens. It is called at most Concurrency times, plus
	// once more for every connection lost during the run.
	Connect func(ctx context.Context) (*pgx.Conn, error)
	// Migrations is the set applied to every tenant (from runner.Load).
	Migrations []*runner.Migration
	// Runner is the template of every tenant's runner options; Schema is
	// replaced by the tenant, Logger by the fleet's (tagged with the tenant).
	Runner runner.Options
	// Query returns one text column: the tenant schema names.
	Query string
	// Concurrency is how many tenants migrate at once, each on its own
	// connection; default DefaultConcurrency.
	Concurrency int
	// FailFast stops taking new tenants after the first failure.
	FailFast bool
	// Shard restricts the run to a subset of the tenants.
	Shard Shard
	// Logger receives the fleet's events; the runners' per-tenant
	// information events are logged at debug level (one line per tenant and
	// migration would drown the progress lines), their warnings and errors
	// as they are. Nil discards.
	Logger *slog.Logger
	// ChunkSize is how many tenants one fast-path query covers; default
	// DefaultChunkSize.
	ChunkSize int
	// ProgressInterval is the longest time between two progress lines;
	// default DefaultProgressInterval.
	ProgressInterval time.Duration
	// QueryTimeout bounds each query of the control connection (tenant
	// list, fast path); default DefaultQueryTimeout.
	QueryTimeout time.Duration
}

// Outcome of one tenant, or of the whole run.
type Outcome string

// Tenant outcomes beyond runner.Outcome's.
const (
	OutcomeFailed       Outcome = "failed"
	OutcomeNotAttempted Outcome = "not_attempted" // fail-fast or a signal stopped the run first
)

// Failure is one tenant's failure.
type Failure struct {
	Tenant string
	// Kind classifies Err: migration, validation, connect, wait_timeout,
	// signal or error.
	Kind string
	Err  error
}

// Summary is what a fleet run did.
type Summary struct {
	// Listed is the number of distinct tenants the query returned; Total
	// those of this run's shard.
	Listed, Total int
	// Current is how many the fast path found current without a lock.
	Current int
	// Per-tenant outcomes; UpToDate includes Current.
	Applied, UpToDate, Waited, Skipped, Failed, NotAttempted int
	// MigrationsApplied sums the migrations applied over all tenants;
	// LockTimeoutRetries their lock_timeout retries.
	MigrationsApplied, LockTimeoutRetries int
	// Failures lists the failed tenants, sorted by name.
	Failures []Failure
	// Ahead counts tenants whose history has versions unknown to this
	// migration set (a newer release migrated them): current, with a warning.
	Ahead int
	// Connections is how many connections the run opened, the control
	// connection included; ConnectAttempts how many attempts that took when
	// Connect reports it (see ConnectCounter).
	Connections int
	// ControlQueries is how many queries the control connection sent before
	// the workers started: 2 + ceil(Total with a history table / ChunkSize).
	ControlQueries int
	// FastPath is the time from connecting to knowing what is pending.
	FastPath time.Duration
	Duration time.Duration
}

// Pending is the number of tenants not confirmed current at the end of the
// run: failed, skipped (another runner holds their lock) or not attempted.
func (s *Summary) Pending() int { return s.Failed + s.Skipped + s.NotAttempted }

// Outcome summarises the run like a single-schema run: failed if any tenant
// failed, else applied if any tenant was migrated by this run, else skipped
// if any was left to another runner, else waited or up_to_date.
func (s *Summary) Outcome() Outcome {
	switch {
	case s.Failed > 0 || s.NotAttempted > 0:
		return OutcomeFailed
	case s.Applied > 0:
		return Outcome(runner.OutcomeApplied)
	case s.Skipped > 0:
		return Outcome(runner.OutcomeSkipped)
	case s.Waited > 0:
		return Outcome(runner.OutcomeWaited)
	}
	return Outcome(runner.OutcomeUpToDate)
}

// TenantsFailedError reports that some tenants failed while the others were
// migrated. It maps to exit code 1 whatever the kinds of the failures: one
// code must summarise a fleet, and Failures says per tenant what happened.
type TenantsFailedError struct {
	Failures     []Failure
	Total        int
	NotAttempted int
}

// listedFailures is how many failures an error message names.
const listedFailures = 10

func (e *TenantsFailedError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d of %d tenants failed", len(e.Failures), e.Total)
	if e.NotAttempted > 0 {
		fmt.Fprintf(&b, " (%d not attempted)", e.NotAttempted)
	}
	for i, f := range e.Failures {
		if i == listedFailures {
			fmt.Fprintf(&b, ", and %d more", len(e.Failures)-listedFailures)
			break
		}
		sep := ", "
		if i == 0 {
			sep = ": "
		}
		fmt.Fprintf(&b, "%s%s (%s)", sep, f.Tenant, f.Kind)
	}
	if len(e.Failures) > 0 {
		fmt.Fprintf(&b, "; first: tenant %s: %v", e.Failures[0].Tenant, e.Failures[0].Err)
	}
	return b.String()
}

// QueryError is a tenants query the server refused or whose result is not
// one column of names: a configuration error.
type QueryError struct{ Err error }

func (e *QueryError) Error() string {
	return "tenants query (LOCKMIGRATE_TENANTS_QUERY): " + e.Err.Error()
}

func (e *QueryError) Unwrap() error { return e.Err }

// fleet is one run's state.
type fleet struct {
	opts Options
	log  *slog.Logger
	// runLog is what the runners log to (information events demoted).
	runLog *slog.Logger

	mu      sync.Mutex
	sum     Summary
	done    int // tenants finished by workers
	pending int // tenants handed to workers
	started time.Time
	lastLog time.Time
	nextLog int // done count at which the next progress line is due
	// spare holds an open connection nobody uses (the control connection
	// once the fast path is over), taken by the first worker that needs one.
	spare *pgx.Conn
}

func (o *Options) defaults() error {
	if o.Connect == nil || o.Query == "" || o.Runner.Table == "" {
		return errors.New("fleet: Connect, Query and Runner.Table are required")
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.ChunkSize <= 0 {
		o.ChunkSize = DefaultChunkSize
	}
	if o.ProgressInterval <= 0 {
		o.ProgressInterval = DefaultProgressInterval
	}
	if o.QueryTimeout <= 0 {
		o.QueryTimeout = DefaultQueryTimeout
	}
	if o.Shard.Count > 1 && (o.Shard.Index < 0 || o.Shard.Index >= o.Shard.Count) {
		return fmt.Errorf("fleet: shard index %d outside 0..%d", o.Shard.Index, o.Shard.Count-1)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Run migrates every tenant of the shard. It returns the summary, also on
// error, as far as the run got. The error is a *TenantsFailedError when
// tenants failed (the others were still migrated unless FailFast), a
// *QueryError for a bad tenants query, the connect error when no
// connection could be opened, or the cause of ctx's cancellation.
func Run(ctx context.Context, opts Options) (*Summary, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	f := &fleet{opts: opts, log: opts.Logger, started: time.Now()}
	f.runLog = slog.New(demote{opts.Logger.Handler()})
	defer func() { f.sum.Duration = time.Since(f.started) }()

	conn, err := f.connect(ctx)
	if err != nil {
		return &f.sum, err
	}
	sv, err := Surveyor{Conn: conn, Query: opts.Query, Table: opts.Runner.Table, Migrations: opts.Migrations,
		Shard: opts.Shard, ChunkSize: opts.ChunkSize, Timeout: opts.QueryTimeout, Logger: f.log, Phase: opts.Runner.Phase}.Survey(ctx)
	f.sum.FastPath = time.Since(f.started)
	f.sum.ControlQueries = sv.Queries
	f.sum.Listed, f.sum.Total = sv.Listed, len(sv.Tenants)
	if err != nil {
		dbconn.Close(ctx, conn)
		return &f.sum, err
	}
	pending := sv.Pending
	f.sum.Current = f.sum.Total - len(pending)
	f.sum.UpToDate, f.sum.Ahead = f.sum.Current, len(sv.Ahead)
	if len(sv.Ahead) > 0 {
		f.log.LogAttrs(ctx, slog.LevelWarn,
			"tenants have applied migrations unknown to this binary (a newer release migrated them); continuing",
			slog.Int("tenants", len(sv.Ahead)), slog.Any("first", sv.Ahead[:min(len(sv.Ahead), listedFailures)]))
	}
	f.spare = conn
	f.log.LogAttrs(ctx, slog.LevelInfo, "tenants surveyed",
		slog.Int("listed", f.sum.Listed), slog.Int("total", f.sum.Total),
		slog.Int("current", f.sum.Current), slog.Int("pending", len(pending)),
		slog.Int("shard", f.opts.Shard.Index), slog.Int("shards", max(f.opts.Shard.Count, 1)),
		slog.Int("queries", f.sum.ControlQueries), slog.Int64("duration_ms", f.sum.FastPath.Milliseconds()))
	err = f.migrate(ctx, pending)
	if f.spare != nil {
		dbconn.Close(ctx, f.spare)
		f.spare = nil
	}
	sort.Slice(f.sum.Failures, func(i, j int) bool { return f.sum.Failures[i].Tenant < f.sum.Failures[j].Tenant })
	if cause := context.Cause(ctx); cause != nil {
		return &f.sum, cause
	}
	if f.sum.Failed > 0 {
		return &f.sum, &TenantsFailedError{Failures: f.sum.Failures, Total: f.sum.Total, NotAttempted: f.sum.NotAttempted}
	}
	return &f.sum, err
}

// connect opens a connection and counts it.
func (f *fleet) connect(ctx context.Context) (*pgx.Conn, error) {
	conn, err := f.opts.Connect(ctx)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.sum.Connections++
	f.mu.Unlock()
	return conn, nil
}

// migrate runs the workers over the pending tenants. It returns an error
// only when no worker could connect while tenants were left.
func (f *fleet) migrate(ctx context.Context, pending []string) error {
	if len(pending) == 0 {
		return nil
	}
	f.pending = len(pending)
	f.nextLog = f.batch()
	f.lastLog = time.Now()
	defer f.tickProgress(ctx)()
	q := &queue{tenants: pending}
	var wg sync.WaitGroup
	for id := range min(f.opts.Concurrency, len(pending)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.work(ctx, id, q)
		}()
	}
	wg.Wait()
	taken := min(int(q.next.Load()), len(pending))
	f.mu.Lock()
	f.sum.NotAttempted += len(pending) - taken
	f.mu.Unlock()
	f.progress(ctx, false)
	if taken < len(pending) && q.connectErr != nil && !q.halt.Load() {
		return q.connectErr
	}
	return nil
}

// queue hands the pending tenants to the workers, in order.
type queue struct {
	tenants []string
	next    atomic.Int64 // index of the next tenant to take
	// halt stops the workers from taking new tenants (fail-fast); the
	// tenants in flight finish, since rolling them back gains nothing.
	halt    atomic.Bool
	working atomic.Int64 // workers holding a connection

	mu         sync.Mutex
	connectErr error // the last connect failure of a worker
}

// tickProgress logs progress lines every ProgressInterval (when due) until
// the returned stop is called.
func (f *fleet) tickProgress(ctx context.Context) (stop func()) {
	tick := time.NewTicker(f.opts.ProgressInterval)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-tick.C:
				f.progress(ctx, true)
			case <-done:
				return
			}
		}
	}()
	return func() {
		close(done)
		tick.Stop()
	}
}

// work is worker id's loop: it takes the next tenant from q until none is
// left, ctx ends, fail-fast halts the run or it cannot connect.
func (f *fleet) work(ctx context.Context, id int, q *queue) {
	w := worker{f: f, id: id}
	defer w.close(ctx)
	for ctx.Err() == nil && !q.halt.Load() && int(q.next.Load()) < len(q.tenants) {
		if w.conn == nil && !w.connect(ctx, q) {
			return
		}
		i := int(q.next.Add(1)) - 1
		if i >= len(q.tenants) {
			return
		}
		failed := w.tenant(ctx, q.tenants[i])
		if w.conn == nil {
			q.working.Add(-1)
		}
		if failed && f.opts.FailFast && !q.halt.Swap(true) {
			f.log.LogAttrs(ctx, slog.LevelWarn, "fail-fast: no new tenant is started after this failure",
				slog.String("tenant", q.tenants[i]))
		}
	}
}

// batch is how many finished tenants make a progress line: about twenty
// lines per run, never fewer tenants than run at once.
func (f *fleet) batch() int {
	return max(f.opts.Concurrency, f.pending/20, 1)
}

// progress logs a progress line when a batch is complete or, with timed,
// when the interval passed with something new; the final call (neither)
// always logs.
func (f *fleet) progress(ctx context.Context, timed bool) {
	f.mu.Lock()
	final := !timed
	due := f.done >= f.nextLog || (timed && time.Since(f.lastLog) >= f.opts.ProgressInterval)
	if !due && !final {
		f.mu.Unlock()
		return
	}
	for f.nextLog <= f.done {
		f.nextLog += f.batch()
	}
	f.lastLog = time.Now()
	done, total, failed := f.done, f.pending, f.sum.Failed
	f.mu.Unlock()
	elapsed := time.Since(f.started)
	attrs := []slog.Attr{slog.Int("done", done), slog.Int("total", total), slog.Int("failed", failed),
		slog.Int64("elapsed_ms", elapsed.Milliseconds())}
	if done > 0 && done < total {
		eta := time.Duration(float64(elapsed) / float64(done) * float64(total-done))
		attrs = append(attrs, slog.Int64("eta_ms", eta.Milliseconds()))
	}
	f.log.LogAttrs(ctx, slog.LevelInfo, "tenants progress", attrs...)
}

// record files one tenant's outcome.
func (f *fleet) record(ctx context.Context, tenant string, res *runner.Result, err error, kind string) {
	f.mu.Lock()
	f.done++
	if res != nil {
		f.sum.MigrationsApplied += len(res.Applied)
		f.sum.LockTimeoutRetries += res.LockTimeoutRetries
		if len(res.Ahead) > 0 && err == nil {
			f.sum.Ahead++
		}
	}
	if err != nil {
		f.sum.Failed++
		f.sum.Failures = append(f.sum.Failures, Failure{Tenant: tenant, Kind: kind, Err: err})
	} else {
		switch res.Outcome {
		case runner.OutcomeApplied:
			f.sum.Applied++
		case runner.OutcomeUpToDate:
			f.sum.UpToDate++
		case runner.OutcomeWaited:
			f.sum.Waited++
		case runner.OutcomeSkipped:
			f.sum.Skipped++
		}
	}
	due := f.done >= f.nextLog
	f.mu.Unlock()
	if due {
		f.progress(ctx, true)
	}
}

// demote is a slog handler that logs information events as debug events.
type demote struct{ h slog.Handler }

func (d demote) level(l slog.Level) slog.Level {
	if l == slog.LevelInfo {
		return slog.LevelDebug
	}
	return l
}

func (d demote) Enabled(ctx context.Context, l slog.Level) bool { return d.h.Enabled(ctx, d.level(l)) }

func (d demote) Handle(ctx context.Context, r slog.Record) error {
	r.Level = d.level(r.Level)
	return d.h.Handle(ctx, r)
}

func (d demote) WithAttrs(as []slog.Attr) slog.Handler { return demote{d.h.WithAttrs(as)} }
func (d demote) WithGroup(name string) slog.Handler    { return demote{d.h.WithGroup(name)} }

// worker migrates tenants one after the other on one connection.
type worker struct {
	f    *fleet
	id   int
	conn *pgx.Conn
}

// acquire takes the spare connection or opens a new one.
func (w *worker) acquire(ctx context.Context) (*pgx.Conn, error) {
	w.f.mu.Lock()
	conn := w.f.spare
	w.f.spare = nil
	w.f.mu.Unlock()
	if conn != nil && !conn.IsClosed() {
		return conn, nil
	}
	return w.f.connect(ctx)
}

// connect gives w a connection and reports whether it has one. A failure
// is kept in q (unless ctx ended) and logged: the other workers may still
// be working, so the tenants are left to them rather than failed unattempted.
func (w *worker) connect(ctx context.Context, q *queue) bool {
	conn, err := w.acquire(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return false
		}
		q.mu.Lock()
		q.connectErr = err
		q.mu.Unlock()
		w.f.log.LogAttrs(ctx, slog.LevelWarn, "tenant worker could not connect; the other workers carry on",
			slog.Int("worker", w.id), slog.String("error", err.Error()),
			slog.Int64("workers_connected", q.working.Load()))
		return false
	}
	w.conn = conn
	q.working.Add(1)
	return true
}

func (w *worker) close(ctx context.Context) {
	if w.conn != nil {
		dbconn.Close(ctx, w.conn)
		w.conn = nil
	}
}

// tenant migrates one tenant and reports whether it failed. A lost
// connection is closed, so the next tenant opens a fresh one.
func (w *worker) tenant(ctx context.Context, tenant string) (failed bool) {
	f := w.f
	log := f.runLog.With(slog.String("tenant", tenant))
	res, err := w.migrateTenant(ctx, tenant, log)
	if err == nil {
		f.record(ctx, tenant, res, nil, "")
		if res.Outcome == runner.OutcomeSkipped {
			f.log.LogAttrs(ctx, slog.LevelInfo, "tenant skipped: another runner holds its lock",
				slog.String("tenant", tenant), slog.Int("pending", res.Pending))
		}
		return false
	}
	lost := dbconn.Lost(err) || w.conn.IsClosed()
	if lost {
		w.close(ctx)
	}
	kind := failureKind(ctx, err, lost)
	f.log.LogAttrs(ctx, slog.LevelError, "tenant failed",
		slog.String("tenant", tenant), slog.String("error_kind", kind), slog.String("error", err.Error()))
	f.record(ctx, tenant, res, fmt.Errorf("tenant %s: %w", tenant, err), kind)
	return true
}

func (w *worker) migrateTenant(ctx context.Context, tenant string, log *slog.Logger) (*runner.Result, error) {
	// Session level, not SET LOCAL: the runner opens its own transactions,
	// and no-transaction migrations run outside any. Set for every tenant,
	// so nothing of the previous tenant's setting survives on the shared
	// connection. The history table is schema-qualified by the runner.
	// A migration may also have left a role (SET ROLE survives its
	// transaction) or temporary tables behind: the next tenant must not run
	// as that role or see those tables. Not RESET ALL: it would also undo
	// the keepalive settings dbconn sets with SET behind a pooler.
	if _, err := w.conn.Exec(ctx, "RESET ROLE; RESET SESSION AUTHORIZATION; DISCARD TEMP; SET search_path TO "+
		pgx.Identifier{tenant}.Sanitize()); err != nil {
		return nil, fmt.Errorf("reset session for the tenant: %w", err)
	}
	opts := w.f.opts.Runner
	opts.Schema, opts.Logger = tenant, log
	adv := lock.New(w.conn, lock.DefaultKey(tenant, opts.Table), log)
	r, err := runner.New(w.conn, adv, w.f.opts.Migrations, opts)
	if err != nil {
		return nil, err
	}
	return r.Migrate(ctx)
}

// failureKind classifies a tenant's error like the exit codes do.
func failureKind(ctx context.Context, err error, lost bool) string {
	var (
		valErr  *runner.ValidationError
		migErr  *runner.MigrationError
		poolErr *lock.PoolerError
	)
	switch {
	case ctx.Err() != nil:
		return "signal"
	case lost, errors.Is(err, runner.ErrReadOnly):
		return "connect"
	case errors.Is(err, runner.ErrWaitTimeout):
		return "wait_timeout"
	case errors.As(err, &valErr), errors.As(err, &poolErr):
		return "validation"
	case errors.As(err, &migErr):
		return "migration"
	}
	return "error"
}

// dedupe sorts names and drops duplicates.
func dedupe(names []string) []string {
	slices.Sort(names)
	return slices.Compact(names)
}
