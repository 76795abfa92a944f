package dbconn

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Session is one dedicated connection whose pgx layer is made when it is
// first needed. A run that finds every migration applied reads the history
// with pgconn alone (a COPY) and exits; making a *pgx.Conn would cost it
// pgx's type map, about 1.4 M instructions and the largest single item
// of a no-op start (bench/RESULTS.md). Any other use — a query with
// arguments, a transaction, the advisory lock — makes the *pgx.Conn on
// the same server session, so a lock taken on it is the session's.
//
// A Session is not safe for concurrent use, like the *pgx.Conn it becomes.
type Session struct {
	cfg  *pgx.ConnConfig // the configuration pg was opened with
	pg   *pgconn.PgConn  // until the upgrade
	conn *pgx.Conn       // after it
	err  error           // the upgrade's failure, returned by every later call
}

// PgConn is the session's low-level connection, without making the pgx
// layer.
func (s *Session) PgConn() *pgconn.PgConn {
	if s.conn != nil {
		return s.conn.PgConn()
	}
	return s.pg
}

// Conn returns the session as a *pgx.Conn, making it on first use.
func (s *Session) Conn(ctx context.Context) (*pgx.Conn, error) {
	if s.conn == nil && s.err == nil {
		s.conn, s.err = upgrade(ctx, s.cfg, s.pg)
		if s.err != nil {
			s.err = fmt.Errorf("preparing the database session for queries: %w", s.err)
		}
		s.pg = nil // hijacked: the *pgx.Conn owns the socket now, or nothing does
	}
	return s.conn, s.err
}

// Exec is pgx.Conn.Exec on the session.
func (s *Session) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	c, err := s.Conn(ctx)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	return c.Exec(ctx, sql, args...)
}

// Query is pgx.Conn.Query on the session.
func (s *Session) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	c, err := s.Conn(ctx)
	if err != nil {
		return nil, err
	}
	return c.Query(ctx, sql, args...)
}

// QueryRow is pgx.Conn.QueryRow on the session.
func (s *Session) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	c, err := s.Conn(ctx)
	if err != nil {
		return errRow{err}
	}
	return c.QueryRow(ctx, sql, args...)
}

// Begin is pgx.Conn.Begin on the session.
func (s *Session) Begin(ctx context.Context) (pgx.Tx, error) {
	c, err := s.Conn(ctx)
	if err != nil {
		return nil, err
	}
	return c.Begin(ctx)
}

// Close ends the session as Close ends a *pgx.Conn: with the protocol's
// Terminate, even after ctx was cancelled, within CloseTimeout.
func (s *Session) Close(ctx context.Context) {
	switch {
	case s.conn != nil:
		Close(ctx, s.conn)
	case s.pg != nil:
		closeWithin(ctx, s.pg.Close)
	}
}

// errRow is the pgx.Row of a query that could not be sent.
type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }
