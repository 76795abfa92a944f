package lint

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lockmigrate/lockmigrate/internal/lint/pgparse"
)

// setup is an applied file: the tables it creates exist (and, offline,
// have rows).
var setup = File{Name: "1_setup.sql", Applied: true, SQL: `
CREATE TABLE accounts (id bigint PRIMARY KEY, email varchar(100), plan text, n numeric(10,2), created timestamptz);
CREATE INDEX accounts_email_idx ON accounts (email);
CREATE TABLE orders (id bigint PRIMARY KEY, account_id bigint);
CREATE TYPE mood AS ENUM ('a');
CREATE TABLE parent (id int, k int) PARTITION BY RANGE (k);
`}

func tx(sql string) File   { return File{Name: "2_change.sql", SQL: sql} }
func notx(sql string) File { return File{Name: "2_change.sql", SQL: sql, NoTransaction: true} }

// ruleCase is one rule's pair: files it must flag (want: "file:line:rule",
// exactly those) and a close variant it must not flag at all.
type ruleCase struct {
	name string
	bad  []File
	want []string
	good []File
	opts Options
}

var ruleCases = []ruleCase{
	{name: "create index concurrently in a transaction", bad: []File{tx("SELECT 1;\nCREATE INDEX CONCURRENTLY i ON accounts (plan);")},
		want: []string{"2_change.sql:2:no-transaction-required"}, good: []File{notx("SELECT 1;\nCREATE INDEX CONCURRENTLY i ON accounts (plan);")}},
	{name: "drop index concurrently in a transaction", bad: []File{tx("DROP INDEX CONCURRENTLY accounts_email_idx")},
		want: []string{"2_change.sql:1:no-transaction-required"}, good: []File{notx("DROP INDEX CONCURRENTLY accounts_email_idx")}},
	{name: "reindex concurrently in a transaction", bad: []File{tx("\n\nREINDEX TABLE CONCURRENTLY accounts")},
		want: []string{"2_change.sql:3:no-transaction-required"}, good: []File{notx("REINDEX TABLE CONCURRENTLY accounts")}},
	{name: "reindex (concurrently) option form", bad: []File{tx("REINDEX (CONCURRENTLY) TABLE accounts")},
		want: []string{"2_change.sql:1:no-transaction-required"}, good: []File{notx("REINDEX (CONCURRENTLY) TABLE accounts")}},
	{name: "detach partition concurrently", bad: []File{tx("ALTER TABLE parent DETACH PARTITION p1 CONCURRENTLY")},
		want: []string{"2_change.sql:1:no-transaction-required"}, good: []File{tx("ALTER TABLE parent DETACH PARTITION p1")}},
	{name: "vacuum in a transaction", bad: []File{tx("VACUUM accounts")},
		want: []string{"2_change.sql:1:no-transaction-required"}, good: []File{tx("ANALYZE accounts")}},
	{name: "create database", bad: []File{tx("CREATE DATABASE other")},
		want: []string{"2_change.sql:1:no-transaction-required"}, good: []File{notx("CREATE DATABASE other")}},
	{name: "alter system", bad: []File{tx("ALTER SYSTEM SET work_mem = '8MB'")},
		want: []string{"2_change.sql:1:no-transaction-required"}, good: []File{tx("SET LOCAL work_mem = '8MB'")}},
	{name: "create index without concurrently", bad: []File{tx("-- index\nCREATE INDEX accounts_plan_idx ON accounts (plan);")},
		want: []string{"2_change.sql:2:index-concurrently"}, good: []File{notx("CREATE INDEX CONCURRENTLY accounts_plan_idx ON accounts (plan);")}},
	{name: "index on a table created earlier in the pending set", bad: []File{tx("CREATE INDEX ON orders (account_id)")},
		want: []string{"2_change.sql:1:index-concurrently"},
		good: []File{{Name: "2_t.sql", SQL: "CREATE TABLE t (x int);"}, {Name: "3_i.sql", SQL: "CREATE INDEX t_x ON t (x);\nREINDEX INDEX t_x;\nDROP INDEX t_x;"}}},
	{name: "drop index without concurrently", bad: []File{tx("DROP INDEX accounts_email_idx")},
		want: []string{"2_change.sql:1:index-concurrently"}, good: []File{notx("DROP INDEX CONCURRENTLY accounts_email_idx")}},
	{name: "reindex without concurrently", bad: []File{tx("REINDEX TABLE accounts")},
		want: []string{"2_change.sql:1:index-concurrently"}, good: []File{notx("REINDEX TABLE CONCURRENTLY accounts")}},
	{name: "check without not valid", bad: []File{tx("ALTER TABLE accounts\n  ADD CONSTRAINT c CHECK (plan <> '')")},
		want: []string{"2_change.sql:2:constraint-not-valid"}, good: []File{tx("ALTER TABLE accounts\n  ADD CONSTRAINT c CHECK (plan <> '') NOT VALID")}},
	{name: "foreign key without not valid", bad: []File{tx("ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (account_id) REFERENCES accounts (id)")},
		want: []string{"2_change.sql:1:constraint-not-valid"}, good: []File{tx("ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (account_id) REFERENCES accounts (id) NOT VALID")}},
	{name: "validate in the add's transaction",
		bad:  []File{tx("ALTER TABLE accounts ADD CONSTRAINT c CHECK (plan <> '') NOT VALID;\nALTER TABLE accounts VALIDATE CONSTRAINT c;")},
		want: []string{"2_change.sql:2:validate-same-transaction"},
		good: []File{notx("ALTER TABLE accounts ADD CONSTRAINT c CHECK (plan <> '') NOT VALID;\nALTER TABLE accounts VALIDATE CONSTRAINT c;")}},
	{name: "validate in the shared transaction (LOCKMIGRATE_TRANSACTION=all)", opts: Options{SharedTransaction: true},
		bad:  []File{{Name: "2_a.sql", SQL: "ALTER TABLE accounts ADD CONSTRAINT c CHECK (plan <> '') NOT VALID;"}, {Name: "3_v.sql", SQL: "ALTER TABLE accounts VALIDATE CONSTRAINT c;"}},
		want: []string{"3_v.sql:1:validate-same-transaction"},
		good: []File{{Name: "2_a.sql", SQL: "ALTER TABLE accounts ADD CONSTRAINT c CHECK (plan <> '') NOT VALID;"}, {Name: "3_v.sql", SQL: "ALTER TABLE accounts VALIDATE CONSTRAINT c;", NoTransaction: true}}},
	{name: "set not null without a proof", bad: []File{tx("ALTER TABLE accounts ALTER COLUMN plan SET NOT NULL")},
		want: []string{"2_change.sql:1:set-not-null"},
		good: []File{{Name: "2_c.sql", SQL: "ALTER TABLE accounts ADD CONSTRAINT p CHECK (plan IS NOT NULL) NOT VALID;"},
			{Name: "3_v.sql", SQL: "ALTER TABLE accounts VALIDATE CONSTRAINT p;"}, {Name: "4_n.sql", SQL: "ALTER TABLE accounts ALTER COLUMN plan SET NOT NULL;"}}},
	{name: "set not null before PostgreSQL 12", opts: Options{PGVersion: 11},
		bad: []File{{Name: "2_c.sql", SQL: "ALTER TABLE accounts ADD CONSTRAINT p CHECK (plan IS NOT NULL) NOT VALID;"},
			{Name: "3_v.sql", SQL: "ALTER TABLE accounts VALIDATE CONSTRAINT p;"}, {Name: "4_n.sql", SQL: "ALTER TABLE accounts ALTER COLUMN plan SET NOT NULL;"}},
		want: []string{"4_n.sql:1:set-not-null"}, good: []File{tx("ALTER TABLE accounts ADD COLUMN x int")}},
	{name: "add column not null without default", bad: []File{tx("ALTER TABLE accounts ADD COLUMN x int NOT NULL")},
		want: []string{"2_change.sql:1:add-column-not-null"}, good: []File{tx("ALTER TABLE accounts ADD COLUMN x int NOT NULL DEFAULT 0")}},
	{name: "add column with a volatile default", bad: []File{tx("ALTER TABLE accounts ADD COLUMN x uuid DEFAULT gen_random_uuid()")},
		want: []string{"2_change.sql:1:add-column-rewrite"}, good: []File{tx("ALTER TABLE accounts ADD COLUMN x timestamptz DEFAULT now()")}},
	{name: "add column generated stored", bad: []File{tx("ALTER TABLE accounts ADD COLUMN y bigint GENERATED ALWAYS AS (id * 2) STORED")},
		want: []string{"2_change.sql:1:add-column-rewrite"}, good: []File{tx("CREATE TABLE g (id int, y int GENERATED ALWAYS AS (id * 2) STORED)")}},
	{name: "add column with a constant default before PostgreSQL 11", opts: Options{PGVersion: 10},
		bad: []File{tx("ALTER TABLE accounts ADD COLUMN x int DEFAULT 0")}, want: []string{"2_change.sql:1:add-column-rewrite"},
		good: []File{tx("ALTER TABLE accounts ADD COLUMN x int")}},
	{name: "alter column type that rewrites", bad: []File{tx("ALTER TABLE accounts ALTER COLUMN email TYPE varchar(50)")},
		want: []string{"2_change.sql:1:alter-column-type"}, good: []File{tx("ALTER TABLE accounts ALTER COLUMN email TYPE varchar(200)")}},
	{name: "alter column type int to bigint", bad: []File{tx("ALTER TABLE orders ALTER COLUMN account_id TYPE int")},
		want: []string{"2_change.sql:1:alter-column-type"}, good: []File{tx("ALTER TABLE accounts ALTER COLUMN email TYPE text, ALTER COLUMN n TYPE numeric(12,2)")}},
	{name: "add unique without using index", bad: []File{tx("ALTER TABLE accounts ADD CONSTRAINT u UNIQUE (email)")},
		want: []string{"2_change.sql:1:unique-using-index"}, good: []File{tx("ALTER TABLE accounts ADD CONSTRAINT u UNIQUE USING INDEX accounts_email_idx")}},
	{name: "rename column", bad: []File{tx("ALTER TABLE accounts RENAME COLUMN plan TO tier")},
		want: []string{"2_change.sql:1:rename-column"}, good: []File{tx("CREATE TABLE t (a int);\nALTER TABLE t RENAME COLUMN a TO b;")}},
	{name: "rename table", bad: []File{tx("ALTER TABLE accounts RENAME TO users")},
		want: []string{"2_change.sql:1:rename-table"}, good: []File{tx("CREATE TABLE t (a int);\nALTER TABLE t RENAME TO u;\nCREATE INDEX ON u (a);")}},
	{name: "drop column", bad: []File{tx("ALTER TABLE accounts DROP COLUMN plan")},
		want: []string{"2_change.sql:1:drop-column"}, good: []File{tx("ALTER TABLE accounts DROP CONSTRAINT accounts_plan_not_null")}},
	{name: "drop table", bad: []File{tx("DROP TABLE orders")},
		want: []string{"2_change.sql:1:drop-table"}, good: []File{tx("CREATE TABLE t (a int);\nDROP TABLE t;")}},
	{name: "vacuum full", bad: []File{notx("VACUUM FULL accounts")},
		want: []string{"2_change.sql:1:vacuum-full"}, good: []File{notx("VACUUM (ANALYZE) accounts")}},
	{name: "cluster", bad: []File{tx("CLUSTER accounts USING accounts_email_idx")},
		want: []string{"2_change.sql:1:cluster"}, good: []File{tx("CREATE TABLE t (a int PRIMARY KEY);\nCLUSTER t USING t_pkey;")}},
	{name: "lock table", bad: []File{tx("LOCK TABLE accounts")},
		want: []string{"2_change.sql:1:lock-table"}, good: []File{tx("LOCK TABLE accounts IN ROW EXCLUSIVE MODE")}},
	{name: "update without where", bad: []File{tx("UPDATE accounts SET plan = 'free'")},
		want: []string{"2_change.sql:1:unbatched-dml"}, good: []File{tx("UPDATE accounts SET plan = 'free' WHERE id < 1000")}},
	{name: "delete without where", bad: []File{tx("DELETE FROM orders")},
		want: []string{"2_change.sql:1:unbatched-dml"}, good: []File{notx("DELETE FROM orders")}},
	{name: "enum add value in a transaction before 12", opts: Options{PGVersion: 11}, bad: []File{tx("ALTER TYPE mood ADD VALUE 'b'")},
		want: []string{"2_change.sql:1:enum-add-value-transaction"}, good: []File{notx("ALTER TYPE mood ADD VALUE 'b'")}},
	{name: "enum add value in a transaction on 12", opts: Options{PGVersion: 12}, bad: []File{tx("ALTER TYPE mood ADD VALUE 'b';\nALTER TYPE mood RENAME TO feeling;\nDROP INDEX accounts_email_idx")},
		want: []string{"2_change.sql:3:index-concurrently"}, good: []File{tx("ALTER TYPE mood ADD VALUE 'b'")}},
	{name: "syntax error", bad: []File{tx("SELECT 1;\nSELEC 2;")},
		want: []string{"2_change.sql:2:syntax-error"}, good: []File{tx("SELECT 1;\nSELECT 2;")}},
	{name: "suppression without a reason", bad: []File{tx("-- lockmigrate:lint-ignore index-concurrently\nCREATE INDEX i ON accounts (plan);")},
		want: []string{"2_change.sql:1:lint-ignore", "2_change.sql:2:index-concurrently"},
		good: []File{tx("-- lockmigrate:lint-ignore index-concurrently accounts has 40 rows, forever\nCREATE INDEX i ON accounts (plan);")}},
	{name: "suppression matching nothing, or an unknown rule", bad: []File{tx("-- lockmigrate:lint-ignore cluster not needed\nSELECT 1;\n-- lockmigrate:lint-ignore no-such-rule why\nSELECT 2;")},
		want: []string{"2_change.sql:1:lint-ignore", "2_change.sql:3:lint-ignore"},
		good: []File{tx("-- lockmigrate:lint-ignore add-column-not-null accounts is empty in every environment\n-- lockmigrate:lint-ignore set-not-null ditto\nALTER TABLE accounts ADD COLUMN x int NOT NULL, ALTER COLUMN plan SET NOT NULL;")}},
	{name: "style rules, enabled", opts: Options{Enable: []string{"style"}},
		bad:  []File{tx("CREATE TABLE s (\n id serial PRIMARY KEY,\n j json,\n t timestamp,\n c char(2)\n)")},
		want: []string{"2_change.sql:2:prefer-identity", "2_change.sql:2:prefer-bigint-primary-key", "2_change.sql:3:prefer-jsonb", "2_change.sql:4:prefer-timestamptz", "2_change.sql:5:prefer-text"},
		good: []File{tx("CREATE TABLE s (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, j jsonb, t timestamptz, c text)")}},
	{name: "style rules are off by default", bad: []File{tx("CREATE TABLE s (id serial PRIMARY KEY, j json);\nCREATE INDEX ON accounts (plan);")},
		want: []string{"2_change.sql:2:index-concurrently"}, good: []File{tx("CREATE TABLE s (id serial PRIMARY KEY, j json, t timestamp, c char(2))")}},
	{name: "a disabled rule", opts: Options{Disable: []string{RuleDropColumn}}, bad: []File{tx("ALTER TABLE accounts DROP COLUMN plan;\nALTER TABLE accounts RENAME COLUMN email TO mail;")},
		want: []string{"2_change.sql:2:rename-column"}, good: []File{tx("ALTER TABLE accounts DROP COLUMN plan")}},
}

func findingKeys(rep *Report) []string {
	var out []string
	for _, f := range rep.Findings {
		out = append(out, fmt.Sprintf("%s:%d:%s", f.File, f.Line, f.Rule))
	}
	return out
}

func lintOffline(t *testing.T, files []File, opts Options) *Report {
	t.Helper()
	rep, err := Lint(context.Background(), append([]File{setup}, files...), opts)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// TestRules: for every rule a statement it flags, on the right line, and a
// close variant it does not.
func TestRules(t *testing.T) {
	if !pgparse.Available() {
		t.Skip("built without cgo: no parser")
	}
	covered := map[string]bool{}
	for _, tc := range ruleCases {
		t.Run(tc.name, func(t *testing.T) {
			got := findingKeys(lintOffline(t, tc.bad, tc.opts))
			slices.Sort(got)
			want := slices.Clone(tc.want)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("bad variant: findings %q, want %q", got, want)
			}
			if got := findingKeys(lintOffline(t, tc.good, tc.opts)); len(got) > 0 {
				t.Errorf("good variant: findings %q, want none", got)
			}
		})
		for _, w := range tc.want {
			covered[w[strings.LastIndex(w, ":")+1:]] = true
		}
	}
	for _, r := range Rules {
		if !covered[r.ID] {
			t.Errorf("rule %s has no case in ruleCases", r.ID)
		}
	}
}

// examplesDir is the zero-downtime example set, which must lint clean.
const examplesDir = "../../examples/zero-downtime"

// readSet reads a directory of migration files in name order.
func readSet(t testing.TB, dir string) []File {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*.sql"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	var files []File
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, File{Name: filepath.Base(n), SQL: string(b),
			NoTransaction: strings.HasPrefix(string(b), "-- lockmigrate:no-transaction\n")})
	}
	return files
}

func TestZeroDowntimeExamplesLintClean(t *testing.T) {
	if !pgparse.Available() {
		t.Skip("built without cgo: no parser")
	}
	files := readSet(t, examplesDir)
	if len(files) < 7 {
		t.Fatalf("read %d example files", len(files))
	}
	rep, err := Lint(context.Background(), files, Options{Enable: []string{"style"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Findings) > 0 {
		t.Fatalf("examples/zero-downtime has findings: %q", findingKeys(rep))
	}
	// Each file on its own after the ones before it, as a run that finds
	// the earlier ones applied lints it.
	for i := range files {
		ctx := slices.Clone(files[:i])
		for j := range ctx {
			ctx[j].Applied = true
		}
		rep, err := Lint(context.Background(), append(ctx, files[i]), Options{})
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Findings) > 0 {
			t.Errorf("%s after %d applied files: %q", files[i].Name, i, findingKeys(rep))
		}
	}
}

// generatedSet is n migration files of the usual kinds: create a table,
// index it, add a column, backfill in batches.
func generatedSet(n int) []File {
	files := make([]File, n)
	for i := range files {
		name := fmt.Sprintf("%04d_step.sql", i+1)
		switch i % 4 {
		case 0:
			files[i] = File{Name: name, SQL: fmt.Sprintf("CREATE TABLE t%d (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);\nCREATE INDEX ON t%d (v);\n", i, i)}
		case 1:
			files[i] = File{Name: name, SQL: fmt.Sprintf("ALTER TABLE t%d ADD COLUMN n int;\nALTER TABLE t%d ADD CONSTRAINT t%d_n CHECK (n > 0) NOT VALID;\n", i-1, i-1, i-1)}
		case 2:
			files[i] = File{Name: name, NoTransaction: true, SQL: fmt.Sprintf("-- lockmigrate:no-transaction\nCREATE INDEX CONCURRENTLY t%d_n ON t%d (n);\n", i-2, i-2)}
		default:
			files[i] = File{Name: name, SQL: fmt.Sprintf("UPDATE t%d SET n = 1 WHERE id < 1000;\nALTER TABLE t%d VALIDATE CONSTRAINT t%d_n;\n", i-3, i-3, i-3)}
		}
	}
	return files
}

// TestLintThousandFiles lints a generated set of 1,000 files and reports
// the time (the first parse included).
func TestLintThousandFiles(t *testing.T) {
	if !pgparse.Available() {
		t.Skip("built without cgo: no parser")
	}
	files := generatedSet(1000)
	start := time.Now()
	rep, err := Lint(context.Background(), files, Options{})
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Files != 1000 || rep.Statements != 2000-250 || len(rep.Findings) != 0 {
		t.Fatalf("%d files, %d statements, findings %q", rep.Files, rep.Statements, findingKeys(rep)[:min(5, len(rep.Findings))])
	}
	t.Logf("linted 1,000 files (%d statements) in %s", rep.Statements, took)
}
