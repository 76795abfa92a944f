// Package faults holds fault-injection tests of the lockmigrate binary: it
// is killed, partitioned from its server, starved of connections, has its
// server restarted under it, is put behind poolers and read-only servers,
// and is fed bad input. Every test drives the real binary, built once by
// TestMain, as separate OS processes against real PostgreSQL 15 servers
// (internal/pgtest), and reports its figures with t.Logf and a one-line
// summary that TestMain repeats at the end of the run.
//
// Knobs (environment):
//
//	LOCKMIGRATE_FAULT_TRIALS    trials of TestKill9Trials (default 100)
//	LOCKMIGRATE_FAULT_PARALLEL  trials run at once (default 4)
//	LOCKMIGRATE_FAULT_SEED      seed for the random choices (default: time)
//	LOCKMIGRATE_FAULT_BUGS=1    also run the tests that reproduce known product
//	                            bugs (they fail until the bugs are fixed)
package faults

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockmigrate/lockmigrate/internal/bintest"
	"github.com/lockmigrate/lockmigrate/internal/pgtest"
)

// binary is the lockmigrate binary under test, built once by TestMain.
var binary string

func TestMain(m *testing.M) {
	// BuildTemp's directory is readable by other users: one bad-input case
	// runs the binary as nobody.
	bin, cleanup, err := bintest.BuildTemp("lmfaults")
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		os.Exit(1)
	}
	binary = bin
	code := pgtest.Main(m, pgtest.Options{})
	summaries.Print(os.Stdout)
	cleanup()
	os.Exit(code)
}

// ---- summaries ----

// summaries are the suite's one-line results, printed by TestMain at the end.
var summaries = bintest.Summaries{Title: "faults"}

// summary logs the test's one-line summary and keeps it for the block
// TestMain prints after all tests.
func summary(t testing.TB, format string, args ...any) {
	t.Helper()
	summaries.Add(t, format, args...)
}

// knownBug skips a test that reproduces a product bug unless
// LOCKMIGRATE_FAULT_BUGS=1, so the suite stays green while the failing
// reproduction is kept, ready to be enabled by whoever fixes the bug.
func knownBug(t *testing.T, what string) {
	t.Helper()
	if os.Getenv("LOCKMIGRATE_FAULT_BUGS") != "1" {
		t.Skipf("reproduces a known product bug (%s); set LOCKMIGRATE_FAULT_BUGS=1 to run it (it fails until fixed)", what)
	}
}

func envInt(name string, def int) int {
	if v := os.Getenv(name); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			return n
		}
	}
	return def
}

// ---- running the binary ----

// result is one finished run of the binary.
type result = bintest.Result

// str returns ev[key] as a string ("" when missing).
func str(ev map[string]any, key string) string {
	if ev == nil {
		return ""
	}
	s, _ := ev[key].(string)
	return s
}

func num(ev map[string]any, key string) float64 {
	if ev == nil {
		return -1
	}
	f, ok := ev[key].(float64)
	if !ok {
		return -1
	}
	return f
}

// envList is env as a process environment, plus PATH. Nothing else from the
// test's environment leaks in (no PG* variables).
func envList(env map[string]string) []string {
	out := []string{"PATH=" + os.Getenv("PATH")}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out = append(out, k+"="+env[k])
	}
	return out
}

// runOpts tweak how a process is started.
type runOpts struct {
	// wrap prefixes the command (e.g. "ip netns exec NS").
	wrap []string
	// cred runs the process as another user.
	cred *syscall.Credential
	// args are the binary's arguments.
	args []string
}

// proc is a running binary whose stderr can be watched line by line.
type proc struct {
	cmd     *exec.Cmd
	start   time.Time
	mu      sync.Mutex
	stdout  bytes.Buffer
	stderr  bytes.Buffer
	notify  chan struct{} // poked after each stderr line
	done    chan struct{} // closed when the process has been reaped
	res     result
	gate    io.WriteCloser // stdin barrier, nil when started directly
	started time.Time      // when the barrier was released (or start)
}

// startProc starts the binary with env. With barrier, the process blocks
// reading stdin until release is called (see group).
func startProc(env map[string]string, o runOpts, barrier bool) (*proc, error) {
	var argv []string
	argv = append(argv, o.wrap...)
	if barrier {
		argv = append(argv, "sh", "-c", `cat >/dev/null; exec "$0" "$@"`, binary)
	} else {
		argv = append(argv, binary)
	}
	argv = append(argv, o.args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = envList(env)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: o.cred, Pdeathsig: syscall.SIGKILL}
	p := &proc{cmd: cmd, notify: make(chan struct{}, 1), done: make(chan struct{})}
	cmd.Stdout = lockedWriter{&p.mu, &p.stdout}
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if barrier {
		if p.gate, err = cmd.StdinPipe(); err != nil {
			return nil, err
		}
	}
	p.start = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p.started = p.start
	go func() {
		sc := bufio.NewScanner(errPipe)
		sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
		for sc.Scan() {
			p.mu.Lock()
			p.stderr.Write(sc.Bytes())
			p.stderr.WriteByte('\n')
			p.mu.Unlock()
			select {
			case p.notify <- struct{}{}:
			default:
			}
		}
		_, _ = io.Copy(io.Discard, errPipe)
		_ = cmd.Wait()
		p.mu.Lock()
		p.res = result{Code: cmd.ProcessState.ExitCode(), Stdout: p.stdout.String(), Stderr: p.stderr.String(),
			Elapsed: time.Since(p.started)}
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			p.res.Code = 128 + int(ws.Signal())
		}
		p.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// release opens the stdin barrier.
func (p *proc) release() {
	p.mu.Lock()
	p.started = time.Now()
	p.mu.Unlock()
	if p.gate != nil {
		p.gate.Close()
	}
}

// wait waits up to timeout for the process to exit, SIGKILLing it after
// that; the result then has killed set to true.
func (p *proc) wait(timeout time.Duration) (result, bool) {
	select {
	case <-p.done:
		return p.res, false
	case <-time.After(timeout):
	}
	p.kill()
	<-p.done
	return p.res, true
}

// kill sends SIGKILL (to the binary: with a barrier the shell exec'd it).
func (p *proc) kill() { _ = p.cmd.Process.Signal(syscall.SIGKILL) }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitEvent waits until a stderr JSON line satisfies match, the process
// exits, or timeout passes; it reports whether a line matched.
func (p *proc) waitEvent(timeout time.Duration, match func(ev map[string]any) bool) bool {
	deadline := time.After(timeout)
	seen := 0
	for {
		p.mu.Lock()
		text := p.stderr.String()
		p.mu.Unlock()
		lines := strings.Split(text, "\n")
		for ; seen < len(lines)-1; seen++ { // the last element is an incomplete line
			var ev map[string]any
			if json.Unmarshal([]byte(lines[seen]), &ev) == nil && match(ev) {
				return true
			}
		}
		select {
		case <-p.notify:
		case <-p.done:
			// Drain what was written before the exit.
			p.mu.Lock()
			text = p.stderr.String()
			p.mu.Unlock()
			for _, l := range strings.Split(text, "\n")[seen:] {
				var ev map[string]any
				if json.Unmarshal([]byte(l), &ev) == nil && match(ev) {
					return true
				}
			}
			return false
		case <-deadline:
			return false
		}
	}
}

// runBin runs the binary to completion, bounded by timeout.
func runBin(env map[string]string, timeout time.Duration, o runOpts) result {
	p, err := startProc(env, o, false)
	if err != nil {
		return result{Code: -1, Stderr: "start: " + err.Error()}
	}
	r, killed := p.wait(timeout)
	if killed {
		r.Stderr += fmt.Sprintf("\n[faults: killed after the %v bound]", timeout)
	}
	return r
}

// group starts n processes behind one stdin barrier and releases them at
// once; it returns their results in order.
func group(envs []map[string]string, timeout time.Duration, args ...string) ([]result, error) {
	procs := make([]*proc, len(envs))
	for i, env := range envs {
		p, err := startProc(env, runOpts{args: args}, true)
		if err != nil {
			for _, q := range procs[:i] {
				q.kill()
			}
			return nil, err
		}
		procs[i] = p
	}
	for _, p := range procs {
		p.release()
	}
	out := make([]result, len(procs))
	deadline := time.Now().Add(timeout)
	for i, p := range procs {
		r, killed := p.wait(max(time.Until(deadline), time.Millisecond))
		if killed {
			r.Stderr += fmt.Sprintf("\n[faults: killed after the %v bound]", timeout)
		}
		out[i] = r
	}
	return out, nil
}

// ---- databases ----

// testDB is a fresh database owned by a password-authenticated role.
type testDB struct {
	srv            *pgtest.Server
	name           string
	admin          string // superuser URL
	url            string // the role's URL, with its password
	role, password string
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newTestDB creates a database and a role owning it (dropped when t ends).
// The password contains characters that need escaping in a URL.
func newTestDB(t testing.TB, srv *pgtest.Server) *testDB {
	t.Helper()
	admin := srv.NewDB(t)
	d := &testDB{srv: srv, admin: admin, name: dbNameOf(admin)}
	d.role = "lmf_" + randHex(5)
	d.password = "pw-" + randHex(10) + "/@:%"
	srv.CreateRole(t, d.role, d.password)
	bintest.AddSecret(d.password)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Exec(ctx, "postgres", fmt.Sprintf(`ALTER DATABASE %s OWNER TO %s`, ident(d.name), ident(d.role))); err != nil {
		t.Fatal(err)
	}
	// Since PostgreSQL 15 only the database owner may create in public; the
	// database owner owns public's privileges only after this grant.
	if err := srv.Exec(ctx, d.name, fmt.Sprintf(`GRANT ALL ON SCHEMA public TO %s`, ident(d.role))); err != nil {
		t.Fatal(err)
	}
	d.url = srv.URLFor(d.name, d.role, d.password)
	return d
}

func dbNameOf(url string) string {
	s := url[strings.LastIndex(url, "/")+1:]
	if i := strings.Index(s, "?"); i >= 0 {
		s = s[:i]
	}
	return s
}

func ident(s string) string { return pgx.Identifier{s}.Sanitize() }

// env is the base environment of a run against d.
func (d *testDB) env(dir string) map[string]string {
	e := map[string]string{
		"DATABASE_URL":                d.url,
		"POD_NAME":                    "faults",
		"LOCKMIGRATE_CONNECT_TIMEOUT": "10s",
		"LOCKMIGRATE_TERMINATION_LOG": "",
	}
	if dir != "" {
		e["LOCKMIGRATE_DIR"] = dir
	}
	return e
}

func connectURL(ctx context.Context, url string) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return pgx.Connect(ctx, url)
}

func mustConnect(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	c, err := connectURL(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// queryInt runs a one-value query on a short-lived superuser connection.
func queryInt(ctx context.Context, url, sql string, args ...any) (int64, error) {
	c, err := connectURL(ctx, url)
	if err != nil {
		return 0, err
	}
	defer c.Close(context.Background())
	var n int64
	err = c.QueryRow(ctx, sql, args...).Scan(&n)
	return n, err
}

func mustInt(t testing.TB, url, sql string, args ...any) int64 {
	t.Helper()
	n, err := queryInt(context.Background(), url, sql, args...)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// advisoryLocks counts the advisory locks in database db.
const advisoryLocksSQL = `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'
   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`

// waitNoAdvisoryLocks polls until no advisory lock is left in url's
// database, up to bound; it returns how long that took or an error.
func waitNoAdvisoryLocks(ctx context.Context, url string, bound time.Duration) (time.Duration, error) {
	c, err := connectURL(ctx, url)
	if err != nil {
		return 0, err
	}
	defer c.Close(context.Background())
	start := time.Now()
	for {
		var n int64
		if err := c.QueryRow(ctx, advisoryLocksSQL).Scan(&n); err != nil {
			return 0, err
		}
		if n == 0 {
			return time.Since(start), nil
		}
		if time.Since(start) > bound {
			return time.Since(start), fmt.Errorf("%d advisory lock(s) still held after %v", n, bound)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitActive polls through conn until a session whose query contains
// fragment is active (optionally only sessions with application name app),
// up to bound; it returns that session's pid.
func waitActive(ctx context.Context, conn *pgx.Conn, app, fragment string, bound time.Duration) (int32, error) {
	deadline := time.Now().Add(bound)
	for {
		var pid int32
		err := conn.QueryRow(ctx, `SELECT pid FROM pg_stat_activity
  WHERE strpos(query, $1) > 0 AND state = 'active' AND pid <> pg_backend_pid()
    AND ($2 = '' OR application_name = $2) LIMIT 1`, fragment, app).Scan(&pid)
		if err == nil {
			return pid, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return 0, err
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("no active session running %q (app %q) within %v", fragment, app, bound)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ---- statistics ----

func durStats(ds []time.Duration) (minD, median, p90, maxD time.Duration) {
	if len(ds) == 0 {
		return
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[0], s[len(s)/2], s[(len(s)*9)/10], s[len(s)-1]
}

func ms(d time.Duration) string { return d.Round(time.Millisecond).String() }

// ---- network namespaces ----

// run runs a command and returns its combined output as an error on failure.
func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// netnsUsable reports why network namespaces and iptables cannot be used
// here ("" when they can), by trying them.
func netnsUsable() string {
	if os.Geteuid() != 0 {
		return "not running as root"
	}
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " not found"
		}
	}
	ns := fmt.Sprintf("lmf-probe-%d", os.Getpid())
	if err := run("ip", "netns", "add", ns); err != nil {
		return err.Error()
	}
	defer run("ip", "netns", "del", ns)
	if err := run("ip", "netns", "exec", ns, "iptables", "-A", "INPUT", "-i", "lo", "-j", "ACCEPT"); err != nil {
		return err.Error()
	}
	return ""
}

// isolatedNetns creates a network namespace with only loopback, removed when
// t ends: a process in it can send no packet off the machine.
func isolatedNetns(t testing.TB) string {
	t.Helper()
	ns := fmt.Sprintf("lmf-iso-%d-%s", os.Getpid(), randHex(2)) // swept by pid if left behind
	if err := run("ip", "netns", "add", ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = run("ip", "netns", "del", ns) })
	if err := run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"); err != nil {
		t.Fatal(err)
	}
	return ns
}

// publicDir is a temporary directory (removed when t ends) that other users,
// such as the postgres user running a server, can read.
func publicDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "lmfaults")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}
