package config

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/lockmigrate/lockmigrate/runner"
)

func TestDefaults(t *testing.T) {
	cfg, err := Load(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	want := Config{OnLocked: "skip", WaitTimeout: 10 * time.Minute, ConnectTimeout: time.Minute,
		Schema: "public", Table: "lockmigrate_history", Format: "auto", Transaction: "each", LockRetries: 3,
		TCPKeepalivesIdle: 10 * time.Second, TCPKeepalivesInterval: 5 * time.Second, TCPKeepalivesCount: 3, TCPUserTimeout: 20 * time.Second,
		TerminationLog: "/dev/termination-log",
		PushgatewayJob: "lockmigrate", PushgatewayTimeout: 5 * time.Second, Grouping: map[string]string{},
		LogFormat: "json", LogLevel: "info", TenantConcurrency: 4, Shards: 1, Libpq: map[string]string{},
		Lint: "warn", LintSmallTableRows: 10000, LintPGVersion: 14,
		Phase: "all", ContractWaitTimeout: 5 * time.Minute, ServiceAccountDir: "/var/run/secrets/kubernetes.io/serviceaccount",
		BackfillProgress: 10 * time.Second}
	if !reflect.DeepEqual(*cfg, want) {
		t.Fatalf("defaults = %+v, want %+v", *cfg, want)
	}
}

// TestLibraryDefaultsInHelp: the defaults the libraries own are applied and
// shown by --help as if they were envDefault tags.
func TestLibraryDefaultsInHelp(t *testing.T) {
	var b strings.Builder
	WriteHelp(&b)
	for _, want := range []string{
		"LOCKMIGRATE_WAIT_TIMEOUT               10m ",
		"LOCKMIGRATE_TENANT_CONCURRENCY         4 ",
		"LOCKMIGRATE_TERMINATION_LOG            /dev/termination-log ",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, b.String())
		}
	}
}

// TestLibpqCaptured: Load keeps the libpq variables, so nothing reads the
// environment after it.
func TestLibpqCaptured(t *testing.T) {
	env := map[string]string{"PGHOST": "db.example", "PGUSER": "app", "PGNOTLIBPQ": "x"}
	cfg, err := Load(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"PGHOST": "db.example", "PGUSER": "app"}; !reflect.DeepEqual(cfg.Libpq, want) {
		t.Fatalf("Libpq = %v, want %v", cfg.Libpq, want)
	}
	if !cfg.DatabaseConfigured() || cfg.Lookup("PGHOST") != "db.example" {
		t.Fatalf("DatabaseConfigured %v, Lookup(PGHOST) %q", cfg.DatabaseConfigured(), cfg.Lookup("PGHOST"))
	}
	empty, _ := Load(func(string) string { return "" })
	if empty.DatabaseConfigured() {
		t.Fatal("an empty environment counts as a configured database")
	}
}

// TestFormat: LOCKMIGRATE_FORMAT accepts exactly the runner's formats.
func TestFormat(t *testing.T) {
	f, _ := reflect.TypeOf(Config{}).FieldByName("Format")
	var want []string
	for _, v := range runner.Formats {
		want = append(want, string(v))
	}
	if got := strings.Split(f.Tag.Get("oneof"), ","); !reflect.DeepEqual(got, want) {
		t.Fatalf("oneof %v, want runner.Formats %v", got, want)
	}
	for _, v := range want {
		cfg, err := Load(func(k string) string { return map[string]string{"LOCKMIGRATE_FORMAT": v}[k] })
		if err != nil || cfg.Format != v {
			t.Fatalf("LOCKMIGRATE_FORMAT=%s: %+v, %v", v, cfg, err)
		}
	}
	_, err := Load(func(k string) string { return map[string]string{"LOCKMIGRATE_FORMAT": "flyway"}[k] })
	if err == nil || !strings.Contains(err.Error(), `invalid LOCKMIGRATE_FORMAT "flyway"`) ||
		!strings.Contains(err.Error(), "auto, lockmigrate, goose, dbmate, tern, golang-migrate") {
		t.Fatalf("LOCKMIGRATE_FORMAT=flyway: %v", err)
	}
}

func TestAllErrorsAtOnce(t *testing.T) {
	env := map[string]string{"LOCKMIGRATE_ON_LOCKED": "never", "LOCKMIGRATE_WAIT_TIMEOUT": "soon", "LOCKMIGRATE_LOG_LEVEL": "x"}
	_, err := Load(func(k string) string { return env[k] })
	if err == nil {
		t.Fatal("no error")
	}
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("%v is not a *config.Error", err)
	}
	if n := len(err.(interface{ Unwrap() []error }).Unwrap()); n != 3 {
		t.Fatalf("%d errors, want 3 (one per variable): %v", n, err)
	}
	for _, v := range []string{"LOCKMIGRATE_ON_LOCKED", "LOCKMIGRATE_LOG_LEVEL", `LOCKMIGRATE_WAIT_TIMEOUT "soon"`} {
		if !strings.Contains(err.Error(), v) {
			t.Errorf("error %q does not name %s", err, v)
		}
	}
}

func TestGrouping(t *testing.T) {
	tests := []struct {
		in   string
		want map[string]string
		ok   bool
	}{
		{"", map[string]string{}, true},
		{"app=shop, env=prod", map[string]string{"app": "shop", "env": "prod"}, true},
		{"instance=pod-1", nil, false},
		{"job=x", nil, false},
		{"app", nil, false},
		{"1app=x", nil, false},
		{"a=1,a=2", nil, false},
		// client_golang's push would send these as "eu+west".
		{"env=eu west", nil, false},
		{"env= eu", nil, false},
		{"env=eu\twest", nil, false},
		{"env=eu-west,app=a/b", map[string]string{"env": "eu-west", "app": "a/b"}, true},
	}
	for _, tt := range tests {
		got, err := parseGrouping(tt.in)
		if (err == nil) != tt.ok || (tt.ok && !reflect.DeepEqual(got, tt.want)) {
			t.Errorf("parseGrouping(%q) = %v, %v", tt.in, got, err)
		}
	}
}

// TestJobWithoutSpaces: the job name reaches the Pushgateway through the
// same escaping as the grouping values.
func TestJobWithoutSpaces(t *testing.T) {
	for job, ok := range map[string]bool{"lockmigrate": true, "shop/migrations": true, "my job": false, "": false} {
		env := map[string]string{"LOCKMIGRATE_PUSHGATEWAY_JOB": job}
		if job == "" {
			env["LOCKMIGRATE_PUSHGATEWAY_JOB"] = " "
		}
		_, err := Load(func(k string) string { return env[k] })
		if (err == nil) != ok || (!ok && !strings.Contains(err.Error(), "LOCKMIGRATE_PUSHGATEWAY_JOB")) {
			t.Errorf("job %q: %v", job, err)
		}
	}
}

func TestBaselineVersion(t *testing.T) {
	tests := []struct {
		value string
		want  int64
		err   string // substring of the error, "" for none
	}{
		{"", 0, ""},
		{"0", 0, ""},
		{"20260101120000", 20260101120000, ""},
		{"-1", 0, `invalid LOCKMIGRATE_BASELINE_VERSION "-1": accepted: a migration version, or 0 (off)`},
		{"three", 0, `invalid LOCKMIGRATE_BASELINE_VERSION "three": accepted: a whole number`},
		{"9223372036854775808", 0, "LOCKMIGRATE_BASELINE_VERSION"},
	}
	for _, tt := range tests {
		cfg, err := Load(func(k string) string {
			if k == "LOCKMIGRATE_BASELINE_VERSION" {
				return tt.value
			}
			return ""
		})
		switch {
		case tt.err == "" && (err != nil || cfg.BaselineVersion != tt.want):
			t.Errorf("%q: got %v, %v; want %d", tt.value, cfg, err, tt.want)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%q: error %v, want one containing %q", tt.value, err, tt.err)
		}
	}
}

// TestTenantVariables: the multi-tenant variables are checked together,
// each invalid one named.
func TestTenantVariables(t *testing.T) {
	const q = "SELECT nspname FROM pg_namespace"
	tests := []struct {
		env       map[string]string
		bad       string // the variable named, "" when valid
		wantIndex int
	}{
		{map[string]string{"LOCKMIGRATE_TENANTS_QUERY": q}, "", 0},
		{map[string]string{"LOCKMIGRATE_TENANTS_QUERY": q, "LOCKMIGRATE_SHARDS": "4", "JOB_COMPLETION_INDEX": "3"}, "", 3},
		{map[string]string{"LOCKMIGRATE_TENANTS_QUERY": q, "JOB_COMPLETION_INDEX": "0"}, "", 0},
		{map[string]string{"JOB_COMPLETION_INDEX": "7"}, "", 0}, // not tenant mode: Kubernetes' variable, ignored
		{map[string]string{"LOCKMIGRATE_TENANTS_QUERY": q, "LOCKMIGRATE_SHARDS": "4", "JOB_COMPLETION_INDEX": "4"}, "JOB_COMPLETION_INDEX", 0},
		{map[string]string{"LOCKMIGRATE_TENANTS_QUERY": q, "LOCKMIGRATE_SHARDS": "4", "JOB_COMPLETION_INDEX": "-1"}, "JOB_COMPLETION_INDEX", 0},
		{map[string]string{"LOCKMIGRATE_TENANTS_QUERY": q, "LOCKMIGRATE_SHARDS": "4", "JOB_COMPLETION_INDEX": "x"}, "JOB_COMPLETION_INDEX", 0},
		{map[string]string{"LOCKMIGRATE_TENANTS_QUERY": q, "LOCKMIGRATE_SHARDS": "4"}, "JOB_COMPLETION_INDEX", 0},
		{map[string]string{"LOCKMIGRATE_TENANTS_QUERY": q, "LOCKMIGRATE_SHARDS": "4", "JOB_COMPLETION_INDEX": "1",
			"LOCKMIGRATE_PUSHGATEWAY_GROUPING": "env=prod,shard=x"}, "LOCKMIGRATE_PUSHGATEWAY_GROUPING", 1},
		{map[string]string{"LOCKMIGRATE_TENANTS_QUERY": q, "LOCKMIGRATE_PUSHGATEWAY_GROUPING": "shard=x"}, "", 0},
		{map[string]string{"LOCKMIGRATE_TENANTS_QUERY": q, "JOB_COMPLETION_INDEX": "1"}, "JOB_COMPLETION_INDEX", 0},
		{map[string]string{"LOCKMIGRATE_SHARDS": "2", "JOB_COMPLETION_INDEX": "1"}, "LOCKMIGRATE_SHARDS", 0},
		{map[string]string{"LOCKMIGRATE_TENANTS_QUERY": q, "LOCKMIGRATE_SHARDS": "0"}, "LOCKMIGRATE_SHARDS", 0},
		{map[string]string{"LOCKMIGRATE_TENANTS_QUERY": q, "LOCKMIGRATE_TENANT_CONCURRENCY": "0"}, "LOCKMIGRATE_TENANT_CONCURRENCY", 0},
		{map[string]string{"LOCKMIGRATE_TENANTS_QUERY": q, "LOCKMIGRATE_TENANT_CONCURRENCY": "257"}, "LOCKMIGRATE_TENANT_CONCURRENCY", 0},
		{map[string]string{"LOCKMIGRATE_TENANTS_QUERY": q, "LOCKMIGRATE_TENANT_CONCURRENCY": "many"}, "LOCKMIGRATE_TENANT_CONCURRENCY", 0},
		{map[string]string{"LOCKMIGRATE_TENANTS_QUERY": q, "LOCKMIGRATE_TENANT_FAIL_FAST": "yes please"}, "LOCKMIGRATE_TENANT_FAIL_FAST", 0},
		{map[string]string{"LOCKMIGRATE_TENANTS_QUERY": q, "LOCKMIGRATE_LOCK_KEY": "42"}, "LOCKMIGRATE_LOCK_KEY", 0},
	}
	for _, tt := range tests {
		cfg, err := Load(func(k string) string { return tt.env[k] })
		var ce *Error
		switch {
		case tt.bad == "" && err != nil:
			t.Errorf("%v: %v", tt.env, err)
		case tt.bad == "" && cfg.ShardIndex != tt.wantIndex:
			t.Errorf("%v: shard index %d, want %d", tt.env, cfg.ShardIndex, tt.wantIndex)
		case tt.bad != "" && (!errors.As(err, &ce) || ce.Var != tt.bad):
			t.Errorf("%v: error %v, want one naming %s", tt.env, err, tt.bad)
		}
	}
}
