package dbconn_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lockmigrate/lockmigrate/internal/dbconn"
	"github.com/lockmigrate/lockmigrate/internal/pgtest"
)

// dialRecorder keeps the first bytes the client writes on each connection
// it dials.
type dialRecorder struct {
	mu    sync.Mutex
	first [][]byte
}

func (r *dialRecorder) wrap(dial pgconn.DialFunc) pgconn.DialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		r.first = append(r.first, nil)
		return &firstWrite{Conn: c, r: r, i: len(r.first) - 1}, nil
	}
}

func (r *dialRecorder) dials() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.first...)
}

type firstWrite struct {
	net.Conn
	r    *dialRecorder
	i    int
	done bool
}

func (c *firstWrite) Write(b []byte) (int, error) {
	if !c.done {
		c.done = true
		c.r.mu.Lock()
		c.r.first[c.i] = append([]byte(nil), b[:min(len(b), 8)]...)
		c.r.mu.Unlock()
	}
	return c.Conn.Write(b)
}

// code is the request code of a start-up-phase message (SSLRequest,
// CancelRequest, StartupMessage): its second 4 bytes.
func code(first []byte) uint32 {
	if len(first) < 8 {
		return 0
	}
	return binary.BigEndian.Uint32(first[4:8])
}

const (
	sslRequest     = 80877103
	cancelRequest  = 80877102
	protocolV3Code = 196608
)

// TestSessionUpgradeKeepsTheSession opens a session with pgconn, takes an
// advisory lock and sets a variable on it, then makes the *pgx.Conn: it
// must be the same server session (pid, lock, variable), encrypted when
// the session was, able to run queries with arguments and transactions,
// and its cancellation requests must reach the server (encrypted when
// the session is) so that a cancelled statement leaves the session alive.
func TestSessionUpgradeKeepsTheSession(t *testing.T) {
	tlsSrv := pgtest.StartTLS(t)
	tests := []struct {
		name, url string
		tls       bool
	}{
		{"plain", pgtest.Shared().NewDB(t), false},
		{"tls", tlsSrv.NewVerifiedDB(t), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			cfg, err := dbconn.Config(tt.url, func(string) string { return "" }, "lockmigrate/upgrade-test",
				dbconn.Keepalive{Idle: 10 * time.Second, Interval: 5 * time.Second, Count: 3, UserTimeout: 20 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			rec := &dialRecorder{}
			cfg.DialFunc = rec.wrap(cfg.DialFunc)
			s, _, err := dbconn.Open(ctx, cfg, 10*time.Second, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close(ctx)
			pid, version := s.PgConn().PID(), s.PgConn().ParameterStatus("server_version")
			if _, err := s.PgConn().Exec(ctx, `SELECT pg_advisory_lock(4242); SET lockmigrate.probe = 'kept'`).ReadAll(); err != nil {
				t.Fatal(err)
			}

			conn, err := s.Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if conn.PgConn().PID() != pid || conn.PgConn().ParameterStatus("server_version") != version || version == "" {
				t.Fatalf("after the upgrade: pid %d, server_version %q; before: %d, %q",
					conn.PgConn().PID(), conn.PgConn().ParameterStatus("server_version"), pid, version)
			}
			var backend uint32
			var probe, app string
			var ssl bool
			err = s.QueryRow(ctx, `SELECT pg_backend_pid(), current_setting($1), current_setting('application_name'),
				(SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())`, "lockmigrate.probe").Scan(&backend, &probe, &app, &ssl)
			if err != nil {
				t.Fatal(err)
			}
			if backend != pid || probe != "kept" || app != "lockmigrate/upgrade-test" || ssl != tt.tls {
				t.Fatalf("session after the upgrade: pid %d (want %d), probe %q, application_name %q, ssl %v (want %v)",
					backend, pid, probe, app, ssl, tt.tls)
			}
			watcher := pgtest.Connect(t, tt.url)
			if n := pgtest.QueryInt(t, watcher, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND pid = $1 AND granted`, pid); n != 1 {
				t.Fatalf("the advisory lock taken before the upgrade: %d granted locks of pid %d, want 1", n, pid)
			}
			tx, err := s.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, `CREATE TABLE upgraded (v int)`); err != nil {
				t.Fatal(err)
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}

			cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			_, err = s.Exec(cctx, `SELECT pg_sleep(30)`)
			cancel()
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "57014" {
				t.Fatalf("cancelled statement: %v; want query_canceled (57014) from the server", err)
			}
			if _, err := s.Exec(ctx, `SELECT 1`); err != nil {
				t.Fatalf("the session after a cancelled statement: %v", err)
			}
			dials := rec.dials()
			if len(dials) != 2 {
				t.Fatalf("%d connections dialled, want 2 (the session, one cancellation request)", len(dials))
			}
			wantSession, wantCancel := uint32(protocolV3Code), uint32(cancelRequest)
			if tt.tls {
				wantSession, wantCancel = sslRequest, sslRequest
			}
			if code(dials[0]) != wantSession || code(dials[1]) != wantCancel {
				t.Fatalf("first messages: session %d, cancellation %d; want %d, %d", code(dials[0]), code(dials[1]), wantSession, wantCancel)
			}
		})
	}
}

// TestSessionCloseWithoutUpgrade: a session never made a *pgx.Conn ends
// with its lock released, as a run that found nothing to do.
func TestSessionCloseWithoutUpgrade(t *testing.T) {
	ctx := context.Background()
	url := pgtest.Shared().NewDB(t)
	cfg, err := dbconn.Config(url, func(string) string { return "" }, "lockmigrate/test", dbconn.Keepalive{})
	if err != nil {
		t.Fatal(err)
	}
	s, _, err := dbconn.Open(ctx, cfg, 10*time.Second, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PgConn().Exec(ctx, `SELECT pg_advisory_lock(4243)`).ReadAll(); err != nil {
		t.Fatal(err)
	}
	s.Close(ctx)
	other := pgtest.Connect(t, url)
	// Blocks until the closed session's backend has gone, or fails after
	// lock_timeout.
	if _, err := other.Exec(ctx, `SET lock_timeout = '10s'; SELECT pg_advisory_lock(4243)`); err != nil {
		t.Fatalf("the lock of the closed session: %v", err)
	}
}

// TestSessionUpgradeRefusedInTransaction: a session left inside a
// transaction cannot be made a *pgx.Conn (the start-up reply would lie
// about its state); every later call says so, and Close is harmless.
func TestSessionUpgradeRefusedInTransaction(t *testing.T) {
	ctx := context.Background()
	cfg, err := dbconn.Config(pgtest.Shared().NewDB(t), func(string) string { return "" }, "lockmigrate/test", dbconn.Keepalive{})
	if err != nil {
		t.Fatal(err)
	}
	s, _, err := dbconn.Open(ctx, cfg, 10*time.Second, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	if _, err := s.PgConn().Exec(ctx, `BEGIN`).ReadAll(); err != nil {
		t.Fatal(err)
	}
	_, err = s.Conn(ctx)
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("not idle")) {
		t.Fatalf("upgrade inside a transaction: %v; want a refusal naming the state", err)
	}
	if err2 := s.QueryRow(ctx, `SELECT 1`).Scan(new(int)); err2 == nil || err2.Error() != err.Error() {
		t.Fatalf("a later call: %v; want the upgrade's error %v", err2, err)
	}
}
