package runner

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"testing/fstest"
)

// oldChecksum is the checksum as every release before the formats computed
// it: the SHA-256 of the file's bytes, byte order mark included.
func oldChecksum(data string) string {
	sum := sha256.Sum256([]byte(data))
	return hex.EncodeToString(sum[:])
}

func TestLoadFormats(t *testing.T) {
	goose := "-- +goose Up\nCREATE TABLE a (id int);\n-- +goose Down\nDROP TABLE a;\n"
	gooseNoTx := "-- +goose NO TRANSACTION\n-- +goose Up\nCREATE INDEX CONCURRENTLY i ON a (id);\n-- +goose StatementBegin\n" +
		"CREATE FUNCTION f() RETURNS int AS $$ BEGIN RETURN 1; END; $$ LANGUAGE plpgsql;\n-- +goose StatementEnd\n-- +goose Down\nDROP INDEX i;\n"
	plain := "\ufeffCREATE TABLE p (id int);\n"
	notx := "-- lockmigrate:no-transaction\nCREATE INDEX CONCURRENTLY j ON p (id);\n"
	migs, err := Load(fstest.MapFS{
		"00001_a.sql":     {Data: []byte(goose)},
		"00002_i.sql":     {Data: []byte(gooseNoTx)},
		"3_p.sql":         {Data: []byte(plain)},
		"4_notx.sql":      {Data: []byte(notx)},
		"5_gm.up.sql":     {Data: []byte("SELECT 5;")},
		"5_gm.down.sql":   {Data: []byte("-- +goose Down\nSELECT 'never read';")},
		"6_goose_new.sql": {Data: []byte("-- +goose Up\nSELECT 6;\n")},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		format     Format
		sql        string
		noTx       bool
		statements int
	}{
		{FormatGoose, "-- +goose Up\nCREATE TABLE a (id int);\n", false, 0},
		{FormatGoose, gooseNoTx[:strings.Index(gooseNoTx, "-- +goose Down")], true, 2},
		{FormatLockmigrate, strings.TrimPrefix(plain, "\ufeff"), false, 0},
		{FormatLockmigrate, notx, true, 1},
		{FormatGolangMigrate, "SELECT 5;", false, 0},
		{FormatGoose, "-- +goose Up\nSELECT 6;\n", false, 0},
	}
	if len(migs) != len(want) {
		t.Fatalf("%d migrations, want %d", len(migs), len(want))
	}
	for i, m := range migs {
		w := want[i]
		if m.Format != w.format || m.SQL != w.sql || m.NoTransaction != w.noTx || len(m.statements) != w.statements {
			t.Errorf("%s: format %s, SQL %q, no-transaction %v, %d statements; want %s %q %v %d",
				m.File, m.Format, m.SQL, m.NoTransaction, len(m.statements), w.format, w.sql, w.noTx, w.statements)
		}
	}
	// lockmigrate's own files keep the checksum every history recorded.
	if migs[2].Checksum != oldChecksum(plain) || migs[3].Checksum != oldChecksum(notx) || migs[4].Checksum != oldChecksum("SELECT 5;") {
		t.Errorf("lockmigrate-format checksums changed: %s %s %s", migs[2].Checksum, migs[3].Checksum, migs[4].Checksum)
	}
	// A goose file's checksum is that of its Up section, directives included.
	if migs[0].Checksum != oldChecksum("-- +goose Up\nCREATE TABLE a (id int);\n") {
		t.Errorf("goose checksum %s is not that of the Up section", migs[0].Checksum)
	}
	if got := migs[1].statements[1].SQL; !strings.HasPrefix(got, "CREATE FUNCTION") || !strings.HasSuffix(got, "plpgsql") {
		t.Errorf("the StatementBegin block was split: %q", got)
	}
}

// TestChecksumCoversWhatRuns: editing only the down section of a file keeps
// its checksum; editing the up section changes it.
func TestChecksumCoversWhatRuns(t *testing.T) {
	for _, tt := range []struct{ name, file, orig, downEdited, upEdited string }{
		{"goose", "1_a.sql", "-- +goose Up\nCREATE TABLE a (id int);\n-- +goose Down\nDROP TABLE a;\n",
			"-- +goose Up\nCREATE TABLE a (id int);\n-- +goose Down\nDROP TABLE IF EXISTS a;\n",
			"-- +goose Up\nCREATE TABLE a (id bigint);\n-- +goose Down\nDROP TABLE a;\n"},
		{"dbmate", "20240101000000_a.sql", "-- migrate:up\nCREATE TABLE a (id int);\n-- migrate:down\nDROP TABLE a;\n",
			"-- migrate:up\nCREATE TABLE a (id int);\n-- migrate:down\n-- rewritten\nDROP TABLE a CASCADE;\n",
			"-- migrate:up transaction:false\nCREATE TABLE a (id int);\n-- migrate:down\nDROP TABLE a;\n"},
		{"tern", "001_a.sql", "CREATE TABLE a (id int);\n---- create above / drop below ----\nDROP TABLE a;\n",
			"CREATE TABLE a (id int);\n---- create above / drop below ----\n",
			"CREATE TABLE a (id int, b text);\n---- create above / drop below ----\nDROP TABLE a;\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sum := func(data string) string {
				migs, err := Load(fstest.MapFS{tt.file: {Data: []byte(data)}})
				if err != nil || len(migs) != 1 || migs[0].Format != Format(tt.name) {
					t.Fatalf("Load(%q) = %v, %v", data, migs, err)
				}
				return migs[0].Checksum
			}
			orig := sum(tt.orig)
			if sum(tt.downEdited) != orig {
				t.Error("editing only the down section changed the checksum")
			}
			if sum(tt.upEdited) == orig {
				t.Error("editing the up section kept the checksum")
			}
		})
	}
}

func TestLoadFormatRefusals(t *testing.T) {
	goose := []byte("-- +goose Up\nCREATE TABLE a (id int);\n-- +goose Down\nDROP TABLE a;\n")
	dbmate := []byte("-- migrate:up\nCREATE TABLE b (id int);\n-- migrate:down\nDROP TABLE b;\n")
	tern := []byte("CREATE TABLE c (id int);\n---- create above / drop below ----\nDROP TABLE c;\n")
	tests := []struct {
		name   string
		files  fstest.MapFS
		format Format
		kind   ValidationKind
		file   string
		msg    string
	}{
		{"goose Down in a file forced to lockmigrate", fstest.MapFS{"1_a.sql": {Data: goose}}, FormatLockmigrate,
			KindDownSection, "1_a.sql", `line 3: a goose down marker "-- +goose Down"`},
		{"mixed goose and dbmate", fstest.MapFS{"1_a.sql": {Data: goose}, "2_b.sql": {Data: dbmate}, "3_c.sql": {Data: []byte("SELECT 1;")}},
			FormatAuto, KindFormat, "2_b.sql", "mixes the formats dbmate (2_b.sql), goose (1_a.sql)"},
		{"mixed tern and goose", fstest.MapFS{"1_a.sql": {Data: goose}, "2_c.sql": {Data: tern}}, FormatAuto, KindFormat, "2_c.sql", "tern (2_c.sql)"},
		{"dbmate file forced to goose", fstest.MapFS{"1_a.sql": {Data: goose}, "2_b.sql": {Data: dbmate}}, FormatGoose,
			KindFormat, "2_b.sql", "SQL before \"-- +goose Up\""},
		{"goose ENVSUB", fstest.MapFS{"1_a.sql": {Data: []byte("-- +goose Up\n-- +goose ENVSUB ON\nCREATE ROLE ${ROLE};\n")}}, FormatAuto,
			KindFormat, "1_a.sql", "line 2: \"-- +goose ENVSUB ON\""},
		{"tern template", fstest.MapFS{"1_c.sql": {Data: []byte("CREATE TABLE {{.t}} (id int);\n")}}, FormatTern, KindFormat, "1_c.sql", "line 1: template syntax"},
		{"golang-migrate name", fstest.MapFS{"1_a.sql": {Data: []byte("SELECT 1;")}}, FormatGolangMigrate, KindFormat, "1_a.sql", "golang-migrate reads only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			migs, err := LoadFormat(tt.files, tt.format)
			var ve *ValidationError
			if migs != nil || !errors.As(err, &ve) || ve.Kind != tt.kind || ve.File != tt.file || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("LoadFormat = %v, %v; want %s in %s containing %q", migs, err, tt.kind, tt.file, tt.msg)
			}
		})
	}
	// Forcing the format accepts a set that mixes a tool's files with plain
	// ones, and reads each as the tool does.
	migs, err := LoadFormat(fstest.MapFS{"1_c.sql": {Data: tern}, "2_d.sql": {Data: []byte("SELECT 2;")}}, FormatTern)
	if err != nil || len(migs) != 2 || migs[0].SQL != "CREATE TABLE c (id int);\n" || migs[1].Format != FormatTern {
		t.Fatalf("forced tern: %v, %v", migs, err)
	}
	if _, err := LoadFormat(fstest.MapFS{}, "flyway"); err == nil || !strings.Contains(err.Error(), `"flyway"`) {
		t.Fatalf("LoadFormat(flyway) = %v", err)
	}
}
