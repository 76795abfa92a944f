package cli

import (
	"context"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/lockmigrate/lockmigrate/internal/config"
	"github.com/lockmigrate/lockmigrate/internal/dbconn"
	"github.com/lockmigrate/lockmigrate/internal/dirfs"
	"github.com/lockmigrate/lockmigrate/internal/earlydial"
	"github.com/lockmigrate/lockmigrate/lock"
	"github.com/lockmigrate/lockmigrate/migrations"
	"github.com/lockmigrate/lockmigrate/runner"
)

// app is the one state a command run passes down: where it writes, how it
// reads its environment, its logger and configuration, and what it derived
// from them. Run makes it; setup fills in the rest.
type app struct {
	stdout, stderr io.Writer
	// getenv is read only before and by config.Load: afterwards everything
	// comes from cfg.
	getenv  func(string) string
	version string
	command string

	log   *slog.Logger
	red   *redactor // filters secrets out of stderr and the termination message
	runID uuid.UUID
	// termLog is the termination-message path, known before the
	// configuration is parsed, so a configuration error reaches it too.
	termLog string
	// cfg is the configuration as loaded; nothing changes it afterwards.
	cfg  *config.Config
	opts options
	migs []*runner.Migration

	early           *earlyConn // a migrate run's connection while it is opened
	connectAttempts int        // attempts the last connect made
}

// setupMode says how much of the set-up a command needs.
type setupMode int

const (
	// withMigrations reads the migration set too (every command but unlock).
	withMigrations setupMode = iota
	// lockOnly stops after the configuration: unlock needs only the key, so a
	// broken migration set cannot keep an operator from freeing the lock.
	lockOnly
)

// setup reads the configuration and (per mode) the migration set, and builds
// the logger. On failure it logs the error and returns it; the app keeps its
// logger, redactor and termination-log path, and the caller maps the error
// to the exit code.
func (a *app) setup(ctx context.Context, mode setupMode) error {
	// Secrets known before parsing are redacted from the very first line.
	a.red = newRedactor(a.stderr, earlySecrets(a.getenv)...)
	a.runID = uuid.New()
	a.termLog = a.getenv("LOCKMIGRATE_TERMINATION_LOG")
	// The logger's own settings may be what is invalid: it stays JSON.
	a.log = a.newLogger("json", "info")
	cfg, err := config.Load(a.getenv)
	if err != nil {
		return a.setupFailed(ctx, "invalid configuration", err)
	}
	a.cfg, a.termLog = cfg, cfg.TerminationLog
	a.red.add(cfg.PushgatewayPassword, passwordInURL(cfg.DatabaseURL))
	a.log = a.newLogger(cfg.LogFormat, cfg.LogLevel)
	a.opts, err = newOptions(cfg, a.runID, a.log)
	if a.opts.conn != nil {
		a.red.add(a.opts.conn.Password)
	}
	if err != nil {
		return a.setupFailed(ctx, "invalid configuration", err)
	}
	if mode == lockOnly {
		return nil
	}
	if a.command == "migrate" && cfg.TenantsQuery == "" {
		a.connectEarly(ctx)
	}
	return a.loadMigrations(ctx)
}

// loadMigrations reads LOCKMIGRATE_DIR, or the embedded set.
func (a *app) loadMigrations(ctx context.Context) error {
	var fsys fs.FS = migrations.FS
	source := "embedded"
	if dir := a.cfg.Dir; dir != "" {
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return a.setupFailed(ctx, "invalid configuration", &config.Error{Var: "LOCKMIGRATE_DIR", Value: dir,
				Accept: "a readable directory of migration files"})
		}
		fsys, source = dirfs.New(dir), dir
	}
	var err error
	if a.migs, err = runner.LoadFormat(fsys, runner.Format(a.cfg.Format)); err != nil {
		return a.setupFailed(ctx, "invalid migration set ("+source+")", err)
	}
	if len(a.migs) == 0 {
		// An unmounted ConfigMap, a wrong path or upper-case .SQL names look
		// exactly like this: an init container that let the application
		// start against an unmigrated database would hide it.
		where := source
		if a.cfg.Dir == "" {
			where = "the embedded set"
		}
		return a.setupFailed(ctx, "invalid migration set ("+source+")", &runner.ValidationError{Kind: runner.KindNoMigrations,
			Detail: "no migrations found in " + where + ": only top-level <version>_<name>.sql files count (.down.sql files are ignored)"})
	}
	return nil
}

func (a *app) setupFailed(ctx context.Context, msg string, err error) error {
	a.dropEarly(ctx)
	a.log.Error(msg, "error", err.Error(), "exit_code", exitCode(context.Background(), err))
	return err
}

// newLogger is the run's logger: through the redactor, tagged with the run
// and the command.
func (a *app) newLogger(format, level string) *slog.Logger {
	return newLogger(format, level, a.red).With(slog.String("run_id", a.runID.String()), slog.String("command", a.command))
}

// earlySecrets are the secrets in the environment before it is parsed.
func earlySecrets(getenv func(string) string) []string {
	return []string{getenv("PGPASSWORD"), passwordInURL(getenv("DATABASE_URL")),
		getenv("LOCKMIGRATE_PUSHGATEWAY_PASSWORD"), passwordInURL(getenv("LOCKMIGRATE_PUSHGATEWAY_URL"))}
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

// fail logs a command's failure as one event and returns its exit code.
func (a *app) fail(ctx context.Context, what string, err error) int {
	code := exitCode(ctx, err)
	a.log.Error(what, "error", err.Error(), "exit_code", code)
	return code
}

// connect opens a dedicated connection: the early one when a migrate run
// started it, else a new one.
func (a *app) connect(ctx context.Context) (*dbconn.Session, error) {
	var (
		conn     *dbconn.Session
		attempts int
		err      error
	)
	if ec, ok := a.takeEarly(); ok {
		conn, attempts, err = ec.conn, ec.attempts, ec.err
	} else {
		conn, attempts, err = dbconn.Open(ctx, a.opts.conn, a.cfg.ConnectTimeout, a.log)
	}
	a.connectAttempts = attempts
	if err != nil {
		return nil, err
	}
	a.log.LogAttrs(ctx, slog.LevelDebug, "connected", slog.Int("attempts", attempts),
		slog.Int("backend_pid", int(conn.PgConn().PID())),
		slog.String("server_version", conn.PgConn().ParameterStatus("server_version")),
		slog.Bool("early_socket", earlydial.Used()))
	return conn, nil
}

// session is one dedicated connection with the advisory lock of a history
// table and a runner on it.
type session struct {
	conn   *dbconn.Session
	lock   *lock.Advisory
	runner *runner.Runner
}

// withRunner connects, runs fn with a session for target on that one
// connection, and closes it afterwards.
func (a *app) withRunner(ctx context.Context, t target, fn func(session) error) error {
	conn, err := a.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	adv := lock.New(conn, t.key, a.log)
	r, err := runner.New(conn, adv, a.migs, a.opts.runnerFor(t))
	if err != nil {
		return err
	}
	return fn(session{conn: conn, lock: adv, runner: r})
}

// withConn connects, runs fn on the connection as a *pgx.Conn and closes
// it afterwards.
func (a *app) withConn(ctx context.Context, fn func(*pgx.Conn) error) error {
	s, err := a.connect(ctx)
	if err != nil {
		return err
	}
	defer s.Close(ctx)
	conn, err := s.Conn(ctx)
	if err != nil {
		return err
	}
	return fn(conn)
}
