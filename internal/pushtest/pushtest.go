// Package pushtest runs a real Prometheus Pushgateway for tests, on a free
// loopback port, optionally demanding basic auth. Like pgtest it installs
// nothing: it says how when the binary is missing.
package pushtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Username, Password and passwordHash are the credentials of a gateway
// started with Auth: the bcrypt hash of Password, made once so tests need no
// bcrypt library.
const (
	Username     = "pusher"
	Password     = "gateway-test-password"
	passwordHash = "$2a$10$BNpnM8ab8GJvl6TY99sp5u9IBqM3A43Ya4Dbalv8NKld37hRcAzKi"
)

// Gateway is a running Pushgateway.
type Gateway struct {
	URL  string // http://127.0.0.1:PORT
	auth bool
	cmd  *exec.Cmd
}

// binary finds the Pushgateway: $PUSHGATEWAY_BIN, then the Debian package's
// name, then the upstream one.
func binary() (string, error) {
	if b := os.Getenv("PUSHGATEWAY_BIN"); b != "" {
		return b, nil
	}
	for _, name := range []string{"prometheus-pushgateway", "pushgateway"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("pushtest: no Pushgateway binary (set PUSHGATEWAY_BIN or install it: apt-get update && apt-get install -y prometheus-pushgateway)")
}

// Start runs a Pushgateway for the test and stops it at cleanup. With auth,
// it demands basic auth with Username and Password.
func Start(t testing.TB, auth bool) *Gateway {
	t.Helper()
	bin, err := binary()
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	args := []string{"--web.listen-address=" + addr, "--persistence.file=", "--log.level=warn"}
	if auth {
		cfg := filepath.Join(t.TempDir(), "web.yml")
		if err := os.WriteFile(cfg, []byte("basic_auth_users:\n  "+Username+": "+passwordHash+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--web.config.file="+cfg)
	}
	g := &Gateway{URL: "http://" + addr, auth: auth, cmd: exec.Command(bin, args...)}
	var stderr strings.Builder
	g.cmd.Stderr = &stderr
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		g.cmd.Process.Kill()
		g.cmd.Wait()
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := g.get("/-/ready")
		if err == nil && strings.Contains(resp, "OK") {
			return g
		}
		if time.Now().After(deadline) {
			t.Fatalf("pushgateway not ready: %v\n%s", err, stderr.String())
		}
		time.Sleep(20 * time.Millisecond) // start-up polling, not synchronisation
	}
}

func (g *Gateway) get(path string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.URL+path, nil)
	if err != nil {
		return "", err
	}
	if g.auth {
		req.SetBasicAuth(Username, Password)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return string(b), err
}

// Metrics returns the gateway's /metrics exposition.
func (g *Gateway) Metrics(t testing.TB) string {
	t.Helper()
	s, err := g.get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Groups returns the grouping labels of every group the gateway holds.
func (g *Gateway) Groups(t testing.TB) []map[string]string {
	t.Helper()
	s, err := g.get("/api/v1/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Data []struct {
			Labels map[string]string `json:"labels"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(s), &doc); err != nil {
		t.Fatalf("parse /api/v1/metrics: %v", err)
	}
	var out []map[string]string
	for _, d := range doc.Data {
		out = append(out, d.Labels)
	}
	return out
}
