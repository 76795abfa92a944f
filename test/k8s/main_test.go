package k8s

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/lockmigrate/lockmigrate/internal/bintest"
	"github.com/lockmigrate/lockmigrate/internal/pgtest"
)

// Paths relative to this package's directory (go test runs in it).
const (
	repoRoot  = "../.."
	chartDir  = "../../helm/lockmigrate"
	deployDir = "../../deploy"
	// kubeVersion is the oldest Kubernetes the chart supports (Chart.yaml
	// kubeVersion); everything is rendered and linted for it, so nothing
	// newer sneaks in.
	kubeVersion = "1.26.0"
	// release is the release name the chart is rendered with.
	release = "rel"
)

// workDir holds what the end-to-end tests build and write; it is
// world-readable so that the copies can run as the image's user (65532)
// when the tests run as root.
var workDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "lmk8s")
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	workDir = dir
	code := pgtest.Main(m, pgtest.Options{})
	os.RemoveAll(dir)
	os.Exit(code)
}

var (
	helmOnce sync.Once
	helmPath string
	helmErr  error
)

// helm returns the helm binary: $HELM, else helm in PATH. It fails the test
// with the way to get one when there is none.
func helm(t testing.TB) string {
	t.Helper()
	helmOnce.Do(func() {
		if h := os.Getenv("HELM"); h != "" {
			helmPath, helmErr = exec.LookPath(h)
			if helmErr != nil {
				helmErr = fmt.Errorf("HELM=%s: %w", h, helmErr)
			}
			return
		}
		helmPath, helmErr = exec.LookPath("helm")
	})
	if helmErr != nil {
		t.Fatalf("helm not found (%v): run scripts/k8s-test.sh, which installs helm v3 into a cache directory, "+
			"or set HELM to a helm v3 binary", helmErr)
	}
	return helmPath
}

// runHelm runs helm with args and returns its stdout, its stderr and
// whether it succeeded.
func runHelm(t testing.TB, args ...string) (stdout, stderr string, ok bool) {
	t.Helper()
	cmd := exec.Command(helm(t), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	// No cluster, no repositories: keep helm away from the user's
	// configuration and caches.
	home := t.TempDir()
	cmd.Env = append(os.Environ(),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
		"KUBECONFIG="+filepath.Join(home, "no-kubeconfig"))
	err := cmd.Run()
	if err != nil {
		if _, isExit := err.(*exec.ExitError); !isExit {
			t.Fatalf("helm %s: %v", strings.Join(args, " "), err)
		}
	}
	return out.String(), errb.String(), err == nil
}

// ciValues returns the chart's CI values files (ci/*-values.yaml), sorted.
func ciValues(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	if len(files) == 0 {
		t.Fatalf("no %s/ci/*-values.yaml", chartDir)
	}
	return files
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// lockmigrateBinary builds the repository's binary once, into workDir.
func lockmigrateBinary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() { binPath, binErr = bintest.Build(workDir) })
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}
