package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/lockmigrate/lockmigrate/internal/bintest"
	"github.com/lockmigrate/lockmigrate/internal/pgtest"
)

// phaseFiles: release 1 adds email_new and, after its rollout, drops email
// (3, contract); release 2's expand file (4) comes after it. Every file
// records itself in audit, so running twice would show.
func phaseFiles() map[string]string {
	audit := func(v int) string { return fmt.Sprintf("\nINSERT INTO audit VALUES (%d);\n", v) }
	return map[string]string{
		"1_users.sql":     "CREATE TABLE audit (version int);\nCREATE TABLE users (id int PRIMARY KEY, email text);" + audit(1),
		"2_email_new.sql": "ALTER TABLE users ADD COLUMN email_new text;" + audit(2),
		"3_drop_email.sql": "-- lockmigrate:phase contract\nALTER TABLE users DROP COLUMN email;\n" +
			"ALTER TABLE users RENAME COLUMN email_new TO email;" + audit(3),
		"4_orders.sql": "CREATE TABLE orders (id int);" + audit(4),
	}
}

// replicas releases n processes of the binary at one barrier, half of them
// in wait mode, and returns their outcomes; every one must exit 0.
func replicas(t *testing.T, n int, env map[string]string) map[string]int {
	t.Helper()
	procs := make([]*gatedProc, n)
	for i := range procs {
		e := bintest.With(env, "POD_NAME", fmt.Sprintf("replica-%d", i))
		if i%2 == 1 {
			e = bintest.With(e, "LOCKMIGRATE_ON_LOCKED", "wait", "LOCKMIGRATE_WAIT_TIMEOUT", "1m")
		}
		procs[i] = startGated(t, e)
	}
	outcomes := releaseOutcomes(t, procs)
	t.Logf("outcomes of %d processes (%s): %v", n, env["LOCKMIGRATE_PHASE"], outcomes)
	if outcomes["applied"] != 1 {
		t.Fatalf("outcomes %v: want exactly one applied", outcomes)
	}
	return outcomes
}

// audited returns the versions in audit, in the order they ran.
func audited(t *testing.T, url string) string {
	t.Helper()
	var s string
	if err := pgtest.Connect(t, url).QueryRow(context.Background(),
		`SELECT coalesce(string_agg(version::text, ',' ORDER BY ctid), '') FROM audit`).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestPhasesProcesses: 8 replicas in expand mode apply the expand files
// exactly once (release 2's too) and none of the contract file; a replica
// started later is up to date without touching the lock, which another
// session holds; 8 contract runs then apply the contract file exactly once.
// status and plan show the pending work per phase.
func TestPhasesProcesses(t *testing.T) {
	ctx := context.Background()
	url, _ := secretDB(t)
	env := bintest.With(baseEnv(url), "LOCKMIGRATE_DIR", bintest.WriteDir(t, phaseFiles()))
	expand := bintest.With(env, "LOCKMIGRATE_PHASE", "expand")
	contract := bintest.With(env, "LOCKMIGRATE_PHASE", "contract")

	replicas(t, 8, expand)
	if got := audited(t, url); got != "1,2,4" {
		t.Fatalf("audit after the expand runs: %s", got)
	}
	holder := pgtest.Connect(t, url)
	pgtest.MustLock(t, holder, defaultKey)
	r := runIn(t, ctx, expand)
	ev := r.Finished(t)
	if r.Code != 0 || ev["outcome"] != "up_to_date" || ev["lock_attempts"] != 0.0 || ev["pending"] != 0.0 || ev["pending_contract"] != 1.0 {
		t.Fatalf("expand run with the lock held elsewhere: exit %d %v", r.Code, ev)
	}
	// Phase all (the default) still sees the contract file as pending.
	if r := runIn(t, ctx, env); r.Code != 0 || r.Finished(t)["outcome"] != "skipped" {
		t.Fatalf("run in phase all: exit %d %v", r.Code, r.Finished(t))
	}
	r = runIn(t, ctx, expand, "status")
	for _, want := range []string{"pending: 0", "phase: expand pending expand: 0 pending contract: 1",
		"3 drop_email (contract) pending"} {
		if !strings.Contains(squash(r.Stdout), want) {
			t.Errorf("status lacks %q:\n%s", want, r.Stdout)
		}
	}
	r = runIn(t, ctx, expand, "plan")
	for _, want := range []string{"phase expand", "nothing would run: up to date",
		"left to the contract phase (the post-rollout Job, LOCKMIGRATE_PHASE=contract): 1 migration(s)", "3 drop_email transaction - contract"} {
		if !strings.Contains(squash(r.Stdout), want) {
			t.Errorf("plan lacks %q:\n%s", want, r.Stdout)
		}
	}
	var rep struct {
		Schemas []struct {
			Phase   string `json:"phase"`
			Pending []struct {
				Version int64  `json:"version"`
				Phase   string `json:"phase"`
			} `json:"pending"`
		} `json:"schemas"`
	}
	r = runIn(t, ctx, contract, "plan", "--json")
	if err := json.Unmarshal([]byte(r.Stdout), &rep); err != nil || r.Code != 0 || rep.Schemas[0].Phase != "contract" ||
		len(rep.Schemas[0].Pending) != 1 || rep.Schemas[0].Pending[0].Phase != "contract" {
		t.Fatalf("plan --json in contract phase: exit %d %v %+v\n%s", r.Code, err, rep, r.Stdout)
	}
	holder.Close(ctx)

	replicas(t, 8, contract)
	if got := audited(t, url); got != "1,2,4,3" {
		t.Fatalf("audit after the contract runs: %s", got)
	}
	for _, e := range []map[string]string{expand, contract, env} {
		if r := runIn(t, ctx, e); r.Code != 0 || r.Finished(t)["outcome"] != "up_to_date" {
			t.Fatalf("%s run at the end: exit %d %v", e["LOCKMIGRATE_PHASE"], r.Code, r.Finished(t))
		}
	}
	pgtest.AssertNoAdvisoryLocks(t, pgtest.Connect(t, url))
}

// TestContractBeforeExpand: a contract run on a database the expand phase
// has not migrated exits 5, naming the expand files it waits for, and
// creates nothing; a bad phase is exit 2.
func TestContractBeforeExpand(t *testing.T) {
	ctx := context.Background()
	url, _ := secretDB(t)
	env := bintest.With(baseEnv(url), "LOCKMIGRATE_DIR", bintest.WriteDir(t, phaseFiles()))
	r := runIn(t, ctx, bintest.With(env, "LOCKMIGRATE_PHASE", "contract"))
	ev := r.Finished(t)
	if r.Code != exitValidation || ev["error_kind"] != "validation" || ev["lock_attempts"] != 0.0 {
		t.Fatalf("exit %d %v", r.Code, ev)
	}
	for _, want := range []string{"contract_waiting", "3_drop_email.sql", "1_users.sql, 2_email_new.sql", "LOCKMIGRATE_PHASE=expand"} {
		if !strings.Contains(ev["error"].(string), want) {
			t.Errorf("error lacks %q: %s", want, ev["error"])
		}
	}
	if n := pgtest.QueryInt(t, pgtest.Connect(t, url), `SELECT count(*) FROM pg_tables WHERE schemaname = 'public'`); n != 0 {
		t.Fatalf("%d tables created", n)
	}
	if r := runIn(t, ctx, bintest.With(env, "LOCKMIGRATE_PHASE", "later")); r.Code != exitUsage || !strings.Contains(r.Stderr, "LOCKMIGRATE_PHASE") {
		t.Fatalf("bad phase: exit %d\n%s", r.Code, r.Stderr)
	}
	if r := runIn(t, ctx, bintest.With(env, "LOCKMIGRATE_CONTRACT_WAIT_FOR", "deployment/web")); r.Code != exitUsage ||
		!strings.Contains(r.Stderr, "unset unless LOCKMIGRATE_PHASE=contract") {
		t.Fatalf("wait-for outside the contract phase: exit %d\n%s", r.Code, r.Stderr)
	}
}
