package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockmigrate/lockmigrate/internal/bintest"
	"github.com/lockmigrate/lockmigrate/internal/pgtest"
)

// binary is the lockmigrate binary built once for the process tests.
var binary string

// result is one captured run, in-process or of the binary.
type result = bintest.Result

func TestMain(m *testing.M) {
	bin, cleanup, err := bintest.BuildTemp("lmbin")
	if err != nil {
		fmt.Fprintln(os.Stderr, "the process tests:", err)
		os.Exit(1)
	}
	binary = bin
	code := pgtest.Main(m, pgtest.Options{})
	cleanup()
	os.Exit(code)
}

// testVersion is the version the in-process runs report.
const testVersion = "test"

// runIn runs the program in-process with exactly the given environment.
func runIn(t testing.TB, ctx context.Context, env map[string]string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	start := time.Now()
	code := Run(ctx, args, func(k string) string { return env[k] }, &stdout, &stderr, testVersion)
	r := result{Code: code, Stdout: stdout.String(), Stderr: stderr.String(), Elapsed: time.Since(start)}
	bintest.CheckNoSecrets(t, r.Stdout, r.Stderr)
	return r
}

// secretDB returns a fresh database owned by a new role that logs in with a
// password, and that URL. The password is registered as a secret.
func secretDB(t testing.TB) (url, password string) {
	t.Helper()
	srv := pgtest.Shared()
	admin := srv.NewDB(t)
	db := admin[strings.LastIndex(admin, "/")+1 : strings.Index(admin, "?")]
	b := make([]byte, 12)
	rand.Read(b)
	password = "pw-" + hex.EncodeToString(b) + "/@:%"
	role := "r" + hex.EncodeToString(b[:6])
	srv.CreateRole(t, role, password)
	if err := srv.Exec(context.Background(), "postgres", fmt.Sprintf(`ALTER DATABASE %q OWNER TO %q`, db, role)); err != nil {
		t.Fatal(err)
	}
	bintest.AddSecret(password)
	return srv.URLFor(db, role, password), password
}

func baseEnv(url string) map[string]string {
	return map[string]string{"DATABASE_URL": url, "POD_NAME": "test-pod", "LOCKMIGRATE_CONNECT_TIMEOUT": "5s"}
}

func TestHelpAndVersion(t *testing.T) {
	r := runIn(t, context.Background(), nil, "--help")
	if r.Code != 0 {
		t.Fatal(r.Code)
	}
	for _, w := range []string{"migrate", "status", "validate", "version", "DATABASE_URL", "LOCKMIGRATE_WAIT_TIMEOUT", "10m",
		"LOCKMIGRATE_TABLE", "lockmigrate_history", "POD_NAME", "Exit codes"} {
		if !strings.Contains(r.Stdout, w) {
			t.Errorf("--help lacks %q", w)
		}
	}
	if r := runIn(t, context.Background(), nil, "version"); r.Code != 0 || !strings.HasPrefix(r.Stdout, "lockmigrate ") {
		t.Fatalf("version: %d %q", r.Code, r.Stdout)
	}
}

// waitForActive polls, through conn, until another session runs a statement
// containing fragment: the test acts at a known point of the run, not after
// a guessed delay.
func waitForActive(t testing.TB, conn *pgx.Conn, fragment string) {
	t.Helper()
	for {
		var n int
		if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
		  WHERE strpos(query, $1) > 0 AND state = 'active' AND pid <> pg_backend_pid()`, fragment).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
	}
}

// startBinary starts the real binary with exactly env (plus PATH).
func startBinary(t testing.TB, env map[string]string, stdout, stderr *bytes.Buffer, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
}

// gatedProc is the built binary started behind a gate: it blocks reading its
// stdin until releaseAll closes it, so many processes start work at once.
type gatedProc struct {
	cmd            *exec.Cmd
	gate           io.WriteCloser
	stdout, stderr bytes.Buffer
}

// releaseOutcomes releases the gated processes at one barrier and counts
// their outcomes; every one must exit 0.
func releaseOutcomes(t testing.TB, procs []*gatedProc) map[string]int {
	t.Helper()
	releaseAll(procs)
	outcomes := map[string]int{}
	for i, p := range procs {
		r, err := p.wait(t)
		if err != nil || r.Code != 0 {
			t.Fatalf("replica %d: exit %d (%v)\n%s", i, r.Code, err, r.Stderr)
		}
		outcomes[r.Finished(t)["outcome"].(string)]++
	}
	return outcomes
}

// startGated starts the binary with exactly env (plus PATH), held at the gate.
func startGated(t testing.TB, env map[string]string) *gatedProc {
	t.Helper()
	p := &gatedProc{cmd: exec.Command("sh", "-c", `cat >/dev/null; exec "$1"`, "sh", binary)}
	p.cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	var err error
	if p.gate, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return p
}

// releaseAll opens every gate, as close together as the loop allows.
func releaseAll(procs []*gatedProc) {
	for _, p := range procs {
		p.gate.Close()
	}
}

// wait waits for the process and checks its output for secrets.
func (p *gatedProc) wait(t testing.TB) (result, error) {
	t.Helper()
	err := p.cmd.Wait()
	r := result{Code: p.cmd.ProcessState.ExitCode(), Stdout: p.stdout.String(), Stderr: p.stderr.String()}
	bintest.CheckNoSecrets(t, r.Stdout, r.Stderr)
	return r, err
}

// TestPlanAndUnlockInHelp: both commands are listed by --help and reachable
// by name.
func TestPlanAndUnlockInHelp(t *testing.T) {
	r := runIn(t, context.Background(), nil, "--help")
	for _, w := range []string{"lockmigrate unlock [--tenant SCHEMA] [--force [--pid PID] [--timeout 30s]] [--json]", "lockmigrate plan [--json]", "pg_terminate_backend"} {
		if r.Code != 0 || !strings.Contains(r.Stdout, w) {
			t.Errorf("--help lacks %q", w)
		}
	}
	for _, cmd := range []string{"unlock", "plan"} {
		if r := runIn(t, context.Background(), nil, cmd, "--bogus"); r.Code != exitUsage || strings.Contains(r.Stderr, "unknown command") {
			t.Errorf("%s --bogus: exit %d\n%s", cmd, r.Code, r.Stderr)
		}
	}
}

// TestGCPercent: a run sets the collector to gcPercent unless GOGC is set,
// in which case the runtime has already read it and Run leaves it alone.
func TestGCPercent(t *testing.T) {
	old := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(old) })
	for _, tc := range []struct {
		gogc string
		want int
	}{{"", gcPercent}, {"150", 100}} {
		debug.SetGCPercent(100)
		getenv := func(k string) string {
			if k == "GOGC" {
				return tc.gogc
			}
			return ""
		}
		Run(context.Background(), []string{"version"}, getenv, io.Discard, io.Discard, "test")
		if got := debug.SetGCPercent(100); got != tc.want {
			t.Errorf("GOGC=%q: the collector's percent is %d, want %d", tc.gogc, got, tc.want)
		}
	}
}
