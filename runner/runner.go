// Package runner applies a set of SQL migrations to PostgreSQL exactly once,
// however many replicas run it at the same time. It reads migrations from an
// fs.FS, validates them against the history table, and applies the pending
// ones on a single connection while holding a lock provided by the caller
// (see package lock). It knows nothing of configuration, metrics or how the
// connection was made.
package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Conn is the part of *pgx.Conn the runner uses. The lock and the migrations
// must share this one connection: a session-level advisory lock protects only
// what its own session does while it holds it.
type Conn interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Locker is the mutual exclusion the runner takes before it changes anything.
// It must be bound to the same session as the Conn given to New.
type Locker interface {
	// TryLock attempts once and reports whether the lock was granted.
	TryLock(ctx context.Context) (bool, error)
	// Wait blocks until the lock is granted or ctx ends; it returns the
	// number of attempts and, on ctx's end, context.Cause(ctx).
	Wait(ctx context.Context) (int, error)
	// Unlock releases the lock; it must work with an already cancelled ctx.
	Unlock(ctx context.Context) error
}

// OnLocked says what a run does when another session holds the lock.
type OnLocked string

const (
	// Skip exits at once: the holder is migrating, and the application's
	// readiness (or a wait-mode init container) covers the rest.
	Skip OnLocked = "skip"
	// Wait retries until the lock is free, then re-checks the schema.
	Wait OnLocked = "wait"
)

// TransactionMode chooses how pending transactional migrations are grouped.
type TransactionMode string

const (
	// TransactionEach commits every migration on its own.
	TransactionEach TransactionMode = "each"
	// TransactionAll applies every pending migration in one transaction,
	// so a failure leaves the schema exactly as it was.
	TransactionAll TransactionMode = "all"
)

// Outcome is how a run ended when it did not fail.
type Outcome string

// The outcomes of a successful run.
const (
	OutcomeApplied  Outcome = "applied"    // this run applied at least one migration
	OutcomeUpToDate Outcome = "up_to_date" // nothing was pending
	OutcomeSkipped  Outcome = "skipped"    // the lock was held elsewhere (skip mode)
	OutcomeWaited   Outcome = "waited"     // waited for the holder, who left nothing to do
)

// Options configure a Runner. The zero value of each field is its default,
// except Schema and Table, which are required.
type Options struct {
	Schema string
	Table  string

	OnLocked    OnLocked      // default Skip
	WaitTimeout time.Duration // wait mode only; default 10 minutes

	Transaction TransactionMode // default TransactionEach

	// LockTimeout, when positive, is set as lock_timeout for migration
	// statements; a migration that hits it (SQLSTATE 55P03) is rolled back
	// and retried up to LockRetries times with backoff, so DDL never queues
	// behind a long transaction while blocking every reader of the table.
	LockTimeout time.Duration
	LockRetries int
	// StatementTimeout, when positive, is set as statement_timeout for
	// migration statements.
	StatementTimeout time.Duration

	// AllowOutOfOrder applies a pending migration older than the newest
	// applied one instead of refusing it.
	AllowOutOfOrder bool

	// Phase selects what a run applies (phase.go): PhaseExpand the files
	// without a phase directive, PhaseContract the files marked contract,
	// PhaseAll (the default, also for "") every file in version order.
	Phase Phase
	// BeforeLock, when set, is called once the lock-free fast path found
	// something to do, before the lock is tried; its error ends the run. A
	// contract run waits there for the application's rollout, so a run with
	// nothing pending never waits.
	BeforeLock func(ctx context.Context) error

	// BackfillSleep is the least pause after each batch of a backfill that
	// changed rows (the file's sleep= may ask for more). BackfillMaxLag,
	// when positive, pauses the batches while a standby's replay lag
	// exceeds it (backfill_lag.go). BackfillProgressInterval is the least
	// time between progress events (default 10 s).
	BackfillSleep            time.Duration
	BackfillMaxLag           time.Duration
	BackfillProgressInterval time.Duration

	// BaselineVersion, when positive, makes a run that finds the history
	// empty record every migration up to this version as applied (state
	// baseline) without running it, then apply the newer ones. Ignored once
	// the history has rows. See baseline.go.
	BaselineVersion int64

	// BeforeApply, when set, is called by the lock holder with the
	// migrations it is about to apply (never on the lock-free fast path)
	// and, for context, the set's others (applied, or recorded as
	// baseline), both in version order, on the run's connection, before
	// the first is applied; an error stops the run with nothing applied.
	// The CLI lints the pending ones here (LOCKMIGRATE_LINT).
	BeforeApply func(ctx context.Context, conn Conn, pending, applied []*Migration) error
	// AfterLock, when set, is called by a migrate run as soon as it holds
	// the lock, before it reads the history again: work that BeforeApply
	// will need can start there and overlap the round trips in between
	// (the CLI starts the lint parser's helper). Never called on the
	// lock-free fast path or by a replica that did not get the lock; the
	// run may still find nothing to apply once it reads the history.
	AfterLock func(ctx context.Context)

	// AppliedBy is recorded in the history (the pod name, typically).
	AppliedBy string
	// RunID identifies this run in the history and logs; zero means a new
	// random UUID.
	RunID uuid.UUID
	// Logger receives one event per line; nil discards.
	Logger *slog.Logger
}

// DefaultWaitTimeout is the wait-mode limit when none is set.
const DefaultWaitTimeout = 10 * time.Minute

func (o *Options) validate() error {
	if o.Schema == "" || o.Table == "" {
		return errors.New("runner: schema and table must be set")
	}
	switch o.OnLocked {
	case "":
		o.OnLocked = Skip
	case Skip, Wait:
	default:
		return fmt.Errorf("runner: unknown OnLocked %q (want %q or %q)", o.OnLocked, Skip, Wait)
	}
	switch o.Transaction {
	case "":
		o.Transaction = TransactionEach
	case TransactionEach, TransactionAll:
	default:
		return fmt.Errorf("runner: unknown Transaction %q (want %q or %q)", o.Transaction, TransactionEach, TransactionAll)
	}
	if o.WaitTimeout <= 0 {
		o.WaitTimeout = DefaultWaitTimeout
	}
	if o.LockTimeout < 0 || o.StatementTimeout < 0 || o.LockRetries < 0 || o.BaselineVersion < 0 {
		return errors.New("runner: LockTimeout, StatementTimeout, LockRetries and BaselineVersion must not be negative")
	}
	if err := o.validatePhase(); err != nil {
		return err
	}
	if o.RunID == uuid.Nil {
		o.RunID = uuid.New()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Runner applies one migration set on one connection.
type Runner struct {
	conn   Conn
	locker Locker
	migs   []*Migration
	opts   Options
	hist   history
	log    *slog.Logger
	// runID is opts.RunID as text, formatted once for the history row
	// of every migration.
	runID string
	// lagProbe replaces queryLag in tests.
	lagProbe func(context.Context) (replicationLag, error)
}

// New validates opts and returns a Runner. migs must come from Load (sorted,
// validated); conn and locker must share one session.
func New(conn Conn, locker Locker, migs []*Migration, opts Options) (*Runner, error) {
	if conn == nil || locker == nil {
		return nil, errors.New("runner: conn and locker are required")
	}
	if err := opts.validate(); err != nil {
		return nil, err
	}
	return &Runner{
		conn:   conn,
		locker: locker,
		migs:   migs,
		opts:   opts,
		hist:   newHistory(opts.Schema, opts.Table),
		log:    opts.Logger,
		runID:  opts.RunID.String(),
	}, nil
}

// AppliedMigration is one migration applied by this run.
type AppliedMigration struct {
	Version  int64
	Name     string
	Duration time.Duration
}

// Result describes a run. Migrate fills it as far as the run got, also when
// it returns an error, so metrics can describe failed runs too.
type Result struct {
	Outcome Outcome
	RunID   uuid.UUID
	// Applied lists what this run committed, in order.
	Applied []AppliedMigration
	// Baselined counts migrations this run recorded as baseline
	// (Options.BaselineVersion) without running them.
	Baselined int
	// Pending is the number of migrations left to apply when the run ended
	// (of the run's phase).
	Pending int
	// PendingExpand and PendingContract count the pending migrations of
	// each phase as the run last saw them, whatever its own phase.
	PendingExpand, PendingContract int
	// Backfills are the backfills this run worked on, as far as it got.
	Backfills []*BackfillStats
	// SchemaVersion is the highest applied version when the run ended.
	SchemaVersion int64
	// Ahead lists applied versions unknown to this migration set.
	Ahead []int64

	LockAcquired bool
	// LockConflict is set when the first try found the lock held elsewhere.
	LockConflict bool
	// ApplyStarted is set when the run, holding the lock, began applying.
	ApplyStarted bool
	// LockAttempts counts try-lock calls (0 when the fast path sufficed).
	LockAttempts int
	// LockWait is the time from the first try-lock to the grant (or give-up).
	LockWait time.Duration
	// LockHeld is the time from the grant to the release.
	LockHeld time.Duration
	// LockTimeoutRetries counts migrations retried after lock_timeout.
	LockTimeoutRetries int
	Duration           time.Duration
}

// Migrate brings the database up to date, or leaves it to whoever holds the
// lock. The fast path reads the history without locking: when every migration
// is applied with a matching checksum, it returns OutcomeUpToDate without
// calling the locker, which keeps a steady-state pod start to one query.
func (r *Runner) Migrate(ctx context.Context) (*Result, error) {
	start := time.Now()
	res := &Result{RunID: r.opts.RunID}
	err := r.migrate(ctx, res)
	res.Duration = time.Since(start)
	return res, err
}

// migrate is Migrate's run, filling res as far as it gets: the fast path,
// then the lock, then the run under it, then the release.
func (r *Runner) migrate(ctx context.Context, res *Result) error {
	p, err := r.fastPlan(ctx)
	if err != nil {
		return err
	}
	res.observe(p)
	if len(p.problems) > 0 {
		return errors.Join(p.problems...)
	}
	if p.upToDate() {
		r.warnAhead(ctx, p)
		res.Outcome = OutcomeUpToDate
		return nil
	}
	if r.opts.BeforeLock != nil {
		if err := r.opts.BeforeLock(ctx); err != nil {
			return err
		}
	}
	waited, err := r.acquire(ctx, res, len(p.pending))
	if err != nil || !res.LockAcquired {
		return err
	}
	heldStart := time.Now()
	r.log.LogAttrs(ctx, slog.LevelInfo, "advisory lock acquired",
		slog.Int("attempts", res.LockAttempts), slog.Int64("wait_ms", res.LockWait.Milliseconds()))
	defer r.release(ctx, res, heldStart)
	return r.migrateLocked(ctx, res, waited)
}

// acquire tries the lock once and, held elsewhere, skips (res.Outcome
// skipped, res.LockAcquired false) or waits for it, as Options.OnLocked
// says. It reports whether it waited; res.LockAcquired says whether the
// lock is held now.
func (r *Runner) acquire(ctx context.Context, res *Result, pending int) (waited bool, err error) {
	waitStart := time.Now()
	res.LockAttempts = 1
	won, err := r.locker.TryLock(ctx)
	if err != nil {
		return false, err
	}
	if !won {
		res.LockConflict = true
		if r.opts.OnLocked == Skip {
			res.LockWait = time.Since(waitStart)
			res.Outcome = OutcomeSkipped
			return false, nil
		}
		if err := r.waitForLock(ctx, res, pending, waitStart); err != nil {
			return false, err
		}
		waited = true
	}
	res.LockWait = time.Since(waitStart)
	res.LockAcquired = true
	return waited, nil
}

// waitForLock waits for the lock up to Options.WaitTimeout, counting the
// attempts in res; a timeout is ErrWaitTimeout with the wait and the
// attempts.
func (r *Runner) waitForLock(ctx context.Context, res *Result, pending int, waitStart time.Time) error {
	r.log.LogAttrs(ctx, slog.LevelInfo, "advisory lock held elsewhere, waiting",
		slog.Int("pending", pending), slog.Duration("wait_timeout", r.opts.WaitTimeout))
	waitCtx, cancel := context.WithTimeoutCause(ctx, r.opts.WaitTimeout, ErrWaitTimeout)
	n, err := r.locker.Wait(waitCtx)
	cancel()
	res.LockAttempts += n
	res.LockWait = time.Since(waitStart)
	if err != nil {
		if errors.Is(err, ErrWaitTimeout) {
			return fmt.Errorf("%w after %s (%d attempts)", ErrWaitTimeout, r.opts.WaitTimeout, res.LockAttempts)
		}
		return err
	}
	return nil
}

// release releases the lock taken at heldStart and records how long it was
// held. A failed release is only logged: the lock dies with the session
// anyway, and the caller closes it.
func (r *Runner) release(ctx context.Context, res *Result, heldStart time.Time) {
	uerr := r.locker.Unlock(ctx)
	res.LockHeld = time.Since(heldStart)
	if uerr != nil {
		r.log.LogAttrs(ctx, slog.LevelWarn, "advisory unlock failed; the lock is released when the connection closes",
			slog.String("error", uerr.Error()))
		return
	}
	r.log.LogAttrs(ctx, slog.LevelInfo, "advisory lock released",
		slog.Int64("held_ms", res.LockHeld.Milliseconds()))
}

// migrateLocked re-reads the history under the lock, since another replica
// may have finished between the fast path and the grant, and applies what is
// still pending.
func (r *Runner) migrateLocked(ctx context.Context, res *Result, waited bool) error {
	if r.opts.AfterLock != nil {
		r.opts.AfterLock(ctx)
	}
	if err := r.prepareSession(ctx); err != nil {
		return err
	}
	rows, exists, err := r.hist.read(ctx, r.conn)
	if err != nil {
		return err
	}
	if !exists {
		if err := r.hist.ensure(ctx, r.conn); err != nil {
			return err
		}
	}
	if rows, err = r.autoBaseline(ctx, res, rows); err != nil {
		return err
	}
	p := makePlan(r.migs, rows, r.opts)
	res.observe(p)
	stmtProblems, splits := p.checkStatements()
	problems := append(p.problems, stmtProblems...)
	for _, row := range p.running {
		problems = append(problems, r.interrupted(ctx, row))
	}
	if len(problems) > 0 {
		return errors.Join(problems...)
	}
	r.warnAhead(ctx, p)
	if len(p.pending) == 0 {
		res.Outcome = OutcomeUpToDate
		if waited {
			res.Outcome = OutcomeWaited
		}
		return nil
	}
	if r.opts.BeforeApply != nil {
		if err := r.opts.BeforeApply(ctx, r.conn, p.pending, notPending(r.migs, p.pending)); err != nil {
			return err
		}
	}
	res.ApplyStarted = true
	err = r.apply(ctx, res, p.pending, splits)
	res.Pending = len(p.pending) - len(res.Applied)
	res.countApplied(p)
	for _, a := range res.Applied {
		res.SchemaVersion = max(res.SchemaVersion, a.Version)
	}
	if err != nil {
		return err
	}
	res.Outcome = OutcomeApplied
	return nil
}

// notPending is migs without pending (both in version order).
func notPending(migs, pending []*Migration) []*Migration {
	out := make([]*Migration, 0, len(migs)-len(pending))
	for i, m := range migs {
		if len(pending) > 0 && pending[0] == m {
			pending = pending[1:]
			continue
		}
		out = append(out, migs[i])
	}
	return out
}

func (res *Result) observe(p plan) {
	res.Pending = len(p.pending)
	res.PendingExpand, res.PendingContract = p.pendingExpand, p.pendingContract
	res.SchemaVersion = p.schemaVersion
	res.Ahead = p.ahead
}

func (r *Runner) warnAhead(ctx context.Context, p plan) {
	if len(p.ahead) == 0 {
		return
	}
	r.log.LogAttrs(ctx, slog.LevelWarn,
		"database has applied migrations unknown to this binary (a newer release migrated it); continuing",
		slog.Any("unknown_versions", p.ahead), slog.Int64("schema_version", p.schemaVersion))
}

// interrupted explains a history row left in state "running" by a
// no-transaction migration whose run died or failed: where it stopped, what
// INVALID indexes exist, and how to resolve it.
func (r *Runner) interrupted(ctx context.Context, row HistoryRow) *ValidationError {
	var indexes string
	switch idx, err := r.invalidIndexes(ctx); {
	case err != nil:
		indexes = "could not check for INVALID indexes: " + err.Error()
	case len(idx) > 0:
		indexes = fmt.Sprintf("INVALID indexes left behind: %s (drop them with DROP INDEX CONCURRENTLY before a retry)", strings.Join(idx, ", "))
	default:
		indexes = "no INVALID index found"
	}
	return interruptedError(r.byVersion(row.Version), row, indexes)
}

// interruptedError is interrupted's message from the row alone; indexes
// says what is known of INVALID indexes (a caller that reads no catalog
// says so).
func interruptedError(m *Migration, row HistoryRow, indexes string) *ValidationError {
	e := &ValidationError{Kind: KindInterrupted, Version: row.Version}
	detail := fmt.Sprintf("no-transaction migration %d (%s) was interrupted after %d completed statement(s) (run %s by %q, started %s)",
		row.Version, row.Name, row.StatementsDone, row.RunID, row.AppliedBy, row.AppliedAt.UTC().Format(time.RFC3339))
	if m != nil {
		e.File = m.File
		if n := int(row.StatementsDone); n < len(m.statements) {
			st := m.statements[n]
			detail += fmt.Sprintf("; it stopped at statement %d of %d (line %d: %q)", n+1, len(m.statements), st.Line, firstLine(st.SQL))
		}
	}
	e.Detail = detail + "; " + indexes + fmt.Sprintf("; inspect the database, finish or undo the remaining statements, then run "+
		"`lockmigrate resolve %d applied` (the file's effects are complete) or `lockmigrate resolve %d retry` "+
		"(run the whole file again on the next run)", row.Version, row.Version)
	return e
}

func (r *Runner) byVersion(v int64) *Migration {
	for _, m := range r.migs {
		if m.Version == v {
			return m
		}
	}
	return nil
}
