package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/lockmigrate/lockmigrate/internal/bintest"
	"github.com/lockmigrate/lockmigrate/internal/pgtest"
	"github.com/lockmigrate/lockmigrate/lock"
)

// TestPlanBaseline: with LOCKMIGRATE_BASELINE_VERSION, plan lists the files
// a run would record as baseline (not run) when the history is empty —
// offline, or with no history table — and says the variable is ignored
// once the history has rows; the run then records and applies exactly what
// the plan said.
func TestPlanBaseline(t *testing.T) {
	ctx := context.Background()
	files := map[string]string{
		"1_users.sql":           "CREATE TABLE users (id int, email text);",
		"2_users_email_idx.sql": "-- lockmigrate:no-transaction\nCREATE INDEX CONCURRENTLY users_email ON users (email);\nANALYZE users;\n",
		"3_orders.sql":          "CREATE TABLE orders (id int, user_id int);",
	}
	tests := []struct {
		name   string
		online bool
		apply  map[string]string // applied first, without a baseline
		bv     string
		want   []string
		states string // history after a run: version:state ...
	}{
		{name: "offline", bv: "2", want: []string{"database: not consulted", "1 users baseline (not run) -",
			"2 users_email_idx baseline (not run) -", "3 orders transaction -",
			"note: LOCKMIGRATE_BASELINE_VERSION=2 and the history is empty: a run records 2 migration(s) (versions 1, 2) as baseline without running them",
			"2 migration(s) would be recorded as baseline (not run), then 1 would run, in this order"}},
		{name: "no history table", online: true, bv: "2", want: []string{"no history table yet", "1 users baseline (not run) -",
			"3 orders transaction -", "2 migration(s) would be recorded as baseline (not run), then 1 would run"},
			states: "1:baseline 2:baseline 3:applied"},
		{name: "above every file", online: true, bv: "1000", want: []string{"(versions 1, 2, 3) as baseline",
			"3 orders baseline (not run) -", "3 migration(s) would be recorded as baseline (not run), then 0 would run"},
			states: "1:baseline 2:baseline 3:baseline"},
		{name: "history not empty", online: true, bv: "2", apply: map[string]string{"1_users.sql": files["1_users.sql"]},
			want: []string{"note: LOCKMIGRATE_BASELINE_VERSION=2 is ignored: the history is not empty",
				"2 users_email_idx no-transaction 2", "2 migration(s) would run, in this order"},
			states: "1:applied 2:applied 3:applied"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"LOCKMIGRATE_DIR": bintest.WriteDir(t, files), "LOCKMIGRATE_BASELINE_VERSION": tt.bv}
			var conn *pgx.Conn
			if tt.online {
				dbURL, _ := secretDB(t)
				env = bintest.With(env, "DATABASE_URL", dbURL, "LOCKMIGRATE_CONNECT_TIMEOUT", "5s")
				conn = pgtest.Connect(t, dbURL)
				if tt.apply != nil {
					if r := runIn(t, ctx, bintest.With(env, "LOCKMIGRATE_DIR", bintest.WriteDir(t, tt.apply), "LOCKMIGRATE_BASELINE_VERSION", "0")); r.Code != 0 {
						t.Fatalf("apply: exit %d\n%s", r.Code, r.Stderr)
					}
				}
			}
			tables := countTables(t, conn)
			r := runIn(t, ctx, env, "plan")
			t.Logf("plan: exit %d\n%s", r.Code, r.Stdout)
			if r.Code != 0 {
				t.Fatalf("exit %d\n%s", r.Code, r.Stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(squash(r.Stdout), w) {
					t.Errorf("stdout lacks %q", w)
				}
			}
			if n := countTables(t, conn); n != tables {
				t.Errorf("plan changed the database: %d tables before, %d after", tables, n)
			}
			var rep struct {
				Schemas []struct {
					Pending []struct {
						Version int64  `json:"version"`
						Mode    string `json:"mode"`
					} `json:"pending"`
				} `json:"schemas"`
			}
			j := runIn(t, ctx, env, "plan", "--json")
			if err := json.Unmarshal([]byte(j.Stdout), &rep); err != nil || j.Code != 0 || len(rep.Schemas) != 1 {
				t.Fatalf("plan --json: exit %d, %v\n%s", j.Code, err, j.Stdout)
			}
			if conn == nil {
				return
			}
			// The run does what the plan said: a pending baseline-mode
			// migration becomes a baseline row, any other an applied one.
			want := map[int64]string{}
			for _, p := range rep.Schemas[0].Pending {
				want[p.Version] = "applied"
				if p.Mode == "baseline" {
					want[p.Version] = "baseline"
				}
			}
			if r := runIn(t, ctx, env); r.Code != 0 {
				t.Fatalf("migrate: exit %d\n%s", r.Code, r.Stderr)
			}
			rows, err := conn.Query(ctx, `SELECT version, state FROM lockmigrate_history ORDER BY version`)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			var v int64
			var state string
			if _, err := pgx.ForEachRow(rows, []any{&v, &state}, func() error {
				got = append(got, fmt.Sprintf("%d:%s", v, state))
				if w, ok := want[v]; ok && w != state {
					t.Errorf("version %d: plan said %s, the run left %s", v, w, state)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, " ") != tt.states {
				t.Errorf("history after the run: %v, want %s", got, tt.states)
			}
		})
	}
}

// TestPlan: the dry run lists what would run, offline or against the
// database, creates nothing, takes no lock, and reports problems with exit
// 5 and validate's messages.
func TestPlan(t *testing.T) {
	ctx := context.Background()
	files := map[string]string{
		"1_users.sql": "CREATE TABLE users (id int, email text);",
		"2_users_email_idx.sql": "-- lockmigrate:no-transaction\nCREATE INDEX CONCURRENTLY users_email ON users (email);\n" +
			"CREATE UNIQUE INDEX CONCURRENTLY users_id ON users (id);\nANALYZE users;\n",
		"3_orders.sql": "CREATE TABLE orders (id int, user_id int);",
	}
	tests := []struct {
		name    string
		online  bool
		apply   map[string]string // applied first (online only)
		files   map[string]string
		env     []string
		args    []string
		code    int
		want    []string // in stdout
		wantErr string   // in the "validation failed" event, identical to validate's
		// notValidate: offline validate does not check transaction modes
		// (it has no history); migrate refuses such a set on an empty
		// database, as the online case below shows.
		notValidate bool
	}{
		{name: "offline", files: files, args: []string{"plan"}, want: []string{"database: not consulted",
			"as it would run on an empty database", "history table public.lockmigrate_history",
			"1 users transaction -", "2 users_email_idx no-transaction 3",
			"3 migration(s) would run"}},
		{name: "offline, all mode with a no-transaction file", files: files, args: []string{"plan"},
			env: []string{"LOCKMIGRATE_TRANSACTION", "all"}, code: exitValidation,
			want:    []string{"problem: validation failed (transaction_mode): 2_users_email_idx.sql", "shared-transaction"},
			wantErr: "transaction_mode", notValidate: true},
		{name: "fresh database, all mode with a no-transaction file", online: true, files: files, args: []string{"plan"},
			env: []string{"LOCKMIGRATE_TRANSACTION", "all"}, code: exitValidation, wantErr: "transaction_mode"},
		{name: "offline, malformed file", files: map[string]string{"1_a.sql": "SELECT 1", "x_b.sql": "SELECT 2"},
			args: []string{"plan"}, code: exitValidation, wantErr: "malformed_name"},
		{name: "fresh database", online: true, files: files, args: []string{"plan"}, want: []string{
			"database: history read without the lock; no history table yet", "(lockmigrate/web-7d9f) from 127.0.0.1",
			"does not exist: the first run creates it", "3 migration(s) would run"}},
		{name: "partly applied", online: true, apply: map[string]string{"1_users.sql": files["1_users.sql"]}, files: files,
			args: []string{"plan"}, want: []string{"schema version 1", "2 users_email_idx no-transaction 3",
				"2 migration(s) would run"}},
		{name: "up to date", online: true, apply: files, files: files, args: []string{"plan"},
			want: []string{"schema version 3", "nothing would run: up to date"}},
		{name: "checksum changed", online: true, apply: files, args: []string{"plan"},
			files: bintest.With(files, "3_orders.sql", "CREATE TABLE orders (id bigint);"), code: exitValidation,
			want: []string{"problem: validation failed (checksum_mismatch): 3_orders.sql"}, wantErr: "checksum_mismatch"},
		{name: "out of order", online: true, args: []string{"plan"},
			apply: map[string]string{"1_users.sql": files["1_users.sql"], "3_orders.sql": files["3_orders.sql"]},
			files: files, code: exitValidation, wantErr: "out_of_order",
			want: []string{"a run would stop on the problem(s) above (exit 5) and apply nothing; 1 migration(s) pending"}},
		{name: "out of order allowed", online: true, args: []string{"plan"}, env: []string{"LOCKMIGRATE_ALLOW_OUT_OF_ORDER", "true"},
			apply: map[string]string{"1_users.sql": files["1_users.sql"], "3_orders.sql": files["3_orders.sql"]},
			files: files, want: []string{"1 migration(s) would run"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := bintest.WriteDir(t, tt.files)
			env := bintest.With(map[string]string{"LOCKMIGRATE_DIR": dir}, tt.env...)
			var conn *pgx.Conn
			if tt.online {
				dbURL, _ := secretDB(t)
				env = bintest.With(env, "DATABASE_URL", dbURL, "LOCKMIGRATE_CONNECT_TIMEOUT", "5s")
				conn = pgtest.Connect(t, dbURL)
				if tt.apply != nil {
					if r := runIn(t, ctx, bintest.With(env, "LOCKMIGRATE_DIR", bintest.WriteDir(t, tt.apply))); r.Code != 0 {
						t.Fatalf("apply: exit %d\n%s", r.Code, r.Stderr)
					}
				}
				// Plan must work, and show the holder, while a run holds the lock.
				if _, err := conn.Exec(ctx, "SET application_name = 'lockmigrate/web-7d9f'"); err != nil {
					t.Fatal(err)
				}
				pgtest.MustLock(t, conn, defaultKey)
			}
			tablesBefore := countTables(t, conn)
			r := runIn(t, ctx, env, tt.args...)
			t.Logf("plan: exit %d\n%s", r.Code, r.Stdout)
			if r.Code != tt.code {
				t.Fatalf("exit %d, want %d\n%s%s", r.Code, tt.code, r.Stdout, r.Stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(squash(r.Stdout), w) {
					t.Errorf("stdout lacks %q", w)
				}
			}
			if n := countTables(t, conn); n != tablesBefore {
				t.Errorf("plan changed the database: %d tables before, %d after", tablesBefore, n)
			}
			if conn != nil {
				assertHolds(t, conn, defaultKey)
				if err := lock.New(conn, defaultKey, nil).Unlock(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if tt.wantErr == "" {
				return
			}
			if tt.notValidate {
				if !strings.Contains(validationError(t, r), tt.wantErr) {
					t.Fatalf("plan's error lacks %q:\n%s", tt.wantErr, r.Stderr)
				}
				return
			}
			v := runIn(t, ctx, env, "validate")
			if got, want := validationError(t, r), validationError(t, v); got == "" || got != want || !strings.Contains(got, tt.wantErr) {
				t.Fatalf("plan's error %q, validate's %q; want the same, with %q", got, want, tt.wantErr)
			}
		})
	}
}

// TestPlanJSON: --json has one section per history table with the pending
// migrations in order, their mode and statement count.
func TestPlanJSON(t *testing.T) {
	ctx := context.Background()
	dbURL, _ := secretDB(t)
	env := bintest.With(baseEnv(dbURL), "LOCKMIGRATE_SCHEMA", "ops", "LOCKMIGRATE_TRANSACTION", "all")
	var rep struct {
		DatabaseConsulted bool `json:"database_consulted"`
		Schemas           []struct {
			HistoryTable  string `json:"history_table"`
			HistoryExists bool   `json:"history_exists"`
			LockKey       int64  `json:"lock_key"`
			LockHolder    any    `json:"lock_holder"`
			Transaction   string `json:"transaction"`
			Pending       []struct {
				Version    int64  `json:"version"`
				File       string `json:"file"`
				Mode       string `json:"mode"`
				Statements int    `json:"statements"`
			} `json:"pending"`
		} `json:"schemas"`
	}
	for _, online := range []bool{false, true} {
		e := env
		if !online {
			e = bintest.With(env, "DATABASE_URL", "")
		}
		r := runIn(t, ctx, e, "plan", "--json")
		if err := json.Unmarshal([]byte(r.Stdout), &rep); err != nil || r.Code != 0 {
			t.Fatalf("plan --json: exit %d, %v\n%s%s", r.Code, err, r.Stdout, r.Stderr)
		}
		s := rep.Schemas
		if rep.DatabaseConsulted != online || len(s) != 1 || s[0].HistoryTable != "ops.lockmigrate_history" ||
			s[0].HistoryExists || s[0].LockKey != lock.DefaultKey("ops", "lockmigrate_history") || s[0].LockHolder != nil ||
			s[0].Transaction != "all" || len(s[0].Pending) != 5 {
			t.Fatalf("online %v: %s", online, r.Stdout)
		}
		for i, p := range s[0].Pending {
			if p.Version != int64(i+1) || p.Mode != "shared-transaction" || p.Statements != 0 || !strings.HasSuffix(p.File, ".sql") {
				t.Fatalf("online %v: pending[%d] = %+v", online, i, p)
			}
		}
	}
	var n int
	if err := pgtest.Connect(t, dbURL).QueryRow(ctx, `SELECT count(*) FROM pg_namespace WHERE nspname = 'ops'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("plan created schema ops (%d, %v)", n, err)
	}
}

// squash collapses runs of blanks, so table output can be matched without
// depending on column widths.
func squash(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.Join(strings.Fields(l), " ")
	}
	return strings.Join(lines, "\n")
}

// validationError returns the error of the "validation failed", "unlock
// failed" or setup event a run logged.
func validationError(t testing.TB, r result) string {
	t.Helper()
	for _, ev := range r.Events(t) {
		if ev["msg"] == "validation failed" || ev["msg"] == "unlock failed" || strings.HasPrefix(fmt.Sprint(ev["msg"]), "invalid migration set") {
			return fmt.Sprint(ev["error"])
		}
	}
	return ""
}

func countTables(t testing.TB, conn *pgx.Conn) int {
	t.Helper()
	if conn == nil {
		return 0
	}
	var n int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_class WHERE relkind IN ('r', 'i')
	  AND relnamespace NOT IN (SELECT oid FROM pg_namespace WHERE nspname IN ('pg_catalog', 'information_schema', 'pg_toast'))`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
