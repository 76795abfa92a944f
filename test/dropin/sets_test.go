package dropin

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lockmigrate/lockmigrate/internal/bintest"
)

// step is one migration of the sets, written in every tool's format: the
// same schema change, so that the tool's run and lockmigrate's must leave
// the same schema. Each one that can inserts its number into applied_log,
// so that a migration run twice shows (and most would fail: CREATE without
// IF NOT EXISTS).
type step struct {
	name string
	// up is the change, down its undo: if any down section ran, the schema
	// would differ from the tool's.
	up, down string
	// noTx: the step needs to run outside a transaction (CREATE INDEX
	// CONCURRENTLY).
	noTx bool
	// routine: up holds a plpgsql body (semicolons inside $$), which goose
	// runs whole only between StatementBegin and StatementEnd.
	routine bool
}

var steps = []step{
	{name: "applied_log", up: "CREATE TABLE applied_log (version bigint NOT NULL, at timestamptz NOT NULL DEFAULT now());\n",
		down: "DROP TABLE applied_log;\n"},
	{name: "accounts", up: "CREATE TABLE accounts (id bigserial PRIMARY KEY, email text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());\n",
		down: "DROP TABLE accounts;\n"},
	{name: "accounts_email", up: "CREATE UNIQUE INDEX CONCURRENTLY accounts_email ON accounts (email);\n",
		down: "DROP INDEX accounts_email;\n", noTx: true},
	{name: "touch_function", up: "CREATE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n  NEW.updated_at := now();\n  RETURN NEW;\nEND;\n$$;\n",
		down: "DROP FUNCTION touch_updated_at();\n", routine: true},
	{name: "accounts_touch", up: "ALTER TABLE accounts ADD COLUMN updated_at timestamptz;\n" +
		"CREATE TRIGGER accounts_touch BEFORE UPDATE ON accounts FOR EACH ROW EXECUTE FUNCTION touch_updated_at();\n",
		down: "DROP TRIGGER accounts_touch ON accounts;\nALTER TABLE accounts DROP COLUMN updated_at;\n"},
	{name: "account_status", up: "CREATE TYPE account_status AS ENUM ('active', 'closed');\n" +
		"ALTER TABLE accounts ADD COLUMN status account_status NOT NULL DEFAULT 'active';\n",
		down: "ALTER TABLE accounts DROP COLUMN status;\nDROP TYPE account_status;\n"},
	{name: "orders", up: "CREATE TABLE orders (id bigserial PRIMARY KEY, account_id bigint NOT NULL REFERENCES accounts (id),\n" +
		"  total numeric(12,2) NOT NULL CHECK (total >= 0), note text DEFAULT 'a;b');\n",
		down: "DROP TABLE orders;\n"},
	{name: "orders_account", up: "CREATE INDEX CONCURRENTLY orders_account ON orders (account_id);\n",
		down: "DROP INDEX orders_account;\n", noTx: true},
	{name: "seed_and_view", up: "CREATE VIEW active_accounts AS SELECT id, email FROM accounts WHERE status = 'active';\n" +
		"DO $$\nBEGIN\n  INSERT INTO accounts (email) VALUES ('seed@example.com');\n  UPDATE accounts SET status = 'active';\nEND;\n$$;\n",
		down: "DROP VIEW active_accounts;\nDELETE FROM accounts;\n", routine: true},
}

// half is the number of steps the tool applies before the switch.
const half = 5

// logSQL is step i's insert into applied_log (1-based).
func logSQL(i int) string { return fmt.Sprintf("INSERT INTO applied_log (version) VALUES (%d);\n", i) }

// toolSet is the set in tool's own layout: its versions (one per step, in
// order), the directory holding the files, and the steps that log (dbmate
// sends a transaction:false block as one query, which PostgreSQL runs in an
// implicit transaction: CREATE INDEX CONCURRENTLY must be alone in it).
type toolSet struct {
	dir      string
	versions []int64
	logged   []int
}

func writeSet(t *testing.T, tool string) toolSet {
	t.Helper()
	files := map[string]string{}
	var set toolSet
	for k, st := range steps {
		i := k + 1
		var name, body string
		switch tool {
		case "goose":
			v := int64(20240101120000 + i) // goose versions may be timestamps
			set.versions = append(set.versions, v)
			name, body = fmt.Sprintf("%d_%s.sql", v, st.name), gooseFile(i, st)
		case "dbmate":
			v := int64(20240201090000 + i)
			set.versions = append(set.versions, v)
			name, body = fmt.Sprintf("%d_%s.sql", v, st.name), dbmateFile(i, st)
		case "tern":
			set.versions = append(set.versions, int64(i))
			name, body = fmt.Sprintf("%03d_%s.sql", i, st.name), ternFile(i, st)
		default:
			t.Fatalf("unknown tool %s", tool)
		}
		files[name] = body
		if !(tool == "dbmate" && st.noTx) {
			set.logged = append(set.logged, i)
		}
	}
	set.dir = bintest.WriteDir(t, files)
	return set
}

func gooseFile(i int, st step) string {
	var b strings.Builder
	if st.noTx {
		b.WriteString("-- +goose NO TRANSACTION\n")
	}
	b.WriteString("-- +goose Up\n")
	if st.routine {
		// goose splits at every line ending in ';' unless told otherwise.
		idx := strings.Index(st.up, "DO $$")
		if idx < 0 {
			idx = strings.Index(st.up, "CREATE FUNCTION")
		}
		b.WriteString(st.up[:idx] + "-- +goose StatementBegin\n" + st.up[idx:] + "-- +goose StatementEnd\n")
	} else {
		b.WriteString(st.up)
	}
	if st.noTx {
		// A block in a no-transaction file: sent whole, one statement.
		b.WriteString("-- +goose StatementBegin\nDO $$\nBEGIN\n  PERFORM 1;\n  PERFORM 2;\nEND;\n$$;\n-- +goose StatementEnd\n")
	}
	b.WriteString(logSQL(i))
	b.WriteString("\n-- +goose Down\n")
	if st.routine {
		b.WriteString("-- +goose StatementBegin\n" + st.down + "-- +goose StatementEnd\n")
	} else {
		b.WriteString(st.down)
	}
	return b.String()
}

func dbmateFile(i int, st step) string {
	if st.noTx {
		return "-- migrate:up transaction:false\n" + st.up + "\n-- migrate:down\n" + st.down
	}
	return "-- migrate:up\n" + st.up + logSQL(i) + "\n-- migrate:down\n" + st.down
}

func ternFile(i int, st step) string {
	var b strings.Builder
	if st.noTx {
		b.WriteString("---- tern: disable-tx ----\n")
	}
	b.WriteString(st.up + logSQL(i) + "\n---- create above / drop below ----\n\n" + st.down)
	return b.String()
}

// toolMigrate runs the real tool on url with set's files up to version
// upTo (all of them when 0).
func toolMigrate(t *testing.T, tool, url string, set toolSet, upTo int64) {
	t.Helper()
	bins := bintest.Peers(t)
	var (
		out string
		err error
	)
	switch tool {
	case "goose":
		args := []string{"-dir", set.dir, "postgres", url, "up"}
		if upTo > 0 {
			args = append(args[:len(args)-1], "up-to", fmt.Sprint(upTo))
		}
		out, err = bintest.RunPeer(t, bins["goose"], args...)
	case "dbmate":
		dir := set.dir
		if upTo > 0 {
			dir = filesUpTo(t, set, upTo)
		}
		out, err = bintest.RunPeer(t, bins["dbmate"], "--url", url, "--migrations-dir", dir, "--no-dump-schema", "migrate")
	case "tern":
		args := []string{"migrate", "--conn-string", url, "--migrations", set.dir}
		if upTo > 0 {
			args = append(args, "--destination", fmt.Sprint(upTo))
		}
		out, err = bintest.RunPeer(t, bins["tern"], args...)
	}
	if err != nil {
		t.Fatalf("%s: %v\n%s", tool, err, out)
	}
}

// filesUpTo copies the files of set up to version v into a new directory
// (dbmate has no "migrate up to").
func filesUpTo(t *testing.T, set toolSet, v int64) string {
	t.Helper()
	entries, err := os.ReadDir(set.dir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for _, e := range entries {
		var n int64
		if _, err := fmt.Sscanf(e.Name(), "%d_", &n); err != nil || n > v {
			continue
		}
		b, err := os.ReadFile(filepath.Join(set.dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = string(b)
	}
	return bintest.WriteDir(t, files)
}
