package dbconn_test

import (
	"bytes"
	"context"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockmigrate/lockmigrate/internal/dbconn"
	"github.com/lockmigrate/lockmigrate/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, pgtest.Options{})) }

// socket is a client connection that keeps what the client wrote and the
// deadlines it set, and that can be made stuck: its writes then block, as
// on a network that no longer carries anything, until the deadline set on
// it passes.
type socket struct {
	net.Conn
	mu        sync.Mutex
	written   bytes.Buffer
	deadlines []time.Time // non-zero deadlines set
	deadline  time.Time
	changed   chan struct{} // closed and replaced when the deadline changes
	stuck     bool
	closed    chan struct{}
}

func newSocket(c net.Conn) *socket {
	return &socket{Conn: c, changed: make(chan struct{}), closed: make(chan struct{})}
}

func (s *socket) setDeadline(t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !t.IsZero() {
		s.deadlines = append(s.deadlines, t)
	}
	s.deadline = t
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *socket) SetDeadline(t time.Time) error {
	s.setDeadline(t)
	return s.Conn.SetDeadline(t)
}

func (s *socket) SetWriteDeadline(t time.Time) error {
	s.setDeadline(t)
	return s.Conn.SetWriteDeadline(t)
}

func (s *socket) Write(p []byte) (int, error) {
	for {
		s.mu.Lock()
		stuck, deadline, changed := s.stuck, s.deadline, s.changed
		s.mu.Unlock()
		if !stuck {
			break
		}
		if err := s.wait(deadline, changed); err != nil {
			return 0, err
		}
	}
	n, err := s.Conn.Write(p)
	s.mu.Lock()
	s.written.Write(p[:n])
	s.mu.Unlock()
	return n, err
}

// wait blocks a stuck write until deadline (if set) passes, the deadline
// changes (nil) or the socket is closed.
func (s *socket) wait(deadline time.Time, changed <-chan struct{}) error {
	var expired <-chan time.Time
	if !deadline.IsZero() {
		timer := time.NewTimer(time.Until(deadline))
		defer timer.Stop()
		expired = timer.C
	}
	select {
	case <-expired:
		return os.ErrDeadlineExceeded
	case <-changed:
		return nil
	case <-s.closed:
		return net.ErrClosed
	}
}

func (s *socket) Close() error {
	s.mu.Lock()
	select {
	case <-s.closed:
	default:
		close(s.closed)
	}
	s.mu.Unlock()
	return s.Conn.Close()
}

// dial connects to url through a socket.
func dial(t *testing.T, url string) (*pgx.Conn, *socket) {
	t.Helper()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	var sock *socket
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		sock = newSocket(c)
		return sock, nil
	}
	conn, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	sock.mu.Lock()
	sock.deadlines = nil // those of the handshake
	sock.mu.Unlock()
	return conn, sock
}

// terminate is the protocol's Terminate message.
var terminate = []byte{'X', 0, 0, 0, 4}

// TestClose: with a context cancelled before the call (a signalled run on
// its way out), Close still sends Terminate, never letting the
// cancellation reach the socket (a plain conn.Close with that context sets
// a deadline in the past on it at once), and the server ends the session.
func TestClose(t *testing.T) {
	url := pgtest.Shared().NewDB(t)
	conn, sock := dial(t, url)
	watcher, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { watcher.Close(context.Background()) })
	pid := conn.PgConn().PID()

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dbconn.Close(ctx, conn)
	sock.mu.Lock()
	sent, deadlines := bytes.Clone(sock.written.Bytes()), sock.deadlines
	sock.mu.Unlock()
	if !conn.IsClosed() || !bytes.HasSuffix(sent, terminate) || len(deadlines) != 0 {
		t.Fatalf("after Close: closed %v, last bytes sent % x (want Terminate % x), deadlines set %v (want none)",
			conn.IsClosed(), sent[max(0, len(sent)-8):], terminate, deadlines)
	}
	// The backend exits on Terminate; it may take a moment to leave
	// pg_stat_activity.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var alive bool
		if err := watcher.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)`, pid).Scan(&alive); err != nil {
			t.Fatal(err)
		}
		if !alive {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("backend %d still there 10s after Close", pid)
		}
	}
}

// TestCloseBounded: on a network that carries nothing any more, Close
// gives up after CloseTimeout and closes the socket.
func TestCloseBounded(t *testing.T) {
	conn, sock := dial(t, pgtest.Shared().NewDB(t))
	sock.mu.Lock()
	sock.stuck = true
	sock.mu.Unlock()
	done := make(chan time.Duration, 1)
	go func() {
		start := time.Now()
		dbconn.Close(context.Background(), conn)
		done <- time.Since(start)
	}()
	select {
	case took := <-done:
		if took < dbconn.CloseTimeout || !conn.IsClosed() {
			t.Fatalf("Close returned after %v (closed %v), want after CloseTimeout (%v)", took, conn.IsClosed(), dbconn.CloseTimeout)
		}
		t.Logf("Close on a stuck network returned after %v", took)
	case <-time.After(dbconn.CloseTimeout + 10*time.Second):
		sock.Close()
		t.Fatalf("Close still blocked %v after it was called", dbconn.CloseTimeout+10*time.Second)
	}
}
