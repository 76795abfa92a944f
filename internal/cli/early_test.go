package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	neturl "net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lockmigrate/lockmigrate/internal/bintest"
	"github.com/lockmigrate/lockmigrate/internal/pgtest"
)

// refusedURL points at a port where nothing listens: every connect attempt
// is refused at once and retried until the budget ends.
const refusedURL = "postgres://u@127.0.0.1:1/db?sslmode=disable"

// TestEarlyConnection: migrate opens its connection while it reads the
// migration files. The overlap must not show: log events keep their order,
// an invalid set still fails at once with exit 5 (the connection being
// opened is abandoned, its retries unlogged), and a signal still stops a
// run that is connecting.
func TestEarlyConnection(t *testing.T) {
	valid := bintest.WriteDir(t, map[string]string{"1_a.sql": "SELECT 1;"})
	invalid := bintest.WriteDir(t, map[string]string{"1_a.sql": "SELECT 1;", "01_b.sql": "SELECT 2;"})

	t.Run("invalid set while the database is down", func(t *testing.T) {
		env := bintest.With(baseEnv(refusedURL), "LOCKMIGRATE_DIR", invalid, "LOCKMIGRATE_CONNECT_TIMEOUT", "60s")
		r := runIn(t, context.Background(), env)
		if r.Code != exitValidation || !strings.Contains(r.Stderr, "duplicate") {
			t.Fatalf("exit %d, want %d (duplicate version):\n%s", r.Code, exitValidation, r.Stderr)
		}
		// Waiting for the connection would take the whole 60 s budget.
		if r.Elapsed > 30*time.Second {
			t.Fatalf("took %v: the run waited for the connection", r.Elapsed)
		}
		if strings.Contains(r.Stderr, "connect failed") {
			t.Fatalf("the abandoned connection's retries were logged:\n%s", r.Stderr)
		}
	})

	t.Run("retries are logged after the run started", func(t *testing.T) {
		env := bintest.With(baseEnv(refusedURL), "LOCKMIGRATE_DIR", valid, "LOCKMIGRATE_CONNECT_TIMEOUT", "1s")
		r := runIn(t, context.Background(), env)
		started, retry := strings.Index(r.Stderr, `"msg":"run started"`), strings.Index(r.Stderr, `"msg":"connect failed, retrying"`)
		if r.Code != exitUnreachable || started < 0 || retry < 0 || retry < started {
			t.Fatalf("exit %d, run started at %d, first retry at %d; want exit %d and the retry after the start:\n%s",
				r.Code, started, retry, exitUnreachable, r.Stderr)
		}
	})

	t.Run("signal while connecting", func(t *testing.T) {
		ctx, cancel := context.WithCancelCause(context.Background())
		defer cancel(nil)
		// The signal arrives once the run is visibly retrying.
		stderr := &triggerWriter{want: "connect failed, retrying", fire: func() { cancel(SignalCause(syscall.SIGTERM)) }}
		env := bintest.With(baseEnv(refusedURL), "LOCKMIGRATE_DIR", valid, "LOCKMIGRATE_CONNECT_TIMEOUT", "60s")
		var stdout bytes.Buffer
		start := time.Now()
		code := Run(ctx, nil, func(k string) string { return env[k] }, &stdout, stderr, testVersion)
		if code != 143 {
			t.Fatalf("exit %d, want 143:\n%s", code, stderr.String())
		}
		if d := time.Since(start); d > 30*time.Second {
			t.Fatalf("took %v: the signal did not stop the connection attempts", d)
		}
	})
}

// triggerWriter collects output and calls fire once a write contains want.
type triggerWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	fire func()
	once sync.Once
}

func (w *triggerWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if bytes.Contains(p, []byte(w.want)) {
		w.once.Do(w.fire)
	}
	return w.buf.Write(p)
}

func (w *triggerWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// countingProxy forwards TCP connections to target and counts them.
func countingProxy(t *testing.T, target string) (addr string, accepted *atomic.Int64) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	accepted = &atomic.Int64{}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() {
				defer c.Close()
				s, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer s.Close()
				go io.Copy(s, c)
				io.Copy(c, s)
			}()
		}
	}()
	return l.Addr().String(), accepted
}

// TestEarlySocket: a migrate run of the built binary connects on the socket
// it dialled while its packages initialised (internal/earlydial), with
// password authentication and the keepalive settings on, and over TLS
// (verify-full, through the same early socket): the server side sees one
// TCP connection per run, applying or finding nothing to do, and the
// "connected" event says the early socket was used. A run whose URL the
// early dial cannot read (a key/value DSN) dials as before.
func TestEarlySocket(t *testing.T) {
	dbURL, password := secretDB(t)
	tlsURL := pgtest.StartTLS(t).NewVerifiedDB(t)
	dir := bintest.WriteDir(t, map[string]string{"1_a.sql": "CREATE TABLE a (id int);", "2_b.sql": "CREATE TABLE b (id int);"})
	type run struct {
		name  string
		url   string
		early bool
	}
	for _, db := range []struct {
		url  string
		runs func(proxied *neturl.URL) []run
	}{
		{dbURL, func(u *neturl.URL) []run {
			host, port, _ := net.SplitHostPort(u.Host)
			dsn := fmt.Sprintf("host=%s port=%s dbname=%s user=%s password=%s sslmode=disable", host, port,
				strings.TrimPrefix(u.Path, "/"), u.User.Username(), password)
			return []run{{"apply", u.String(), true}, {"no-op", u.String(), true}, {"key/value DSN", dsn, false}}
		}},
		{tlsURL, func(u *neturl.URL) []run {
			return []run{{"tls apply", u.String(), true}, {"tls no-op", u.String(), true}}
		}},
	} {
		u, err := neturl.Parse(db.url)
		if err != nil {
			t.Fatal(err)
		}
		proxy, accepted := countingProxy(t, u.Host)
		u.Host = proxy
		for _, tc := range db.runs(u) {
			before := accepted.Load()
			env := bintest.With(baseEnv(tc.url), "LOCKMIGRATE_DIR", dir, "LOCKMIGRATE_LOG_LEVEL", "debug")
			var stdout, stderr bytes.Buffer
			err := startBinary(t, env, &stdout, &stderr).Wait()
			r := result{Stdout: stdout.String(), Stderr: stderr.String()}
			bintest.CheckNoSecrets(t, r.Stdout, r.Stderr)
			if err != nil {
				t.Fatalf("%s: %v\n%s", tc.name, err, r.Stderr)
			}
			if n := accepted.Load() - before; n != 1 {
				t.Errorf("%s: %d TCP connections, want 1", tc.name, n)
			}
			var connected map[string]any
			for _, ev := range r.Events(t) {
				if ev["msg"] == "connected" {
					connected = ev
				}
			}
			if connected == nil || connected["early_socket"] != tc.early {
				t.Errorf("%s: connected event %v, want early_socket %v", tc.name, connected, tc.early)
			}
		}
	}
}

// TestInitOrder: in the built binary, the early dial's package initialises
// before procfs and client_golang, whose initialisation is most of what
// the early dial overlaps (GODEBUG=inittrace=1 prints the order).
func TestInitOrder(t *testing.T) {
	var stdout, stderr bytes.Buffer
	cmd := startBinary(t, map[string]string{"GODEBUG": "inittrace=1"}, &stdout, &stderr, "version")
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, line := range strings.Split(stderr.String(), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "init" {
			pos[f[1]] = i + 1
		}
	}
	early := pos["github.com/lockmigrate/lockmigrate/internal/earlydial"]
	for _, later := range []string{"github.com/prometheus/procfs", "github.com/prometheus/client_golang/prometheus"} {
		if early == 0 || pos[later] == 0 || early > pos[later] {
			t.Errorf("earlydial initialises at %d, %s at %d: want it first", early, later, pos[later])
		}
	}
}
