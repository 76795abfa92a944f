package sqlquote_test

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/lockmigrate/lockmigrate/internal/pgtest"
	"github.com/lockmigrate/lockmigrate/internal/sqlquote"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, pgtest.Options{})) }

var values = []struct{ in, want string }{
	{"", "''"},
	{"plain", "'plain'"},
	{"o'brien", "'o''brien'"},
	{"''", "''''''"},
	{`a\b`, `E'a\\b'`},
	{`\'`, `E'\\'''`},
	{`trailing\`, `E'trailing\\'`},
	{`\x41\n`, `E'\\x41\\n'`},
	{"line\nbreak\ttab", "'line\nbreak\ttab'"},
	{"ünïcode ☃", "'ünïcode ☃'"},
	{"$$ -- /* E'x' ;", "'$$ -- /* E''x'' ;'"},
	{`o'brien\pod-0 "x"`, `E'o''brien\\pod-0 "x"'`},
}

// TestLiteral: the exact forms, plain unless there is a backslash.
func TestLiteral(t *testing.T) {
	for _, tt := range values {
		if got := sqlquote.Literal(tt.in); got != tt.want {
			t.Errorf("Literal(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

// TestLiteralOnServer: every literal reads back as its value on a real
// server, in the simple protocol (as the runner sends them), with
// standard_conforming_strings on and off.
func TestLiteralOnServer(t *testing.T) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgtest.Shared().NewDB(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	for _, scs := range []string{"on", "off"} {
		if _, err := conn.Exec(ctx, "SET standard_conforming_strings = "+scs); err != nil {
			t.Fatal(err)
		}
		for _, tt := range values {
			res, err := conn.PgConn().Exec(ctx, "SELECT "+sqlquote.Literal(tt.in)+"::text").ReadAll()
			if err != nil {
				t.Fatalf("standard_conforming_strings=%s: %q: %v", scs, tt.in, err)
			}
			if len(res) != 1 || len(res[0].Rows) != 1 {
				t.Fatalf("standard_conforming_strings=%s: %q: results %+v", scs, tt.in, res)
			}
			if got := string(res[0].Rows[0][0]); got != tt.in {
				t.Errorf("standard_conforming_strings=%s: %s reads back as %q, want %q", scs, sqlquote.Literal(tt.in), got, tt.in)
			}
		}
	}
}
