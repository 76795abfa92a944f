package metrics

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/lockmigrate/lockmigrate/internal/pushtest"
)

// pushRun is the one place the gateway tests call Push, so that they stay
// the same whatever Push takes.
func pushRun(ctx context.Context, p Pusher, r Run) error {
	return p.Push(ctx, r)
}

// names are the families of r, as a registry gathers them.
func names(t *testing.T, r Run) []string {
	t.Helper()
	reg := prometheus.NewRegistry()
	for _, c := range r.Families() {
		if err := reg.Register(c); err != nil {
			t.Fatal(err)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		if mf.GetType() != dto.MetricType_GAUGE {
			t.Errorf("%s is a %v, want a gauge", mf.GetName(), mf.GetType())
		}
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
		{"refused by lint (LOCKMIGRATE_LINT=error)", func(r Run) Run {
			r.Outcome, r.ErrorKind, r.LockTried, r.LockAcquired, r.LockAttempts, r.SchemaKnown = "failed", "validation", true, true, 1, true
			r.Lint = &LintFindings{Errors: 1, Warnings: 2}
			return r
		}, []string{"last_failure", "last_failure_timestamp_seconds", "lint_findings", "lock_acquired", "lock_attempts", "lock_held_seconds",
			"lock_wait_seconds", "migrations_pending", "migrations_pending_phase", "schema_version"}},
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

// closedURL is the URL of a loopback port nobody listens on.
func closedURL(t *testing.T, userinfo string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + userinfo + addr
}

func TestPushFailuresAreBounded(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc // nil: nothing listens
	}{
		{"hangs", func(w http.ResponseWriter, r *http.Request) { io.Copy(io.Discard, r.Body); <-r.Context().Done() }}, // until the client gives up
		{"500", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "boom", http.StatusInternalServerError) }},
		{"unreachable", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := closedURL(t, "")
			if tt.handler != nil {
				srv := httptest.NewServer(tt.handler)
				defer srv.Close()
				url = srv.URL
			}
			start := time.Now()
			err := Pusher{URL: url, Job: "j", Timeout: 300 * time.Millisecond}.Push(context.Background(),
				Run{Outcome: "applied", End: time.Now()})
			if err == nil {
				t.Fatal("push succeeded")
			}
			if d := time.Since(start); d > 300*time.Millisecond+time.Second {
				t.Fatalf("push gave up after %v", d)
			}
		})
	}
}

// TestPushTimeoutDefault: a Pusher without a timeout still gives up on a
// gateway that never answers, after the default 5 s, not the caller's
// context.
func TestPushTimeoutDefault(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // then the server notices the client leave
		<-r.Context().Done()
	}))
	defer srv.Close()
	start := time.Now()
	err := Pusher{URL: srv.URL, Job: "j"}.Push(context.Background(), Run{Outcome: "applied"})
	if d := time.Since(start); err == nil || d < 5*time.Second || d > 7*time.Second {
		t.Fatalf("push returned %v after %v, want an error after 5 s", err, d)
	}
	if !errors.Is(err, context.DeadlineExceeded) && !strings.Contains(err.Error(), "Timeout") {
		t.Fatalf("push error is not a timeout: %v", err)
	}
}

type request struct {
	method, path, user, pass string
	auth                     bool
	fams                     []*dto.MetricFamily
}

// recorder is a gateway that records the request and answers status.
func recorder(t *testing.T, status int) (*httptest.Server, <-chan request) {
	got := make(chan request, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		req := request{method: r.Method, path: r.URL.EscapedPath(), user: u, pass: p, auth: ok}
		dec := expfmt.NewDecoder(r.Body, expfmt.ResponseFormat(r.Header))
		for {
			var mf dto.MetricFamily
			if err := dec.Decode(&mf); err != nil {
				if err != io.EOF {
					t.Errorf("decode pushed body (%s): %v", r.Header.Get("Content-Type"), err)
				}
				break
			}
			req.fams = append(req.fams, &mf)
		}
		got <- req
		w.WriteHeader(status)
	}))
	t.Cleanup(srv.Close)
	return srv, got
}

// groupPath is the path of a push to job with the grouping labels, which
// client_golang writes in map order.
func groupPath(t *testing.T, path, prefix string) map[string]string {
	t.Helper()
	rest, ok := strings.CutPrefix(path, prefix)
	parts := strings.Split(rest, "/")
	if !ok || len(parts)%2 != 0 {
		t.Fatalf("path %s is not %s followed by name/value pairs", path, prefix)
	}
	out := map[string]string{}
	for i := 0; i < len(parts); i += 2 {
		out[parts[i]] = parts[i+1]
	}
	return out
}

func TestPushRequest(t *testing.T) {
	srv, got := recorder(t, http.StatusOK)
	err := Pusher{URL: srv.URL, Job: "shop-migrations", Grouping: map[string]string{"env": "prod", "app": "shop"},
		Username: "u", Password: "p", Timeout: time.Second}.Push(context.Background(), Run{Outcome: "skipped", End: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	r := <-got
	// The grouping labels follow the job in the path.
	group := groupPath(t, r.path, "/metrics/job/shop-migrations/")
	if r.method != http.MethodPost || len(group) != 2 || group["app"] != "shop" || group["env"] != "prod" || r.user != "u" || r.pass != "p" {
		t.Fatalf("request %+v: want POST (add) to the job's group with basic auth", r)
	}
	var outcome bool
	for _, mf := range r.fams {
		// A private registry: no go_ or process_ families.
		if !strings.HasPrefix(mf.GetName(), "lockmigrate_") {
			t.Errorf("pushed %s", mf.GetName())
		}
		if mf.GetName() != "lockmigrate_run_outcome" || mf.GetType() != dto.MetricType_GAUGE {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := m.GetLabel()
			if len(l) == 1 && l[0].GetName() == "outcome" && l[0].GetValue() == "skipped" && m.GetGauge().GetValue() == 1 {
				outcome = true
			}
		}
	}
	if !outcome {
		t.Fatalf("body is not the run's families: %v", r.fams)
	}
}

// TestGroupingEncoding: the job and grouping values reach the gateway as
// the Pushgateway's API defines: path-escaped, or base64url-encoded with the
// @base64 suffix when they hold a "/" or are empty.
func TestGroupingEncoding(t *testing.T) {
	srv, got := recorder(t, http.StatusOK)
	err := Pusher{URL: srv.URL + "/prefix/", Job: "a/b", Grouping: map[string]string{"path": "/var/x", "empty": "", "sp": "a?b"},
		Timeout: time.Second}.Push(context.Background(), Run{Outcome: "applied"})
	if err != nil {
		t.Fatal(err)
	}
	r := <-got
	group := groupPath(t, r.path, "/prefix/metrics/job@base64/YS9i/")
	want := map[string]string{"path@base64": "L3Zhci94", "empty@base64": "=", "sp": "a%3Fb"}
	if len(group) != len(want) {
		t.Fatalf("path %s: want the groups %v", r.path, want)
	}
	for k, v := range want {
		if group[k] != v {
			t.Errorf("path %s: %s is %q, want %q", r.path, k, group[k], v)
		}
	}
	for _, bad := range []Pusher{{URL: "gw:9091", Job: "j"}, {URL: "http://gw", Job: ""}, {URL: "::", Job: "j"}} {
		if err := bad.Push(context.Background(), Run{Outcome: "applied"}); err == nil || !strings.HasPrefix(err.Error(), "push metrics: ") {
			t.Errorf("push with %+v: %v", bad, err)
		}
	}
	err = Pusher{URL: closedURL(t, ""), Job: "j", Grouping: map[string]string{"outcome": "x"}}.Push(context.Background(), Run{Outcome: "applied"})
	if err == nil || !strings.Contains(err.Error(), `grouping label "outcome" is also a label of lockmigrate_run_outcome`) {
		t.Errorf("push with a clashing grouping label: %v", err)
	}
}

// TestPushCredentials: credentials in the URL are sent as basic auth unless
// the Pusher has its own, and no error ever shows the password.
func TestPushCredentials(t *testing.T) {
	const secret = "s3cret-pw"
	for _, tt := range []struct {
		name, userinfo, user, pass string
		status                     int
		wantUser, wantPass         string
	}{
		{"401, password in the URL", "bob:" + secret + "@", "", "", http.StatusUnauthorized, "bob", secret},
		{"401, the Pusher's password", "", "alice", secret, http.StatusUnauthorized, "alice", secret},
		{"500, the Pusher's wins", "bob:other@", "alice", secret, http.StatusInternalServerError, "alice", secret},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv, got := recorder(t, tt.status)
			url := strings.Replace(srv.URL, "://", "://"+tt.userinfo, 1)
			err := Pusher{URL: url, Job: "j", Username: tt.user, Password: tt.pass, Timeout: time.Second}.Push(context.Background(), Run{Outcome: "applied"})
			if r := <-got; !r.auth || r.user != tt.wantUser || r.pass != tt.wantPass {
				t.Errorf("basic auth %q:%q (%v), want %q:%q", r.user, r.pass, r.auth, tt.wantUser, tt.wantPass)
			}
			if err == nil || strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), strconv.Itoa(tt.status)) {
				t.Fatalf("push error %v: want the status and no password", err)
			}
		})
	}
	t.Run("unreachable, password in the URL", func(t *testing.T) {
		url := closedURL(t, "bob:"+secret+"@")
		err := Pusher{URL: url, Job: "j", Timeout: time.Second}.Push(context.Background(), Run{Outcome: "applied"})
		if err == nil || strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), "xxxxx@127.0.0.1") {
			t.Fatalf("push error %v: want the redacted URL", err)
		}
	})
	if err := (Pusher{URL: "http://bob:" + secret + "@gw:x:y", Job: "j"}).Push(context.Background(), Run{}); err == nil || strings.Contains(err.Error(), secret) {
		t.Fatalf("invalid URL: %v", err)
	}
}

// TestRealGateway: what client_golang sends is accepted by a real
// Pushgateway, which decodes the grouping key (base64 included) and the
// label values back to what was pushed.
func TestRealGateway(t *testing.T) {
	g := pushtest.Start(t, false)
	version := `v"1` + "\\x"
	now := time.Now()
	run := Run{Version: version, Outcome: "applied", Start: now.Add(-time.Second), End: now,
		LockTried: true, LockAcquired: true, LockAttempts: 1, SchemaKnown: true, SchemaVersion: 20260101120000, ApplyTried: true, Applied: 3}
	p := Pusher{URL: g.URL, Job: "shop/migrations", Grouping: map[string]string{"env": "eu/west", "team": "payments"}, Timeout: 5 * time.Second}
	if err := p.Push(context.Background(), run); err != nil {
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
	// The gateway shows its own go_ and process_ families, without a job.
	for _, line := range strings.Split(m, "\n") {
		if !strings.HasPrefix(line, "lockmigrate_") && !strings.HasPrefix(line, "push_") && strings.Contains(line, `job="shop/migrations"`) {
			t.Errorf("pushed a family other than lockmigrate_: %s", line)
		}
	}
	if t.Failed() {
		t.Logf("gateway /metrics:\n%s", m)
	}
}
