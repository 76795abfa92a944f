// Package pgtest runs a throwaway PostgreSQL 15 cluster for integration
// tests and hands every test its own fresh database.
//
// One cluster per test binary keeps start-up cost (initdb plus server boot)
// out of individual tests, while a database per test keeps tests isolated
// from each other, including tests that run with t.Parallel. The cluster is
// tuned for speed, not durability (fsync, synchronous_commit and
// full_page_writes are off), and lives in a short directory under /tmp that
// is removed when the server is stopped.
//
// Typical use:
//
//	func TestMain(m *testing.M) {
//		os.Exit(pgtest.Main(m, pgtest.Options{}))
//	}
//
//	func TestSomething(t *testing.T) {
//		url := pgtest.Shared().NewDB(t)
//		...
//	}
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultBinDir is where Debian/Ubuntu install the PostgreSQL 15 server
// binaries; it is used when neither Options.BinDir nor $PG_BIN is set.
const DefaultBinDir = "/usr/lib/postgresql/15/bin"

const (
	host                  = "127.0.0.1"
	superuser             = "postgres"
	defaultMaxConnections = 300
	defaultStartTimeout   = 30 * time.Second
	stopGrace             = 10 * time.Second
	killGrace             = 5 * time.Second
	cleanupTimeout        = 30 * time.Second
	initdbTimeout         = 2 * time.Minute
	startAttempts         = 3
	pollInterval          = 20 * time.Millisecond

	// tmpRoot and dirPrefix are deliberately short: the Unix socket path
	// <dir>/.s.PGSQL.<port> must stay below the ~100 byte sun_path limit,
	// which t.TempDir() paths can exceed.
	tmpRoot   = "/tmp"
	dirPrefix = "lmpg"
	ownerFile = "pgtest.owner"
)

// Options configures a server started by Start or Main. The zero value is a
// sensible default.
type Options struct {
	// ExtraConf lines are appended to postgresql.conf after the harness's
	// own settings. PostgreSQL honours the last occurrence of a setting, so
	// these override the defaults (for example "max_connections = 20" for a
	// connection-storm test on a dedicated server).
	ExtraConf []string

	// MaxConnections sets max_connections. Zero means 300, enough for
	// parallel tests that each open a handful of connections.
	MaxConnections int

	// BinDir is the directory holding initdb and postgres. Empty means
	// $PG_BIN, or DefaultBinDir if that is unset too.
	BinDir string

	// StartTimeout bounds how long Start and Restart wait for the server to
	// accept connections. Zero means 30 seconds.
	StartTimeout time.Duration

	// TLS turns on ssl with a self-signed certificate made for the run
	// (Server.CACert); clients may connect with or without TLS.
	TLS bool
}

// Server is a running throwaway PostgreSQL cluster. All methods are safe for
// concurrent use; Stop and Restart are serialised with each other.
type Server struct {
	binDir       string
	dir          string
	dataDir      string
	port         int
	startTimeout time.Duration
	conf         []string // harness settings plus ExtraConf, without port
	baseConf     []byte   // postgresql.conf as written by initdb
	cred         *syscall.Credential
	caCert       []byte // PEM of the TLS certificate, when Options.TLS

	mu      sync.Mutex // guards proc and stopped
	proc    *process
	stopped bool

	dbSeq atomic.Int64

	resMu sync.Mutex
	res   map[testing.TB]*testResources
}

// process is one postmaster run. pid is set before launch returns; err is
// valid once done is closed.
type process struct {
	pid  int
	done chan struct{}
	err  error
}

// Start creates a new cluster with initdb, starts it on a free loopback port
// and waits until it accepts connections. The caller must call Stop.
//
// When running as root the cluster is owned by, and the server runs as, the
// "postgres" OS user, because initdb and postgres refuse to run as root.
func Start(opts Options) (_ *Server, err error) {
	binDir := opts.BinDir
	if binDir == "" {
		binDir = os.Getenv("PG_BIN")
	}
	if binDir == "" {
		binDir = DefaultBinDir
	}
	for _, name := range []string{"initdb", "postgres"} {
		if err := checkExecutable(filepath.Join(binDir, name)); err != nil {
			return nil, fmt.Errorf("pgtest: PostgreSQL 15 server binaries not found in %s "+
				"(set PG_BIN or install them: apt-get update && apt-get install -y postgresql-15): %w",
				binDir, err)
		}
	}

	cred, err := serverCredential()
	if err != nil {
		return nil, err
	}

	sweepStale()

	dir, err := os.MkdirTemp(tmpRoot, dirPrefix)
	if err != nil {
		return nil, fmt.Errorf("pgtest: create cluster directory: %w", err)
	}
	s := &Server{
		binDir:       binDir,
		dir:          dir,
		dataDir:      filepath.Join(dir, "data"),
		startTimeout: opts.StartTimeout,
		cred:         cred,
		res:          make(map[testing.TB]*testResources),
	}
	if s.startTimeout <= 0 {
		s.startTimeout = defaultStartTimeout
	}
	defer func() {
		if err != nil {
			_ = s.Stop()
		}
	}()

	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(ownerStamp()), 0o644); err != nil {
		return nil, fmt.Errorf("pgtest: write owner file: %w", err)
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, fmt.Errorf("pgtest: chown cluster directory to postgres: %w", err)
		}
	}
	if err := s.initdb(); err != nil {
		return nil, err
	}
	extra := opts.ExtraConf
	if opts.TLS {
		if err := s.writeTLSCert(); err != nil {
			return nil, err
		}
		extra = append([]string{"ssl = on"}, extra...)
	}
	s.conf = append(harnessConf(dir, opts.MaxConnections), extra...)
	if err := s.startOnFreePort(); err != nil {
		return nil, err
	}
	return s, nil
}

// harnessConf is the harness's own postgresql.conf settings for a cluster
// in dir (maxConn 0: defaultMaxConnections), before ExtraConf.
func harnessConf(dir string, maxConn int) []string {
	if maxConn <= 0 {
		maxConn = defaultMaxConnections
	}
	return []string{
		"listen_addresses = '" + host + "'",
		"unix_socket_directories = '" + dir + "'",
		"fsync = off",
		"synchronous_commit = off",
		"full_page_writes = off",
		"max_connections = " + strconv.Itoa(maxConn),
		"shared_buffers = 128MB",
		"logging_collector = off",
		"log_destination = 'stderr'",
		"log_min_messages = warning",
		"log_checkpoints = off", // DROP DATABASE checkpoints would flood the log
		"password_encryption = 'scram-sha-256'",
	}
}

// startOnFreePort writes the configuration with a free port and starts
// the server on it. The free port is found by binding and closing, so
// another process can grab it before postgres binds: then it retries with
// a new port, up to startAttempts times.
func (s *Server) startOnFreePort() error {
	for attempt := 1; ; attempt++ {
		var err error
		if s.port, err = freePort(); err != nil {
			return err
		}
		if err := s.writeConf(); err != nil {
			return err
		}
		logOffset := s.logSize()
		p, err := s.launch()
		if err != nil {
			return err
		}
		err = s.waitReady(context.Background(), p)
		if err == nil {
			s.mu.Lock()
			s.proc = p
			s.mu.Unlock()
			return nil
		}
		_ = stopProcess(p)
		if attempt < startAttempts && portTaken(s.logSince(logOffset)) {
			continue
		}
		return err
	}
}

// Stop shuts the server down with a fast shutdown (SIGINT), kills it if it
// has not exited within 10 seconds, and removes its directory including the
// data and the server log. Stop is idempotent.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	s.stopped = true
	stopErr := stopProcess(s.proc)
	s.proc = nil
	var rmErr error
	if err := os.RemoveAll(s.dir); err != nil {
		rmErr = fmt.Errorf("pgtest: remove cluster directory: %w", err)
	}
	return errors.Join(stopErr, rmErr)
}

// Restart performs a fast shutdown and starts the server again on the same
// port and data directory, then waits until it accepts connections. It exists
// for fault-injection tests; connections open at the time are terminated.
// Waiting is bounded by ctx and Options.StartTimeout.
func (s *Server) Restart(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return errors.New("pgtest: restart: server is stopped")
	}
	if err := stopProcess(s.proc); err != nil {
		return fmt.Errorf("pgtest: restart: %w", err)
	}
	s.proc = nil
	p, err := s.launch()
	if err != nil {
		return fmt.Errorf("pgtest: restart: %w", err)
	}
	s.proc = p
	if err := s.waitReady(ctx, p); err != nil {
		return fmt.Errorf("pgtest: restart: %w", err)
	}
	return nil
}

// Port is the TCP port the server listens on (on Host). It stays the same
// across Restart.
func (s *Server) Port() int { return s.port }

// Host is the loopback address the server listens on; the server never
// listens on other interfaces.
func (s *Server) Host() string { return host }

// SocketDir is the directory holding the server's Unix socket, for clients
// that want to connect with host=<SocketDir> instead of TCP.
func (s *Server) SocketDir() string { return s.dir }

// LogPath is the server log (postgres stderr, log_min_messages = warning).
// It is removed by Stop, so read it before stopping.
func (s *Server) LogPath() string { return filepath.Join(s.dir, "server.log") }

// initdb creates the cluster and installs the harness's pg_hba.conf.
func (s *Server) initdb() error {
	ctx, cancel := context.WithTimeout(context.Background(), initdbTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(s.binDir, "initdb"),
		"-U", superuser, "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync",
		"-D", s.dataDir)
	cmd.Dir = s.dir
	cmd.Env = serverEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pgtest: initdb: %w\n%s", err, out)
	}

	base, err := os.ReadFile(filepath.Join(s.dataDir, "postgresql.conf"))
	if err != nil {
		return fmt.Errorf("pgtest: read postgresql.conf: %w", err)
	}
	s.baseConf = base

	// The superuser needs no password so the harness can administer the
	// cluster, but roles created by tests must authenticate with SCRAM so
	// that tests can exercise password handling.
	hba := "local all all trust\n" +
		"host all " + superuser + " " + host + "/32 trust\n" +
		"host all all " + host + "/32 scram-sha-256\n"
	// os.WriteFile truncates the existing file, keeping initdb's owner.
	if err := os.WriteFile(filepath.Join(s.dataDir, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		return fmt.Errorf("pgtest: write pg_hba.conf: %w", err)
	}
	return nil
}

// writeConf rewrites postgresql.conf as initdb's version plus the harness
// settings, so that a retry with a different port does not pile up lines.
func (s *Server) writeConf() error {
	var b bytes.Buffer
	b.Write(s.baseConf)
	b.WriteString("\n# ---- added by pgtest ----\n")
	fmt.Fprintf(&b, "port = %d\n", s.port)
	for _, line := range s.conf {
		b.WriteString(line)
		b.WriteByte('\n')
	}
	if err := os.WriteFile(filepath.Join(s.dataDir, "postgresql.conf"), b.Bytes(), 0o600); err != nil {
		return fmt.Errorf("pgtest: write postgresql.conf: %w", err)
	}
	return nil
}

// launch starts the postmaster with stderr going to the server log.
func (s *Server) launch() (*process, error) {
	logf, err := os.OpenFile(s.LogPath(), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("pgtest: open server log: %w", err)
	}
	cmd := exec.Command(filepath.Join(s.binDir, "postgres"), "-D", s.dataDir)
	cmd.Dir = s.dir
	cmd.Env = serverEnv()
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: s.cred,
		// Own process group: terminal signals (Ctrl-C) reach only the test
		// binary, and the server is shut down by us alone.
		Setpgid: true,
		// If the test binary dies (crash, timeout panic, SIGKILL) the
		// postmaster is killed too; its backends notice postmaster death
		// and exit on their own.
		Pdeathsig: syscall.SIGKILL,
	}

	p := &process{done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// Pdeathsig is delivered when the forking OS thread exits, not the
		// process (go.dev/issue/27505). Keep this goroutine, and so its
		// thread, alive and locked until the postmaster has been reaped.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer logf.Close()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		p.pid = cmd.Process.Pid
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("pgtest: start postgres: %w", err)
	}
	return p, nil
}

// waitReady polls until the server accepts a superuser connection, the
// postmaster exits, or the start timeout (or ctx) expires.
func (s *Server) waitReady(ctx context.Context, p *process) error {
	ctx, cancel := context.WithTimeout(ctx, s.startTimeout)
	defer cancel()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		err := s.ping(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("pgtest: postgres exited during start-up (%v)%s", p.err, s.logTail())
		case <-ctx.Done():
			return fmt.Errorf("pgtest: postgres not ready on port %d: %w (last error: %v)%s",
				s.port, ctx.Err(), err, s.logTail())
		case <-tick.C:
		}
	}
}

func (s *Server) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.AdminURL("postgres"))
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

// stopProcess fast-shuts-down p (SIGINT), escalating to SIGKILL after
// stopGrace. A nil or already exited process is not an error.
func stopProcess(p *process) error {
	if p == nil {
		return nil
	}
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = syscall.Kill(p.pid, syscall.SIGINT)
	timer := time.NewTimer(stopGrace)
	defer timer.Stop()
	select {
	case <-p.done:
		return nil
	case <-timer.C:
	}
	_ = syscall.Kill(p.pid, syscall.SIGKILL)
	timer.Reset(killGrace)
	select {
	case <-p.done:
		return fmt.Errorf("pgtest: postgres (pid %d) ignored fast shutdown for %s; killed it", p.pid, stopGrace)
	case <-timer.C:
		return fmt.Errorf("pgtest: postgres (pid %d) survived SIGKILL for %s", p.pid, killGrace)
	}
}

func (s *Server) logSize() int64 {
	fi, err := os.Stat(s.LogPath())
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logSince returns the server log from byte offset off on.
func (s *Server) logSince(off int64) string {
	b, err := os.ReadFile(s.LogPath())
	if err != nil || off > int64(len(b)) {
		return ""
	}
	return string(b[off:])
}

// logTail formats the last lines of the server log for an error message.
func (s *Server) logTail() string {
	const maxLines = 30
	b, err := os.ReadFile(s.LogPath())
	if err != nil {
		return fmt.Sprintf("\n(no server log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > maxLines {
		lines = lines[len(lines)-maxLines:]
	}
	return fmt.Sprintf("\nserver log tail (%s):\n%s", s.LogPath(), strings.Join(lines, "\n"))
}

func portTaken(log string) bool {
	return strings.Contains(log, "Address already in use") ||
		strings.Contains(log, "could not bind")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("pgtest: find free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("pgtest: find free port: %w", err)
	}
	return port, nil
}

func checkExecutable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", path)
	}
	return nil
}

// serverCredential returns the credential to run initdb and postgres with:
// nil (the current user) unless we are root, which PostgreSQL refuses.
func serverCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup(superuser)
	if err != nil {
		return nil, fmt.Errorf("pgtest: running as root needs an OS user %q to run postgres as: %w", superuser, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgtest: parse uid of %q: %w", superuser, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgtest: parse gid of %q: %w", superuser, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

// serverEnv is the environment for initdb and postgres: ours minus PG*
// variables (PGDATA, PGPORT, ...) that could redirect them.
func serverEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	return env
}

// ownerStamp identifies the test binary owning a cluster directory: its pid
// and pid namespace, so that sweepStale never judges a process in another
// namespace (which it cannot see) to be dead.
func ownerStamp() string {
	ns, _ := os.Readlink("/proc/self/ns/pid")
	return fmt.Sprintf("%d %s\n", os.Getpid(), ns)
}

// sweepStale removes cluster directories left behind by test binaries that
// died without calling Stop (Pdeathsig has already killed their servers).
// It is conservative: a directory is removed only if it carries an owner
// stamp from our pid namespace whose process is gone, and its postmaster (if
// postmaster.pid is readable) is gone too. Errors are ignored.
func sweepStale() {
	myNS, _ := os.Readlink("/proc/self/ns/pid")
	dirs, _ := filepath.Glob(filepath.Join(tmpRoot, dirPrefix+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, ownerFile))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) != 2 || f[1] != myNS {
			continue
		}
		pid, err := strconv.Atoi(f[0])
		if err != nil || pid <= 0 || pidAlive(pid) {
			continue
		}
		if pm, err := os.ReadFile(filepath.Join(d, "data", "postmaster.pid")); err == nil {
			first, _, _ := strings.Cut(string(pm), "\n")
			if pmPID, err := strconv.Atoi(strings.TrimSpace(first)); err == nil && pidAlive(pmPID) {
				continue
			}
		}
		_ = os.RemoveAll(d)
	}
}

func pidAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
