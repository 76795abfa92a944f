package sqlsplit

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// want is an expected statement: its SQL and the line it starts on. The
// offset is checked by checkStatements against the input.
type want struct {
	sql  string
	line int
}

var splitTests = []struct {
	name    string
	input   string
	want    []want
	wantErr string // substring of the error; empty: no error
}{
	{
		name:  "empty input",
		input: "",
	},
	{
		name:  "only whitespace and comments",
		input: "\n  -- lockmigrate:no-transaction\n/* nothing */\n;;\n",
	},
	{
		name:  "two statements",
		input: "SELECT 1;\nSELECT 2;\n",
		want:  []want{{"SELECT 1", 1}, {"SELECT 2", 2}},
	},
	{
		name:  "final statement without semicolon",
		input: "SELECT 1;\nSELECT 2\n",
		want:  []want{{"SELECT 1", 1}, {"SELECT 2", 2}},
	},
	{
		name:  "empty statements dropped",
		input: ";;SELECT 1;;; ;\n;SELECT 2",
		want:  []want{{"SELECT 1", 1}, {"SELECT 2", 2}},
	},
	{
		name:  "trailing comment after last semicolon is not a statement",
		input: "SELECT 1; -- done\n/* really */\n",
		want:  []want{{"SELECT 1", 1}},
	},
	{
		name: "create index concurrently",
		input: "-- lockmigrate:no-transaction\n" +
			"CREATE INDEX CONCURRENTLY users_email_idx ON users (email);\n" +
			"CREATE UNIQUE INDEX CONCURRENTLY orders_ref_idx\n    ON orders (ref) WHERE deleted_at IS NULL;\n" +
			"\n" +
			"DROP INDEX CONCURRENTLY IF EXISTS old_idx;\n",
		want: []want{
			{"CREATE INDEX CONCURRENTLY users_email_idx ON users (email)", 2},
			{"CREATE UNIQUE INDEX CONCURRENTLY orders_ref_idx\n    ON orders (ref) WHERE deleted_at IS NULL", 3},
			{"DROP INDEX CONCURRENTLY IF EXISTS old_idx", 6},
		},
	},
	{
		name:  "leading comments are not part of the statement; line is that of the first token",
		input: "-- first\n\n/* second\n   comment */\n  SELECT 1; -- trailing\n-- before two\nSELECT 2;",
		want:  []want{{"SELECT 1", 5}, {"SELECT 2", 7}},
	},
	{
		name:  "comments inside a statement are kept, trailing ones dropped",
		input: "SELECT 1 -- one\n  + 2 /* two */ -- end\n;",
		want:  []want{{"SELECT 1 -- one\n  + 2", 1}},
	},
	{
		name:  "semicolon in line comment",
		input: "SELECT 1 -- not; the end\n, 2;\nSELECT 3;",
		want:  []want{{"SELECT 1 -- not; the end\n, 2", 1}, {"SELECT 3", 3}},
	},
	{
		name:  "quote in line comment",
		input: "-- don't split here\nSELECT 1; -- it's\nSELECT 2;",
		want:  []want{{"SELECT 1", 2}, {"SELECT 2", 3}},
	},
	{
		name:  "line comment ended by lone CR",
		input: "SELECT 1 -- c\r; SELECT 2",
		want:  []want{{"SELECT 1", 1}, {"SELECT 2", 1}},
	},
	{
		name:  "semicolon and quote in block comment",
		input: "SELECT /* ; it's */ 1; SELECT 2;",
		want:  []want{{"SELECT /* ; it's */ 1", 1}, {"SELECT 2", 1}},
	},
	{
		name:  "nested block comments with semicolons and quotes",
		input: "/* outer /* inner; ' */ still; comment ' */ SELECT 1;\nSELECT /* a /* b /* c; */ */ ; */ 2;",
		want:  []want{{"SELECT 1", 1}, {"SELECT /* a /* b /* c; */ */ ; */ 2", 2}},
	},
	{
		name:  "slash-star-slash does not close a block comment",
		input: "SELECT 1 /*/ ; */; SELECT 2",
		want:  []want{{"SELECT 1", 1}, {"SELECT 2", 1}},
	},
	{
		name:  "comment start inside operator",
		input: "SELECT 2*/*c;*/3; SELECT 4",
		want:  []want{{"SELECT 2*/*c;*/3", 1}, {"SELECT 4", 1}},
	},
	{
		name:  "stray comment close is an ordinary token",
		input: "SELECT 2 */ 3; SELECT 4",
		want:  []want{{"SELECT 2 */ 3", 1}, {"SELECT 4", 1}},
	},
	{
		name:  "single-quoted string with semicolon and doubled quote",
		input: "INSERT INTO t VALUES ('it''s; fine');\nSELECT 2;",
		want:  []want{{"INSERT INTO t VALUES ('it''s; fine')", 1}, {"SELECT 2", 2}},
	},
	{
		name:  "backslash is literal in standard strings",
		input: `SELECT 'a\'; SELECT 'b\\';`,
		want:  []want{{`SELECT 'a\'`, 1}, {`SELECT 'b\\'`, 1}},
	},
	{
		name:  "escape string with backslash-quote",
		input: `SELECT E'it\'s; here'; SELECT e'\\'; SELECT E'\'';`,
		want:  []want{{`SELECT E'it\'s; here'`, 1}, {`SELECT e'\\'`, 1}, {`SELECT E'\''`, 1}},
	},
	{
		name:  "escape string with doubled quote",
		input: `SELECT E'a''b;c'; SELECT 2`,
		want:  []want{{`SELECT E'a''b;c'`, 1}, {"SELECT 2", 1}},
	},
	{
		// PostgreSQL continues a literal across whitespace containing a
		// line break (and "--" comments); the continuation of an E''
		// string is an E'' string, so \' inside it is escaped.
		name:  "escape string continued on the next line",
		input: "SELECT E'a'\n'\\'; SELECT 1; --'; SELECT 2",
		want:  []want{{"SELECT E'a'\n'\\'; SELECT 1; --'", 1}, {"SELECT 2", 2}},
	},
	{
		name:  "escape string continued after a line comment",
		input: "SELECT E'a' -- c\r\n  -- d\n  '\\''; SELECT 2",
		want:  []want{{"SELECT E'a' -- c\r\n  -- d\n  '\\''", 1}, {"SELECT 2", 3}},
	},
	{
		name:  "no continuation without a line break",
		input: `SELECT E'a' '\'; SELECT 2`,
		want:  []want{{`SELECT E'a' '\'`, 1}, {"SELECT 2", 1}},
	},
	{
		name:  "no continuation across a block comment",
		input: "SELECT E'a' /* c */\n'\\'; SELECT 2",
		want:  []want{{"SELECT E'a' /* c */\n'\\'", 1}, {"SELECT 2", 2}},
	},
	{
		name:  "continuation of a standard string keeps backslash literal",
		input: "SELECT 'a'\n'\\'; SELECT 2",
		want:  []want{{"SELECT 'a'\n'\\'", 1}, {"SELECT 2", 2}},
	},
	{
		name:  "E at the end of an identifier does not start an escape string",
		input: `SELECT xE'\'; SELECT 2`,
		want:  []want{{`SELECT xE'\'`, 1}, {"SELECT 2", 1}},
	},
	{
		// Since PostgreSQL 15 (lexer and psql) identifier characters stuck
		// to a number or parameter belong to it, so no E'' string starts.
		name:  "E directly after a number or parameter",
		input: `SELECT 1E'\'; SELECT $1e'\'; SELECT 1.E'\'; SELECT .5e'\'; SELECT 1e-5E'\'; SELECT 2`,
		want: []want{{`SELECT 1E'\'`, 1}, {`SELECT $1e'\'`, 1}, {`SELECT 1.E'\'`, 1}, {`SELECT .5e'\'`, 1},
			{`SELECT 1e-5E'\'`, 1}, {"SELECT 2", 1}},
	},
	{
		name:  "E after a range dot-dot starts an escape string",
		input: `SELECT 1..E'\''; SELECT 2`,
		want:  []want{{`SELECT 1..E'\''`, 1}, {"SELECT 2", 1}},
	},
	{
		name:  "dollar signs after a number belong to its trailing junk",
		input: "SELECT 1a$$; SELECT 2",
		want:  []want{{"SELECT 1a$$", 1}, {"SELECT 2", 1}},
	},
	{
		name:  "multi-line string",
		input: "INSERT INTO t VALUES ('line1;\nline2');\nSELECT 2;",
		want:  []want{{"INSERT INTO t VALUES ('line1;\nline2')", 1}, {"SELECT 2", 3}},
	},
	{
		name:  "bit, hex and national strings",
		input: "SELECT B'1;0', X'1F;', N'x;y'; SELECT 2",
		want:  []want{{"SELECT B'1;0', X'1F;', N'x;y'", 1}, {"SELECT 2", 1}},
	},
	{
		name:  "double-quoted identifiers",
		input: `CREATE TABLE "a;b" ("x""; y" int); SELECT 2;`,
		want:  []want{{`CREATE TABLE "a;b" ("x""; y" int)`, 1}, {"SELECT 2", 1}},
	},
	{
		name:  "unicode escape string and identifier",
		input: `SELECT U&'d\0061t\+000061;' AS u&"a;""b"; SELECT U&'\'; SELECT 3`,
		want:  []want{{`SELECT U&'d\0061t\+000061;' AS u&"a;""b"`, 1}, {`SELECT U&'\'`, 1}, {"SELECT 3", 1}},
	},
	{
		name:  "dollar quote",
		input: "SELECT $$a; 'b' -- c$$; SELECT 2;",
		want:  []want{{"SELECT $$a; 'b' -- c$$", 1}, {"SELECT 2", 1}},
	},
	{
		name:  "tagged dollar quote containing other delimiters",
		input: "SELECT $x$ $$; $y$ ; $X$ ; $x $x$; SELECT 2",
		want:  []want{{"SELECT $x$ $$; $y$ ; $X$ ; $x $x$", 1}, {"SELECT 2", 1}},
	},
	{
		name:  "dollar quote inside single-quoted string",
		input: "SELECT '$$'; SELECT '$a$;';\nSELECT 3",
		want:  []want{{"SELECT '$$'", 1}, {"SELECT '$a$;'", 1}, {"SELECT 3", 2}},
	},
	{
		name:  "double dash inside string",
		input: "SELECT '--'; SELECT 'a -- b;'; SELECT \"--\";",
		want:  []want{{"SELECT '--'", 1}, {"SELECT 'a -- b;'", 1}, {`SELECT "--"`, 1}},
	},
	{
		name:  "block comment start inside string",
		input: "SELECT '/*'; SELECT 2; SELECT '*/'",
		want:  []want{{"SELECT '/*'", 1}, {"SELECT 2", 1}, {"SELECT '*/'", 1}},
	},
	{
		name:  "quote inside dollar quote",
		input: "SELECT $$it's$$; SELECT $q$\"$q$; SELECT 3",
		want:  []want{{"SELECT $$it's$$", 1}, {`SELECT $q$"$q$`, 1}, {"SELECT 3", 1}},
	},
	{
		name:  "positional parameters are not dollar quotes",
		input: "PREPARE p(int, text) AS SELECT $1, $2;\nEXECUTE p(1, 'x');\nSELECT $1$$;$$",
		want:  []want{{"PREPARE p(int, text) AS SELECT $1, $2", 1}, {"EXECUTE p(1, 'x')", 2}, {"SELECT $1$$;$$", 3}},
	},
	{
		name:  "dollar signs inside identifiers",
		input: "SELECT foo$$bar; SELECT a$b$; SELECT $c$;$c$",
		want:  []want{{"SELECT foo$$bar", 1}, {"SELECT a$b$", 1}, {"SELECT $c$;$c$", 1}},
	},
	{
		name:  "lone dollar sign",
		input: "SELECT $ ; SELECT $a ; SELECT 1$",
		want:  []want{{"SELECT $", 1}, {"SELECT $a", 1}, {"SELECT 1$", 1}},
	},
	{
		name: "DO block",
		input: "DO $$\nBEGIN\n  PERFORM 1;\n  RAISE NOTICE 'done;';\nEND\n$$;\n" +
			"DO LANGUAGE plpgsql $do$ BEGIN NULL; END $do$;",
		want: []want{
			{"DO $$\nBEGIN\n  PERFORM 1;\n  RAISE NOTICE 'done;';\nEND\n$$", 1},
			{"DO LANGUAGE plpgsql $do$ BEGIN NULL; END $do$", 7},
		},
	},
	{
		name: "create function with tagged body",
		input: "CREATE OR REPLACE FUNCTION touch() RETURNS trigger\nLANGUAGE plpgsql AS $body$\n" +
			"BEGIN\n  NEW.updated_at := now(); -- $$ not a delimiter here\n  RETURN NEW;\nEND;\n$body$;\n" +
			"CREATE TRIGGER t BEFORE UPDATE ON x FOR EACH ROW EXECUTE FUNCTION touch();",
		want: []want{
			{"CREATE OR REPLACE FUNCTION touch() RETURNS trigger\nLANGUAGE plpgsql AS $body$\n" +
				"BEGIN\n  NEW.updated_at := now(); -- $$ not a delimiter here\n  RETURN NEW;\nEND;\n$body$", 1},
			{"CREATE TRIGGER t BEFORE UPDATE ON x FOR EACH ROW EXECUTE FUNCTION touch()", 8},
		},
	},
	{
		name:  "function body in single-quoted string",
		input: "CREATE FUNCTION f() RETURNS int AS 'SELECT 1; SELECT 2' LANGUAGE sql; SELECT f();",
		want:  []want{{"CREATE FUNCTION f() RETURNS int AS 'SELECT 1; SELECT 2' LANGUAGE sql", 1}, {"SELECT f()", 1}},
	},
	{
		name: "begin atomic",
		input: "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END;\n" +
			"SELECT f();",
		want: []want{
			{"CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END", 1},
			{"SELECT f()", 2},
		},
	},
	{
		name: "begin atomic lower case, or replace procedure, comments between begin and atomic",
		input: "create or replace procedure p(a int)\nlanguage sql\nbegin /* ; */ -- ;\n atomic\n" +
			"  insert into t values (a);\n  insert into u values (a);\nend;\ncall p(1);",
		want: []want{
			{"create or replace procedure p(a int)\nlanguage sql\nbegin /* ; */ -- ;\n atomic\n" +
				"  insert into t values (a);\n  insert into u values (a);\nend", 1},
			{"call p(1)", 8},
		},
	},
	{
		name: "begin atomic with nested case",
		input: "CREATE FUNCTION sign(x int) RETURNS text LANGUAGE sql\nBEGIN ATOMIC\n" +
			"  SELECT CASE WHEN x > 0 THEN 'pos;' ELSE CASE WHEN x < 0 THEN 'neg' END END;\n" +
			"  SELECT (CASE x WHEN 0 THEN 'zero' END);\nEND;\nSELECT sign(1);",
		want: []want{
			{"CREATE FUNCTION sign(x int) RETURNS text LANGUAGE sql\nBEGIN ATOMIC\n" +
				"  SELECT CASE WHEN x > 0 THEN 'pos;' ELSE CASE WHEN x < 0 THEN 'neg' END END;\n" +
				"  SELECT (CASE x WHEN 0 THEN 'zero' END);\nEND", 1},
			{"SELECT sign(1)", 6},
		},
	},
	{
		name:  "begin atomic body followed by more statements without newline",
		input: "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC; END; SELECT 1",
		want:  []want{{"CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC; END", 1}, {"SELECT 1", 1}},
	},
	{
		name:  "identifier named begin inside a body does not open a block",
		input: "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT begin FROM t; END; SELECT 2",
		want:  []want{{"CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT begin FROM t; END", 1}, {"SELECT 2", 1}},
	},
	{
		name:  "case outside a body is not counted",
		input: "CREATE FUNCTION f(x int) RETURNS int LANGUAGE sql RETURN CASE WHEN x > 0 THEN 1 END; SELECT 2",
		want:  []want{{"CREATE FUNCTION f(x int) RETURNS int LANGUAGE sql RETURN CASE WHEN x > 0 THEN 1 END", 1}, {"SELECT 2", 1}},
	},
	{
		name:  "begin atomic outside create function is not a body",
		input: "SELECT begin atomic; SELECT 2",
		want:  []want{{"SELECT begin atomic", 1}, {"SELECT 2", 1}},
	},
	{
		name:  "plain transaction statements split normally",
		input: "BEGIN;\nUPDATE t SET a = 1;\nCOMMIT;\nBEGIN TRANSACTION ISOLATION LEVEL SERIALIZABLE;\nSELECT CASE WHEN true THEN 1 END;\nEND;",
		want: []want{
			{"BEGIN", 1}, {"UPDATE t SET a = 1", 2}, {"COMMIT", 3},
			{"BEGIN TRANSACTION ISOLATION LEVEL SERIALIZABLE", 4}, {"SELECT CASE WHEN true THEN 1 END", 5}, {"END", 6},
		},
	},
	{
		name:  "semicolons inside parentheses (multi-action rule)",
		input: "CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); INSERT INTO b VALUES (2));\nSELECT 1",
		want:  []want{{"CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); INSERT INTO b VALUES (2))", 1}, {"SELECT 1", 2}},
	},
	{
		name:  "unbalanced closing parenthesis is ignored",
		input: "SELECT 1); SELECT 2",
		want:  []want{{"SELECT 1)", 1}, {"SELECT 2", 1}},
	},
	{
		name:  "CRLF line endings",
		input: "-- header\r\nCREATE INDEX CONCURRENTLY a ON t (x);\r\n\r\n/* c */\r\nCREATE INDEX CONCURRENTLY b\r\n  ON t (y);\r\n",
		want:  []want{{"CREATE INDEX CONCURRENTLY a ON t (x)", 2}, {"CREATE INDEX CONCURRENTLY b\r\n  ON t (y)", 5}},
	},
	{
		name:  "CRLF with trailing line comment",
		input: "SELECT 1 -- x\r\n;\r\nSELECT 2 -- y\r\n",
		want:  []want{{"SELECT 1", 1}, {"SELECT 2", 3}},
	},
	{
		name:  "non-ASCII identifiers and strings",
		input: "SELECT 'héllo; wörld' AS ünï; SELECT $é$;$é$;",
		want:  []want{{"SELECT 'héllo; wörld' AS ünï", 1}, {"SELECT $é$;$é$", 1}},
	},
	{
		name:  "line numbers",
		input: "\n\nSELECT 1;\n\n\n  SELECT\n2;\n-- x\n\nSELECT 'a\nb\nc';SELECT 4",
		want:  []want{{"SELECT 1", 3}, {"SELECT\n2", 6}, {"SELECT 'a\nb\nc'", 10}, {"SELECT 4", 12}},
	},

	// Errors.
	{
		name:    "unterminated single quote",
		input:   "SELECT 1;\nSELECT 'abc;\nSELECT 2;",
		wantErr: "line 2: unterminated quoted string",
	},
	{
		name:    "unterminated quote ending in doubled quote",
		input:   "SELECT 'abc''",
		wantErr: "line 1: unterminated quoted string",
	},
	{
		name:    "unterminated escape string",
		input:   "SELECT 1;\n\nSELECT E'abc\\';",
		wantErr: "line 3: unterminated quoted string",
	},
	{
		name:    "escape string ending in backslash",
		input:   `SELECT E'\`,
		wantErr: "line 1: unterminated quoted string",
	},
	{
		name:    "unterminated escape string continuation",
		input:   "SELECT 1;\nSELECT E'a'\n'\\';",
		wantErr: "line 2: unterminated quoted string",
	},
	{
		name:    "unterminated quoted identifier",
		input:   "SELECT \"abc;\nSELECT 2;",
		wantErr: "line 1: unterminated quoted identifier",
	},
	{
		name:    "unterminated unicode identifier",
		input:   "\nSELECT U&\"abc;",
		wantErr: "line 2: unterminated quoted identifier",
	},
	{
		name:    "unterminated dollar quote",
		input:   "SELECT 1;\nDO $$ BEGIN NULL; END;",
		wantErr: "line 2: unterminated dollar-quoted string $$",
	},
	{
		name:    "unterminated tagged dollar quote",
		input:   "CREATE FUNCTION f() RETURNS int AS $body$\nSELECT 1;\n$BODY$ LANGUAGE sql;",
		wantErr: "line 1: unterminated dollar-quoted string $body$",
	},
	{
		name:    "unterminated block comment",
		input:   "SELECT 1;\n/* comment; SELECT 2;",
		wantErr: "line 2: unterminated block comment",
	},
	{
		name:    "unterminated nested block comment",
		input:   "SELECT 1; /* a /* b */ SELECT 2;",
		wantErr: "line 1: unterminated block comment",
	},
	{
		name:    "unclosed parenthesis",
		input:   "SELECT 1;\nSELECT (1;\nCREATE INDEX CONCURRENTLY i ON t (x);",
		wantErr: "line 2: unclosed parenthesis",
	},
	{
		name:    "unclosed begin atomic body",
		input:   "SELECT 1;\nCREATE FUNCTION f() RETURNS int LANGUAGE sql\nBEGIN ATOMIC SELECT 1;\nSELECT 2;",
		wantErr: "line 3: BEGIN ATOMIC body is not closed by END",
	},
}

func TestSplit(t *testing.T) {
	for _, tc := range splitTests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Split(tc.input)
			if tc.wantErr != "" {
				if err == nil {
					t.Fatalf("Split succeeded with %q, want error %q", sqls(got), tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %q, want it to contain %q", err, tc.wantErr)
				}
				var se *SyntaxError
				if !errors.As(err, &se) {
					t.Fatalf("error %T is not a *SyntaxError", err)
				}
				if want := lineOf(tc.input, se.Offset); se.Line != want {
					t.Errorf("SyntaxError.Line = %d, but offset %d is on line %d", se.Line, se.Offset, want)
				}
				return
			}
			if err != nil {
				t.Fatalf("Split: %v", err)
			}
			checkStatements(t, tc.input, got)
			if len(got) != len(tc.want) {
				t.Fatalf("got %d statements %q, want %d", len(got), sqls(got), len(tc.want))
			}
			for i, w := range tc.want {
				if got[i].SQL != w.sql {
					t.Errorf("statement %d SQL = %q, want %q", i, got[i].SQL, w.sql)
				}
				if got[i].Line != w.line {
					t.Errorf("statement %d (%q) Line = %d, want %d", i, got[i].SQL, got[i].Line, w.line)
				}
			}
		})
	}
}

func TestSplitOffsets(t *testing.T) {
	input := "-- c\nSELECT 1;  SELECT 2"
	got, err := Split(input)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Offset != 5 || got[1].Offset != 16 {
		t.Fatalf("got %+v, want offsets 5 and 16", got)
	}
}

func TestFirstLine(t *testing.T) {
	long := strings.Repeat("x", 100)
	tests := []struct {
		in, want string
	}{
		{"", ""},
		{"  \n-- only a comment\n/* and another */ ", ""},
		{"/* unterminated", ""},
		{"SELECT 1", "SELECT 1"},
		{"  SELECT 1  \n  FROM t", "SELECT 1"},
		{"-- why\n/* multi\nline */   CREATE INDEX i\r\nON t (x)", "CREATE INDEX i"},
		{"\n\nSELECT 1 -- note\n", "SELECT 1 -- note"},
		{long, strings.Repeat("x", 79) + "…"},
		{strings.Repeat("é", 80), strings.Repeat("é", 80)},
		{strings.Repeat("é", 81), strings.Repeat("é", 79) + "…"},
		{strings.Repeat("a", 78) + "  " + long, strings.Repeat("a", 78) + "…"},
	}
	for _, tc := range tests {
		if got := FirstLine(tc.in); got != tc.want {
			t.Errorf("FirstLine(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func FuzzSplit(f *testing.F) {
	for _, tc := range splitTests {
		f.Add(tc.input)
	}
	f.Fuzz(func(t *testing.T, input string) {
		stmts, err := Split(input)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("error %T is not a *SyntaxError: %v", err, err)
			}
			if se.Offset < 0 || se.Offset >= len(input) {
				t.Fatalf("SyntaxError.Offset %d out of range [0,%d)", se.Offset, len(input))
			}
			if want := lineOf(input, se.Offset); se.Line != want {
				t.Fatalf("SyntaxError.Line = %d, but offset %d is on line %d", se.Line, se.Offset, want)
			}
			return
		}
		checkStatements(t, input, stmts)

		// Every statement is complete on its own.
		for _, s := range stmts {
			again, err := Split(s.SQL)
			if err != nil {
				t.Fatalf("re-splitting statement %q: %v", s.SQL, err)
			}
			if len(again) != 1 || again[0].SQL != s.SQL || again[0].Offset != 0 {
				t.Fatalf("re-splitting statement %q gave %q", s.SQL, sqls(again))
			}
			if n := utf8.RuneCountInString(FirstLine(s.SQL)); n > maxFirstLine {
				t.Fatalf("FirstLine(%q) has %d runes", s.SQL, n)
			}
		}

		// Splitting is idempotent.
		joined := strings.Join(sqls(stmts), ";\n")
		again, err := Split(joined)
		if err != nil {
			t.Fatalf("re-splitting %q: %v", joined, err)
		}
		if a, b := sqls(stmts), sqls(again); !slices.Equal(a, b) {
			t.Fatalf("re-splitting changed the statements:\n first: %q\nsecond: %q", a, b)
		}
	})
}

// checkStatements checks the invariants every successful Split must keep.
func checkStatements(t *testing.T, input string, stmts []Statement) {
	t.Helper()
	prevEnd := 0
	for i, s := range stmts {
		if s.SQL == "" {
			t.Fatalf("statement %d is empty", i)
		}
		if s.Offset < prevEnd {
			t.Fatalf("statement %d at offset %d overlaps or precedes the previous one ending at %d", i, s.Offset, prevEnd)
		}
		if !strings.HasPrefix(input[s.Offset:], s.SQL) {
			t.Fatalf("statement %d %q is not the input at offset %d", i, s.SQL, s.Offset)
		}
		prevEnd = s.Offset + len(s.SQL)
		if want := lineOf(input, s.Offset); s.Line != want {
			t.Fatalf("statement %d Line = %d, but offset %d is on line %d", i, s.Line, s.Offset, want)
		}
		if isSpace(s.SQL[0]) || isSpace(s.SQL[len(s.SQL)-1]) {
			t.Fatalf("statement %d %q is not trimmed", i, s.SQL)
		}
		if strings.HasPrefix(s.SQL, "--") || strings.HasPrefix(s.SQL, "/*") {
			t.Fatalf("statement %d %q starts with a comment", i, s.SQL)
		}
	}
}

func lineOf(s string, offset int) int { return 1 + strings.Count(s[:offset], "\n") }

func sqls(stmts []Statement) []string {
	out := make([]string, len(stmts))
	for i, s := range stmts {
		out[i] = s.SQL
	}
	return out
}
