package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lockmigrate/lockmigrate/internal/bintest"
	"github.com/lockmigrate/lockmigrate/internal/pgtest"
	"github.com/lockmigrate/lockmigrate/lock"
)

// helperInstall is a copy of the built binary alone in a directory, with
// a lockmigrate-pgparse that records each start in a file before it runs
// the real helper: the process-level view of when the parser is started.
type helperInstall struct {
	bin, helper, starts string
}

func newHelperInstall(t *testing.T) helperInstall {
	t.Helper()
	dir := t.TempDir()
	in := helperInstall{bin: filepath.Join(dir, "lockmigrate"), helper: filepath.Join(dir, "lockmigrate-pgparse"),
		starts: filepath.Join(t.TempDir(), "starts")}
	copyFile(t, binary, in.bin)
	real := filepath.Join(filepath.Dir(binary), "lockmigrate-pgparse")
	script := "#!/bin/sh\necho started >>'" + in.starts + "'\nexec '" + real + "' \"$@\"\n"
	if err := os.WriteFile(in.helper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return in
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

// run runs the installed binary to its end with exactly env (plus PATH).
func (in helperInstall) run(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	cmd := exec.Command(in.bin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil && !errors.As(err, new(*exec.ExitError)) {
		t.Fatal(err)
	}
	r := result{Code: cmd.ProcessState.ExitCode(), Stdout: stdout.String(), Stderr: stderr.String()}
	bintest.CheckNoSecrets(t, r.Stdout, r.Stderr)
	return r
}

// takeStarts is how many times the helper started since the last call.
func (in helperInstall) takeStarts(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(in.starts)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(in.starts); err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "started\n")
}

// TestLintHelperProcess: the binary as it ships (pure Go, the parser in
// lockmigrate-pgparse next to it) starts the helper once in a process that
// lints, never in a replica that skips or finds everything applied.
func TestLintHelperProcess(t *testing.T) {
	ctx := context.Background()
	in := newHelperInstall(t)
	url, _ := secretDB(t)
	env := bintest.With(baseEnv(url), "LOCKMIGRATE_DIR", bintest.WriteDir(t, lintSet), "LOCKMIGRATE_LINT", "warn")
	offline := map[string]string{"LOCKMIGRATE_DIR": env["LOCKMIGRATE_DIR"]}
	if r := in.run(t, offline, "lint"); r.Code != exitValidation || !strings.Contains(r.Stdout, "error [index-concurrently]") {
		t.Fatalf("lint: %s", r.Brief())
	}
	if n := in.takeStarts(t); n != 1 {
		t.Fatalf("lint of 2 files started the helper %d times, want 1", n)
	}
	holder := pgtest.Connect(t, url)
	if _, err := holder.Exec(ctx, `CREATE TABLE accounts (id bigint PRIMARY KEY, plan text)`); err != nil {
		t.Fatal(err)
	}
	pgtest.MustLock(t, holder, lock.DefaultKey("public", "lockmigrate_history"))
	if r := in.run(t, env); r.Code != exitOK || r.Finished(t)["outcome"] != "skipped" {
		t.Fatalf("skipping replica: %s", r.Brief())
	}
	if n := in.takeStarts(t); n != 0 {
		t.Fatalf("the skipping replica started the helper %d times", n)
	}
	if _, err := holder.Exec(ctx, `SELECT pg_advisory_unlock_all()`); err != nil {
		t.Fatal(err)
	}
	if r := in.run(t, env); r.Code != exitOK || r.Finished(t)["outcome"] != "applied" || r.Count("lint finding") != 1 {
		t.Fatalf("lock holder: %s", r.Brief())
	}
	if n := in.takeStarts(t); n != 1 {
		t.Fatalf("the lock holder started the helper %d times, want 1", n)
	}
	if r := in.run(t, env); r.Code != exitOK || r.Finished(t)["outcome"] != "up_to_date" {
		t.Fatalf("up to date: %s", r.Brief())
	}
	if n := in.takeStarts(t); n != 0 {
		t.Fatalf("the up_to_date run started the helper %d times", n)
	}
}

// TestLintHelperMissing: without its helper, lint is exit 2 (the
// installation cannot do what was asked, like a configuration error; 5
// would say the migrations are at fault) with a message that names where
// the helper was looked for; the gate in warn mode skips the lint and
// applies, in error mode refuses with the same code and message.
func TestLintHelperMissing(t *testing.T) {
	in := newHelperInstall(t)
	if err := os.Remove(in.helper); err != nil {
		t.Fatal(err)
	}
	dir := bintest.WriteDir(t, lintSet)
	want := in.helper + ": no such file; install the lockmigrate-pgparse of the same build there"
	r := in.run(t, map[string]string{"LOCKMIGRATE_DIR": dir}, "lint")
	if r.Code != exitUsage || !strings.Contains(r.Stderr, want) || !strings.Contains(r.Stderr, "lint needs the PostgreSQL parser") {
		t.Fatalf("lint without the helper: %s", r.Brief())
	}
	url, _ := secretDB(t)
	if _, err := pgtest.Connect(t, url).Exec(context.Background(), `CREATE TABLE accounts (id bigint PRIMARY KEY, plan text)`); err != nil {
		t.Fatal(err)
	}
	env := bintest.With(baseEnv(url), "LOCKMIGRATE_DIR", dir, "LOCKMIGRATE_LINT", "error")
	if r := in.run(t, env); r.Code != exitUsage || !strings.Contains(r.Stderr, want) {
		t.Fatalf("LOCKMIGRATE_LINT=error without the helper: %s", r.Brief())
	}
	r = in.run(t, bintest.With(env, "LOCKMIGRATE_LINT", "warn"))
	if r.Code != exitOK || r.Finished(t)["outcome"] != "applied" || r.Count("lint skipped") != 1 || !strings.Contains(r.Stderr, want) {
		t.Fatalf("LOCKMIGRATE_LINT=warn without the helper: %s", r.Brief())
	}
}
