package cli

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockmigrate/lockmigrate/internal/bintest"
	"github.com/lockmigrate/lockmigrate/internal/pgtest"
	"github.com/lockmigrate/lockmigrate/internal/pushtest"
	"github.com/lockmigrate/lockmigrate/lock"
)

// series parses a /metrics exposition into "name{labels}" -> value for the
// lockmigrate_ families.
func series(t *testing.T, exposition string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(exposition))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "lockmigrate_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad line %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

// value finds the one series of name whose labels contain all of want.
func value(t *testing.T, s map[string]float64, name string, want ...string) (float64, bool) {
	t.Helper()
	for k, v := range s {
		if k != name && !strings.HasPrefix(k, name+"{") {
			continue
		}
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(k, w)
		}
		if ok {
			return v, true
		}
	}
	return 0, false
}

// TestPushgatewayConcurrentRuns: 10 runs start together against an empty
// database while the test holds the lock: 5 in skip mode exit at once, 5 in
// wait mode wait; the test releases the lock; one waiter applies, the rest
// find nothing to do. The real Pushgateway must then show the winner's
// figures intact, the conflicts, and exactly one group.
func TestPushgatewayConcurrentRuns(t *testing.T) {
	ctx := context.Background()
	gw := pushtest.Start(t, false)
	url, _ := secretDB(t)
	holder := pgtest.Connect(t, url)
	hl := lock.New(holder, lock.DefaultKey("public", "lockmigrate_history"), nil)
	if ok, _ := hl.TryLock(ctx); !ok {
		t.Fatal("no lock")
	}
	env := bintest.With(baseEnv(url), "LOCKMIGRATE_PUSHGATEWAY_URL", gw.URL)
	var (
		wg, skippers sync.WaitGroup
		barrier      = make(chan struct{})
		results      = make([]result, 10)
	)
	for i := range results {
		e := bintest.With(env, "POD_NAME", fmt.Sprintf("web-%d", i))
		if i%2 == 1 {
			e = bintest.With(e, "LOCKMIGRATE_ON_LOCKED", "wait", "LOCKMIGRATE_WAIT_TIMEOUT", "1m")
		}
		wg.Add(1)
		if i%2 == 0 {
			skippers.Add(1)
		}
		go func() {
			defer wg.Done()
			<-barrier
			results[i] = runIn(t, ctx, e)
			if i%2 == 0 {
				skippers.Done()
			}
		}()
	}
	close(barrier)
	skippers.Wait() // the five skipping runs have pushed and returned
	if err := hl.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	outcomes := map[string]int{}
	for i, r := range results {
		if r.Code != 0 {
			t.Fatalf("run %d: exit %d\n%s", i, r.Code, r.Stderr)
		}
		ev := r.Finished(t)
		if ev["metrics_pushed"] != true {
			t.Fatalf("run %d did not push: %v", i, ev)
		}
		outcomes[ev["outcome"].(string)]++
	}
	t.Logf("outcomes: %v", outcomes)
	if outcomes["applied"] != 1 || outcomes["skipped"] != 5 {
		t.Fatalf("outcomes %v: want 1 applied and 5 skipped", outcomes)
	}
	exposition := gw.Metrics(t)
	s := series(t, exposition)
	for _, c := range []struct {
		name string
		want float64
	}{
		{"lockmigrate_migrations_applied", 5},
		{"lockmigrate_schema_version", 5},
		{"lockmigrate_migrations_pending", 0},
		{"lockmigrate_lock_acquired", 1},
	} {
		if v, ok := value(t, s, c.name); !ok || v != c.want {
			t.Errorf("%s = %v (present %v), want %v", c.name, v, ok, c.want)
		}
	}
	for _, name := range []string{"lockmigrate_last_success_timestamp_seconds", "lockmigrate_last_lock_conflict_timestamp_seconds", "lockmigrate_lock_held_seconds"} {
		if v, ok := value(t, s, name); !ok || v <= 0 {
			t.Errorf("%s missing or zero", name)
		}
	}
	if strings.Contains(exposition, "web-") || strings.Contains(exposition, "pod=") {
		t.Error("a pod name reached the Pushgateway")
	}
	groups := gw.Groups(t)
	if len(groups) != 1 || groups[0]["job"] != "lockmigrate" {
		t.Fatalf("groups = %v, want exactly one, job=lockmigrate", groups)
	}
}

// TestPushgatewayFailedRun: a failed migration reports failed and leaves the
// last success timestamp as the previous success pushed it.
func TestPushgatewayFailedRun(t *testing.T) {
	ctx := context.Background()
	gw := pushtest.Start(t, false)
	url, _ := secretDB(t)
	dir := bintest.WriteDir(t, map[string]string{"1_ok.sql": "CREATE TABLE ok (id int);"})
	env := bintest.With(baseEnv(url), "LOCKMIGRATE_DIR", dir, "LOCKMIGRATE_PUSHGATEWAY_URL", gw.URL,
		"LOCKMIGRATE_PUSHGATEWAY_GROUPING", "app=shop,env=test")
	if r := runIn(t, ctx, env); r.Code != 0 {
		t.Fatal(r.Stderr)
	}
	before, _ := value(t, series(t, gw.Metrics(t)), "lockmigrate_last_success_timestamp_seconds")
	os.WriteFile(filepath.Join(dir, "2_bad.sql"), []byte("SELECT 1/0;"), 0o644)
	if r := runIn(t, ctx, env); r.Code != exitMigration {
		t.Fatalf("exit %d\n%s", r.Code, r.Stderr)
	}
	s := series(t, gw.Metrics(t))
	checks := []struct {
		name  string
		label string
		want  float64
	}{
		{"lockmigrate_run_outcome", `outcome="failed"`, 1},
		{"lockmigrate_run_outcome", `outcome="applied"`, 0},
		{"lockmigrate_last_failure", `kind="migration"`, 1},
		{"lockmigrate_last_success_timestamp_seconds", `app="shop"`, before},
		{"lockmigrate_migrations_pending", `env="test"`, 1},
		{"lockmigrate_migrations_applied", ``, 0},
		{"lockmigrate_schema_version", ``, 1},
	}
	for _, c := range checks {
		if v, ok := value(t, s, c.name, c.label); !ok || v != c.want {
			t.Errorf("%s{%s} = %v (present %v), want %v", c.name, c.label, v, ok, c.want)
		}
	}
	if before == 0 {
		t.Error("no success timestamp before the failure")
	}
}

// TestPushgatewayUnavailable: a gateway that hangs or fails never changes
// the exit code nor delays the exit past the push timeout (plus a second).
func TestPushgatewayUnavailable(t *testing.T) {
	ctx := context.Background()
	url, _ := secretDB(t)
	if r := runIn(t, ctx, baseEnv(url)); r.Code != 0 { // migrate first: measure only the push
		t.Fatal(r.Stderr)
	}
	for _, tt := range []struct {
		name    string
		handler http.HandlerFunc
	}{
		{"hangs", func(w http.ResponseWriter, r *http.Request) { io.Copy(io.Discard, r.Body); <-r.Context().Done() }},
		{"500", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", http.StatusInternalServerError) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.handler)
			defer srv.Close()
			r := runIn(t, ctx, bintest.With(baseEnv(url), "LOCKMIGRATE_PUSHGATEWAY_URL", srv.URL, "LOCKMIGRATE_PUSHGATEWAY_TIMEOUT", "500ms"))
			if r.Code != 0 || r.Finished(t)["metrics_pushed"] != false || !strings.Contains(r.Stderr, "metrics push failed") {
				t.Fatalf("exit %d\n%s", r.Code, r.Stderr)
			}
			if r.Elapsed > 1500*time.Millisecond {
				t.Fatalf("run took %v with a 500ms push timeout", r.Elapsed)
			}
			t.Logf("gateway %s: exit 0 after %v", tt.name, r.Elapsed)
		})
	}
}

// TestPushgatewayBasicAuth against a real Pushgateway that demands it.
func TestPushgatewayBasicAuth(t *testing.T) {
	ctx := context.Background()
	gw := pushtest.Start(t, true)
	url, _ := secretDB(t)
	bintest.AddSecret(pushtest.Password)
	pwFile := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pwFile, []byte(pushtest.Password+"\n"), 0o600)
	env := bintest.With(baseEnv(url), "LOCKMIGRATE_PUSHGATEWAY_URL", gw.URL, "LOCKMIGRATE_PUSHGATEWAY_USERNAME", pushtest.Username)

	r := runIn(t, ctx, bintest.With(env, "LOCKMIGRATE_PUSHGATEWAY_PASSWORD", "wrong-password"))
	if r.Code != 0 || r.Finished(t)["metrics_pushed"] != false || !strings.Contains(r.Stderr, "401") {
		t.Fatalf("wrong password: exit %d\n%s", r.Code, r.Stderr)
	}
	r = runIn(t, ctx, bintest.With(env, "LOCKMIGRATE_PUSHGATEWAY_PASSWORD_FILE", pwFile))
	if r.Code != 0 || r.Finished(t)["metrics_pushed"] != true {
		t.Fatalf("right password: exit %d\n%s", r.Code, r.Stderr)
	}
	if v, ok := value(t, series(t, gw.Metrics(t)), "lockmigrate_schema_version"); !ok || v != 5 {
		t.Fatalf("schema_version = %v, %v", v, ok)
	}
}

// TestMonitoringUsesExportedMetrics: every lockmigrate_* name in the
// dashboard and the alert rules is a family the binary really pushes, as
// scraped from a real Pushgateway after applied, skipped and failed runs.
func TestMonitoringUsesExportedMetrics(t *testing.T) {
	ctx := context.Background()
	gw := pushtest.Start(t, false)
	url, _ := secretDB(t)
	env := bintest.With(baseEnv(url), "LOCKMIGRATE_PUSHGATEWAY_URL", gw.URL)
	if r := runIn(t, ctx, env); r.Code != 0 {
		t.Fatal(r.Stderr)
	}
	holder := pgtest.Connect(t, url)
	if ok, _ := lock.New(holder, lock.DefaultKey("public", "lockmigrate_history"), nil).TryLock(ctx); !ok {
		t.Fatal("no lock")
	}
	dir := bintest.WriteDir(t, map[string]string{"9_new.sql": "SELECT 1"})
	if r := runIn(t, ctx, bintest.With(env, "LOCKMIGRATE_DIR", dir, "LOCKMIGRATE_ALLOW_OUT_OF_ORDER", "true")); r.Finished(t)["outcome"] != "skipped" {
		t.Fatalf("want skipped: %s", r.Stderr)
	}
	if r := runIn(t, ctx, bintest.With(env, "DATABASE_URL", "postgres://x@127.0.0.1:1/db", "LOCKMIGRATE_CONNECT_TIMEOUT", "100ms")); r.Code != exitUnreachable {
		t.Fatalf("want exit 3: %s", r.Stderr)
	}
	exported := map[string]bool{}
	for k := range series(t, gw.Metrics(t)) {
		exported[regexp.MustCompile(`^[a-z_]+`).FindString(k)] = true
	}
	files, _ := filepath.Glob("../../deploy/monitoring/*")
	name := regexp.MustCompile(`lockmigrate_[a-z_]+`)
	used := map[string]bool{}
	for _, f := range files {
		if !strings.HasSuffix(f, ".json") && !strings.HasSuffix(f, ".yml") && !strings.HasSuffix(f, ".yaml") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range name.FindAllString(string(b), -1) {
			used[n] = true
			if !exported[n] {
				t.Errorf("%s uses %s, which the binary does not export", f, n)
			}
		}
	}
	if len(used) < 8 {
		t.Fatalf("only %d metric names found in deploy/monitoring (%v): dashboard or rules missing?", len(used), files)
	}
	var names []string
	for n := range exported {
		names = append(names, n)
	}
	sort.Strings(names)
	t.Logf("exported families: %v", names)
}
