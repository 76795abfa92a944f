package runner_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/lockmigrate/lockmigrate/internal/pgtest"
	"github.com/lockmigrate/lockmigrate/runner"
)

// TestTransactionControlRefused: a pending transactional file that ends the
// transaction lockmigrate runs it in is refused before anything runs;
// without the check, ROLLBACK in the file would undo its work and still
// record it as applied.
func TestTransactionControlRefused(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		file string
		line int
		ok   bool
	}{
		{file: "CREATE TABLE x (id int);\nROLLBACK;\n", line: 2},
		{file: "BEGIN;\nCREATE TABLE x (id int);\nCOMMIT;\n", line: 1},
		{file: "CREATE TABLE x (id int);\n  end ;", line: 2},
		{file: "start transaction;\nCREATE TABLE x (id int);", line: 1},
		{file: "CREATE TABLE x (id int);\nrollback work and chain;", line: 2},
		{file: "SAVEPOINT s;\nCREATE TABLE x (id int);\nROLLBACK TO SAVEPOINT s;\nCREATE TABLE x (id int);", ok: true},
		{file: "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END;\nCREATE TABLE x (id int);", ok: true},
		{file: "DO $$ BEGIN PERFORM 1; END $$;\nCREATE TABLE x (id int); -- COMMIT;", ok: true},
	} {
		t.Run(tt.file, func(t *testing.T) {
			url := pgtest.Shared().NewDB(t)
			r, conn := newRunner(t, url, load(t, fstest.MapFS{"1_f.sql": {Data: []byte(tt.file)}}), runner.Options{})
			_, err := r.Migrate(ctx)
			var ve *runner.ValidationError
			switch {
			case tt.ok && err != nil:
				t.Fatalf("Migrate = %v, want success", err)
			case tt.ok:
			case !errors.As(err, &ve) || ve.Kind != runner.KindTransactionControl || !strings.Contains(err.Error(), fmt.Sprintf("line %d:", tt.line)):
				t.Fatalf("Migrate = %v, want a transaction_control refusal at line %d", err, tt.line)
			}
			want := 0
			if tt.ok {
				want = 1
			}
			if n := pgtest.QueryInt(t, conn, `SELECT count(*) FROM pg_tables WHERE tablename = 'x'`); n != want {
				t.Fatalf("%d tables x, want %d", n, want)
			}
			// A refused file is refused before anything runs: the history
			// table is not even created.
			n := 0
			if pgtest.QueryInt(t, conn, `SELECT count(*) FROM pg_tables WHERE tablename = 'lockmigrate_history'`) == 1 {
				n = pgtest.QueryInt(t, conn, `SELECT count(*) FROM lockmigrate_history`)
			}
			if n != want {
				t.Fatalf("%d history rows, want %d", n, want)
			}
		})
	}
}
