package pgparse

import (
	"errors"
	"testing"
)

func TestParse(t *testing.T) {
	if !Available() {
		t.Skip("built without cgo")
	}
	sql := "-- lead\nCREATE INDEX CONCURRENTLY i ON t (x); /* c */\n\nSELECT 'é;' /* trailing */ ;\nVACUUM FULL t -- end\n"
	stmts, err := Parse(sql)
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
	if !Available() {
		t.Skip("built without cgo")
	}
	sql := "SELECT 'é';\nSELEC 1;"
	_, err := Parse(sql)
	var se *SyntaxError
	if !errors.As(err, &se) || se.Offset != len("SELECT 'é';\n") {
		t.Fatalf("err = %#v, want a SyntaxError at byte %d", err, len("SELECT 'é';\n"))
	}
	if _, err := Parse("SELECT 1\x00"); !errors.As(err, &se) {
		t.Fatalf("NUL: %v", err)
	}
}
