package dropin

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/lockmigrate/lockmigrate/internal/bintest"
	"github.com/lockmigrate/lockmigrate/internal/pgtest"
)

const procs = 8

var tools = []string{"goose", "dbmate", "tern"}

// checkLog requires applied_log to hold each of want exactly once.
func checkLog(t *testing.T, conn *pgx.Conn, want []int) {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT version FROM applied_log ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("applied_log %v, want each of %v once", got, want)
	}
	if n := pgtest.QueryInt(t, conn, `SELECT count(*) - count(DISTINCT version) FROM applied_log`); n != 0 {
		t.Fatalf("%d migrations ran more than once", n)
	}
}

// TestSameSchemaAsTheTool: each tool's own directory, applied once by the
// real tool to database A and by 8 lockmigrate processes released at once to
// database B, leaves the same schema, every migration run exactly once and
// no down section run.
func TestSameSchemaAsTheTool(t *testing.T) {
	for _, tool := range tools {
		t.Run(tool, func(t *testing.T) {
			set := writeSet(t, tool)
			urlA, connA := newDB(t)
			toolMigrate(t, tool, urlA, set, 0)
			checkLog(t, connA, set.logged)

			urlB, connB := newDB(t)
			outcomes := checkGroup(t, group(t, procs, env(urlB, set.dir)), len(steps))
			checkLog(t, connB, set.logged)
			sameSchema(t, urlA, urlB)
			if n := pgtest.QueryInt(t, connB, `SELECT count(*)::int FROM lockmigrate_history WHERE state = 'applied'`); n != len(steps) {
				t.Fatalf("%d applied history rows, want %d", n, len(steps))
			}
			pgtest.AssertNoAdvisoryLocks(t, connB)

			// Run again: nothing to do, and validate against the database
			// agrees with what was recorded (the checksums of the up parts).
			if r := run(t, env(urlB, set.dir)); r.Code != 0 || r.Finished(t)["outcome"] != "up_to_date" {
				t.Fatalf("second run: %s", r.Brief())
			}
			if r := run(t, env(urlB, set.dir), "validate"); r.Code != 0 || !strings.Contains(r.Stdout, "against the database") {
				t.Fatalf("validate: %s", r.Brief())
			}
			t.Logf("%s: %d files, %d processes: %v", tool, len(steps), procs, outcomes)
		})
	}
}

// TestSwitch: the real tool applies the first half of its directory,
// `lockmigrate adopt <tool>` takes the database over with the directory
// unchanged, and 8 lockmigrate processes apply the rest; the schema equals
// the tool's own full run.
func TestSwitch(t *testing.T) {
	for _, tool := range tools {
		t.Run(tool, func(t *testing.T) {
			set := writeSet(t, tool)
			urlA, _ := newDB(t)
			toolMigrate(t, tool, urlA, set, 0)

			urlB, connB := newDB(t)
			toolMigrate(t, tool, urlB, set, set.versions[half-1])
			r := run(t, env(urlB, set.dir), "adopt", tool)
			want := fmt.Sprintf("adopted %s at version %d", tool, set.versions[half-1])
			if r.Code != 0 || !strings.Contains(r.Stdout, want) || !strings.Contains(r.Stdout, fmt.Sprintf("recorded %d migrations", half)) {
				t.Fatalf("adopt: %s", r.Brief())
			}
			checkGroup(t, group(t, procs, env(urlB, set.dir)), len(steps)-half)
			checkLog(t, connB, set.logged)
			sameSchema(t, urlA, urlB)
			if n := pgtest.QueryInt(t, connB, `SELECT count(*)::int FROM lockmigrate_history WHERE state = 'baseline'`); n != half {
				t.Fatalf("%d baseline rows, want %d", n, half)
			}
		})
	}
}

// TestDownNeverRuns: the regression of issue 14. A file whose Up creates a
// table and whose Down drops it leaves the table, in every format; a down
// marker that the file's format does not explain is refused, with exit 5,
// before anything is applied, by migrate, validate (offline too) and plan.
func TestDownNeverRuns(t *testing.T) {
	files := map[string]string{
		"goose":  "-- +goose Up\nCREATE TABLE kept (id int);\n-- +goose Down\nDROP TABLE kept;\n",
		"dbmate": "-- migrate:up\nCREATE TABLE kept (id int);\n-- migrate:down\nDROP TABLE kept;\n",
		"tern":   "CREATE TABLE kept (id int);\n---- create above / drop below ----\nDROP TABLE kept;\n",
	}
	for _, tool := range tools {
		t.Run(tool, func(t *testing.T) {
			url, conn := newDB(t)
			dir := bintest.WriteDir(t, map[string]string{"1_kept.sql": files[tool]})
			if r := run(t, env(url, dir)); r.Code != 0 || r.Finished(t)["applied"] != 1.0 {
				t.Fatalf("migrate: %s", r.Brief())
			}
			if n := pgtest.QueryInt(t, conn, `SELECT count(*)::int FROM pg_tables WHERE tablename = 'kept'`); n != 1 {
				t.Fatal("the down section ran: table kept is gone")
			}
		})
	}

	t.Run("goose Down in a file forced to lockmigrate", func(t *testing.T) {
		url, conn := newDB(t)
		dir := bintest.WriteDir(t, map[string]string{
			"1_first.sql": "CREATE TABLE first (id int);\n",
			"2_kept.sql":  files["goose"],
		})
		forced := env(url, dir, "LOCKMIGRATE_FORMAT", "lockmigrate")
		for _, args := range [][]string{nil, {"validate"}, {"plan"}, {"status"}} {
			r := run(t, forced, args...)
			if r.Code != 5 || !strings.Contains(r.Stderr, "down_section") || !strings.Contains(r.Stderr, "2_kept.sql") ||
				!strings.Contains(r.Stderr, `line 3: a goose down marker \"-- +goose Down\"`) {
				t.Fatalf("%v: %s", args, r.Brief())
			}
		}
		offline := env("", dir, "LOCKMIGRATE_FORMAT", "lockmigrate")
		if r := run(t, offline, "validate"); r.Code != 5 || !strings.Contains(r.Stderr, "down_section") {
			t.Fatalf("offline validate: %s", r.Brief())
		}
		nothingCreated(t, conn)
		// Read as goose (auto), the same directory applies.
		if r := run(t, env(url, dir)); r.Code != 0 || r.Finished(t)["applied"] != 2.0 {
			t.Fatalf("auto: %s", r.Brief())
		}
	})

	t.Run("mixed formats and what a tool would read differently", func(t *testing.T) {
		url, conn := newDB(t)
		for _, tt := range []struct {
			files map[string]string
			want  string
		}{
			{map[string]string{"1_a.sql": files["goose"], "2_b.sql": strings.ReplaceAll(files["dbmate"], "kept", "b")},
				"the set mixes the formats dbmate (2_b.sql), goose (1_a.sql)"},
			{map[string]string{"1_a.sql": "-- +goose Up\n-- +goose ENVSUB ON\nCREATE ROLE ${ROLE};\n"}, `line 2: \"-- +goose ENVSUB ON\"`},
			{map[string]string{"1_a.sql": "CREATE TABLE {{.name}} (id int);\n---- create above / drop below ----\n"}, "line 1: template syntax"},
			{map[string]string{"1_a.sql": "-- migrate:up env:ROLE\nCREATE ROLE {{.ROLE}};\n-- migrate:down\n"}, `option \"env:ROLE\"`},
		} {
			dir := bintest.WriteDir(t, tt.files)
			for _, e := range []map[string]string{env(url, dir), env("", dir)} {
				r := run(t, e, "validate")
				if r.Code != 5 || !strings.Contains(r.Stderr, "validation failed (format)") || !strings.Contains(r.Stderr, tt.want) {
					t.Fatalf("%v: %s", tt.files, r.Brief())
				}
			}
			if r := run(t, env(url, dir)); r.Code != 5 {
				t.Fatalf("migrate %v: %s", tt.files, r.Brief())
			}
		}
		nothingCreated(t, conn)
	})
}

// nothingCreated requires the database to hold no relation of ours at all:
// not even the history table.
func nothingCreated(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	if n := pgtest.QueryInt(t, conn, `SELECT count(*)::int FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')`); n != 0 {
		t.Fatalf("%d relations created", n)
	}
}

// TestEmptySet: an empty or wrongly mounted directory is exit 5 for every
// command that loads the set, and nothing is created in the database.
func TestEmptySet(t *testing.T) {
	url, conn := newDB(t)
	for _, files := range []map[string]string{{}, {"1_a.SQL": "SELECT 1;", "README.md": "# x", "2_b.down.sql": "SELECT 2;"}} {
		dir := bintest.WriteDir(t, files)
		for _, args := range [][]string{nil, {"migrate"}, {"validate"}, {"status"}, {"plan"}, {"adopt", "goose"}} {
			r := run(t, env(url, dir), args...)
			if r.Code != 5 || !strings.Contains(r.Stderr, "no migrations found in "+dir) || !strings.Contains(r.Stderr, "no_migrations") {
				t.Fatalf("%v in %v: %s", args, files, r.Brief())
			}
		}
		if r := run(t, env("", dir), "validate"); r.Code != 5 || !strings.Contains(r.Stderr, "no migrations found in "+dir) {
			t.Fatalf("offline validate: %s", r.Brief())
		}
	}
	nothingCreated(t, conn)
}
