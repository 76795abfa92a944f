package faults

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lockmigrate/lockmigrate/internal/bintest"
	"github.com/lockmigrate/lockmigrate/internal/pgtest"
	"github.com/lockmigrate/lockmigrate/internal/pushtest"
	"github.com/lockmigrate/lockmigrate/lock"
)

// badCtx is one case's world: a fresh database owned by a password role, a
// migrations directory (by default one valid migration) and the run's
// environment, arguments and process options, all of which setup may change.
type badCtx struct {
	d    *testDB
	dir  string
	env  map[string]string
	args []string
	opts runOpts
}

// badCase is one row of the matrix.
type badCase struct {
	name  string
	files map[string]string // the migration set; nil: 1_ok.sql
	setup func(t *testing.T, c *badCtx)
	code  int
	want  []string // fragments of stderr (or stdout) a user can act on
	// outcome: "nothing" (no history rows, no new tables), "applied" (the
	// set applied once) or "" (check does it).
	outcome string
	check   func(t *testing.T, c *badCtx, r result)
	bound   time.Duration // longest acceptable run; 0: 10 s
	// bug describes a product bug this row shows: code and want are then
	// today's behaviour, and with LOCKMIGRATE_FAULT_BUGS=1 the row asserts
	// fixCode and fixWant, the behaviour after the fix, instead.
	bug     string
	fixCode int
	fixWant []string
}

const okSQL = "CREATE TABLE ok_t (id int);\n"

func set(kv ...string) func(*testing.T, *badCtx) {
	return func(_ *testing.T, c *badCtx) {
		for i := 0; i+1 < len(kv); i += 2 {
			c.env[kv[i]] = kv[i+1]
		}
	}
}

func args(a ...string) func(*testing.T, *badCtx) {
	return func(_ *testing.T, c *badCtx) { c.args = a }
}

// replaceURL swaps old for new in the database URL; "{port}" in either
// stands for the server's port.
func replaceURL(old, new string) func(*testing.T, *badCtx) {
	return func(t *testing.T, c *badCtx) {
		port := strconv.Itoa(c.d.srv.Port())
		old, new := strings.ReplaceAll(old, "{port}", port), strings.ReplaceAll(new, "{port}", port)
		if !strings.Contains(c.env["DATABASE_URL"], old) {
			t.Fatalf("%q not in %s", old, c.env["DATABASE_URL"])
		}
		c.env["DATABASE_URL"] = strings.Replace(c.env["DATABASE_URL"], old, new, 1)
	}
}

func adminExec(t *testing.T, c *badCtx, sql string) {
	t.Helper()
	if err := c.d.srv.Exec(context.Background(), c.d.name, sql); err != nil {
		t.Fatal(err)
	}
}

// historyDDL is the history table as lockmigrate creates it.
const historyDDL = `CREATE TABLE lockmigrate_history (
    version bigint PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp(), duration_ms bigint NOT NULL DEFAULT 0,
    applied_by text NOT NULL DEFAULT '', run_id uuid,
    state text NOT NULL DEFAULT 'applied' CHECK (state IN ('applied', 'running', 'baseline')),
    statements_done integer NOT NULL DEFAULT 0)`

func badCases(t *testing.T) []badCase {
	bigFiles := func() map[string]string {
		var b strings.Builder
		b.WriteString("CREATE TABLE big (id int, payload text);\n")
		chunk := strings.Repeat("lockmigrate-50MB-", (1<<20)/17)
		for i := range 50 {
			fmt.Fprintf(&b, "INSERT INTO big VALUES (%d, '%s');\n", i, chunk)
		}
		return map[string]string{"1_big.sql": b.String()}
	}
	nobody := func(t *testing.T, c *badCtx) {
		u, err := user.Lookup("nobody")
		if err != nil || os.Geteuid() != 0 {
			t.Skip("needs root and a nobody user to make a file unreadable (root reads everything)")
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.opts.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
	}
	return []badCase{
		// ---- configuration: exit 2, nothing touched ----
		{name: "malformed duration", setup: set("LOCKMIGRATE_WAIT_TIMEOUT", "ten"), code: 2,
			want: []string{"LOCKMIGRATE_WAIT_TIMEOUT", `\"ten\"`, "Go duration"}, outcome: "nothing"},
		{name: "negative duration", setup: set("LOCKMIGRATE_CONNECT_TIMEOUT", "-5s"), code: 2,
			want: []string{"LOCKMIGRATE_CONNECT_TIMEOUT", "not negative"}, outcome: "nothing"},
		{name: "overflowing duration", setup: set("LOCKMIGRATE_LOCK_TIMEOUT", "9999999999h"), code: 2,
			want: []string{"LOCKMIGRATE_LOCK_TIMEOUT", "Go duration"}, outcome: "nothing"},
		{name: "duration with two dots", setup: set("LOCKMIGRATE_STATEMENT_TIMEOUT", "1.5.5s"), code: 2,
			want: []string{"LOCKMIGRATE_STATEMENT_TIMEOUT", "Go duration"}, outcome: "nothing"},
		{name: "zero wait timeout", setup: set("LOCKMIGRATE_WAIT_TIMEOUT", "0"), code: 2,
			want: []string{"LOCKMIGRATE_WAIT_TIMEOUT", "positive"}, outcome: "nothing"},
		{name: "negative number", setup: set("LOCKMIGRATE_LOCK_RETRIES", "-1"), code: 2,
			want: []string{"LOCKMIGRATE_LOCK_RETRIES", "0 or more"}, outcome: "nothing"},
		{name: "overflowing number", setup: set("LOCKMIGRATE_LOCK_RETRIES", "99999999999999999999"), code: 2,
			want: []string{"LOCKMIGRATE_LOCK_RETRIES", "whole number"}, outcome: "nothing"},
		{name: "zero keepalive count", setup: set("LOCKMIGRATE_TCP_KEEPALIVES_COUNT", "0"), code: 2,
			want: []string{"LOCKMIGRATE_TCP_KEEPALIVES_COUNT", "1 to 127"}, outcome: "nothing"},
		{name: "sub-second keepalive idle", setup: set("LOCKMIGRATE_TCP_KEEPALIVES_IDLE", "500ms"), code: 2,
			want: []string{"LOCKMIGRATE_TCP_KEEPALIVES_IDLE", "whole number of seconds"}, outcome: "nothing"},
		{name: "keepalive count above the kernel's 127", setup: set("LOCKMIGRATE_TCP_KEEPALIVES_COUNT", "1000"), code: 2,
			want: []string{"LOCKMIGRATE_TCP_KEEPALIVES_COUNT", "1 to 127"}, outcome: "nothing"},
		{name: "keepalive idle above the kernel's 32767 s", setup: set("LOCKMIGRATE_TCP_KEEPALIVES_IDLE", "100000s"), code: 2,
			want: []string{"LOCKMIGRATE_TCP_KEEPALIVES_IDLE", "at most 32767s"}, outcome: "nothing"},
		{name: "TCP user timeout above 2^31-1 ms", setup: set("LOCKMIGRATE_TCP_USER_TIMEOUT", "1500h"), code: 2,
			want: []string{"LOCKMIGRATE_TCP_USER_TIMEOUT", "at most 2147483647ms"}, outcome: "nothing"},
		{name: "all invalid variables at once", setup: set("LOCKMIGRATE_ON_LOCKED", "never", "LOCKMIGRATE_LOG_LEVEL", "loud", "LOCKMIGRATE_WAIT_TIMEOUT", "soon"), code: 2,
			want: []string{"LOCKMIGRATE_ON_LOCKED", "LOCKMIGRATE_LOG_LEVEL", "LOCKMIGRATE_WAIT_TIMEOUT"}, outcome: "nothing"},
		{name: "unknown on_locked", setup: set("LOCKMIGRATE_ON_LOCKED", "sometimes"), code: 2,
			want: []string{"LOCKMIGRATE_ON_LOCKED", "skip, wait"}, outcome: "nothing"},
		{name: "unknown transaction mode", setup: set("LOCKMIGRATE_TRANSACTION", "none"), code: 2,
			want: []string{"LOCKMIGRATE_TRANSACTION", "each, all"}, outcome: "nothing"},
		{name: "unknown log level", setup: set("LOCKMIGRATE_LOG_LEVEL", "verbose"), code: 2,
			want: []string{"LOCKMIGRATE_LOG_LEVEL", "debug, info, warn, error"}, outcome: "nothing"},
		{name: "unknown log format", setup: set("LOCKMIGRATE_LOG_FORMAT", "xml"), code: 2,
			want: []string{"LOCKMIGRATE_LOG_FORMAT", "json, text"}, outcome: "nothing"},
		{name: "boolean yes", setup: set("LOCKMIGRATE_ALLOW_OUT_OF_ORDER", "yes"), code: 2,
			want: []string{"LOCKMIGRATE_ALLOW_OUT_OF_ORDER", "true or false"}, outcome: "nothing"},
		{name: "pushgateway ftp url", setup: set("LOCKMIGRATE_PUSHGATEWAY_URL", "ftp://gw:9091"), code: 2,
			want: []string{"LOCKMIGRATE_PUSHGATEWAY_URL", "http://"}, outcome: "nothing"},
		{name: "grouping with instance", setup: set("LOCKMIGRATE_PUSHGATEWAY_GROUPING", "instance=pod-1"), code: 2,
			want: []string{"LOCKMIGRATE_PUSHGATEWAY_GROUPING", "instance"}, outcome: "nothing"},
		{name: "schema name too long", setup: set("LOCKMIGRATE_SCHEMA", strings.Repeat("s", 64)), code: 2,
			want: []string{"LOCKMIGRATE_SCHEMA", "1 to 63 bytes"}, outcome: "nothing"},
		{name: "DATABASE_URL and DATABASE_URL_FILE", setup: func(t *testing.T, c *badCtx) {
			f := filepath.Join(t.TempDir(), "url")
			os.WriteFile(f, []byte(c.d.url), 0o600)
			c.env["DATABASE_URL_FILE"] = f
		}, code: 2, want: []string{"DATABASE_URL_FILE", "only one of DATABASE_URL and DATABASE_URL_FILE"}, outcome: "nothing"},
		{name: "unreadable DATABASE_URL_FILE", setup: func(t *testing.T, c *badCtx) {
			nobody(t, c)
			f := filepath.Join(publicDir(t), "url")
			os.WriteFile(f, []byte(c.d.url), 0o000)
			c.env["DATABASE_URL_FILE"] = f
			delete(c.env, "DATABASE_URL")
			os.Chmod(c.dir, 0o755)
			os.Chmod(filepath.Dir(c.dir), 0o755)
		}, code: 2, want: []string{"DATABASE_URL_FILE", "readable file", "permission denied"}, outcome: "nothing"},
		{name: "DATABASE_URL_FILE is a directory", setup: func(t *testing.T, c *badCtx) {
			c.env["DATABASE_URL_FILE"] = t.TempDir()
			delete(c.env, "DATABASE_URL")
		}, code: 2, want: []string{"DATABASE_URL_FILE", "is a directory"}, outcome: "nothing"},
		{name: "empty DATABASE_URL_FILE", setup: func(t *testing.T, c *badCtx) {
			f := filepath.Join(t.TempDir(), "url")
			os.WriteFile(f, []byte("\n"), 0o600)
			c.env["DATABASE_URL_FILE"] = f
			delete(c.env, "DATABASE_URL")
		}, code: 2, want: []string{"DATABASE_URL_FILE", "non-empty"}, outcome: "nothing"},
		{name: "unparsable URL", setup: replaceURL(":{port}/", ":notaport/"), code: 2,
			want: []string{"DATABASE_URL", "postgres:// URL"}, outcome: "nothing"},
		{name: "bad sslmode", setup: replaceURL("sslmode=disable", "sslmode=bogus"), code: 2,
			want: []string{"DATABASE_URL", "sslmode"}, outcome: "nothing"},
		{name: "LOCKMIGRATE_DIR missing", setup: func(_ *testing.T, c *badCtx) { c.env["LOCKMIGRATE_DIR"] = filepath.Join(c.dir, "nope") },
			code: 2, want: []string{"LOCKMIGRATE_DIR", "readable directory"}, outcome: "nothing"},
		{name: "LOCKMIGRATE_DIR is a file", setup: func(_ *testing.T, c *badCtx) { c.env["LOCKMIGRATE_DIR"] = filepath.Join(c.dir, "1_ok.sql") },
			code: 2, want: []string{"LOCKMIGRATE_DIR", "readable directory"}, outcome: "nothing"},
		{name: "LOCKMIGRATE_DIR is a symlink loop", setup: func(t *testing.T, c *badCtx) {
			loop := filepath.Join(t.TempDir(), "loop")
			if err := os.Symlink(loop, loop); err != nil {
				t.Fatal(err)
			}
			c.env["LOCKMIGRATE_DIR"] = loop
		}, code: 2, want: []string{"LOCKMIGRATE_DIR", "readable directory"}, outcome: "nothing"},
		{name: "symlink loop inside LOCKMIGRATE_DIR", setup: func(t *testing.T, c *badCtx) {
			if err := os.Symlink("2_loop.sql", filepath.Join(c.dir, "2_loop.sql")); err != nil {
				t.Fatal(err)
			}
		}, code: 5, want: []string{"2_loop.sql", "unreadable_file", "too many levels of symbolic links"}, outcome: "nothing"},
		{name: "unknown command", setup: args("migrat"), code: 2, want: []string{`unknown command "migrat"`, "--help"}, outcome: "nothing"},
		{name: "migrate with an argument", setup: args("migrate", "now"), code: 2, want: []string{"takes no arguments"}, outcome: "nothing"},
		{name: "resolve with a bad version", setup: args("resolve", "abc", "retry"), code: 2, want: []string{"positive version", "applied or retry"}, outcome: "nothing"},
		{name: "resolve with a bad action", setup: args("resolve", "1", "maybe"), code: 2, want: []string{"applied or retry"}, outcome: "nothing"},
		{name: "resolve with nothing to resolve", setup: args("resolve", "1", "retry"), code: 2, want: []string{"nothing to resolve", "no history table"}, outcome: "nothing"},

		// ---- connecting: exit 3 ----
		{name: "unknown host", setup: func(t *testing.T, c *badCtx) {
			if why := netnsUsable(); why != "" {
				t.Skipf("the lookup runs in an isolated network namespace so no DNS query leaves the machine, and namespaces are unusable (%s)", why)
			}
			// In a namespace with only loopback the resolver is unreachable,
			// which is a DNS failure like NXDOMAIN: retried, then exit 3.
			c.opts.wrap = []string{"ip", "netns", "exec", isolatedNetns(t)}
			replaceURL("127.0.0.1:{port}", "nohost.invalid:5432")(t, c)
			c.env["LOCKMIGRATE_CONNECT_TIMEOUT"] = "2s"
		}, code: 3, want: []string{"nohost.invalid", "database unreachable"}, outcome: "nothing", bound: 4 * time.Second},
		{name: "wrong port", setup: func(t *testing.T, c *badCtx) {
			replaceURL("127.0.0.1:{port}", "127.0.0.1:1")(t, c)
			c.env["LOCKMIGRATE_CONNECT_TIMEOUT"] = "1s"
		}, code: 3, want: []string{"connection refused", "database unreachable"}, outcome: "nothing", bound: 3 * time.Second},
		{name: "wrong password", setup: func(t *testing.T, c *badCtx) {
			replaceURL(urlEscape(c.d.password), "wrong-password")(t, c)
			c.env["LOCKMIGRATE_CONNECT_TIMEOUT"] = "30s"
		}, code: 3, want: []string{"28P01", "not retried"}, outcome: "nothing", bound: 5 * time.Second},
		{name: "missing database", setup: func(t *testing.T, c *badCtx) {
			replaceURL("/"+c.d.name+"?", "/no_such_db?")(t, c)
			c.env["LOCKMIGRATE_CONNECT_TIMEOUT"] = "30s"
		}, code: 3, want: []string{"3D000", "no_such_db", "not retried"}, outcome: "nothing", bound: 5 * time.Second},
		{name: "sslmode=require without TLS", setup: replaceURL("sslmode=disable", "sslmode=require"),
			code: 3, want: []string{"TLS", "not retried"}, outcome: "nothing", bound: 5 * time.Second},

		// ---- the migration set: exit 5 before connecting ----
		{name: "version overflowing int64", files: map[string]string{"1_ok.sql": okSQL, "99999999999999999999_big.sql": "SELECT 1;"},
			code: 5, want: []string{"99999999999999999999_big.sql", "signed 64-bit", "malformed_name"}, outcome: "nothing"},
		{name: "version zero", files: map[string]string{"0_zero.sql": okSQL}, code: 5, want: []string{"0_zero.sql", "positive"}, outcome: "nothing"},
		{name: "duplicate versions, different names", files: map[string]string{"1_ok.sql": okSQL, "01_other.up.sql": "CREATE TABLE other (id int);"},
			code: 5, want: []string{"duplicate_version", "1_ok.sql", "01_other.up.sql"}, outcome: "nothing"},
		{name: "misspelt directive", files: map[string]string{"1_ok.sql": "-- lockmigrate:no-transactoin\n" + okSQL},
			code: 5, want: []string{"1_ok.sql", "unknown directive"}, outcome: "nothing"},
		{name: "unsplittable no-transaction file", files: map[string]string{"1_ok.sql": "-- lockmigrate:no-transaction\nSELECT 'oops;\n"},
			code: 5, want: []string{"1_ok.sql", "malformed_sql", "line 2"}, outcome: "nothing"},

		// ---- migration content and the history table ----
		{name: "non-UTF-8 SQL", files: map[string]string{"1_ok.sql": okSQL, "2_latin1.sql": "CREATE TABLE l1 (s text);\nINSERT INTO l1 VALUES ('caf\xe9');\n"},
			code: 1, want: []string{"2_latin1.sql", "22021", "UTF8"}, outcome: "",
			check: func(t *testing.T, c *badCtx, r result) {
				// 1 is applied and 2 rolled back whole.
				if n := mustInt(t, c.d.admin, `SELECT count(*) FROM lockmigrate_history`); n != 1 {
					t.Errorf("history: %d rows, want 1 (version 1 only)", n)
				}
				if n := mustInt(t, c.d.admin, `SELECT count(*) FROM pg_tables WHERE tablename = 'l1'`); n != 0 {
					t.Errorf("half-applied: table l1 exists")
				}
			}},
		{name: "50 MB migration", files: bigFiles(), code: 0, want: []string{`"outcome":"applied"`}, outcome: "",
			bound: 60 * time.Second, check: func(t *testing.T, c *badCtx, r result) {
				if n := mustInt(t, c.d.admin, `SELECT count(*) FROM big`); n != 50 {
					t.Errorf("big: %d rows, want 50", n)
				}
				if len(r.Stderr) > 64<<10 {
					t.Errorf("%d bytes of log for a 50 MB file: the SQL leaks into the log", len(r.Stderr))
				}
				t.Logf("50 MB migration applied in %s", ms(r.Elapsed))
			}},
		// An empty set is an error (issue 14): an init container pointed at
		// an unmounted or wrong directory must not let the application start.
		{name: "empty migrations dir", files: map[string]string{}, code: 5, want: []string{"no_migrations", "no migrations found in "}, outcome: "nothing"},
		{name: "only non-.sql files", files: map[string]string{"1_a.SQL": okSQL, "2_b.sql.txt": okSQL, "README.md": "# x", "3_c.down.sql": okSQL},
			code: 5, want: []string{"no_migrations", "no migrations found in "}, outcome: "nothing"},
		{name: "history table with the wrong columns", setup: func(t *testing.T, c *badCtx) {
			adminExec(t, c, "CREATE TABLE lockmigrate_history (id int, note text); ALTER TABLE lockmigrate_history OWNER TO "+ident(c.d.role))
		}, code: 1, want: []string{"read history table", "lockmigrate_history", "42703"}, outcome: "nothing"},
		{name: "history table read-only for the role", setup: func(t *testing.T, c *badCtx) {
			adminExec(t, c, historyDDL+"; GRANT SELECT ON lockmigrate_history TO "+ident(c.d.role))
		}, code: 1, want: []string{"lockmigrate_history", "permission denied", "42501"}, outcome: "nothing"},
		{name: "history table without privileges", setup: func(t *testing.T, c *badCtx) {
			adminExec(t, c, historyDDL)
		}, code: 1, want: []string{"lockmigrate_history", "permission denied", "42501"}, outcome: "nothing"},

		// ---- identifiers and keys that must work ----
		{name: "schema name needing quotes", setup: set("LOCKMIGRATE_SCHEMA", "My Schema"), code: 0, outcome: "applied",
			check: func(t *testing.T, c *badCtx, r result) {
				if n := mustInt(t, c.d.admin, `SELECT count(*) FROM "My Schema".lockmigrate_history`); n != 1 {
					t.Errorf(`"My Schema".lockmigrate_history: %d rows`, n)
				}
			}},
		{name: "schema name with SQL injection", setup: func(t *testing.T, c *badCtx) {
			adminExec(t, c, "CREATE TABLE y (id int); ALTER TABLE y OWNER TO "+ident(c.d.role))
			c.env["LOCKMIGRATE_SCHEMA"] = "x; DROP TABLE y"
		}, code: 0, outcome: "applied", check: func(t *testing.T, c *badCtx, r result) {
			if n := mustInt(t, c.d.admin, `SELECT count(*) FROM pg_tables WHERE tablename = 'y' AND schemaname = 'public'`); n != 1 {
				t.Errorf("table y was dropped")
			}
			if n := mustInt(t, c.d.admin, `SELECT count(*) FROM "x; DROP TABLE y".lockmigrate_history`); n != 1 {
				t.Errorf("history not in the schema named literally")
			}
		}},
		{name: "table name with SQL injection", setup: func(t *testing.T, c *badCtx) {
			adminExec(t, c, "CREATE TABLE y (id int); ALTER TABLE y OWNER TO "+ident(c.d.role))
			c.env["LOCKMIGRATE_TABLE"] = `h"; DROP TABLE y; --`
		}, code: 0, outcome: "applied", check: func(t *testing.T, c *badCtx, r result) {
			if n := mustInt(t, c.d.admin, `SELECT count(*) FROM pg_tables WHERE tablename = 'y'`); n != 1 {
				t.Errorf("table y was dropped")
			}
			if n := mustInt(t, c.d.admin, `SELECT count(*) FROM public."h""; DROP TABLE y; --"`); n != 1 {
				t.Errorf("history not in the table named literally")
			}
		}},
		{name: "lock key that is not a number", setup: set("LOCKMIGRATE_LOCK_KEY", "my-app/migrations"), code: 0, outcome: "applied",
			want: []string{fmt.Sprintf(`"lock_key":%d`, lock.KeyFromString("my-app/migrations"))}},
		{name: "lock key overflowing int64", setup: set("LOCKMIGRATE_LOCK_KEY", "99999999999999999999"), code: 0, outcome: "applied",
			want: []string{fmt.Sprintf(`"lock_key":%d`, lock.KeyFromString("99999999999999999999"))}},
		{name: "unreachable Pushgateway", setup: set("LOCKMIGRATE_PUSHGATEWAY_URL", "http://127.0.0.1:1", "LOCKMIGRATE_PUSHGATEWAY_TIMEOUT", "2s"),
			code: 0, outcome: "applied", want: []string{"metrics push failed", `"metrics_pushed":false`}, bound: 5 * time.Second},
	}
}

// badMatrixRow is one printed line of the matrix.
type badMatrixRow struct {
	name     string
	code     int
	finished bool
	elapsed  time.Duration
	skipped  string
	bug      string
}

// TestBadInputMatrix runs the binary on bad inputs, each against a fresh
// database whose URL carries a password, and checks the exit code, a message
// a user can act on, that the password never appears, and that nothing was
// applied (or, for the inputs that must work, that everything was, once).
func TestBadInputMatrix(t *testing.T) {
	srv := pgtest.Shared()
	cases := badCases(t)
	var (
		mu   sync.Mutex
		rows []badMatrixRow
	)
	t.Run("cases", func(t *testing.T) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				row := badMatrixRow{name: tc.name, code: -1}
				defer func() {
					if t.Skipped() {
						row.skipped = "skipped"
					}
					mu.Lock()
					rows = append(rows, row)
					mu.Unlock()
				}()
				files := tc.files
				if files == nil {
					files = map[string]string{"1_ok.sql": okSQL}
				}
				c := &badCtx{d: newTestDB(t, srv), dir: bintest.WriteDir(t, files)}
				c.env = bintest.With(c.d.env(c.dir), "LOCKMIGRATE_CONNECT_TIMEOUT", "5s")
				if tc.setup != nil {
					tc.setup(t, c)
				}
				before := userTables(t, c.d.admin)
				bound := tc.bound
				if bound == 0 {
					bound = 10 * time.Second
				}
				r := runBin(c.env, bound+30*time.Second, c.opts.withArgs(c.args))
				row.code, row.elapsed, row.finished = r.Code, r.Elapsed, r.LastFinished() != nil
				bintest.CheckNoSecrets(t, r.Stdout, r.Stderr)
				wantCode, want := tc.code, tc.want
				if tc.bug != "" {
					row.bug = tc.bug
					if os.Getenv("LOCKMIGRATE_FAULT_BUGS") == "1" {
						wantCode, want = tc.fixCode, tc.fixWant
					}
				}
				if r.Code != wantCode {
					t.Errorf("exit %d, want %d", r.Code, wantCode)
				}
				out := r.Stdout + r.Stderr
				for _, w := range want {
					if !strings.Contains(out, w) {
						t.Errorf("output lacks %q", w)
					}
				}
				if r.Elapsed > bound {
					t.Errorf("took %s, bound %s", ms(r.Elapsed), ms(bound))
				}
				switch tc.outcome {
				case "nothing":
					after := userTables(t, c.d.admin)
					if added := slices.DeleteFunc(slices.Clone(after), func(s string) bool {
						return slices.Contains(before, s) || strings.HasSuffix(s, ".lockmigrate_history")
					}); len(added) > 0 {
						t.Errorf("tables created: %v", added)
					}
					if slices.Contains(after, "public.lockmigrate_history") {
						if n, err := queryInt(context.Background(), c.d.admin, `SELECT count(*) FROM lockmigrate_history`); err == nil && n != 0 {
							t.Errorf("history has %d row(s)", n)
						}
					}
				case "applied":
					if n := mustInt(t, c.d.admin, `SELECT count(*) FROM pg_tables WHERE tablename = 'ok_t'`); n != 1 {
						t.Errorf("ok_t not created")
					}
				}
				if tc.check != nil {
					tc.check(t, c, r)
				}
				if _, err := waitNoAdvisoryLocks(context.Background(), c.d.admin, 5*time.Second); err != nil {
					t.Error(err)
				}
				if t.Failed() {
					t.Logf("%s", r.Brief())
				}
			})
		}
	})

	order := map[string]int{}
	for i, tc := range cases {
		order[tc.name] = i
	}
	slices.SortFunc(rows, func(a, b badMatrixRow) int { return order[a.name] - order[b.name] })
	var b bytes.Buffer
	fmt.Fprintf(&b, "%-42s %5s %-12s %s\n", "input", "exit", "run finished", "time")
	fmt.Fprintf(&b, "%s\n", strings.Repeat("-", 72))
	counts := map[int]int{}
	skipped, bugs := 0, 0
	for _, r := range rows {
		if r.skipped != "" {
			skipped++
			fmt.Fprintf(&b, "%-42s %5s\n", r.name, "skip")
			continue
		}
		counts[r.code]++
		note := ""
		if r.bug != "" {
			note = "  BUG: " + r.bug
			bugs++
		}
		fmt.Fprintf(&b, "%-42s %5d %-12v %-8s%s\n", r.name, r.code, r.finished, ms(r.elapsed), note)
	}
	t.Logf("bad input matrix (input -> exit code):\n%s", b.String())
	summary(t, "inputs=%d exit_codes=%v skipped=%d rows_showing_bugs=%d", len(rows), counts, skipped, bugs)
}

func (o runOpts) withArgs(a []string) runOpts {
	o.args = a
	return o
}

// userTables lists the tables outside the system schemas.
func userTables(t *testing.T, admin string) []string {
	t.Helper()
	c := mustConnect(t, admin)
	rows, err := c.Query(context.Background(), `SELECT schemaname || '.' || tablename FROM pg_tables
  WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for rows.Next() {
		var s string
		rows.Scan(&s)
		out = append(out, s)
	}
	return out
}

// TestSetupFailuresReported reproduces a product bug: the README says every
// migrate run ends with one "run finished" event, and metrics are skipped
// only for configuration errors (exit 2). A broken migration set (duplicate
// versions after a bad merge: exit 5) and an unreadable migration file
// (exit 1) fail in setup, before the code that logs "run finished" and
// pushes metrics, so neither is logged as finished nor pushed: log-based
// alerts on "run finished" and the lockmigrate_last_failure alert never see
// a deployment that fails this way.
func TestSetupFailuresReported(t *testing.T) {
	gw := pushtest.Start(t, false)
	d := newTestDB(t, pgtest.Shared())
	dir := bintest.WriteDir(t, map[string]string{"1_a.sql": okSQL, "01_b.sql": okSQL})
	r := runBin(bintest.With(d.env(dir), "LOCKMIGRATE_PUSHGATEWAY_URL", gw.URL), 30*time.Second, runOpts{})
	if r.Code != 5 {
		t.Fatalf("want exit 5: %s", r.Brief())
	}
	fin := r.LastFinished()
	if fin == nil || num(fin, "exit_code") != 5 || str(fin, "error_kind") != "validation" {
		t.Errorf("no run finished event with exit_code 5 and error_kind validation:\n%s", r.Stderr)
	}
	if groups := gw.Groups(t); len(groups) == 0 {
		t.Errorf("nothing pushed to the Pushgateway for a failed run")
	}
}
