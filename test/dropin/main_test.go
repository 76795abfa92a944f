// Package dropin tests that migration directories written for goose, dbmate
// and tern run unchanged under lockmigrate (issue 14): each tool's own
// directory is applied by the real tool to one database and by concurrent
// lockmigrate processes to another, and the schemas must be the same; a
// database half migrated by the tool is adopted and finished by lockmigrate;
// a down section never runs. Every test drives the real binary, built once
// by TestMain, against real PostgreSQL 15 (internal/pgtest), and the real
// peer tools (scripts/peers.sh, through bintest.Peers).
package dropin

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
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
	bin, cleanup, err := bintest.BuildTemp("lmdropin")
	if err != nil {
		fmt.Fprintln(os.Stderr, "dropin:", err)
		os.Exit(1)
	}
	binary = bin
	code := pgtest.Main(m, pgtest.Options{})
	cleanup()
	os.Exit(code)
}

// env is the environment of a run against url with the migrations of dir:
// only these variables and PATH, nothing of the test's own environment.
func env(url, dir string, kv ...string) map[string]string {
	e := map[string]string{"LOCKMIGRATE_DIR": dir, "LOCKMIGRATE_CONNECT_TIMEOUT": "20s",
		"LOCKMIGRATE_TERMINATION_LOG": "", "POD_NAME": "dropin"}
	if url != "" {
		e["DATABASE_URL"] = url
	}
	return bintest.With(e, kv...)
}

func envList(env map[string]string) []string {
	out := []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// run runs the binary to completion (at most a minute).
func run(t *testing.T, env map[string]string, args ...string) bintest.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = envList(env)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := bintest.Result{Code: cmd.ProcessState.ExitCode(), Stdout: stdout.String(), Stderr: stderr.String(), Elapsed: time.Since(start)}
	if err != nil && r.Code < 0 {
		t.Fatalf("run %v: %v\n%s", args, err, r.Brief())
	}
	return r
}

// group starts n processes of the binary with env, each blocked reading its
// stdin, then releases them all at once by closing those pipes (as the
// fault suite's storm does), and returns their results.
func group(t *testing.T, n int, env map[string]string, args ...string) []bintest.Result {
	t.Helper()
	type proc struct {
		cmd            *exec.Cmd
		gate           io.WriteCloser
		stdout, stderr bytes.Buffer
	}
	procs := make([]*proc, n)
	for i := range procs {
		p := &proc{cmd: exec.Command("sh", append([]string{"-c", `cat >/dev/null; exec "$0" "$@"`, binary}, args...)...)}
		p.cmd.Env = envList(bintest.With(env, "POD_NAME", fmt.Sprintf("dropin-%d", i)))
		p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		var err error
		if p.gate, err = p.cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs[i] = p
	}
	for _, p := range procs {
		p.gate.Close()
	}
	out := make([]bintest.Result, n)
	for i, p := range procs {
		timer := time.AfterFunc(2*time.Minute, func() { _ = p.cmd.Process.Kill() })
		_ = p.cmd.Wait()
		timer.Stop()
		out[i] = bintest.Result{Code: p.cmd.ProcessState.ExitCode(), Stdout: p.stdout.String(), Stderr: p.stderr.String()}
	}
	return out
}

// checkGroup requires every process to exit 0 and exactly one of them to
// have applied the migrations; it returns how many each outcome had.
func checkGroup(t *testing.T, results []bintest.Result, applied int) map[string]int {
	t.Helper()
	outcomes := map[string]int{}
	for i, r := range results {
		fin := r.LastFinished()
		if r.Code != 0 || fin == nil {
			t.Fatalf("process %d: %s", i, r.Brief())
		}
		o, _ := fin["outcome"].(string)
		outcomes[o]++
		if o == "applied" && fin["applied"] != float64(applied) {
			t.Fatalf("process %d applied %v migrations, want %d:\n%s", i, fin["applied"], applied, r.Stderr)
		}
	}
	if outcomes["applied"] != 1 {
		t.Fatalf("outcomes %v: want exactly one applied", outcomes)
	}
	return outcomes
}

// newDB is a fresh database and a connection to it.
func newDB(t *testing.T) (string, *pgx.Conn) {
	t.Helper()
	url := pgtest.Shared().NewDB(t)
	return url, pgtest.Connect(t, url)
}

// historyTables are the tools' own tables, left out of the schema
// comparison.
var historyTables = []string{"lockmigrate_history", "goose_db_version", "goose_db_version_id_seq", "schema_migrations", "schema_version"}

// volatile are the lines of a dump that differ from one run to the next.
var volatile = regexp.MustCompile(`(?m)^(-- Dumped (from database|by pg_dump) version .*|\\(un)?restrict .*)\n`)

// schema is pg_dump --schema-only of url without the tools' history tables
// and the dump's volatile header lines.
func schema(t *testing.T, url string) string {
	t.Helper()
	bin := os.Getenv("PG_BIN")
	if bin == "" {
		bin = pgtest.DefaultBinDir
	}
	args := []string{"--schema-only", "--no-owner", "--no-privileges", "--dbname", url}
	for _, tbl := range historyTables {
		args = append(args, "--exclude-table=public."+tbl)
	}
	out, err := exec.Command(filepath.Join(bin, "pg_dump"), args...).Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("pg_dump: %v\n%s", err, stderr)
	}
	return volatile.ReplaceAllString(string(out), "")
}

// sameSchema fails t unless the dumps of a and b are equal, showing the
// first line where they differ.
func sameSchema(t *testing.T, a, b string) {
	t.Helper()
	da, db := schema(t, a), schema(t, b)
	if da == db {
		if !strings.Contains(da, "CREATE TABLE") {
			t.Fatalf("the dump holds no table:\n%s", da)
		}
		return
	}
	la, lb := strings.Split(da, "\n"), strings.Split(db, "\n")
	for i := 0; i < len(la) || i < len(lb); i++ {
		var x, y string
		if i < len(la) {
			x = la[i]
		}
		if i < len(lb) {
			y = lb[i]
		}
		if x != y {
			t.Fatalf("schemas differ at line %d:\n  tool:        %q\n  lockmigrate: %q\n--- tool's dump:\n%s", i+1, x, y, da)
		}
	}
}
