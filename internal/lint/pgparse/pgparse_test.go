package pgparse

import (
	"errors"
	"testing"
)

// parsers are the two ways to parse: in process (skipped in a build
// without cgo) and through the helper built by TestMain.
func parsers(t *testing.T) map[string]func(string) ([]Stmt, error) {
	out := map[string]func(string) ([]Stmt, error){"helper": newClient(t).Parse}
	if _, ok := builtin().(*Client); !ok {
		out["in process"] = Parse
	}
	return out
}

func TestParse(t *testing.T) {
	for name, parse := range parsers(t) {
		t.Run(name, func(t *testing.T) { testParse(t, parse) })
	}
}

func testParse(t *testing.T, parse func(string) ([]Stmt, error)) {
	sql := "-- lead\nCREATE INDEX CONCURRENTLY i ON t (x); /* c */\n\nSELECT 'é;' /* trailing */ ;\nVACUUM FULL t -- end\n"
	stmts, err := parse(sql)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ typ, text string }{
		{"IndexStmt", "CREATE INDEX CONCURRENTLY i ON t (x)"},
		{"SelectStmt", "SELECT 'é;'"},
		{"VacuumStmt", "VACUUM FULL t"},
	}
	if len(stmts) != len(want) {
		t.Fatalf("got %d statements, want %d", len(stmts), len(want))
	}
	for i, w := range want {
		if got := sql[stmts[i].Start:stmts[i].End]; stmts[i].Node.Type != w.typ || got != w.text {
			t.Errorf("statement %d: %s %q, want %s %q", i, stmts[i].Node.Type, got, w.typ, w.text)
		}
	}
	if !stmts[0].Node.Bool("concurrent") || stmts[0].Node.Child("relation").Str("relname") != "t" {
		t.Errorf("IndexStmt fields: %v", stmts[0].Node.Fields)
	}
}

func TestParseSyntaxError(t *testing.T) {
	for name, parse := range parsers(t) {
		t.Run(name, func(t *testing.T) { testParseSyntaxError(t, parse) })
	}
}

func testParseSyntaxError(t *testing.T, parse func(string) ([]Stmt, error)) {
	sql := "SELECT 'é';\nSELEC 1;"
	_, err := parse(sql)
	var se *SyntaxError
	if !errors.As(err, &se) || se.Offset != len("SELECT 'é';\n") {
		t.Fatalf("err = %#v, want a SyntaxError at byte %d", err, len("SELECT 'é';\n"))
	}
	if _, err := parse("SELECT 1\x00"); !errors.As(err, &se) {
		t.Fatalf("NUL: %v", err)
	}
}
