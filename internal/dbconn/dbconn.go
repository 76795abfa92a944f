// Package dbconn opens the one dedicated connection a run uses, retrying the
// failures that a database that is starting, failing over or full of clients
// produces, and failing fast on the ones no retry can fix.
package dbconn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"

	"github.com/lockmigrate/lockmigrate/internal/backoff"
	"github.com/lockmigrate/lockmigrate/internal/earlydial"
)

// tcpUserTimeout is TCP_USER_TIMEOUT from linux/tcp.h.
const tcpUserTimeout = 18

// libpqEnv maps the libpq environment variables to connection keywords. They
// are read through the injected getenv rather than by pgx from the process
// environment, so tests and embedding programs control them.
var libpqEnv = [][2]string{
	{"PGHOST", "host"}, {"PGPORT", "port"}, {"PGDATABASE", "dbname"}, {"PGUSER", "user"},
	{"PGPASSWORD", "password"}, {"PGPASSFILE", "passfile"}, {"PGSERVICE", "service"},
	{"PGSERVICEFILE", "servicefile"}, {"PGSSLMODE", "sslmode"}, {"PGSSLCERT", "sslcert"},
	{"PGSSLKEY", "sslkey"}, {"PGSSLROOTCERT", "sslrootcert"}, {"PGSSLPASSWORD", "sslpassword"},
	{"PGSSLSNI", "sslsni"}, {"PGCONNECT_TIMEOUT", "connect_timeout"},
	{"PGTARGETSESSIONATTRS", "target_session_attrs"}, {"PGOPTIONS", "options"},
}

// LibpqVariables lists the libpq environment variables Config reads through
// its getenv when no URL is given.
func LibpqVariables() []string {
	names := make([]string, len(libpqEnv))
	for i, kv := range libpqEnv {
		names[i] = kv[0]
	}
	return names
}

// ParseError is a connection string that cannot be parsed. Its message never
// contains the connection string itself, which may hold a password.
type ParseError struct{ Err error }

func (e *ParseError) Error() string {
	return "invalid database connection settings (DATABASE_URL, DATABASE_URL_FILE or PG* variables): " +
		"accepted: a postgres:// URL or a keyword/value DSN (" + e.reason() + ")"
}

func (e *ParseError) reason() string {
	var pce *pgconn.ParseConfigError
	if errors.As(e.Err, &pce) && pce.Unwrap() != nil {
		return pce.Unwrap().Error()
	}
	return "unparsable"
}

func (e *ParseError) Unwrap() error { return e.Err }

// Keepalive is how fast both ends give up on a silent peer. A lock holder
// cut off by a network partition keeps its advisory lock until the server
// notices the connection is dead; these settings bound that, and keep the
// partitioned client from blocking forever in a read.
type Keepalive struct {
	Idle, Interval time.Duration // first probe after Idle of silence, then every Interval
	Count          int           // probes without answer before the connection is dropped
	UserTimeout    time.Duration // unacknowledged sent data older than this drops the connection
}

// WorstCase is the longest a dead peer can go unnoticed: idle connection
// (keepalive probes) or pending data (user timeout), whichever applies.
func (k Keepalive) WorstCase() time.Duration {
	return max(k.Idle+time.Duration(k.Count)*k.Interval, k.UserTimeout)
}

// Config parses url (or, when empty, the libpq variables read through
// getenv) and prepares it for a lockmigrate session.
func Config(url string, getenv func(string) string, appName string, ka Keepalive) (*pgx.ConnConfig, error) {
	if url == "" {
		url = dsnFromEnv(getenv)
	}
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, &ParseError{Err: err}
	}
	cfg.RuntimeParams["application_name"] = appName
	// One round trip per statement, and no named prepared statements, which
	// a PgBouncer in transaction mode would lose between statements (so
	// that lockmigrate can detect such a pooler and say so).
	cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
	if ka.Idle > 0 {
		// Server side: the backend probes us and, with tcp_user_timeout,
		// drops us (and our advisory lock) when we vanish. PostgreSQL 12+.
		cfg.RuntimeParams["tcp_keepalives_idle"] = fmt.Sprint(int(ka.Idle.Seconds()))
		cfg.RuntimeParams["tcp_keepalives_interval"] = fmt.Sprint(max(1, int(ka.Interval.Seconds())))
		cfg.RuntimeParams["tcp_keepalives_count"] = fmt.Sprint(ka.Count)
		cfg.RuntimeParams["tcp_user_timeout"] = fmt.Sprint(ka.UserTimeout.Milliseconds())
	}
	cfg.DialFunc = dialFunc(ka)
	// On cancellation, ask the server to cancel the running statement and
	// keep the connection, so the transaction can be rolled back and the lock
	// released explicitly; only if the server does not answer within the
	// delay is the socket cut (which also ends the session and its lock).
	cfg.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: c, CancelRequestDelay: 0, DeadlineDelay: 5 * time.Second}
	}
	return cfg, nil
}

// dialFunc opens the run's sockets: the first with the socket the process
// dialled while it initialised (internal/earlydial), when it was dialled to
// that address, and every socket with the keepalive settings. With
// keepalives on, the client sends the same probes as the server, so that a
// partitioned run fails instead of waiting for an answer that never comes;
// off, Go's defaults, as pgconn's own dialer has them.
func dialFunc(ka Keepalive) pgconn.DialFunc {
	d := newDialer(ka)
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if c, ok := earlydial.Take(ctx, network, addr); ok {
			if err := likeDialed(d, network, addr, c); err == nil {
				return c, nil
			}
			c.Close()
		}
		return d.DialContext(ctx, network, addr)
	}
}

// newDialer is the dialer of the keepalive settings.
func newDialer(ka Keepalive) *net.Dialer {
	d := &net.Dialer{}
	if ka.Idle > 0 {
		d.KeepAliveConfig = net.KeepAliveConfig{Enable: true, Idle: ka.Idle, Interval: ka.Interval, Count: ka.Count}
		d.Control = func(network, _ string, c syscall.RawConn) error {
			if !strings.HasPrefix(network, "tcp") {
				return nil
			}
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpUserTimeout, int(ka.UserTimeout.Milliseconds()))
			})
			return errors.Join(err, serr)
		}
	}
	return d
}

// likeDialed gives a socket dialled elsewhere (with Go's defaults) the
// settings d would have given it.
func likeDialed(d *net.Dialer, network, addr string, c net.Conn) error {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return errors.New("not a TCP connection")
	}
	if d.KeepAliveConfig.Enable {
		if err := tc.SetKeepAliveConfig(d.KeepAliveConfig); err != nil {
			return err
		}
	}
	if d.Control == nil {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return err
	}
	return d.Control(network, addr, rc)
}

func dsnFromEnv(getenv func(string) string) string {
	var parts []string
	for _, kv := range libpqEnv {
		if v := getenv(kv[0]); v != "" {
			parts = append(parts, kv[1]+"='"+strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v)+"'")
		}
	}
	return strings.Join(parts, " ")
}

// ConnectError is a database that could not be reached, or that refused us,
// within the connect budget.
type ConnectError struct {
	Attempts int
	Elapsed  time.Duration
	// Final is set when the error is one no retry can fix (authentication,
	// missing database), which is why the budget was not used up.
	Final bool
	Err   error
}

func (e *ConnectError) Error() string {
	if e.Final {
		return fmt.Sprintf("cannot connect to database (not retried): %v", e.Err)
	}
	return fmt.Sprintf("database unreachable after %d attempt(s) in %s: %v",
		e.Attempts, e.Elapsed.Round(time.Millisecond), e.Err)
}

func (e *ConnectError) Unwrap() error { return e.Err }

// connectBackoff spaces connection attempts; its cap keeps a replica that
// waits for a starting database from sleeping long after it came up.
var connectBackoff = backoff.Policy{Initial: 200 * time.Millisecond, Max: 5 * time.Second}

// maxAttemptTimeout bounds one attempt, so a black-holed address does not use
// the whole budget in a single try.
const maxAttemptTimeout = 10 * time.Second

// Connect opens one connection within budget as Open does and returns it
// as a *pgx.Conn.
func Connect(ctx context.Context, cfg *pgx.ConnConfig, budget time.Duration, log *slog.Logger) (*pgx.Conn, int, error) {
	s, attempts, err := Open(ctx, cfg, budget, log)
	if err != nil {
		return nil, attempts, err
	}
	conn, err := s.Conn(ctx)
	if err != nil {
		s.Close(ctx)
		return nil, attempts, err
	}
	return conn, attempts, nil
}

// Open opens one connection within budget, retrying transient failures
// with jittered backoff and logging each retry. It returns the number of
// attempts made alongside the session or a *ConnectError.
func Open(ctx context.Context, cfg *pgx.ConnConfig, budget time.Duration, log *slog.Logger) (*Session, int, error) {
	start := time.Now()
	cfg = cfg.Copy() // moveToSet may change it
	set := ""        // settings to SET after connecting, moved out of the startup packet
	deadline := start.Add(budget)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	fail := func(attempt int, final bool, err error) (*Session, int, error) {
		if parent := context.Cause(ctx); parent != nil && !errors.Is(parent, context.DeadlineExceeded) {
			return nil, attempt, parent // cancelled by a signal, not by the budget
		}
		return nil, attempt, &ConnectError{Attempts: attempt, Elapsed: time.Since(start), Final: final, Err: err}
	}
	for attempt := 1; ; attempt++ {
		c, pg, err := openOnce(ctx, cfg, deadline)
		if err != nil && set == "" && unsupportedStartupParameter(err) {
			// A pooler such as PgBouncer refuses unknown startup
			// parameters: send the keepalive settings with SET instead.
			if set = moveToSet(cfg); set != "" {
				log.LogAttrs(ctx, slog.LevelDebug, "startup parameters refused; using SET", slog.String("error", err.Error()))
				c, pg, err = openOnce(ctx, cfg, deadline)
			}
		}
		if err == nil {
			if set != "" {
				if _, serr := pg.Exec(ctx, set).ReadAll(); serr != nil {
					log.LogAttrs(ctx, slog.LevelWarn, "keepalive settings not applied", slog.String("error", serr.Error()))
				}
			}
			return &Session{cfg: c, pg: pg}, attempt, nil
		}
		if !Retriable(err) {
			return fail(attempt, true, err)
		}
		// The last retry is squeezed into what is left of the budget rather
		// than given up early; below minRetryWindow a retry cannot succeed.
		left := time.Until(deadline)
		if left < minRetryWindow {
			return fail(attempt, false, err)
		}
		delay := min(connectBackoff.Delay(attempt), left-minRetryWindow/2)
		log.LogAttrs(ctx, slog.LevelWarn, "connect failed, retrying",
			slog.Int("attempt", attempt), slog.String("error", err.Error()),
			slog.Int64("retry_in_ms", delay.Milliseconds()),
			slog.Int64("budget_left_ms", left.Milliseconds()))
		if serr := backoff.Sleep(ctx, delay); serr != nil {
			return fail(attempt, false, err)
		}
	}
}

// openOnce makes one connection attempt, bounded by what is left until
// deadline and by maxAttemptTimeout, and returns the configuration it used.
func openOnce(ctx context.Context, cfg *pgx.ConnConfig, deadline time.Time) (*pgx.ConnConfig, *pgconn.PgConn, error) {
	c := cfg.Copy()
	c.ConnectTimeout = min(max(time.Until(deadline), time.Millisecond), maxAttemptTimeout)
	if cfg.ConnectTimeout > 0 {
		c.ConnectTimeout = min(c.ConnectTimeout, cfg.ConnectTimeout)
	}
	pg, err := pgconn.ConnectConfig(ctx, &c.Config)
	return c, pg, err
}

// keepaliveParams are the settings a pooler may refuse at startup.
var keepaliveParams = []string{"tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count", "tcp_user_timeout"}

// moveToSet removes the keepalive settings from cfg's startup parameters
// and returns them as SET statements to run after connecting ("" when there
// were none).
func moveToSet(cfg *pgx.ConnConfig) string {
	var set []string
	for _, k := range keepaliveParams {
		if v, ok := cfg.RuntimeParams[k]; ok {
			set = append(set, fmt.Sprintf("SET %s = %s", k, v))
			delete(cfg.RuntimeParams, k)
		}
	}
	return strings.Join(set, "; ")
}

func unsupportedStartupParameter(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "08P01" && strings.Contains(pgErr.Message, "unsupported startup parameter")
}

// minRetryWindow is the least time worth another connection attempt.
const minRetryWindow = 100 * time.Millisecond

// retriableCodes are server errors that go away by themselves: too many
// clients, a server starting, shutting down or recovering, and connection
// exceptions.
var retriableCodes = map[string]bool{
	"53300": true, // too_many_connections
	"53400": true, // configuration_limit_exceeded
	"57P01": true, // admin_shutdown
	"57P02": true, // crash_shutdown
	"57P03": true, // cannot_connect_now (starting up, recovering)
	"58000": true, // system_error
}

// Retriable reports whether a connect error may succeed on a later attempt.
// Authentication failures (28P01, 28000), a missing database (3D000), TLS
// and configuration errors are final: retrying them only delays the report.
func Retriable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// 08P01 is a protocol violation (a pooler refusing our startup
		// packet, say): the same request fails the same way again.
		return retriableCodes[pgErr.Code] || strings.HasPrefix(pgErr.Code, "08") && pgErr.Code != "08P01"
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return true // Kubernetes DNS may not know a new Service yet
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return true
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH),
		errors.Is(err, syscall.ENOENT), // Unix socket not created yet
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, context.DeadlineExceeded):
		return true
	}
	return false
}

// Lost reports whether err means the session itself is gone: the server
// shut down or terminated it (57P01-57P03, class 08), or the network
// dropped it. Nothing is wrong with the migration then: its transaction was
// rolled back by the server, and a later run (a Job retry) can succeed.
func Lost(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return strings.HasPrefix(pgErr.Code, "08") || pgErr.Code == "57P01" || pgErr.Code == "57P02" || pgErr.Code == "57P03"
	}
	var netErr net.Error
	return errors.As(err, &netErr) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, net.ErrClosed)
}

// CloseTimeout bounds Close.
const CloseTimeout = 5 * time.Second

// Close closes conn even after ctx was cancelled, as on every exit path of
// a signalled run: it still sends the protocol's Terminate message, so the
// server ends the session (and releases its advisory locks) at once and
// cleanly, rather than on noticing a dropped socket. Sending is bounded by
// CloseTimeout, after which the socket is closed anyway, so a stuck
// network cannot hold up the exit. ctx's values are kept; only its
// cancellation is ignored.
func Close(ctx context.Context, conn *pgx.Conn) { closeWithin(ctx, conn.Close) }

// closeWithin calls close with ctx's values but not its cancellation,
// bounded by CloseTimeout: Close for a *pgx.Conn or a bare *pgconn.PgConn.
func closeWithin(ctx context.Context, close func(context.Context) error) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), CloseTimeout)
	defer cancel()
	_ = close(cctx)
}
