package format

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// FuzzParse reads arbitrary files as every format. Parse must never panic;
// a refusal is an *Error with a message and a line of the file; an accepted
// file's up part is a prefix of the file that holds none of the tools' down
// markers, is the whole file for the formats without down sections, and
// splits (when it runs outside a transaction) into statements that are
// slices of it at their own lines. The seed corpus (testdata/fuzz/FuzzParse)
// holds every marker of every format.
//
//	go test -run '^$' -fuzz '^FuzzParse$' -fuzztime 10s ./runner/internal/format/
func FuzzParse(f *testing.F) {
	f.Add([]byte(gooseFile), uint8(0))
	f.Add([]byte("-- migrate:up transaction:false\nCREATE INDEX CONCURRENTLY i ON a (id);\n-- migrate:down\nDROP INDEX i;\n"), uint8(3))
	f.Add([]byte("---- tern: disable-tx ----\nSELECT 1;\n---- create above / drop below ----\nSELECT 2;\n"), uint8(4))
	f.Fuzz(func(t *testing.T, data []byte, which uint8) {
		forced := Names[int(which)%len(Names)]
		name := "1_a.sql"
		if which&0x80 != 0 {
			name = "1_a.up.sql"
		}
		sec, err := Parse(name, data, forced)
		if err != nil {
			var fe *Error
			if !errors.As(err, &fe) || fe.Msg == "" || fe.Line < 0 || fe.Line > bytes.Count(data, []byte("\n"))+1 {
				t.Fatalf("Parse refused with %#v", err)
			}
			return
		}
		checkSection(t, name, data, forced, &sec)
		again, err := Parse(name, data, forced)
		if err != nil || !bytes.Equal(again.Up, sec.Up) || again.Format != sec.Format || again.NoTransaction != sec.NoTransaction {
			t.Fatalf("a second Parse differs: %+v, %v", again, err)
		}
	})
}

func checkSection(t *testing.T, name string, data []byte, forced Name, sec *Section) {
	t.Helper()
	if !bytes.HasPrefix(data, sec.Up) || sec.SQL != strings.TrimPrefix(string(sec.Up), "\ufeff") {
		t.Fatalf("up part %q is not a prefix of the file, or SQL %q differs from it", sec.Up, sec.SQL)
	}
	if !sec.Format.Valid() || sec.Format == Auto || forced != Auto && sec.Format != forced {
		t.Fatalf("read as %q when forced %q", sec.Format, forced)
	}
	if !sec.Format.HasDown() && !bytes.Equal(sec.Up, data) {
		t.Fatalf("a %s file was cut: %q of %q", sec.Format, sec.Up, data)
	}
	if sec.Format == GolangMigrate && !strings.HasSuffix(name, ".up.sql") {
		t.Fatalf("%s read as golang-migrate", name)
	}
	lower := strings.ToLower(sec.SQL)
	if strings.Contains(lower, strings.ToLower(ternSeparator)) {
		t.Fatalf("the tern separator in the up part %q", sec.SQL)
	}
	for _, line := range strings.Split(lower, "\n") {
		if l := strings.TrimSpace(line); l == "-- +goose down" || l == "-- migrate:down" {
			t.Fatalf("down marker %q in the up part %q", line, sec.SQL)
		}
	}
	if !sec.NoTransaction {
		return
	}
	stmts, err := sec.Statements()
	if err != nil {
		return
	}
	prev := -1
	for _, st := range stmts {
		if st.Offset <= prev || st.Offset+len(st.SQL) > len(sec.SQL) || sec.SQL[st.Offset:st.Offset+len(st.SQL)] != st.SQL ||
			st.Line != lineAt(sec.SQL, st.Offset) || strings.TrimSpace(st.SQL) == "" {
			t.Fatalf("statement %+v is not a slice of %q at its line", st, sec.SQL)
		}
		prev = st.Offset
	}
}
