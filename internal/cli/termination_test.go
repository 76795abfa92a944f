package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/lockmigrate/lockmigrate/internal/bintest"
	"github.com/lockmigrate/lockmigrate/runner"
)

func readTermination(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > maxTermination || strings.Count(string(b), "\n") > 0 {
		t.Fatalf("termination message is %d bytes or several lines: %q", len(b), b)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("termination message is not JSON: %q", b)
	}
	return m
}

func TestTerminationMessage(t *testing.T) {
	ctx := context.Background()
	url, password := secretDB(t)
	term := filepath.Join(t.TempDir(), "termination-log")

	r := runIn(t, ctx, bintest.With(baseEnv(url), "LOCKMIGRATE_TERMINATION_LOG", term))
	m := readTermination(t, term)
	if r.Code != 0 || m["outcome"] != "applied" || m["applied_count"] != 5.0 || m["schema_version"] != 5.0 || m["exit_code"] != 0.0 {
		t.Fatalf("after applied: %v", m)
	}

	// A failing migration whose error message quotes the password: the
	// message must name the file and never contain the password.
	dir := bintest.WriteDir(t, map[string]string{"1_leak.sql": "SELECT '" + password + "'::int;"})
	r = runIn(t, ctx, bintest.With(baseEnv(url), "LOCKMIGRATE_TERMINATION_LOG", term, "LOCKMIGRATE_DIR", dir,
		"LOCKMIGRATE_TABLE", "other_history"))
	m = readTermination(t, term)
	b, _ := os.ReadFile(term)
	if r.Code != exitMigration || m["outcome"] != "failed" || m["error_kind"] != "migration" ||
		!strings.Contains(m["error"].(string), "1_leak.sql") || !strings.Contains(m["error"].(string), "xxxxx") {
		t.Fatalf("after failure: %v\n%s", m, r.Stderr)
	}
	bintest.CheckNoSecrets(t, string(b))

	// Configuration errors are summarised too.
	r = runIn(t, ctx, map[string]string{"LOCKMIGRATE_TERMINATION_LOG": term, "LOCKMIGRATE_ON_LOCKED": "never"})
	if m := readTermination(t, term); r.Code != exitUsage || m["exit_code"] != 2.0 || !strings.Contains(m["error"].(string), "LOCKMIGRATE_ON_LOCKED") {
		t.Fatalf("after config error: %v", m)
	}

	// The default path is never created outside Kubernetes; an unwritable
	// path is skipped silently.
	r = runIn(t, ctx, bintest.With(baseEnv(url), "LOCKMIGRATE_TERMINATION_LOG", "/nonexistent-dir/termination-log"))
	if r.Code != 0 {
		t.Fatalf("exit %d with an unwritable termination log", r.Code)
	}
}

func TestTerminationFitsKubernetesLimit(t *testing.T) {
	res := &runner.Result{Outcome: runner.OutcomeApplied}
	for v := range int64(2000) {
		res.Applied = append(res.Applied, runner.AppliedMigration{Version: 20260101000000 + v})
	}
	long := strings.Repeat("é", 5000)
	start := time.Now()
	for _, tc := range []struct {
		name string
		err  error
	}{{"many applied", nil}, {"long error", &runner.MigrationError{File: "1_x.sql", Err: os.ErrInvalid, Statement: long}}} {
		rep := report{outcome: "failed", code: 1, err: tc.err, start: start, end: start.Add(time.Second), single: res}
		b := rep.termination(uuid.NewString(), testVersion).encode()
		var m map[string]any
		if len(b) > maxTermination || json.Unmarshal(b, &m) != nil {
			t.Fatalf("%s: %d bytes, valid JSON %v", tc.name, len(b), json.Valid(b))
		}
		if m["applied_count"] != 2000.0 {
			t.Fatalf("%s: applied_count = %v", tc.name, m["applied_count"])
		}
	}
}

// TestTerminationTenantsFit: thousands of failed tenants and a long error
// still fit in 4 KiB; the names kept plus failed_omitted account for all.
func TestTerminationTenantsFit(t *testing.T) {
	tt := &tenantsTermination{Total: 5000, FailedCount: 3000}
	for i := range 3000 {
		tt.Failed = append(tt.Failed, failedTenant{Tenant: fmt.Sprintf("tenant_with_a_longish_name_%05d", i), Kind: "migration"})
	}
	start := time.Now()
	rep := report{outcome: "failed", code: 1, err: errors.New(strings.Repeat("é", 3000)), start: start, end: start.Add(time.Second)}
	term := rep.termination(uuid.NewString(), testVersion)
	term.Tenants = tt
	b := term.encode()
	var m struct {
		Error   string             `json:"error"`
		Tenants tenantsTermination `json:"tenants"`
	}
	if len(b) > maxTermination || json.Unmarshal(b, &m) != nil {
		t.Fatalf("%d bytes, valid JSON %v", len(b), json.Valid(b))
	}
	kept := len(m.Tenants.Failed)
	if kept == 0 || kept+m.Tenants.FailedOmitted != 3000 || m.Tenants.FailedCount != 3000 || len(m.Error) < 100 {
		t.Fatalf("kept %d, omitted %d, error %d bytes", kept, m.Tenants.FailedOmitted, len(m.Error))
	}
	if len(b) < maxTermination-200 {
		t.Fatalf("only %d bytes used: cut more than needed", len(b))
	}
	t.Logf("3000 failed tenants: %d named in %d bytes, %d omitted", kept, len(b), m.Tenants.FailedOmitted)
}

// TestTerminationPlainMatchesMarshal holds appendPlain to json.Marshal on
// summaries with and without the optional fields, and checks that it
// leaves to json.Marshal what needs escaping or holds tenants.
func TestTerminationPlainMatchesMarshal(t *testing.T) {
	plain := []termination{
		{},
		{Outcome: "up_to_date", SchemaVersion: 200, DurationMS: 8, RunID: "429b863d-dfe2-4af3-848e-743242a87be3", Version: "dev"},
		{Outcome: "applied", Applied: []int64{1, 2, 9223372036854775807}, AppliedCount: 3, Pending: 0, LockWaitMS: 12, Version: "v1.2.3+abc"},
		{Outcome: "failed", ExitCode: 5, ErrorKind: "validation", Error: "1_a.sql: checksum mismatch", DurationMS: -1, Version: "v"},
		{Outcome: "skipped", ExitCode: -3, Applied: []int64{-5}, Pending: 7, RunID: "x y ~ {}[]:,"},
	}
	for _, tr := range plain {
		got, ok := tr.appendPlain(nil)
		want, _ := json.Marshal(tr)
		if !ok || string(got) != string(want) {
			t.Errorf("appendPlain = %s, %v; json.Marshal %s", got, ok, want)
		}
	}
	for _, tr := range []termination{
		{Outcome: "failed", Error: `file "1_a.sql"`},
		{Outcome: "failed", Error: `back\slash`},
		{Outcome: "failed", Error: "line\nbreak"},
		{Outcome: "failed", Error: "a <b> & c"},
		{Outcome: "failed", Error: "caf\u00e9"},
		{Outcome: "failed", Error: "del\x7f"},
		{Outcome: "applied", Version: "\u2028"},
		{Outcome: "applied", Tenants: &tenantsTermination{Total: 1}},
	} {
		if got, ok := tr.appendPlain(nil); ok {
			t.Errorf("appendPlain(%+v) = %s: should be left to json.Marshal", tr, got)
		}
		want, _ := json.Marshal(tr)
		if got := tr.encode(); string(got) != string(want) {
			t.Errorf("encode = %s, json.Marshal %s", got, want)
		}
	}
}
