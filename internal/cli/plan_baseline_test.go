package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/lockmigrate/lockmigrate/internal/bintest"
	"github.com/lockmigrate/lockmigrate/internal/pgtest"

	"github.com/jackc/pgx/v5"
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
