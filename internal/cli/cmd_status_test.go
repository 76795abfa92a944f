package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/lockmigrate/lockmigrate/internal/bintest"
	"github.com/lockmigrate/lockmigrate/internal/pgtest"
	"github.com/lockmigrate/lockmigrate/lock"
)

func TestStatusAndValidate(t *testing.T) {
	ctx := context.Background()
	url, _ := secretDB(t)
	r := runIn(t, ctx, baseEnv(url), "status", "--json")
	var st map[string]any
	if err := json.Unmarshal([]byte(r.Stdout), &st); r.Code != 0 || err != nil {
		t.Fatalf("status --json: exit %d, %v\n%s%s", r.Code, err, r.Stdout, r.Stderr)
	}
	if st["pending"] != 5.0 || st["history_exists"] != false || st["lock_holder"] != nil {
		t.Fatalf("status before: %v", st)
	}
	if r := runIn(t, ctx, baseEnv(url)); r.Code != 0 {
		t.Fatal(r.Stderr)
	}
	holder := pgtest.Connect(t, url)
	if ok, _ := lock.New(holder, lock.DefaultKey("public", "lockmigrate_history"), nil).TryLock(ctx); !ok {
		t.Fatal("no lock")
	}
	r = runIn(t, ctx, baseEnv(url), "status")
	for _, w := range []string{"schema version: 5", "applied: 5", "pending: 0",
		fmt.Sprintf("lock: held by pid %d", holder.PgConn().PID()), "backfill_display_name", "test-pod"} {
		if !strings.Contains(r.Stdout, w) {
			t.Errorf("status lacks %q:\n%s", w, r.Stdout)
		}
	}
	if r := runIn(t, ctx, baseEnv(url), "validate"); r.Code != 0 || !strings.Contains(r.Stdout, "against the database") {
		t.Fatalf("validate: %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
	if r := runIn(t, ctx, nil, "validate"); r.Code != 0 || !strings.Contains(r.Stdout, "ok: 5 migrations valid (offline)") {
		t.Fatalf("offline validate: %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
	// A transactional file that commits or rolls back on its own: offline
	// a warning naming it (it may be an adopted file a run never executes),
	// against the database a refusal while it is pending, and nothing once
	// it is recorded as applied (baseline).
	dir := bintest.WriteDir(t, map[string]string{"1_a.sql": "BEGIN;\nCREATE TABLE a (id int);\nCOMMIT;\n", "2_b.sql": "SELECT 1;"})
	if r := runIn(t, ctx, map[string]string{"LOCKMIGRATE_DIR": dir}, "validate"); r.Code != exitOK ||
		!strings.Contains(r.Stderr, "transaction_control") || !strings.Contains(r.Stderr, "1_a.sql") {
		t.Fatalf("offline validate of a file with BEGIN/COMMIT: %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
	txURL := pgtest.Shared().NewDB(t)
	txEnv := bintest.With(baseEnv(txURL), "LOCKMIGRATE_DIR", dir)
	if r := runIn(t, ctx, txEnv, "validate"); r.Code != exitValidation || !strings.Contains(r.Stderr, "transaction_control") {
		t.Fatalf("validate of a pending file with BEGIN/COMMIT: %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
	if r := runIn(t, ctx, bintest.With(txEnv, "LOCKMIGRATE_BASELINE_VERSION", "1")); r.Code != exitOK {
		t.Fatalf("migrate with the file baselined: %d %s", r.Code, r.Stderr)
	}
	if r := runIn(t, ctx, txEnv, "validate"); r.Code != exitOK {
		t.Fatalf("validate with the file applied as baseline: %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
}
