package faults

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lockmigrate/lockmigrate/internal/bintest"
	"github.com/lockmigrate/lockmigrate/internal/pgtest"
)

// keepaliveParams are the startup parameters lockmigrate sends for the
// server-side keepalive settings; PgBouncer refuses unknown startup
// parameters unless they are listed in ignore_startup_parameters.
const keepaliveParams = "tcp_keepalives_idle,tcp_keepalives_interval,tcp_keepalives_count,tcp_user_timeout"

// bouncer is a PgBouncer process in front of a pgtest server.
type bouncer struct {
	port int
	dir  string
	cmd  *exec.Cmd
}

// startBouncer runs PgBouncer (as the postgres user, as it refuses root)
// with pool_mode mode in front of srv, authenticating d's role with SCRAM
// from a userlist holding its password. settings override the defaults.
func startBouncer(t *testing.T, srv *pgtest.Server, d *testDB, mode string, settings map[string]string) *bouncer {
	t.Helper()
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		t.Skip("pgbouncer not installed: apt-get update && apt-get install -y pgbouncer " +
			"(scripts/test.sh should install it with the other test dependencies)")
	}
	b := &bouncer{dir: publicDir(t)}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	conf := map[string]string{
		"listen_addr":               "127.0.0.1",
		"listen_port":               strconv.Itoa(b.port),
		"unix_socket_dir":           "",
		"auth_type":                 "scram-sha-256",
		"auth_file":                 filepath.Join(b.dir, "userlist.txt"),
		"pool_mode":                 mode,
		"default_pool_size":         "4",
		"max_client_conn":           "200",
		"logfile":                   filepath.Join(b.dir, "pgbouncer.log"),
		"ignore_startup_parameters": "extra_float_digits," + keepaliveParams,
	}
	for k, v := range settings {
		conf[k] = v
	}
	var ini strings.Builder
	fmt.Fprintf(&ini, "[databases]\n* = host=%s port=%d\n\n[pgbouncer]\n", srv.Host(), srv.Port())
	for k, v := range conf {
		fmt.Fprintf(&ini, "%s = %s\n", k, v)
	}
	files := map[string]string{
		"pgbouncer.ini": ini.String(),
		"userlist.txt":  fmt.Sprintf("%q %q\n", d.role, d.password),
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	for name, body := range files {
		p := filepath.Join(b.dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(b.dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	args := []string{filepath.Join(b.dir, "pgbouncer.ini")}
	if os.Geteuid() == 0 {
		args = append([]string{"-u", "postgres"}, args...)
	}
	b.cmd = exec.Command(bin, args...)
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = b.cmd.Process.Signal(syscall.SIGINT)
		done := make(chan struct{})
		go func() { b.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			b.cmd.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port)), time.Second)
		if err == nil {
			c.Close()
			return b
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(b.dir, "pgbouncer.log"))
			t.Fatalf("pgbouncer not listening on %d: %v\n%s", b.port, err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// url is d's URL with the bouncer's port.
func (b *bouncer) url(d *testDB) string {
	return strings.Replace(d.url, fmt.Sprintf(":%d/", d.srv.Port()), fmt.Sprintf(":%d/", b.port), 1)
}

func (b *bouncer) log() string {
	s, _ := os.ReadFile(filepath.Join(b.dir, "pgbouncer.log"))
	return string(s)
}

// poolerFiles is a small set that logs its application.
var poolerFiles = map[string]string{
	"1_log.sql":   "CREATE TABLE applied_log (version int NOT NULL, who text NOT NULL);\nINSERT INTO applied_log VALUES (1, current_setting('application_name'));\n",
	"2_table.sql": "CREATE TABLE pooled (id int);\nSELECT pg_sleep(0.3);\nINSERT INTO applied_log VALUES (2, current_setting('application_name'));\n",
}

// TestPoolers puts a real PgBouncer between lockmigrate and the server.
// Transaction pooling cannot hold a session-level advisory lock: the run
// must detect it and exit 5 without leaving the stray lock behind. Session
// pooling must work like a direct connection.
//
// Detection relies on the second statement (the lock check) running on
// another server connection than pg_try_advisory_lock. PgBouncer reuses idle
// server connections LIFO by default, so a lone client keeps getting the
// same one and nothing is detected (nor does anything go wrong, until other
// clients share the pool). server_round_robin = 1 with two server
// connections already in the pool makes consecutive statements alternate
// between them, which makes the detection deterministic.
func TestPoolers(t *testing.T) {
	srv := pgtest.Shared()
	ctx := context.Background()
	var figures []string
	var figMu sync.Mutex
	fig := func(format string, args ...any) {
		figMu.Lock()
		figures = append(figures, fmt.Sprintf(format, args...))
		figMu.Unlock()
	}

	// warm opens n server connections in the pool by running n
	// transactions at once through the bouncer.
	warm := func(t *testing.T, url string, n int) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, n)
		start := make(chan struct{})
		for range n {
			wg.Go(func() {
				c, err := connectURL(ctx, url)
				if err != nil {
					errs <- err
					return
				}
				defer c.Close(ctx)
				tx, err := c.Begin(ctx)
				if err != nil {
					errs <- err
					return
				}
				<-start
				_, err = tx.Exec(ctx, "SELECT pg_sleep(0.2)")
				errs <- err
				tx.Rollback(ctx)
			})
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("warming the pool: %v", err)
			}
		}
	}

	t.Run("transaction mode is detected", func(t *testing.T) {
		d := newTestDB(t, srv)
		b := startBouncer(t, srv, d, "transaction", map[string]string{"server_round_robin": "1", "default_pool_size": "4"})
		warm(t, b.url(d), 2)
		dir := bintest.WriteDir(t, poolerFiles)
		r := runBin(bintest.With(d.env(dir), "DATABASE_URL", b.url(d)), 60*time.Second, runOpts{})
		bintest.CheckNoSecrets(t, r.Stdout, r.Stderr)
		e := str(r.LastFinished(), "error")
		t.Logf("exit %d in %s: %s", r.Code, ms(r.Elapsed), e)
		if r.Code != 5 || !strings.Contains(e, "transaction-pooling") || !strings.Contains(e, "connect lockmigrate directly") {
			t.Errorf("want exit 5 with the transaction-pooling advice: %s", r.Brief())
		}
		if strings.Contains(e, "may still be held") {
			t.Errorf("the stray lock was not released by terminating its backend: %s", e)
		}
		took, err := waitNoAdvisoryLocks(ctx, d.admin, 5*time.Second)
		if err != nil {
			t.Errorf("stray lock left behind: %v", err)
		}
		if n := mustInt(t, d.admin, `SELECT count(*) FROM pg_tables WHERE tablename IN ('lockmigrate_history', 'applied_log', 'pooled')`); n != 0 {
			t.Errorf("%d table(s) created through the transaction pooler", n)
		}
		fig("transaction: exit %d, no lock left after %s", r.Code, ms(took))
	})

	t.Run("transaction mode, default LIFO reuse, lone client", func(t *testing.T) {
		// Informational: how the LIFO default behaves. Every run must still
		// exit 0 or 5, apply nothing twice and leave no lock.
		d := newTestDB(t, srv)
		b := startBouncer(t, srv, d, "transaction", map[string]string{"default_pool_size": "4"})
		warm(t, b.url(d), 2)
		dir := bintest.WriteDir(t, poolerFiles)
		codes := map[int]int{}
		for i := range 3 {
			r := runBin(bintest.With(d.env(dir), "DATABASE_URL", b.url(d), "POD_NAME", fmt.Sprintf("lifo-%d", i)), 60*time.Second, runOpts{})
			bintest.CheckNoSecrets(t, r.Stdout, r.Stderr)
			codes[r.Code]++
			t.Logf("run %d: exit %d, outcome %q %s", i, r.Code, str(r.LastFinished(), "outcome"), str(r.LastFinished(), "error"))
			if r.Code != 0 && r.Code != 5 {
				t.Errorf("run %d: %s", i, r.Brief())
			}
			if _, err := waitNoAdvisoryLocks(ctx, d.admin, 5*time.Second); err != nil {
				t.Errorf("run %d: %v", i, err)
			}
		}
		if n := mustInt(t, d.admin, `SELECT count(*) FROM pg_tables WHERE tablename = 'applied_log'`); n == 1 {
			if dup := mustInt(t, d.admin, `SELECT count(*) - count(DISTINCT version) FROM applied_log`); dup != 0 {
				t.Errorf("%d migration(s) applied twice", dup)
			}
		}
		fig("transaction LIFO lone client: exit codes %v", codes)
	})

	t.Run("session mode works", func(t *testing.T) {
		d := newTestDB(t, srv)
		b := startBouncer(t, srv, d, "session", map[string]string{"default_pool_size": "10"})
		dir := bintest.WriteDir(t, poolerFiles)
		envs := make([]map[string]string, 5)
		for i := range envs {
			envs[i] = bintest.With(d.env(dir), "DATABASE_URL", b.url(d), "POD_NAME", fmt.Sprintf("session-%d", i),
				"LOCKMIGRATE_ON_LOCKED", "wait", "LOCKMIGRATE_WAIT_TIMEOUT", "60s")
		}
		results, err := group(envs, 90*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		outcomes := map[string]int{}
		var maxT time.Duration
		for i, r := range results {
			bintest.CheckNoSecrets(t, r.Stdout, r.Stderr)
			outcomes[str(r.LastFinished(), "outcome")]++
			maxT = max(maxT, r.Elapsed)
			if r.Code != 0 {
				t.Errorf("run %d: %s\npgbouncer log:\n%s", i, r.Brief(), b.log())
			}
		}
		t.Logf("5 concurrent runs through session pooling: outcomes %v, slowest %s", outcomes, ms(maxT))
		if outcomes["applied"] != 1 {
			t.Errorf("outcomes %v: want exactly one applied", outcomes)
		}
		var rows, versions int64
		if err := mustConnect(t, d.admin).QueryRow(ctx, `SELECT count(*), count(DISTINCT version) FROM applied_log`).Scan(&rows, &versions); err != nil || rows != 2 || versions != 2 {
			t.Errorf("applied_log: %d rows for %d versions (%v), want 2 and 2", rows, versions, err)
		}
		if _, err := waitNoAdvisoryLocks(ctx, d.admin, 5*time.Second); err != nil {
			t.Error(err)
		}
		fig("session: 5 runs exit 0, outcomes %v", outcomes)
	})

	t.Run("stock ignore_startup_parameters", func(t *testing.T) {
		// Informational: PgBouncer's default ignore_startup_parameters does
		// not list the keepalive settings lockmigrate sends at startup.
		d := newTestDB(t, srv)
		b := startBouncer(t, srv, d, "session", map[string]string{"ignore_startup_parameters": "extra_float_digits"})
		dir := bintest.WriteDir(t, poolerFiles)
		r := runBin(bintest.With(d.env(dir), "DATABASE_URL", b.url(d), "LOCKMIGRATE_CONNECT_TIMEOUT", "3s"), 30*time.Second, runOpts{})
		bintest.CheckNoSecrets(t, r.Stdout, r.Stderr)
		t.Logf("defaults: exit %d in %s after %d connect retries: %s", r.Code, ms(r.Elapsed), r.Count("connect failed, retrying"), str(r.LastFinished(), "error"))
		w := runBin(bintest.With(d.env(dir), "DATABASE_URL", b.url(d), "LOCKMIGRATE_TCP_KEEPALIVES_IDLE", "0"), 30*time.Second, runOpts{})
		bintest.CheckNoSecrets(t, w.Stdout, w.Stderr)
		t.Logf("LOCKMIGRATE_TCP_KEEPALIVES_IDLE=0: exit %d, outcome %q", w.Code, str(w.LastFinished(), "outcome"))
		if w.Code != 0 {
			t.Errorf("with keepalives off: %s", w.Brief())
		}
		fig("stock PgBouncer startup parameters: exit %d (keepalives off: exit %d)", r.Code, w.Code)
	})

	summary(t, "%s", strings.Join(figures, "; "))
}

// TestPoolerStockConfig reproduces a product bug: through a session-mode
// PgBouncer with its default ignore_startup_parameters, every run fails,
// because lockmigrate sends tcp_keepalives_* and tcp_user_timeout as startup
// parameters, which PgBouncer refuses (08P01) — and 08P01 is retried until
// the connect budget is gone, then reported as "database unreachable".
func TestPoolerStockConfig(t *testing.T) {
	srv := pgtest.Shared()
	d := newTestDB(t, srv)
	b := startBouncer(t, srv, d, "session", map[string]string{"ignore_startup_parameters": "extra_float_digits"})
	dir := bintest.WriteDir(t, poolerFiles)
	r := runBin(bintest.With(d.env(dir), "DATABASE_URL", b.url(d), "LOCKMIGRATE_CONNECT_TIMEOUT", "5s"), 30*time.Second, runOpts{})
	if r.Code != 0 {
		t.Fatalf("through a stock session-mode PgBouncer: %s", r.Brief())
	}
}

// TestTransactionPoolerSingleServerConnection reproduces a product bug:
// behind a transaction pooler with one server connection per pool
// (default_pool_size = 1), every statement of every client runs on the same
// backend. Session advisory locks are re-entrant, so every replica's
// pg_try_advisory_lock returns true and the check that the lock is held by
// the backend that took it passes; several replicas then apply at once and
// all but one fail with exit 1 ("relation already exists", "duplicate key
// value violates unique constraint lockmigrate_history_pkey"), the crash
// loop lockmigrate exists to prevent. (With a no-transaction file in flight
// a replica can also report it "interrupted" while it runs.) The lock
// attempt should notice that its backend already held the lock before the
// call, which never happens on a fresh direct connection, and fail with
// the transaction-pooling error (exit 5).
func TestTransactionPoolerSingleServerConnection(t *testing.T) {
	srv := pgtest.Shared()
	// The replicas race, so a round may happen to serialise them; five
	// rounds show the bug with near certainty (each round did ~80% here).
	for round := range 5 {
		d := newTestDB(t, srv)
		b := startBouncer(t, srv, d, "transaction", map[string]string{"default_pool_size": "1"})
		dir := bintest.WriteDir(t, poolerFiles)
		envs := make([]map[string]string, 5)
		for i := range envs {
			envs[i] = bintest.With(d.env(dir), "DATABASE_URL", b.url(d), "POD_NAME", fmt.Sprintf("pool1-%d", i))
		}
		results, err := group(envs, 60*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range results {
			e := str(r.LastFinished(), "error")
			if r.Code == 0 || (r.Code == 5 && strings.Contains(e, "transaction-pooling")) {
				continue
			}
			t.Errorf("round %d, replica %d: exit %d: %s", round, i, r.Code, e)
		}
	}
}
