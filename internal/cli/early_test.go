package cli

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lockmigrate/lockmigrate/internal/bintest"
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
