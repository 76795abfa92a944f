package bintest

import (
	"bytes"
	"context"
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

// PeerNames are the peer migrators scripts/peers.sh installs: goose,
// golang-migrate's migrate, tern and dbmate.
var PeerNames = []string{"goose", "migrate", "tern", "dbmate"}

var (
	peersOnce sync.Once
	peerBins  map[string]string
	peersErr  error
	peersSkip bool
)

// Peers returns the paths of the real peer migrators, by name (PeerNames),
// installed at the versions the benchmark pins by scripts/peers.sh into the
// benchmark's cache directory (once per test binary). Where they cannot be
// installed for want of network or of npm, t is skipped, unless
// LOCKMIGRATE_REQUIRE_PEERS is set (CI), where it fails.
func Peers(t testing.TB) map[string]string {
	t.Helper()
	peersOnce.Do(installPeers)
	if peersErr != nil {
		if peersSkip && os.Getenv("LOCKMIGRATE_REQUIRE_PEERS") == "" {
			t.Skipf("peer tools unavailable (set LOCKMIGRATE_REQUIRE_PEERS=1 to fail instead): %v", peersErr)
		}
		t.Fatal(peersErr)
	}
	for _, name := range PeerNames {
		if peerBins[name] == "" {
			t.Fatalf("scripts/peers.sh did not report %s: %v", name, peerBins)
		}
	}
	return peerBins
}

func installPeers() {
	root, err := ModuleRoot()
	if err != nil {
		peersErr = err
		return
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		peersErr = err
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "scripts", "peers.sh"), filepath.Join(cache, "lockmigrate-bench", "bin"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	var exit *exec.ExitError
	// 75: the module proxy or the npm registry is unreachable; 69: no npm.
	if errors.As(err, &exit) && (exit.ExitCode() == 75 || exit.ExitCode() == 69) {
		peersSkip = true
	}
	if err != nil {
		peersErr = fmt.Errorf("scripts/peers.sh: %w\n%s", err, stderr.String())
		return
	}
	peerBins = map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		name, path, _ := strings.Cut(line, " ")
		peerBins[name] = path
	}
}

// RunPeer runs a peer tool with args, bounded by a minute, and returns its
// combined output and error.
func RunPeer(t testing.TB, bin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	return string(out), err
}
