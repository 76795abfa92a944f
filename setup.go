package main

import (
	"context"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/lockmigrate/lockmigrate/internal/config"
	"github.com/lockmigrate/lockmigrate/internal/dbconn"
	"github.com/lockmigrate/lockmigrate/internal/dirfs"
	"github.com/lockmigrate/lockmigrate/lock"
	"github.com/lockmigrate/lockmigrate/migrations"
	"github.com/lockmigrate/lockmigrate/runner"
)

// env is what every command that talks to the database sets up first.
type env struct {
	cfg     *config.Config
	connCfg *pgx.ConnConfig
	log     *slog.Logger
	runID   uuid.UUID
	podName string
	key     int64
	migs    []*runner.Migration
	// connectAttempts is how many attempts the last connect made.
	connectAttempts int
	// red filters secrets out of everything written to stderr (and the
	// termination log).
	red *redactor
	// termLog is the termination-message path.
	termLog string
	// early is the migrate run's connection while it is being opened.
	early *earlyConn
}

// setup reads the configuration and the migration set and builds the
// logger. On failure it logs the error and returns it, with an env that
// still has its logger, redactor and termination-log path; the caller maps
// the error to the exit code.
func setup(ctx context.Context, getenv func(string) string, stderr io.Writer, command string) (*env, error) {
	// Secrets known before parsing are redacted from the very first line.
	red := newRedactor(stderr, getenv("PGPASSWORD"), passwordInURL(getenv("DATABASE_URL")),
		getenv("LOCKMIGRATE_PUSHGATEWAY_PASSWORD"), passwordInURL(getenv("LOCKMIGRATE_PUSHGATEWAY_URL")))
	e := &env{runID: uuid.New(), red: red, termLog: getenv("LOCKMIGRATE_TERMINATION_LOG")}
	e.log = newLogger("json", "info", red).With(slog.String("run_id", e.runID.String()), slog.String("command", command))
	fail := func(msg string, err error) (*env, error) {
		e.dropEarly(ctx)
		e.log.Error(msg, "error", err.Error(), "exit_code", exitCode(context.Background(), err))
		return e, err
	}
	cfg, err := config.Load(getenv)
	if err != nil {
		// The logger's own settings may be what is invalid: it stays JSON.
		return fail("invalid configuration", err)
	}
	e.cfg, e.podName, e.termLog = cfg, cfg.PodName, cfg.TerminationLog
	if e.podName == "" {
		e.podName, _ = os.Hostname()
	}
	red.add(cfg.PushgatewayPassword, passwordInURL(cfg.DatabaseURL))
	e.connCfg, err = dbconn.Config(cfg.DatabaseURL, getenv, "lockmigrate/"+e.podName, dbconn.Keepalive{
		Idle: cfg.TCPKeepalivesIdle, Interval: cfg.TCPKeepalivesInterval,
		Count: cfg.TCPKeepalivesCount, UserTimeout: cfg.TCPUserTimeout})
	if e.connCfg != nil {
		red.add(e.connCfg.Password)
	}
	e.log = newLogger(cfg.LogFormat, cfg.LogLevel, red).With(
		slog.String("run_id", e.runID.String()), slog.String("command", command))
	if err != nil {
		return fail("invalid configuration", err)
	}
	e.key = lock.DefaultKey(cfg.Schema, cfg.Table)
	if cfg.LockKey != "" {
		e.key = lock.ParseKey(cfg.LockKey)
	}
	if command == "unlock" {
		// unlock needs only the key: a broken migration set must not keep
		// an operator from freeing the lock.
		return e, nil
	}
	if command == "migrate" && cfg.TenantsQuery == "" {
		e.connectEarly(ctx)
	}
	var fsys fs.FS = migrations.FS
	source := "embedded"
	if cfg.Dir != "" {
		if st, err := os.Stat(cfg.Dir); err != nil || !st.IsDir() {
			return fail("invalid configuration", &config.Error{Var: "LOCKMIGRATE_DIR", Value: cfg.Dir,
				Accept: "a readable directory of migration files"})
		}
		fsys, source = dirfs.New(cfg.Dir), cfg.Dir
	}
	e.migs, err = runner.Load(fsys)
	if err != nil {
		return fail("invalid migration set ("+source+")", err)
	}
	if len(e.migs) == 0 {
		// Not an error (a new service may have none yet), but an unmounted
		// ConfigMap or upper-case .SQL names look exactly like this.
		e.log.Warn("no migrations found: only top-level <version>_<name>.sql files count", "source", source)
	}
	return e, nil
}

// passwordInURL extracts a password from a URL-form DATABASE_URL, including
// one pgx could not parse, so it can be redacted.
func passwordInURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		p, _ := u.User.Password()
		return p
	}
	return ""
}

// connect opens the dedicated connection.
func (e *env) connect(ctx context.Context) (*pgx.Conn, error) {
	var (
		conn     *pgx.Conn
		attempts int
		err      error
	)
	if ec, ok := e.takeEarly(); ok {
		conn, attempts, err = ec.conn, ec.attempts, ec.err
	} else {
		conn, attempts, err = dbconn.Connect(ctx, e.connCfg, e.cfg.ConnectTimeout, e.log)
	}
	e.connectAttempts = attempts
	if err != nil {
		return nil, err
	}
	e.log.LogAttrs(ctx, slog.LevelDebug, "connected", slog.Int("attempts", attempts),
		slog.Int("backend_pid", int(conn.PgConn().PID())),
		slog.String("server_version", conn.PgConn().ParameterStatus("server_version")))
	return conn, nil
}

// closeConn closes conn even after ctx was cancelled.
func closeConn(ctx context.Context, conn *pgx.Conn) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = conn.Close(cctx)
}

func (e *env) runnerOptions() runner.Options {
	return runner.Options{
		Schema:           e.cfg.Schema,
		Table:            e.cfg.Table,
		OnLocked:         runner.OnLocked(e.cfg.OnLocked),
		WaitTimeout:      e.cfg.WaitTimeout,
		Transaction:      runner.TransactionMode(e.cfg.Transaction),
		LockTimeout:      e.cfg.LockTimeout,
		LockRetries:      e.cfg.LockRetries,
		StatementTimeout: e.cfg.StatementTimeout,
		AllowOutOfOrder:  e.cfg.AllowOutOfOrder,
		BaselineVersion:  e.cfg.BaselineVersion,
		AppliedBy:        e.podName,
		RunID:            e.runID,
		Logger:           e.log,
	}
}

// databaseConfigured reports whether any connection setting is present, so
// validate can stay offline when none is.
func databaseConfigured(cfg *config.Config, getenv func(string) string) bool {
	if cfg.DatabaseURL != "" {
		return true
	}
	for _, v := range []string{"PGHOST", "PGDATABASE", "PGSERVICE", "PGPORT", "PGUSER"} {
		if getenv(v) != "" {
			return true
		}
	}
	return false
}
