package pgtest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/lockmigrate/lockmigrate/internal/sqlquote"
)

// testResources are the databases and roles one test created, dropped
// together when the test finishes.
type testResources struct {
	dbs   []string
	roles []string
}

// AdminURL is a superuser connection URL for database db over TCP. The
// superuser needs no password (pg_hba trust for postgres on 127.0.0.1).
func (s *Server) AdminURL(db string) string {
	return s.url(db, url.User(superuser))
}

// URLFor is a TCP connection URL for database db as user with password, for
// tests that must connect as an ordinary (password-authenticated) role.
func (s *Server) URLFor(db, user, password string) string {
	return s.url(db, url.UserPassword(user, password))
}

func (s *Server) url(db string, u *url.Userinfo) string {
	return (&url.URL{
		Scheme:   "postgres",
		User:     u,
		Host:     net.JoinHostPort(host, strconv.Itoa(s.port)),
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}).String()
}

// Exec runs sql with args as the superuser in database db on a connection
// of its own. It is a convenience for setup and fault injection; without
// args, sql may contain several statements.
func (s *Server) Exec(ctx context.Context, db, sql string, args ...any) error {
	conn, err := pgx.Connect(ctx, s.AdminURL(db))
	if err != nil {
		return fmt.Errorf("pgtest: connect to database %q: %w", db, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("pgtest: exec in database %q: %w", db, err)
	}
	return nil
}

// NewDB creates an empty database for t, named after the test so it is easy
// to spot in the server log, and returns its superuser URL. The database is
// dropped WITH (FORCE) when t finishes, after t's own later-registered
// cleanups (such as closing pools) have run. NewDB is safe to call from
// parallel tests.
func (s *Server) NewDB(t testing.TB) string {
	t.Helper()
	name := dbName(t.Name(), s.dbSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	if err := s.Exec(ctx, "postgres", "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	s.track(t, func(r *testResources) { r.dbs = append(r.dbs, name) })
	return s.AdminURL(name)
}

// CreateRole creates a login role with a (SCRAM) password for t, so tests
// can connect as a non-superuser via URLFor. The role is dropped when t
// finishes, after the databases t created with NewDB have been dropped
// (whatever the call order), so objects the role owns there do not block
// the drop. Role names are cluster-wide: parallel tests must use distinct
// names.
func (s *Server) CreateRole(t testing.TB, name, password string) {
	t.Helper()
	if name == "" {
		t.Fatalf("pgtest: create role: empty name")
	}
	if strings.ContainsRune(password, 0) {
		t.Fatalf("pgtest: create role %s: password contains a NUL byte", name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	sql := "CREATE ROLE " + pgx.Identifier{name}.Sanitize() + " LOGIN PASSWORD " + sqlquote.Literal(password)
	if err := s.Exec(ctx, "postgres", sql); err != nil {
		t.Fatalf("pgtest: create role %s: %v", name, err)
	}
	s.track(t, func(r *testResources) { r.roles = append(r.roles, name) })
}

// track records a resource of t, registering t's cleanup on first use.
func (s *Server) track(t testing.TB, add func(*testResources)) {
	s.resMu.Lock()
	defer s.resMu.Unlock()
	r, ok := s.res[t]
	if !ok {
		r = &testResources{}
		s.res[t] = r
		t.Cleanup(func() { s.release(t) })
	}
	add(r)
}

// release drops t's databases, then its roles, on a fresh context so that
// cleanup works even after the test's own context is cancelled.
func (s *Server) release(t testing.TB) {
	s.resMu.Lock()
	r := s.res[t]
	delete(s.res, t)
	s.resMu.Unlock()
	if r == nil {
		return
	}
	s.mu.Lock()
	stopped := s.stopped
	s.mu.Unlock()
	if stopped {
		return // the whole cluster is gone already
	}

	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.AdminURL("postgres"))
	if err != nil {
		t.Errorf("pgtest: cleanup: connect: %v", err)
		return
	}
	defer conn.Close(ctx)
	for i := len(r.dbs) - 1; i >= 0; i-- {
		sql := "DROP DATABASE IF EXISTS " + pgx.Identifier{r.dbs[i]}.Sanitize() + " WITH (FORCE)"
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Errorf("pgtest: cleanup: drop database %s: %v", r.dbs[i], err)
		}
	}
	for i := len(r.roles) - 1; i >= 0; i-- {
		sql := "DROP ROLE IF EXISTS " + pgx.Identifier{r.roles[i]}.Sanitize()
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Errorf("pgtest: cleanup: drop role %s (does it own objects outside databases from NewDB?): %v", r.roles[i], err)
		}
	}
}

// dbName derives a database name from a test name: "t_" plus the name
// lowercased with runs of other characters turned into "_", plus "_<seq>"
// for uniqueness, truncated to PostgreSQL's 63-byte identifier limit.
func dbName(testName string, seq int64) string {
	const maxLen = 63
	suffix := "_" + strconv.FormatInt(seq, 10)
	var b strings.Builder
	b.WriteString("t_")
	underscore := true
	for _, r := range strings.ToLower(testName) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
			underscore = false
		} else if !underscore {
			b.WriteByte('_')
			underscore = true
		}
	}
	base := strings.TrimRight(b.String(), "_")
	if limit := maxLen - len(suffix); len(base) > limit {
		base = strings.TrimRight(base[:limit], "_")
	}
	return base + suffix
}
