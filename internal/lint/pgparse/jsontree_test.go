package pgparse

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// agreeWithEncodingJSON fails t unless decodeTree and encoding/json give
// the same value for text, or both refuse it.
func agreeWithEncodingJSON(t *testing.T, text string) {
	t.Helper()
	var want any
	wantErr := json.Unmarshal([]byte(text), &want)
	got, err := decodeTree(text)
	switch {
	case (err == nil) != (wantErr == nil):
		t.Fatalf("%q: decodeTree error %v, encoding/json error %v", text, err, wantErr)
	case err == nil && !reflect.DeepEqual(got, want):
		t.Fatalf("%q: decodeTree %#v, encoding/json %#v", text, got, want)
	}
}

var treeSeeds = []string{
	`{}`, `[]`, ` { "a" : [ 1 , -2.5e3 , true , false , null , "x" ] } `,
	`{"a":1,"a":2}`, `"\u00e9\ud83d\ude00\"\\\/\b\f\n\r\t"`, `"\ud83d"`, `"\ud83d\u0041"`,
	`"\udc00\ud83d\ude00"`, "\"\xff\xfe é\"", "\"a\xc3\"", `0`, `-0`, `1E+2`, `1e-2`, `0.5`,
	// refused
	``, ` `, `{`, `[1,]`, `{"a":1,}`, `{"a"}`, `{a:1}`, `01`, `-`, `1.`, `.5`, `1e`, `+1`,
	`tru`, `truex`, `nul`, `"abc`, `"\x"`, `"\u12"`, `"\u12g4"`, "\"a\nb\"", `1e400`,
	`{"a":1}}`, `[1 2]`, `"\`, `[`, `{"a":`, `NaN`, `[1,2]x`,
}

func TestDecodeTreeAgrees(t *testing.T) {
	for _, s := range treeSeeds {
		agreeWithEncodingJSON(t, s)
	}
	deep := strings.Repeat("[", maxTreeDepth) + strings.Repeat("]", maxTreeDepth)
	agreeWithEncodingJSON(t, deep)
	agreeWithEncodingJSON(t, "["+deep+"]")
	agreeWithEncodingJSON(t, strings.Repeat(`{"a":`, maxTreeDepth+1)+"1"+strings.Repeat("}", maxTreeDepth+1))
}

// TestDecodeTreeRealTrees compares the two on libpg_query's own output for
// the repository's example migrations and a few statements of every kind
// the lint rules read.
func TestDecodeTreeRealTrees(t *testing.T) {
	texts := []string{
		"CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text DEFAULT 'a''b' NOT NULL, n numeric(10,2) CHECK (n > 0.5));",
		"ALTER TABLE s.t ADD CONSTRAINT f FOREIGN KEY (a) REFERENCES u (id) NOT VALID, ALTER COLUMN v SET NOT NULL, ALTER COLUMN n TYPE bigint USING n::bigint;",
		"CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t USING gin (to_tsvector('simple', v)) WHERE v <> E'\\n\\t';",
		"DO $$ BEGIN RAISE NOTICE 'é %', 1; END $$; SELECT 'ünï', \"Quoted\"\"Id\", 1e10, -3, $1;",
	}
	for _, dir := range []string{"../../../examples/zero-downtime", "../../../examples/expand-contract", "../../../migrations"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.sql"))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			texts = append(texts, string(b))
		}
	}
	if len(texts) < 10 {
		t.Fatalf("only %d texts: the example directories moved?", len(texts))
	}
	c := newClient(t)
	for _, text := range texts {
		raw, _, err := c.parseAndScan(text)
		if err != nil {
			t.Fatalf("parse %.40q: %v", text, err)
		}
		agreeWithEncodingJSON(t, raw)
	}
}

func FuzzDecodeTree(f *testing.F) {
	for _, s := range treeSeeds {
		f.Add(s)
	}
	f.Fuzz(agreeWithEncodingJSON)
}

func BenchmarkDecodeTree(b *testing.B) {
	text, err := os.ReadFile("../../../examples/zero-downtime/0001_create_accounts.sql")
	if err != nil {
		b.Fatal(err)
	}
	raw, _, err := builtin().parseAndScan(string(text))
	if err != nil {
		b.Skip("no parser in this build:", err)
	}
	b.Run("decodeTree", func(b *testing.B) {
		for b.Loop() {
			if _, err := decodeTree(raw); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		for b.Loop() {
			var v any
			if err := json.Unmarshal([]byte(raw), &v); err != nil {
				b.Fatal(err)
			}
		}
	})
}
