package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockmigrate/lockmigrate/internal/bintest"
	"github.com/lockmigrate/lockmigrate/internal/pgtest"
	"github.com/lockmigrate/lockmigrate/lock"
)

// The adopt tests migrate real databases with the real peer tools, installed
// at the versions the benchmark pins (scripts/peers.sh, through
// bintest.Peers): without network they are skipped, unless
// LOCKMIGRATE_REQUIRE_PEERS is set (CI), where they fail.
func peers(t *testing.T) map[string]string {
	t.Helper()
	return bintest.Peers(t)
}

// peer runs a peer tool and returns its combined output and error.
func peer(t *testing.T, bin string, args ...string) (string, error) {
	t.Helper()
	return bintest.RunPeer(t, bin, args...)
}

// body is migration i's SQL, the same for every tool: a plain CREATE TABLE
// (running it twice fails with "already exists") and a row in applied_log,
// which proves each migration ran exactly once, whoever ran it.
func body(i int) string {
	return fmt.Sprintf("CREATE TABLE t%d (id int);\nINSERT INTO applied_log (version) VALUES (%d);\n", i, i)
}

// toolSet writes versions of the set in the layout of tool ("lockmigrate",
// "goose", "migrate", "tern", "dbmate") and returns the directory. fail makes that
// version's SQL fail after its CREATE TABLE.
func toolSet(t *testing.T, tool string, versions []int, fail int) string {
	t.Helper()
	files := map[string]string{}
	for _, i := range versions {
		up, down := body(i), fmt.Sprintf("DROP TABLE t%d;\n", i)
		if i == fail {
			up += "SELECT * FROM no_such_table;\n"
		}
		switch tool {
		case "lockmigrate":
			files[fmt.Sprintf("%04d_t%d.sql", i, i)] = up
		case "goose":
			files[fmt.Sprintf("%05d_t%d.sql", i, i)] = "-- +goose Up\n" + up + "-- +goose Down\n" + down
		case "migrate":
			files[fmt.Sprintf("%d_t%d.up.sql", i, i)] = up
			files[fmt.Sprintf("%d_t%d.down.sql", i, i)] = down
		case "tern":
			files[fmt.Sprintf("%03d_t%d.sql", i, i)] = up + "---- create above / drop below ----\n" + down
		case "dbmate":
			files[fmt.Sprintf("%d_t%d.sql", i, i)] = "-- migrate:up\n" + up + "-- migrate:down\n" + down
		}
	}
	return bintest.WriteDir(t, files)
}

// migrateTo runs the real tool on db up to version k (all files of dir).
func migrateTo(t *testing.T, tool, url, dir string, k int) (string, error) {
	t.Helper()
	bins := peers(t)
	switch tool {
	case "goose":
		return peer(t, bins["goose"], "-dir", dir, "postgres", url, "up-to", fmt.Sprint(k))
	case "migrate":
		return peer(t, bins["migrate"], "-path", dir, "-database", url, "up", fmt.Sprint(k))
	case "tern":
		return peer(t, bins["tern"], "migrate", "--conn-string", url, "--migrations", dir, "--destination", fmt.Sprint(k))
	case "dbmate":
		// dbmate has no "up to version": it is given a directory of the
		// files up to k.
		return peer(t, bins["dbmate"], "--url", url, "--migrations-dir", upToDir(t, dir, k), "--no-dump-schema", "migrate")
	}
	t.Fatalf("unknown tool %s", tool)
	return "", nil
}

// upToDir copies the files of dir whose version is at most k into a new
// directory.
func upToDir(t *testing.T, dir string, k int) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for _, e := range entries {
		var v int
		if _, err := fmt.Sscanf(e.Name(), "%d_", &v); err != nil || v > k {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = string(b)
	}
	return bintest.WriteDir(t, files)
}

// peerDB is a fresh database with the applied_log table every set writes to.
func peerDB(t *testing.T) (string, *pgx.Conn) {
	t.Helper()
	url := pgtest.Shared().NewDB(t)
	conn := pgtest.Connect(t, url)
	if _, err := conn.Exec(context.Background(), `CREATE TABLE applied_log (version int NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	return url, conn
}

func ints(t *testing.T, conn *pgx.Conn, sql string) []int {
	t.Helper()
	rows, err := conn.Query(context.Background(), sql)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func historyStates(t *testing.T, conn *pgx.Conn) string {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT version || ':' || state FROM lockmigrate_history ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(out, " ")
}

// TestAdopt: for each tool, a database really migrated by it to version 3 of
// 5 is adopted, and lockmigrate then applies exactly 4 and 5.
func TestAdopt(t *testing.T) {
	ctx := context.Background()
	all := []int{1, 2, 3, 4, 5}
	for _, tool := range []struct{ name, layout, table string }{
		{"golang-migrate", "migrate", `"public"."schema_migrations"`},
		{"goose", "goose", `"public"."goose_db_version"`},
		{"tern", "tern", `"public"."schema_version"`},
		{"dbmate", "dbmate", `"public"."schema_migrations"`},
	} {
		t.Run(tool.name, func(t *testing.T) {
			url, conn := peerDB(t)
			if out, err := migrateTo(t, tool.layout, url, toolSet(t, tool.layout, all, 0), 3); err != nil {
				t.Fatalf("%s to version 3: %v\n%s", tool.name, err, out)
			}
			if got := ints(t, conn, `SELECT version FROM applied_log ORDER BY version`); !slices.Equal(got, []int{1, 2, 3}) {
				t.Fatalf("%s applied %v, want 1 2 3", tool.name, got)
			}
			env := bintest.With(baseEnv(url), "LOCKMIGRATE_DIR", toolSet(t, "lockmigrate", all, 0))

			r := runIn(t, ctx, env, "adopt", tool.name)
			if r.Code != exitOK || !strings.Contains(r.Stdout, "adopted "+tool.name+" at version 3 ("+tool.table+"): recorded 3 migrations (versions 1 to 3) as baseline") ||
				!strings.Contains(r.Stdout, "apply the 2 newer one(s)") {
				t.Fatalf("adopt: exit %d\nstdout: %s\nstderr: %s", r.Code, r.Stdout, r.Stderr)
			}
			if got := historyStates(t, conn); got != "1:baseline 2:baseline 3:baseline" {
				t.Fatalf("history after adopt: %s", got)
			}

			// Twice: the same baseline again is a no-op.
			r = runIn(t, ctx, env, "adopt", tool.name)
			if r.Code != exitOK || !strings.Contains(r.Stdout, "already adopted") {
				t.Fatalf("second adopt: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
			}

			r = runIn(t, ctx, env, "migrate")
			ev := r.Finished(t)
			if r.Code != exitOK || ev["outcome"] != "applied" || ev["applied"] != 2.0 || ev["schema_version"] != 5.0 ||
				strings.Contains(r.Stderr, "already exists") {
				t.Fatalf("migrate after adopt: exit %d\n%s", r.Code, r.Stderr)
			}
			if got := historyStates(t, conn); got != "1:baseline 2:baseline 3:baseline 4:applied 5:applied" {
				t.Fatalf("history after migrate: %s", got)
			}
			// Each migration ran exactly once: 1-3 by the tool, 4-5 by lockmigrate.
			if got := ints(t, conn, `SELECT version FROM applied_log ORDER BY version`); !slices.Equal(got, all) {
				t.Fatalf("applied_log %v, want each of 1..5 once", got)
			}
			if n := ints(t, conn, `SELECT count(*)::int FROM pg_tables WHERE schemaname = 'public' AND tablename ~ '^t[0-9]+$'`); n[0] != 5 {
				t.Fatalf("%d tables t1..t5, want 5", n[0])
			}

			r = runIn(t, ctx, env, "status")
			if r.Code != exitOK || !strings.Contains(r.Stdout, "applied: 5  pending: 0") || strings.Count(r.Stdout, "baseline") != 3 {
				t.Fatalf("status: exit %d\n%s", r.Code, r.Stdout)
			}

			// With lockmigrate history of its own, adopt refuses.
			r = runIn(t, ctx, env, "adopt", tool.name)
			if r.Code != exitValidation || !strings.Contains(r.Stderr, "history_not_empty") ||
				!strings.Contains(r.Stderr, "2 applied, 3 baseline") {
				t.Fatalf("adopt over lockmigrate history: exit %d\n%s", r.Code, r.Stderr)
			}
			pgtest.AssertNoAdvisoryLocks(t, pgtest.Connect(t, url))
		})
	}
}

// TestAdoptRefusals: states of the other tool's table that cannot be
// continued from exit 5 and write nothing.
func TestAdoptRefusals(t *testing.T) {
	ctx := context.Background()
	all := []int{1, 2, 3, 4, 5}
	noHistory := func(t *testing.T, conn *pgx.Conn) {
		t.Helper()
		if n := ints(t, conn, `SELECT count(*)::int FROM pg_class WHERE relname = 'lockmigrate_history'`); n[0] != 0 {
			if rows := ints(t, conn, `SELECT count(*)::int FROM lockmigrate_history`); rows[0] != 0 {
				t.Fatalf("a refused adopt wrote %d history rows", rows[0])
			}
		}
	}

	t.Run("golang-migrate dirty", func(t *testing.T) {
		url, conn := peerDB(t)
		// The real tool marks version 3 dirty when its SQL fails.
		out, err := migrateTo(t, "migrate", url, toolSet(t, "migrate", []int{1, 2, 3}, 3), 3)
		if err == nil {
			t.Fatalf("migrate with a failing version 3 succeeded:\n%s", out)
		}
		if got := ints(t, conn, `SELECT count(*)::int FROM schema_migrations WHERE version = 3 AND dirty`); got[0] != 1 {
			t.Fatalf("golang-migrate did not leave version 3 dirty:\n%s", out)
		}
		r := runIn(t, ctx, bintest.With(baseEnv(url), "LOCKMIGRATE_DIR", toolSet(t, "lockmigrate", all, 0)), "adopt", "golang-migrate")
		if r.Code != exitValidation || !strings.Contains(r.Stderr, "version 3 is dirty") || !strings.Contains(r.Stderr, "migrate force 3") {
			t.Fatalf("exit %d\n%s", r.Code, r.Stderr)
		}
		noHistory(t, conn)
	})

	t.Run("goose gap", func(t *testing.T) {
		url, conn := peerDB(t)
		// goose applied 1 and 3 (its directory had no 2); our set has 2.
		if out, err := migrateTo(t, "goose", url, toolSet(t, "goose", []int{1, 3}, 0), 3); err != nil {
			t.Fatalf("goose: %v\n%s", err, out)
		}
		r := runIn(t, ctx, bintest.With(baseEnv(url), "LOCKMIGRATE_DIR", toolSet(t, "lockmigrate", all, 0)), "adopt", "goose")
		if r.Code != exitValidation || !strings.Contains(r.Stderr, "(gap)") || !strings.Contains(r.Stderr, "never applied version(s) 2") {
			t.Fatalf("exit %d\n%s", r.Code, r.Stderr)
		}
		noHistory(t, conn)
	})

	t.Run("dbmate gap", func(t *testing.T) {
		url, conn := peerDB(t)
		// dbmate applied 1 and 3 (its directory had no 2); our set has 2.
		if out, err := migrateTo(t, "dbmate", url, toolSet(t, "dbmate", []int{1, 3}, 0), 3); err != nil {
			t.Fatalf("dbmate: %v\n%s", err, out)
		}
		r := runIn(t, ctx, bintest.With(baseEnv(url), "LOCKMIGRATE_DIR", toolSet(t, "dbmate", all, 0)), "adopt", "dbmate")
		if r.Code != exitValidation || !strings.Contains(r.Stderr, "(gap)") || !strings.Contains(r.Stderr, "dbmate is at version 3 but never applied version(s) 2") {
			t.Fatalf("exit %d\n%s", r.Code, r.Stderr)
		}
		noHistory(t, conn)
	})

	t.Run("dbmate on golang-migrate's table", func(t *testing.T) {
		url, conn := peerDB(t)
		if out, err := migrateTo(t, "migrate", url, toolSet(t, "migrate", all, 0), 2); err != nil {
			t.Fatalf("migrate: %v\n%s", err, out)
		}
		r := runIn(t, ctx, bintest.With(baseEnv(url), "LOCKMIGRATE_DIR", toolSet(t, "migrate", all, 0)), "adopt", "dbmate")
		if r.Code != exitValidation || !strings.Contains(r.Stderr, "wrong_columns") || !strings.Contains(r.Stderr, "lockmigrate adopt golang-migrate") {
			t.Fatalf("exit %d\n%s", r.Code, r.Stderr)
		}
		noHistory(t, conn)
	})

	t.Run("tern version not in the set", func(t *testing.T) {
		url, conn := peerDB(t)
		if out, err := migrateTo(t, "tern", url, toolSet(t, "tern", all, 0), 5); err != nil {
			t.Fatalf("tern: %v\n%s", err, out)
		}
		r := runIn(t, ctx, bintest.With(baseEnv(url), "LOCKMIGRATE_DIR", toolSet(t, "lockmigrate", []int{1, 2, 3}, 0)), "adopt", "tern")
		if r.Code != exitValidation || !strings.Contains(r.Stderr, "tern is at version 5, which is no file of this migration set") {
			t.Fatalf("exit %d\n%s", r.Code, r.Stderr)
		}
		noHistory(t, conn)
	})

	for _, tt := range []struct{ tool, args, want string }{
		{"golang-migrate", "", `schema_migrations\" (missing_table): golang-migrate's version table not found in the search path`},
		{"goose", "", `goose_db_version\" (missing_table): goose's version table not found in the search path`},
		{"tern", "", `schema_version\" (missing_table): tern's version table not found in schema public`},
		{"dbmate", "", `schema_migrations\" (missing_table): dbmate's version table not found in the search path`},
		{"goose", "--schema=ops --table=goose_versions", `goose_versions\" (missing_table): goose's version table not found in schema ops`},
	} {
		t.Run("missing table "+tt.tool+" "+tt.args, func(t *testing.T) {
			url, conn := peerDB(t)
			args := append([]string{"adopt", tt.tool}, strings.Fields(tt.args)...)
			r := runIn(t, ctx, bintest.With(baseEnv(url), "LOCKMIGRATE_DIR", toolSet(t, "lockmigrate", all, 0)), args...)
			if r.Code != exitValidation || !strings.Contains(r.Stderr, tt.want) || !strings.Contains(r.Stderr, "missing_table") {
				t.Fatalf("exit %d\n%s", r.Code, r.Stderr)
			}
			noHistory(t, conn)
		})
	}

	t.Run("nothing applied by tern", func(t *testing.T) {
		url, conn := peerDB(t)
		if out, err := migrateTo(t, "tern", url, toolSet(t, "tern", all, 0), 0); err != nil {
			t.Fatalf("tern: %v\n%s", err, out)
		}
		r := runIn(t, ctx, bintest.With(baseEnv(url), "LOCKMIGRATE_DIR", toolSet(t, "lockmigrate", all, 0)), "adopt", "tern")
		if r.Code != exitOK || !strings.Contains(r.Stdout, "nothing to adopt") {
			t.Fatalf("exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
		}
		noHistory(t, conn)
	})

	t.Run("lock held: waits up to LOCKMIGRATE_WAIT_TIMEOUT, exit 4", func(t *testing.T) {
		url, conn := peerDB(t)
		if out, err := migrateTo(t, "goose", url, toolSet(t, "goose", all, 0), 2); err != nil {
			t.Fatalf("goose: %v\n%s", err, out)
		}
		holder := lock.New(pgtest.Connect(t, url), lock.DefaultKey("public", "lockmigrate_history"), nil)
		if ok, err := holder.TryLock(ctx); !ok || err != nil {
			t.Fatalf("TryLock = %v, %v", ok, err)
		}
		env := bintest.With(baseEnv(url), "LOCKMIGRATE_DIR", toolSet(t, "lockmigrate", all, 0), "LOCKMIGRATE_WAIT_TIMEOUT", "400ms")
		r := runIn(t, ctx, env, "adopt", "goose")
		if r.Code != exitWaitTimeout || r.Elapsed < 400*time.Millisecond || !strings.Contains(r.Stderr, "advisory lock held elsewhere, waiting") {
			t.Fatalf("exit %d after %v\n%s", r.Code, r.Elapsed, r.Stderr)
		}
		noHistory(t, conn)
		if err := holder.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		if r := runIn(t, ctx, env, "adopt", "goose"); r.Code != exitOK {
			t.Fatalf("after unlock: exit %d\n%s", r.Code, r.Stderr)
		}
	})

	t.Run("usage", func(t *testing.T) {
		for _, args := range [][]string{{"adopt"}, {"adopt", "flyway"}, {"adopt", "goose", "extra"}, {"adopt", "goose", "--tabel=x"}} {
			if r := runIn(t, ctx, nil, args...); r.Code != exitUsage || !strings.Contains(r.Stderr, "usage") {
				t.Errorf("%q: exit %d\n%s", args, r.Code, r.Stderr)
			}
		}
	})
}

// TestBaselineVersionRun: LOCKMIGRATE_BASELINE_VERSION through the binary's
// run: the run finished event counts the baseline, status shows the state.
func TestBaselineVersionRun(t *testing.T) {
	ctx := context.Background()
	url, conn := peerDB(t)
	for i := 1; i <= 3; i++ { // the schema as another tool left it
		if _, err := conn.Exec(ctx, body(i)); err != nil {
			t.Fatal(err)
		}
	}
	env := bintest.With(baseEnv(url), "LOCKMIGRATE_DIR", toolSet(t, "lockmigrate", []int{1, 2, 3, 4, 5}, 0), "LOCKMIGRATE_BASELINE_VERSION", "3")
	r := runIn(t, ctx, env)
	ev := r.Finished(t)
	if r.Code != exitOK || ev["outcome"] != "applied" || ev["baselined"] != 3.0 || ev["applied"] != 2.0 || ev["schema_version"] != 5.0 {
		t.Fatalf("exit %d\n%s", r.Code, r.Stderr)
	}
	if got := historyStates(t, conn); got != "1:baseline 2:baseline 3:baseline 4:applied 5:applied" {
		t.Fatalf("history %s", got)
	}
	r = runIn(t, ctx, env)
	if ev := r.Finished(t); r.Code != exitOK || ev["outcome"] != "up_to_date" || ev["baselined"] != nil {
		t.Fatalf("second run: exit %d\n%s", r.Code, r.Stderr)
	}
	r = runIn(t, ctx, env, "status", "--json")
	if r.Code != exitOK || strings.Count(r.Stdout, `"state": "baseline"`) != 3 || !strings.Contains(r.Stdout, `"applied": 5`) {
		t.Fatalf("status: exit %d\n%s", r.Code, r.Stdout)
	}
	if r := runIn(t, ctx, bintest.With(env, "LOCKMIGRATE_BASELINE_VERSION", "-3")); r.Code != exitUsage ||
		!strings.Contains(r.Stderr, "LOCKMIGRATE_BASELINE_VERSION") {
		t.Fatalf("negative: exit %d\n%s", r.Code, r.Stderr)
	}
}
