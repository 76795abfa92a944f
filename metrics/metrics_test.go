package metrics

import (
	"context"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lockmigrate/lockmigrate/internal/pushtest"
)

func names(t *testing.T, r Run) []string {
	t.Helper()
	var out []string
	for _, f := range r.Families() {
		out = append(out, strings.TrimPrefix(f.Name, "lockmigrate_"))
	}
	return out
}

// TestFamiliesByRun: each kind of run pushes only what it knows, so with
// add semantics it never overwrites what a better-informed run pushed.
func TestFamiliesByRun(t *testing.T) {
	now := time.Now()
	base := Run{Version: "test", Start: now.Add(-time.Second), End: now, ConnectAttempts: 1}
	always := []string{"build_info", "connect_attempts", "last_run_timestamp_seconds", "run_duration_seconds", "run_outcome"}
	tests := []struct {
		name string
		run  func(Run) Run
		want []string
	}{
		{"applied", func(r Run) Run {
			r.Outcome, r.LockTried, r.LockAcquired, r.LockAttempts, r.SchemaKnown, r.ApplyTried, r.Applied = "applied", true, true, 1, true, true, 5
			return r
		}, []string{"last_success_timestamp_seconds", "lock_acquired", "lock_attempts", "lock_held_seconds", "lock_timeout_retries",
			"lock_wait_seconds", "migrations_applied", "migrations_pending", "migrations_pending_phase", "schema_version"}},
		{"up_to_date (fast path)", func(r Run) Run { r.Outcome, r.SchemaKnown = "up_to_date", true; return r },
			[]string{"last_success_timestamp_seconds", "migrations_pending", "migrations_pending_phase", "schema_version"}},
		{"applied with a backfill", func(r Run) Run {
			r.Outcome, r.LockTried, r.LockAcquired, r.LockAttempts, r.SchemaKnown, r.ApplyTried, r.Applied = "applied", true, true, 1, true, true, 1
			r.Backfill = &Backfill{Rows: 1000, Batches: 10, Duration: time.Second}
			return r
		}, []string{"backfill_batches", "backfill_duration_seconds", "backfill_rows", "last_success_timestamp_seconds", "lock_acquired",
			"lock_attempts", "lock_held_seconds", "lock_timeout_retries", "lock_wait_seconds", "migrations_applied", "migrations_pending",
			"migrations_pending_phase", "schema_version"}},
		{"skipped", func(r Run) Run {
			r.Outcome, r.LockTried, r.LockConflict, r.LockAttempts = "skipped", true, true, 1
			return r
		}, []string{"last_lock_conflict_timestamp_seconds", "lock_acquired", "lock_attempts", "lock_wait_seconds"}},
		{"failed to connect", func(r Run) Run { r.Outcome, r.ErrorKind = "failed", "connect"; return r },
			[]string{"last_failure", "last_failure_timestamp_seconds"}},
		{"tenants, one failed", func(r Run) Run {
			r.Outcome, r.ErrorKind, r.ApplyTried, r.Applied = "failed", "migration", true, 40
			r.Tenants = &Tenants{Total: 10, Pending: 1, Failed: 1, Applied: 9}
			return r
		}, []string{"last_failure", "last_failure_timestamp_seconds", "lock_timeout_retries", "migrations_applied",
			"tenants_applied", "tenants_failed", "tenants_pending", "tenants_total"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := names(t, tt.run(base))
			want := append(slices.Clone(always), tt.want...)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("families\n got %v\nwant %v", got, want)
			}
		})
	}
}

func TestPushFailuresAreBounded(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
	}{
		{"hangs", func(w http.ResponseWriter, r *http.Request) { io.Copy(io.Discard, r.Body); <-r.Context().Done() }}, // until the client gives up
		{"500", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "boom", http.StatusInternalServerError) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.handler)
			defer srv.Close()
			start := time.Now()
			err := Pusher{URL: srv.URL, Job: "j", Timeout: 300 * time.Millisecond}.Push(context.Background(),
				Run{Outcome: "applied", End: time.Now()}.Families())
			if err == nil {
				t.Fatal("push succeeded")
			}
			if d := time.Since(start); d > 300*time.Millisecond+time.Second {
				t.Fatalf("push gave up after %v", d)
			}
		})
	}
}

func TestPushRequest(t *testing.T) {
	type req struct {
		method, path, user, pass, body string
	}
	got := make(chan req, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, _ := r.BasicAuth()
		b, _ := io.ReadAll(r.Body)
		got <- req{r.Method, r.URL.Path, u, p, string(b)}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	err := Pusher{URL: srv.URL, Job: "shop-migrations", Grouping: map[string]string{"env": "prod", "app": "shop"},
		Username: "u", Password: "p", Timeout: time.Second}.Push(context.Background(), Run{Outcome: "skipped", End: time.Now()}.Families())
	if err != nil {
		t.Fatal(err)
	}
	r := <-got
	// The grouping labels follow the job in the path, sorted by name.
	if r.method != http.MethodPost || r.path != "/metrics/job/shop-migrations/app/shop/env/prod" || r.user != "u" || r.pass != "p" {
		t.Fatalf("request %+v: want POST (add) to the job's group with basic auth", r)
	}
	if !strings.Contains(r.body, "# TYPE lockmigrate_run_outcome gauge\n") || !strings.Contains(r.body, `lockmigrate_run_outcome{outcome="skipped"} 1`+"\n") {
		t.Fatalf("body is not the run's text exposition:\n%s", r.body)
	}
}

func TestWriteText(t *testing.T) {
	fams := []Family{
		{Name: "x_info", Help: "Help with \\ and\na newline.", Labels: []string{"version", "k"},
			Samples: []Sample{{LabelValues: []string{`v"1"` + "\n\\", ""}, Value: 1}}},
		{Name: "x_seconds", Help: "Plain.", Samples: []Sample{{Value: 0.25}}},
		{Name: "x_big", Help: "Big.", Samples: []Sample{{Value: 1764101234.5}, {Value: math.Inf(1)}, {Value: 20260101120000}}},
	}
	var b strings.Builder
	if err := WriteText(&b, fams); err != nil {
		t.Fatal(err)
	}
	want := `# HELP x_info Help with \\ and\na newline.
# TYPE x_info gauge
x_info{version="v\"1\"\n\\",k=""} 1
# HELP x_seconds Plain.
# TYPE x_seconds gauge
x_seconds 0.25
# HELP x_big Big.
# TYPE x_big gauge
x_big 1.7641012345e+09
x_big +Inf
x_big 2.026010112e+13
`
	if b.String() != want {
		t.Fatalf("WriteText:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestGroupURL(t *testing.T) {
	tests := []struct {
		url, job string
		grouping map[string]string
		want     string
	}{
		{"http://gw:9091", "lockmigrate", nil, "http://gw:9091/metrics/job/lockmigrate"},
		{"http://gw:9091/", "lockmigrate", map[string]string{"env": "prod", "app": "shop"},
			"http://gw:9091/metrics/job/lockmigrate/app/shop/env/prod"},
		{"https://gw/prefix", "a/b", map[string]string{"path": "/var/x", "empty": "", "sp": "a b?"},
			"https://gw/prefix/metrics/job@base64/YS9i/empty@base64/=/path@base64/L3Zhci94/sp/a%20b%3F"},
	}
	for _, tt := range tests {
		got, err := Pusher{URL: tt.url, Job: tt.job, Grouping: tt.grouping}.groupURL()
		if err != nil || got != tt.want {
			t.Errorf("groupURL(%s, %s, %v) = %q, %v; want %q", tt.url, tt.job, tt.grouping, got, err, tt.want)
		}
	}
	for _, bad := range []Pusher{{URL: "gw:9091", Job: "j"}, {URL: "http://gw", Job: ""}} {
		if _, err := bad.groupURL(); err == nil {
			t.Errorf("groupURL(%+v) accepted", bad)
		}
	}
	err := Pusher{URL: "http://127.0.0.1:1", Job: "j", Grouping: map[string]string{"outcome": "x"}}.Push(context.Background(), Run{Outcome: "applied"}.Families())
	if err == nil || !strings.Contains(err.Error(), `grouping label "outcome" is also a label of lockmigrate_run_outcome`) {
		t.Errorf("push with a clashing grouping label: %v", err)
	}
}

// TestRealGateway: the text written by hand is accepted by a real
// Pushgateway, which decodes the grouping key (base64 included) and the
// escaped label values back to what was pushed.
func TestRealGateway(t *testing.T) {
	g := pushtest.Start(t, false)
	version := `v"1` + "\\x"
	now := time.Now()
	run := Run{Version: version, Outcome: "applied", Start: now.Add(-time.Second), End: now,
		LockTried: true, LockAcquired: true, LockAttempts: 1, SchemaKnown: true, SchemaVersion: 20260101120000, ApplyTried: true, Applied: 3}
	p := Pusher{URL: g.URL, Job: "shop/migrations", Grouping: map[string]string{"env": "eu/west", "team": "payments"}, Timeout: 5 * time.Second}
	if err := p.Push(context.Background(), run.Families()); err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, labels := range g.Groups(t) {
		if labels["job"] == "shop/migrations" && labels["env"] == "eu/west" && labels["team"] == "payments" {
			found = true
		}
	}
	if !found {
		t.Fatalf("group not found: %v", g.Groups(t))
	}
	m := g.Metrics(t)
	for _, want := range []string{
		`lockmigrate_build_info{env="eu/west",instance="",job="shop/migrations",team="payments",version="v\"1\\x"} 1`,
		`lockmigrate_schema_version{env="eu/west",instance="",job="shop/migrations",team="payments"} 2.026010112e+13`,
		`lockmigrate_migrations_applied{env="eu/west",instance="",job="shop/migrations",team="payments"} 3`,
		`lockmigrate_run_outcome{env="eu/west",instance="",job="shop/migrations",outcome="applied",team="payments"} 1`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("gateway /metrics lacks %s", want)
		}
	}
	if t.Failed() {
		t.Logf("gateway /metrics:\n%s", m)
	}
}
