package metrics

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

func names(t *testing.T, r Run) []string {
	t.Helper()
	mfs, err := r.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		out = append(out, strings.TrimPrefix(mf.GetName(), "lockmigrate_"))
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
			"lock_wait_seconds", "migrations_applied", "migrations_pending", "schema_version"}},
		{"up_to_date (fast path)", func(r Run) Run { r.Outcome, r.SchemaKnown = "up_to_date", true; return r },
			[]string{"last_success_timestamp_seconds", "migrations_pending", "schema_version"}},
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
				Run{Outcome: "applied", End: time.Now()}.Registry())
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
		Username: "u", Password: "p", Timeout: time.Second}.Push(context.Background(), Run{Outcome: "skipped", End: time.Now()}.Registry())
	if err != nil {
		t.Fatal(err)
	}
	r := <-got
	// The grouping labels follow the job in the path, in no fixed order.
	rest, ok := strings.CutPrefix(r.path, "/metrics/job/shop-migrations/")
	pairs := strings.Split(rest, "/")
	labels := map[string]string{}
	for i := 0; i+1 < len(pairs); i += 2 {
		labels[pairs[i]] = pairs[i+1]
	}
	if r.method != http.MethodPost || !ok || len(pairs) != 4 || labels["app"] != "shop" || labels["env"] != "prod" || r.user != "u" || r.pass != "p" {
		t.Fatalf("request %+v: want POST (add) to the job's group with basic auth", r)
	}
}
