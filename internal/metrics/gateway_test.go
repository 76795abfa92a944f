package metrics

import (
	"bufio"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lockmigrate/lockmigrate/internal/pushtest"
)

var update = flag.Bool("update", false, "rewrite testdata/*.txt from what the Pushgateway shows")

// t0 is the fixed end of every golden run, so the gateway's output is the
// same on every run of the test.
var t0 = time.Date(2026, 3, 14, 15, 9, 26, 500_000_000, time.UTC)

// Golden runs, each what one kind of lockmigrate run reports.
var (
	appliedRun = Run{Version: "v1.4.0", Outcome: "applied", Start: t0.Add(-2250 * time.Millisecond), End: t0,
		ConnectAttempts: 1, LockTried: true, LockAcquired: true, LockAttempts: 1, LockWait: 3 * time.Millisecond,
		LockHeld: 1500 * time.Millisecond, SchemaKnown: true, SchemaVersion: 5, Pending: 0,
		ApplyTried: true, Applied: 3, LockTimeoutRetries: 1}
	skippedRun = Run{Version: "v1.4.0", Outcome: "skipped", Start: t0.Add(-125 * time.Millisecond), End: t0.Add(time.Second),
		ConnectAttempts: 1, LockTried: true, LockConflict: true, LockAttempts: 1, LockWait: 2 * time.Millisecond}
	// failedRun's version needs escaping in the text format.
	failedRun = Run{Version: "dev \"quoted\" back\\slash\nnewline", Outcome: "failed", ErrorKind: "validation",
		Start: t0.Add(-500 * time.Millisecond), End: t0, ConnectAttempts: 2, LockTried: true, LockAcquired: true,
		LockAttempts: 1, LockHeld: 20 * time.Millisecond, SchemaKnown: true, SchemaVersion: 20260101120000, Pending: 2, PendingExpand: 1, PendingContract: 1}
	tenantsRun = Run{Version: "v1.4.0", Outcome: "applied", Start: t0.Add(-90 * time.Second), End: t0,
		ConnectAttempts: 1, ApplyTried: true, Applied: 21, LockTimeoutRetries: 2,
		Tenants: &Tenants{Total: 10, Pending: 0, Failed: 0, Applied: 7}}
	upToDateRun = Run{Version: "v1.4.0", Outcome: "up_to_date", Start: t0.Add(-40 * time.Millisecond), End: t0,
		ConnectAttempts: 1, SchemaKnown: true, SchemaVersion: 5}
)

// pushed is one push of a golden case.
type pushed struct {
	job      string
	grouping map[string]string
	run      Run
}

// TestGatewayGolden pushes fixed runs to a real Pushgateway and compares
// the lockmigrate_ lines of its /metrics byte for byte with testdata, which
// the hand-written text exposition produced: whatever writes and sends the
// families, the gateway must end up showing the same thing.
func TestGatewayGolden(t *testing.T) {
	tests := []struct {
		name   string // testdata/<name>.txt
		pushes []pushed
		check  func(t *testing.T, lines string)
	}{
		{name: "applied", pushes: []pushed{{"lockmigrate", map[string]string{"namespace": "prod", "app": "a/b"}, appliedRun}}},
		{name: "skipped", pushes: []pushed{{"lockmigrate", map[string]string{"namespace": "prod"}, skippedRun}},
			check: func(t *testing.T, lines string) {
				for _, absent := range []string{"lockmigrate_schema_version", "lockmigrate_migrations_applied", "lockmigrate_last_success_timestamp_seconds"} {
					if strings.Contains(lines, absent) {
						t.Errorf("a skipped run pushed %s", absent)
					}
				}
			}},
		{name: "failed", pushes: []pushed{{"shop/migrations", nil, failedRun}}},
		{name: "tenants_shard", pushes: []pushed{{"lockmigrate", map[string]string{"namespace": "prod", "shard": "2"}, tenantsRun}}},
		{name: "empty_grouping", pushes: []pushed{{"lockmigrate", map[string]string{"env": ""}, upToDateRun}}},
		// Add semantics: the skipped run replaces the families it carries and
		// leaves the applied run's schema_version and success timestamp.
		{name: "applied_then_skipped", pushes: []pushed{
			{"lockmigrate", map[string]string{"namespace": "prod", "app": "a/b"}, appliedRun},
			{"lockmigrate", map[string]string{"namespace": "prod", "app": "a/b"}, skippedRun},
		}, check: func(t *testing.T, lines string) {
			for _, want := range []string{
				`lockmigrate_schema_version{app="a/b",instance="",job="lockmigrate",namespace="prod"} 5` + "\n",
				`lockmigrate_migrations_applied{app="a/b",instance="",job="lockmigrate",namespace="prod"} 3` + "\n",
				`lockmigrate_run_outcome{app="a/b",instance="",job="lockmigrate",namespace="prod",outcome="skipped"} 1` + "\n",
				`lockmigrate_last_lock_conflict_timestamp_seconds{`,
			} {
				if !strings.Contains(lines, want) {
					t.Errorf("gateway lost or lacks %q after applied then skipped", want)
				}
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := pushtest.Start(t, false)
			for _, p := range tt.pushes {
				err := pushRun(context.Background(), Pusher{URL: g.URL, Job: p.job, Grouping: p.grouping, Timeout: 5 * time.Second}, p.run)
				if err != nil {
					t.Fatal(err)
				}
			}
			got := lockmigrateLines(t, g.Metrics(t))
			if tt.check != nil {
				tt.check(t, got)
			}
			golden := filepath.Join("testdata", tt.name+".txt")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("gateway /metrics differs from %s\n got:\n%s\nwant:\n%s", golden, got, want)
			}
		})
	}
}

// lockmigrateLines keeps the HELP, TYPE and sample lines of the
// lockmigrate_ families: the gateway's own families (push_time_seconds and
// the like) vary from run to run.
func lockmigrateLines(t *testing.T, exposition string) string {
	t.Helper()
	var b strings.Builder
	sc := bufio.NewScanner(strings.NewReader(exposition))
	for sc.Scan() {
		line := sc.Text()
		rest := strings.TrimPrefix(strings.TrimPrefix(line, "# HELP "), "# TYPE ")
		if strings.HasPrefix(rest, "lockmigrate_") {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}
