package lint

import (
	"context"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockmigrate/lockmigrate/internal/lint/pgparse"
	"github.com/lockmigrate/lockmigrate/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, pgtest.Options{})) }

// onlineDB is a fresh database prepared with sql, and a connection to it.
func onlineDB(t *testing.T, sql string) *pgx.Conn {
	t.Helper()
	if !pgparse.Available() {
		t.Skip("built without cgo: no parser")
	}
	conn := pgtest.Connect(t, pgtest.Shared().NewDB(t))
	if _, err := conn.Exec(context.Background(), sql); err != nil {
		t.Fatal(err)
	}
	return conn
}

func lintOnline(t *testing.T, conn *pgx.Conn, files []File) *Report {
	t.Helper()
	rep, err := Lint(context.Background(), files, Options{DB: conn})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Online {
		t.Fatal("report not online")
	}
	return rep
}

func severities(rep *Report) []string {
	var out []string
	for _, f := range rep.Findings {
		out = append(out, f.Rule+":"+string(f.Severity))
	}
	slices.Sort(out)
	return out
}

// TestOnlineSeverity: the same CREATE INDEX is an error on a 100,000-row
// table and a warning on a 10-row one (both ANALYZEd); a table created
// earlier in the pending set is not flagged; the server's version is the
// one the rules use.
func TestOnlineSeverity(t *testing.T) {
	conn := onlineDB(t, `
CREATE TABLE big (id bigint PRIMARY KEY, v text);
INSERT INTO big SELECT g, 'v' || g FROM generate_series(1, 100000) g;
CREATE TABLE small (id bigint PRIMARY KEY, v text);
INSERT INTO small SELECT g, 'v' || g FROM generate_series(1, 10) g;
ANALYZE big; ANALYZE small;`)
	for _, tc := range []struct {
		table string
		want  Severity
	}{{"big", SeverityError}, {"small", SeverityWarning}} {
		rep := lintOnline(t, conn, []File{tx("CREATE INDEX ON " + tc.table + " (v)")})
		if len(rep.Findings) != 1 || rep.Findings[0].Rule != RuleIndexConcurrently || rep.Findings[0].Severity != tc.want {
			t.Errorf("%s: findings %+v, want one %s at %s", tc.table, rep.Findings, RuleIndexConcurrently, tc.want)
		}
		if rep.PGVersion != 15 {
			t.Errorf("PGVersion %d, want the server's 15", rep.PGVersion)
		}
	}
	rep := lintOnline(t, conn, []File{{Name: "2_t.sql", SQL: "CREATE TABLE fresh (v text);"},
		{Name: "3_i.sql", SQL: "CREATE INDEX ON fresh (v);\nALTER TABLE fresh ALTER COLUMN v SET NOT NULL;\nUPDATE fresh SET v = '';"}})
	if len(rep.Findings) != 0 {
		t.Errorf("table created in the pending set: findings %q", findingKeys(rep))
	}
}

// TestOnlineCatalogContext: the catalog proves SET NOT NULL (a validated
// check, or a column already NOT NULL), gives the current type of a
// column, and knows a user function is volatile.
func TestOnlineCatalogContext(t *testing.T) {
	conn := onlineDB(t, `
CREATE TABLE a (id bigint PRIMARY KEY, plan text, name varchar(20), done text NOT NULL, other text);
INSERT INTO a SELECT g, 'p', 'n', 'd', 'o' FROM generate_series(1, 20000) g;
ALTER TABLE a ADD CONSTRAINT a_plan_nn CHECK (plan IS NOT NULL) NOT VALID;
ALTER TABLE a VALIDATE CONSTRAINT a_plan_nn;
ALTER TABLE a ADD CONSTRAINT a_other_nn CHECK (other IS NOT NULL) NOT VALID;
CREATE FUNCTION next_code() RETURNS int LANGUAGE sql VOLATILE AS 'SELECT 1';
ANALYZE a;`)
	rep := lintOnline(t, conn, []File{tx(`ALTER TABLE a ALTER COLUMN plan SET NOT NULL;
ALTER TABLE a ALTER COLUMN done SET NOT NULL;
ALTER TABLE a ALTER COLUMN name TYPE varchar(40);
ALTER TABLE a ALTER COLUMN other SET NOT NULL;
ALTER TABLE a ALTER COLUMN name TYPE int USING 0;
ALTER TABLE a ADD COLUMN code int DEFAULT next_code();
DROP INDEX a_pkey;`)})
	got := findingKeys(rep)
	want := []string{"2_change.sql:4:set-not-null", "2_change.sql:5:alter-column-type", "2_change.sql:6:add-column-rewrite", "2_change.sql:7:index-concurrently"}
	if !slices.Equal(got, want) {
		t.Fatalf("findings %q, want %q", got, want)
	}
	if got := severities(rep); slices.Contains(got, "set-not-null:warning") {
		t.Fatalf("a 20,000-row table counted as small: %q", got)
	}
}

// TestOnlineTableLockedExclusive: a never-analyzed table held ACCESS
// EXCLUSIVE by another session cannot be sized (pg_relation_size waits for
// its lock); the lint does not wait for it past sizeLockTimeout, counts the
// table as of unknown size, and leaves the session's lock_timeout as it was.
func TestOnlineTableLockedExclusive(t *testing.T) {
	ctx := context.Background()
	conn := onlineDB(t, `CREATE TABLE hot (id int); CREATE TABLE empty_one (id int); SET lock_timeout = '7s';`)
	holder := pgtest.Connect(t, conn.Config().ConnString())
	lockTx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lockTx.Rollback(ctx)
	if _, err := lockTx.Exec(ctx, `LOCK TABLE hot IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	rep := lintOnline(t, conn, []File{tx("CREATE INDEX ON hot (id);\nCREATE INDEX ON empty_one (id);")})
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("lint waited %v for the locked table", took)
	}
	// hot: unknown size, so the index is an error as on a big table; the
	// empty table beside it could not be sized either (one query).
	if got := severities(rep); !slices.Equal(got, []string{"index-concurrently:error", "index-concurrently:error"}) {
		t.Fatalf("findings %q", got)
	}
	var lt string
	if err := conn.QueryRow(ctx, `SHOW lock_timeout`).Scan(&lt); err != nil || lt != "7s" {
		t.Fatalf("lock_timeout after lint = %q, %v; want the session's 7s", lt, err)
	}
	// Unlocked, the empty table is sized and only warns.
	lockTx.Rollback(ctx)
	rep = lintOnline(t, conn, []File{tx("CREATE INDEX ON empty_one (id);")})
	if got := severities(rep); !slices.Equal(got, []string{"index-concurrently:warning"}) {
		t.Fatalf("unlocked: findings %q", got)
	}
}

// countingDB counts the queries the lint sends.
type countingDB struct {
	*pgx.Conn
	queries int
}

func (c *countingDB) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	c.queries++
	return c.Conn.Query(ctx, sql, args...)
}

// TestOnlineNewTablesOneQuery: files that only create tables and work on
// them cost the gate one query (the server's version), not the catalog's
// four; a CREATE TABLE IF NOT EXISTS may name a table that exists, so the
// catalog is still asked about it, and its size still decides.
func TestOnlineNewTablesOneQuery(t *testing.T) {
	conn := onlineDB(t, `
CREATE TABLE big (id bigint PRIMARY KEY, v text);
INSERT INTO big SELECT g, 'v' || g FROM generate_series(1, 20000) g;
ANALYZE big;`)
	for _, tc := range []struct {
		name     string
		files    []File
		queries  int
		findings []string
	}{
		{"new tables", []File{{Name: "2_t.sql", SQL: "CREATE TABLE n1 (id bigint PRIMARY KEY, v text);\nCREATE INDEX ON n1 (v);"},
			{Name: "3_u.sql", SQL: "CREATE TABLE n2 (id bigint REFERENCES n1);\nALTER TABLE n1 ALTER COLUMN v SET NOT NULL;"}}, 1, nil},
		{"if not exists", []File{{Name: "2_t.sql", SQL: "CREATE TABLE IF NOT EXISTS big (id bigint PRIMARY KEY, v text);\nCREATE INDEX ON big (v);"}},
			4, []string{"2_t.sql:2:index-concurrently"}},
		{"an existing table named", []File{{Name: "2_t.sql", SQL: "CREATE TABLE n3 (id bigint REFERENCES big);"}}, 4, nil},
	} {
		db := &countingDB{Conn: conn}
		rep, err := Lint(context.Background(), tc.files, Options{DB: db})
		if err != nil {
			t.Fatal(err)
		}
		if got := findingKeys(rep); !rep.Online || rep.PGVersion != 15 || !slices.Equal(got, tc.findings) {
			t.Errorf("%s: online %v, version %d, findings %q, want %q", tc.name, rep.Online, rep.PGVersion, got, tc.findings)
		}
		if db.queries != tc.queries {
			t.Errorf("%s: %d queries, want %d", tc.name, db.queries, tc.queries)
		}
	}
}

// TestParseCache: with a cache, a second lint of the same texts (the next
// tenant of a fleet, against its own catalog) parses nothing and finds
// what the first found for the same catalog; the Applied flag and the
// catalog still come from each call, and a syntax error is kept too.
func TestParseCache(t *testing.T) {
	big := onlineDB(t, `CREATE TABLE t (id bigint PRIMARY KEY, v text);
INSERT INTO t SELECT g, 'v' FROM generate_series(1, 20000) g; ANALYZE t;`)
	empty := onlineDB(t, `CREATE TABLE t (id bigint PRIMARY KEY, v text); ANALYZE t;`)
	files := []File{{Name: "1_t.sql", SQL: "CREATE TABLE t (id bigint PRIMARY KEY, v text);", Applied: true},
		{Name: "2_i.sql", SQL: "CREATE INDEX ON t (v);"}, {Name: "3_bad.sql", SQL: "CREATE INDX;"}}
	cache := &ParseCache{}
	var sev []string
	for i, conn := range []*pgx.Conn{big, empty, big} {
		before := pgparse.Parses()
		rep, err := Lint(context.Background(), files, Options{DB: conn, Cache: cache})
		if err != nil {
			t.Fatal(err)
		}
		if n := pgparse.Parses() - before; (i == 0) != (n == 3) || (i > 0 && n != 0) {
			t.Fatalf("lint %d parsed %d texts", i, n)
		}
		if got := findingKeys(rep); !slices.Equal(got, []string{"2_i.sql:1:index-concurrently", "3_bad.sql:1:syntax-error"}) {
			t.Fatalf("lint %d: findings %q", i, got)
		}
		sev = append(sev, severities(rep)[0])
	}
	if want := []string{"index-concurrently:error", "index-concurrently:warning", "index-concurrently:error"}; !slices.Equal(sev, want) {
		t.Fatalf("severities %q, want %q (each call's own catalog)", sev, want)
	}
}
