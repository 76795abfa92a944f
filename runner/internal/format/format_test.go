package format

import (
	"errors"
	"regexp"
	"strings"
	"testing"
)

const gooseFile = `-- a leading comment
-- +goose Up
CREATE TABLE a (id int);
-- +goose StatementBegin
CREATE FUNCTION f() RETURNS int AS $$
BEGIN
  RETURN 1;
END;
$$ LANGUAGE plpgsql;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION f();
DROP TABLE a;
`

func TestParse(t *testing.T) {
	tests := []struct {
		name   string
		file   string // file name, default 1_a.sql
		data   string
		format Name
		// want: the format read, the up part, no-transaction
		want Name
		up   string
		noTx bool
		// or an error: its line, whether it is the safety net, a substring
		line int
		down bool
		msg  string
	}{
		{name: "plain file is lockmigrate", data: "CREATE TABLE a (id int);\n", want: Lockmigrate, up: "CREATE TABLE a (id int);\n"},
		{name: "plain .up.sql is golang-migrate", file: "1_a.up.sql", data: "SELECT 1;", want: GolangMigrate, up: "SELECT 1;"},
		{name: "forced golang-migrate refuses a plain name", data: "SELECT 1;", format: GolangMigrate, msg: "golang-migrate reads only"},
		{name: "forced lockmigrate keeps goose comments", data: "-- +goose Up\nSELECT 1;\n", format: Lockmigrate, want: Lockmigrate,
			up: "-- +goose Up\nSELECT 1;\n"},
		{name: "forced lockmigrate with a goose Down", data: "-- +goose Up\nCREATE TABLE a (id int);\n-- +goose Down\nDROP TABLE a;\n",
			format: Lockmigrate, line: 3, down: true, msg: `a goose down marker "-- +goose Down"`},
		{name: "lockmigrate file with a dbmate down", data: "SELECT 1;\n  -- migrate:down\nSELECT 2;\n", line: 2, down: true, msg: "dbmate down marker"},

		// goose
		{name: "goose up only", data: gooseFile, want: Goose, up: gooseFile[:strings.Index(gooseFile, "-- +goose Down")]},
		{name: "goose case-insensitive annotations", data: "--+goose up\nSELECT 1;\n-- +goose DOWN\nSELECT 2;\n", want: Goose, up: "--+goose up\nSELECT 1;\n"},
		{name: "goose CRLF", data: "-- +goose Up\r\nSELECT 1;\r\n-- +goose Down\r\nSELECT 2;\r\n", want: Goose, up: "-- +goose Up\r\nSELECT 1;\r\n"},
		{name: "goose BOM", data: "\ufeff-- +goose Up\nSELECT 1;\n", want: Goose, up: "\ufeff-- +goose Up\nSELECT 1;\n"},
		{name: "goose without Down", data: "-- +goose Up\nSELECT 1;\n", want: Goose, up: "-- +goose Up\nSELECT 1;\n"},
		{name: "goose NO TRANSACTION before Up", data: "-- +goose NO TRANSACTION\n-- +goose Up\nCREATE INDEX CONCURRENTLY i ON a (id);\n-- +goose Down\nDROP INDEX i;\n",
			want: Goose, up: "-- +goose NO TRANSACTION\n-- +goose Up\nCREATE INDEX CONCURRENTLY i ON a (id);\n", noTx: true},
		{name: "goose no transaction lower case", data: "-- +goose Up\n-- +goose no transaction\nSELECT 1;\n", want: Goose,
			up: "-- +goose Up\n-- +goose no transaction\nSELECT 1;\n", noTx: true},
		{name: "goose NO TRANSACTION in Down", data: "-- +goose Up\nSELECT 1;\n-- +goose Down\n-- +goose NO TRANSACTION\nSELECT 2;\n",
			line: 4, msg: "move the line above"},
		{name: "goose ENVSUB ON", data: "-- +goose Up\n-- +goose ENVSUB ON\nSELECT '${X}';\n", line: 2, msg: "substitutes environment variables"},
		{name: "goose ENVSUB ON before Up", data: "-- +goose ENVSUB ON\n-- +goose Up\nSELECT 1;\n", line: 1, msg: "ENVSUB ON"},
		{name: "goose ENVSUB ON in Down only", data: "-- +goose Up\nSELECT 1;\n-- +goose Down\n-- +goose ENVSUB ON\nSELECT '${X}';\n",
			want: Goose, up: "-- +goose Up\nSELECT 1;\n"},
		{name: "goose ENVSUB OFF", data: "-- +goose Up\n-- +goose ENVSUB OFF\nSELECT 1;\n", want: Goose, up: "-- +goose Up\n-- +goose ENVSUB OFF\nSELECT 1;\n"},
		{name: "goose unknown annotation", data: "-- +goose Up\n-- +goose Upp\nSELECT 1;\n", line: 2, msg: `unknown annotation "Upp"`},
		{name: "goose comment mentioning +goose", data: "-- +goose Up\n-- see the +goose docs\nSELECT 1;\n", line: 2, msg: "unknown annotation"},
		{name: "goose unknown annotation in Down", data: "-- +goose Up\nSELECT 1;\n-- +goose Down\n-- +goose Sideways\n", line: 4, msg: "unknown annotation"},
		{name: "goose indented annotation", data: "-- +goose Up\nSELECT 1;\n  -- +goose Down\nDROP TABLE a;\n", line: 3, msg: "indented"},
		{name: "goose two +goose", data: "-- +goose Up -- +goose Down\nSELECT 1;\n", line: 1, msg: "two"},
		{name: "goose SQL before Up", data: "SELECT 0;\n-- +goose Up\nSELECT 1;\n", line: 1, msg: "SQL before"},
		{name: "goose block comment before Up", data: "/* x */\n-- +goose Up\nSELECT 1;\n", line: 1, msg: "SQL before"},
		{name: "goose no Up", data: "-- +goose NO TRANSACTION\nSELECT 1;\n", line: 2, msg: "SQL before"},
		{name: "goose only annotations", data: "-- +goose NO TRANSACTION\n", msg: `no "-- +goose Up"`},
		{name: "forced goose plain file", data: "SELECT 1;\n", format: Goose, line: 1, msg: "SQL before"},
		{name: "goose Down first", data: "-- +goose Down\nSELECT 1;\n", line: 1, msg: "must follow"},
		{name: "goose two Up", data: "-- +goose Up\nSELECT 1;\n-- +goose Up\n", line: 3, msg: "second"},
		{name: "goose unterminated before Down", data: "-- +goose Up\nSELECT 1\n-- +goose Down\nSELECT 2;\n", line: 3, msg: "no terminating semicolon"},
		{name: "goose unterminated at end", data: "-- +goose Up\nSELECT 1\n", msg: "no terminating semicolon"},
		{name: "goose trailing comment after semicolon", data: "-- +goose Up\nSELECT 1; -- done\n-- +goose Down\n", want: Goose, up: "-- +goose Up\nSELECT 1; -- done\n"},
		{name: "goose unclosed block", data: "-- +goose Up\n-- +goose StatementBegin\nSELECT 1;\n", line: 2, msg: "never closed"},
		{name: "goose Down inside block", data: "-- +goose Up\n-- +goose StatementBegin\nSELECT 1;\n-- +goose Down\n", line: 4, msg: "must follow"},
		{name: "goose End without Begin", data: "-- +goose Up\nSELECT 1;\n-- +goose StatementEnd\n", line: 3, msg: "without"},
		{name: "goose Begin before Up", data: "-- +goose StatementBegin\n-- +goose Up\n", line: 1, msg: "must follow"},
		{name: "goose empty block", data: "-- +goose Up\n-- +goose StatementBegin\n-- nothing\n-- +goose StatementEnd\nSELECT 1;\n", line: 4, msg: "empty"},
		{name: "goose unterminated before block", data: "-- +goose Up\nSELECT 1\n-- +goose StatementBegin\nSELECT 2;\n-- +goose StatementEnd\n", line: 3, msg: "together with the block"},
		{name: "goose Down marker in upper case in Up", data: "-- +goose Up\nSELECT 1;\n-- +GOOSE DOWN\nSELECT 2;\n",
			line: 3, down: true, msg: "spell the marker as goose does"},
		{name: "goose file with a tern separator", data: "-- +goose Up\nSELECT 1;\n---- create above / drop below ----\nSELECT 2;\n", msg: "goose and tern"},

		// dbmate
		{name: "dbmate", data: "-- migrate:up\nCREATE TABLE a (id int);\n\n-- migrate:down\nDROP TABLE a;\n", want: Dbmate,
			up: "-- migrate:up\nCREATE TABLE a (id int);\n\n"},
		{name: "dbmate transaction:false", data: "-- comment first\n--migrate:up   transaction:false\nCREATE INDEX CONCURRENTLY i ON a (id);\n-- migrate:down\nDROP INDEX i;\n",
			want: Dbmate, up: "-- comment first\n--migrate:up   transaction:false\nCREATE INDEX CONCURRENTLY i ON a (id);\n", noTx: true},
		{name: "dbmate transaction:FALSE is dbmate's true", data: "-- migrate:up transaction:FALSE\nSELECT 1;\n-- migrate:down\n", want: Dbmate,
			up: "-- migrate:up transaction:FALSE\nSELECT 1;\n"},
		{name: "dbmate options ignored as dbmate ignores them", data: "-- migrate:up foo:bar baz a:b:c transaction:false\nSELECT 1;\n-- migrate:down\n",
			want: Dbmate, up: "-- migrate:up foo:bar baz a:b:c transaction:false\nSELECT 1;\n", noTx: true},
		{name: "dbmate option on down only", data: "-- migrate:up\nSELECT 1;\n-- migrate:down transaction:false\nSELECT 2;\n", want: Dbmate,
			up: "-- migrate:up\nSELECT 1;\n"},
		{name: "dbmate without down", data: "-- migrate:up\nSELECT 1;\n", want: Dbmate, up: "-- migrate:up\nSELECT 1;\n"},
		{name: "dbmate env option", data: "-- migrate:up env:ROLE\nCREATE ROLE {{.ROLE}};\n-- migrate:down\n", line: 1, msg: `option "env:ROLE"`},
		{name: "dbmate braces without env are literal", data: "-- migrate:up\nSELECT '{{x}}';\n-- migrate:down\n", want: Dbmate,
			up: "-- migrate:up\nSELECT '{{x}}';\n"},
		{name: "dbmate statement before up", data: "SELECT 0;\n-- migrate:up\nSELECT 1;\n-- migrate:down\n", line: 1, msg: "SQL before"},
		{name: "dbmate down first", data: "-- migrate:down\nSELECT 0;\n-- migrate:up\nSELECT 1;\n", line: 1, msg: "before"},
		{name: "dbmate two sections", data: "-- migrate:up\nSELECT 1;\n-- migrate:down\nSELECT 2;\n-- migrate:up\nSELECT 3;\n-- migrate:down\n",
			line: 7, msg: "more than one"},
		{name: "dbmate down only", data: "SELECT 1;\n-- migrate:down\nSELECT 2;\n", line: 2, msg: `no "-- migrate:up"`},
		{name: "forced dbmate plain file", data: "SELECT 1;\n", format: Dbmate, msg: `no "-- migrate:up"`},
		{name: "dbmate indented down in up part", data: "-- migrate:up\nSELECT 1;\n  -- migrate:down\nSELECT 2;\n", line: 3, down: true, msg: "dbmate down marker"},
		{name: "dbmate upper-case down in up part", data: "-- migrate:up\nSELECT 1;\n-- Migrate:Down\nSELECT 2;\n", line: 3, down: true, msg: "dbmate down marker"},
		{name: "dbmate upgrade is no directive", data: "-- migrate:upgrade\nSELECT 1;\n", want: Lockmigrate, up: "-- migrate:upgrade\nSELECT 1;\n"},

		// tern
		{name: "tern", data: "CREATE TABLE a (id int);\n---- create above / drop below ----\nDROP TABLE a;\n", want: Tern,
			up: "CREATE TABLE a (id int);\n"},
		{name: "tern separator mid-line", data: "SELECT 1; ---- create above / drop below ----\nSELECT 2;\n", want: Tern, up: "SELECT 1; "},
		{name: "tern disable-tx", data: "---- tern: disable-tx ----\nCREATE INDEX CONCURRENTLY i ON a (id);\n---- create above / drop below ----\nDROP INDEX i;\n",
			want: Tern, up: "---- tern: disable-tx ----\nCREATE INDEX CONCURRENTLY i ON a (id);\n", noTx: true},
		{name: "tern disable-tx alone is tern", data: "---- tern: disable-tx ----\nSELECT 1;\n", want: Tern, up: "---- tern: disable-tx ----\nSELECT 1;\n", noTx: true},
		{name: "tern disable-tx in down part", data: "SELECT 1;\n---- create above / drop below ----\n---- tern: disable-tx ----\n", want: Tern, up: "SELECT 1;\n"},
		{name: "tern template", data: "CREATE TABLE {{.prefix}}_a (id int);\n---- create above / drop below ----\n", line: 1, msg: "template syntax"},
		{name: "tern template in down part", data: "SELECT 1;\n---- create above / drop below ----\nDROP TABLE {{.x}};\n", want: Tern, up: "SELECT 1;\n"},
		{name: "tern without SQL", data: "-- nothing\n---- create above / drop below ----\nDROP TABLE a;\n", msg: "no SQL"},
		{name: "forced tern plain file", data: "SELECT 1;\n", format: Tern, want: Tern, up: "SELECT 1;\n"},
		{name: "tern upper-case separator in up part", data: "SELECT 1;\n---- CREATE ABOVE / DROP BELOW ----\nSELECT 2;\n", line: 2, down: true,
			msg: "tern down marker"},
		{name: "tern file with a goose down", data: "SELECT 1;\n-- +goose Down\n---- create above / drop below ----\n", msg: "goose and tern"},
		{name: "forced tern with a goose down", data: "SELECT 1;\n-- +goose Down\nSELECT 2;\n", format: Tern, line: 2, down: true, msg: "goose down marker"},
		{name: "forced goose with a dbmate down", data: "-- +goose Up\nSELECT 1;\n-- migrate:down\nSELECT 2;\n", format: Goose, line: 3, down: true,
			msg: "dbmate down marker"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := tt.file
			if file == "" {
				file = "1_a.sql"
			}
			f := tt.format
			if f == "" {
				f = Auto
			}
			sec, err := Parse(file, []byte(tt.data), f)
			if tt.msg != "" {
				var fe *Error
				if !errors.As(err, &fe) || fe.Line != tt.line || fe.Down != tt.down || !strings.Contains(err.Error(), tt.msg) {
					t.Fatalf("Parse = %+v, %v; want an error at line %d (down %v) containing %q", sec, err, tt.line, tt.down, tt.msg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if sec.Format != tt.want || string(sec.Up) != tt.up || sec.NoTransaction != tt.noTx {
				t.Fatalf("Parse = format %s, up %q, no-transaction %v; want %s, %q, %v", sec.Format, sec.Up, sec.NoTransaction, tt.want, tt.up, tt.noTx)
			}
			if sec.SQL != strings.TrimPrefix(tt.up, "\ufeff") {
				t.Fatalf("SQL %q is not the up part without its BOM", sec.SQL)
			}
		})
	}
}

func TestStatements(t *testing.T) {
	sec, err := Parse("1_a.sql", []byte("-- +goose NO TRANSACTION\n"+gooseFile), Auto)
	if err != nil {
		t.Fatal(err)
	}
	stmts, err := sec.Statements()
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		line int
		sql  string
	}{
		{4, "CREATE TABLE a (id int)"},
		{6, "CREATE FUNCTION f() RETURNS int AS $$\nBEGIN\n  RETURN 1;\nEND;\n$$ LANGUAGE plpgsql"},
	}
	if len(stmts) != len(want) {
		t.Fatalf("%d statements %+v, want %d", len(stmts), stmts, len(want))
	}
	for i, st := range stmts {
		if st.Line != want[i].line || st.SQL != want[i].sql || sec.SQL[st.Offset:st.Offset+len(st.SQL)] != st.SQL {
			t.Errorf("statement %d = %+v, want line %d %q", i+1, st, want[i].line, want[i].sql)
		}
	}

	// A block holding several statements is sent whole, as goose sends it.
	sec, err = Parse("1_a.sql", []byte("-- +goose Up\n-- +goose NO TRANSACTION\nSELECT 1;\n-- +goose StatementBegin\nSELECT 2; SELECT 3;\n"+
		"-- +goose StatementEnd\nSELECT 4;\n"), Auto)
	if err != nil {
		t.Fatal(err)
	}
	if stmts, err = sec.Statements(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, st := range stmts {
		got = append(got, st.SQL)
	}
	if strings.Join(got, "|") != "SELECT 1|SELECT 2; SELECT 3|SELECT 4" || stmts[1].Line != 5 || stmts[2].Line != 7 {
		t.Fatalf("statements %+v", stmts)
	}

	// An unterminated quote is reported at its line in the file.
	sec, err = Parse("1_a.sql", []byte("-- migrate:up transaction:false\nSELECT 1;\nSELECT 'x;\n-- migrate:down\n"), Auto)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sec.Statements(); err == nil || !strings.Contains(err.Error(), "line 3") {
		t.Fatalf("Statements = %v, want an unterminated quote at line 3", err)
	}
}

func TestNames(t *testing.T) {
	for _, n := range Names {
		if !n.Valid() {
			t.Errorf("%s not valid", n)
		}
	}
	if Name("flyway").Valid() || !Goose.HasDown() || Lockmigrate.HasDown() || GolangMigrate.HasDown() {
		t.Fatal("Valid/HasDown")
	}
}

// TestContainsFold holds containsFold to what it replaced,
// strings.Contains(strings.ToLower(s), p), on ASCII and non-ASCII text.
func TestContainsFold(t *testing.T) {
	for _, s := range []string{"", "b", "below", "BELOW", "BeLoW", "drop\tBelow;", "belo", "bbelow", "xxBELOWxx",
		"belw below", "BELO W", "\u212a below", "b\u0130low", "bel\u00f6w", "-- create above / drop BELOW\n", "BbBbelo"} {
		for _, p := range []string{"below", "b"} {
			if got, want := containsFold(s, p), strings.Contains(strings.ToLower(s), p); got != want {
				t.Errorf("containsFold(%q, %q) = %v, want %v", s, p, got, want)
			}
		}
	}
}

// TestRegexpsCompile compiles every lazily compiled expression, which a
// typo would otherwise turn into a panic on the first file that needs it.
func TestRegexpsCompile(t *testing.T) {
	for _, re := range []func() *regexp.Regexp{dbmateUp, dbmateDown, dbmateDirective, looseTern, ternDisableTx} {
		if re() == nil {
			t.Fatal("nil expression")
		}
	}
}
