// Package bintest is the test kit for tests that run the lockmigrate binary
// as a separate process: it builds the binary once, and parses what a run
// printed (one JSON log event per line on stderr). The CLI tests, the fault
// suite (test/faults) and the Kubernetes packaging tests (test/k8s) share
// it.
package bintest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// module is the root module, whose main package is the binary.
const module = "github.com/lockmigrate/lockmigrate"

// Build builds the binary as it ships into dir: lockmigrate pure Go
// (CGO_ENABLED=0), and the parser helper it runs to lint,
// dir/lockmigrate-pgparse (BuildParser), so the tests exercise lint
// through the co-process. It returns lockmigrate's path. It builds from
// the root module's directory, found by walking up from the working
// directory, so it serves packages of nested modules too.
func Build(dir string, extraArgs ...string) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "lockmigrate")
	args := append(append([]string{"build", "-o", bin}, extraArgs...), ".")
	if err := goBuild(root, "CGO_ENABLED=0", args...); err != nil {
		return "", err
	}
	if _, err := BuildParser(dir); err != nil {
		return "", err
	}
	return bin, nil
}

// BuildParser builds the parser helper (cmd/lockmigrate-pgparse) into
// dir/lockmigrate-pgparse as it ships, cgo linked statically, and returns
// its path.
func BuildParser(dir string) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "lockmigrate-pgparse")
	err = goBuild(root, "CGO_ENABLED=1", "build", "-trimpath", "-o", bin, "-tags", "netgo,osusergo",
		"-ldflags", "-s -w -linkmode external -extldflags -static", "./cmd/lockmigrate-pgparse")
	return bin, err
}

func goBuild(root, cgo string, args ...string) error {
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), cgo)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s go %s in %s: %w\n%s", cgo, strings.Join(args, " "), root, err, out)
	}
	return nil
}

// BuildTemp builds the binary into a new temporary directory, readable by
// every user (some tests run it as another one), for a test binary's
// TestMain; cleanup removes the directory.
func BuildTemp(prefix string) (bin string, cleanup func(), err error) {
	dir, err := os.MkdirTemp("", prefix)
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err == nil {
		bin, err = Build(dir)
	}
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("building lockmigrate: %w", err)
	}
	return bin, func() { os.RemoveAll(dir) }, nil
}

// ModuleRoot is the directory of the root module's go.mod, above the
// working directory.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(b, []byte("module "+module+"\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("bintest: no go.mod of " + module + " above the working directory")
		}
		dir = parent
	}
}

// Result is one finished run of the program.
type Result struct {
	Code           int
	Stdout, Stderr string
	Elapsed        time.Duration
}

// Events parses the JSON log lines; every line must be one JSON object.
func (r Result) Events(t testing.TB) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(r.Stderr), "\n") {
		if line == "" {
			continue
		}
		var ev map[string]any
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("log line is not one JSON object: %q", line)
		}
		out = append(out, ev)
	}
	return out
}

// Finished returns the "run finished" event; the test fails without one.
func (r Result) Finished(t testing.TB) map[string]any {
	t.Helper()
	for _, ev := range r.Events(t) {
		if ev["msg"] == "run finished" {
			return ev
		}
	}
	t.Fatalf("no run finished event in:\n%s", r.Stderr)
	return nil
}

// JSONEvents parses the lines of stderr that are JSON objects and skips
// the others (usage errors are plain text; a killed process may leave half
// a line).
func (r Result) JSONEvents() []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(r.Stderr, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var ev map[string]any
		if json.Unmarshal([]byte(line), &ev) == nil {
			out = append(out, ev)
		}
	}
	return out
}

// LastFinished is the last "run finished" event, or nil.
func (r Result) LastFinished() map[string]any {
	evs := r.JSONEvents()
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i]["msg"] == "run finished" {
			return evs[i]
		}
	}
	return nil
}

// Count counts the events with message msg.
func (r Result) Count(msg string) int {
	n := 0
	for _, ev := range r.JSONEvents() {
		if ev["msg"] == msg {
			n++
		}
	}
	return n
}

// Brief describes the run for failure messages.
func (r Result) Brief() string {
	return fmt.Sprintf("exit %d after %v\nstdout:\n%s\nstderr:\n%s", r.Code, r.Elapsed.Round(time.Millisecond), r.Stdout, r.Stderr)
}

// With returns a copy of env with the key/value pairs kv set.
func With(env map[string]string, kv ...string) map[string]string {
	out := make(map[string]string, len(env)+len(kv)/2)
	for k, v := range env {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

// WriteDir writes files (name → content) into a new temporary directory.
func WriteDir(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// secrets are passwords whose appearance in any checked output fails the
// test that checks it.
var secrets sync.Map

// AddSecret registers a password that no output may contain.
func AddSecret(s string) { secrets.Store(s, true) }

// Leaks returns the registered secrets that appear in outputs.
func Leaks(outputs ...string) []string {
	var found []string
	secrets.Range(func(k, _ any) bool {
		for _, o := range outputs {
			if strings.Contains(o, k.(string)) {
				found = append(found, k.(string))
				break
			}
		}
		return true
	})
	return found
}

// CheckNoSecrets fails t if any output contains a registered secret.
func CheckNoSecrets(t testing.TB, outputs ...string) {
	t.Helper()
	if l := Leaks(outputs...); len(l) > 0 {
		t.Errorf("output contains password(s) %q:\n%s", l, strings.Join(outputs, "\n"))
	}
}
