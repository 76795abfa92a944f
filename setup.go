package main

import (
	"context"
	"fmt"
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
}

// setup reads the configuration and the migration set and builds the
// logger. It returns the exit code to use when it fails; the failure is
// already logged by then.
func setup(getenv func(string) string, stderr io.Writer, command string) (*env, int) {
	cfg, err := config.Load(getenv)
	if err != nil {
		// The logger's own settings may be what is invalid: log as JSON.
		l := newLogger("json", "info", stderr)
		l.Error("invalid configuration", "error", err.Error(), "exit_code", exitUsage)
		return nil, exitUsage
	}
	e := &env{cfg: cfg, runID: uuid.New(), podName: cfg.PodName}
	if e.podName == "" {
		e.podName, _ = os.Hostname()
	}
	e.connCfg, err = dbconn.Config(cfg.DatabaseURL, getenv, "lockmigrate/"+e.podName)
	// Whatever happened, keep the password out of the output.
	var secrets []string
	if e.connCfg != nil {
		secrets = append(secrets, e.connCfg.Password)
	}
	secrets = append(secrets, getenv("PGPASSWORD"), passwordInURL(cfg.DatabaseURL),
		cfg.PushgatewayPassword, passwordInURL(cfg.PushgatewayURL))
	e.log = newLogger(cfg.LogFormat, cfg.LogLevel, newRedactor(stderr, secrets...)).With(
		slog.String("run_id", e.runID.String()), slog.String("command", command))
	if err != nil {
		e.log.Error("invalid configuration", "error", err.Error(), "exit_code", exitUsage)
		return nil, exitUsage
	}
	e.key = lock.DefaultKey(cfg.Schema, cfg.Table)
	if cfg.LockKey != "" {
		e.key = lock.ParseKey(cfg.LockKey)
	}
	var fsys fs.FS = migrations.FS
	source := "embedded"
	if cfg.Dir != "" {
		if st, err := os.Stat(cfg.Dir); err != nil || !st.IsDir() {
			e.log.Error("invalid configuration", "error",
				fmt.Sprintf("invalid LOCKMIGRATE_DIR %q: accepted: a readable directory of migration files", cfg.Dir),
				"exit_code", exitUsage)
			return nil, exitUsage
		}
		fsys, source = os.DirFS(cfg.Dir), cfg.Dir
	}
	e.migs, err = runner.Load(fsys)
	if err != nil {
		code := exitCode(context.Background(), err)
		e.log.Error("invalid migration set", "error", err.Error(), "source", source, "exit_code", code)
		return nil, code
	}
	return e, exitOK
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
	conn, attempts, err := dbconn.Connect(ctx, e.connCfg, e.cfg.ConnectTimeout, e.log)
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
