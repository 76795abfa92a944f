package runner

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/lockmigrate/lockmigrate/runner/internal/format"
)

// FuzzLoad feeds Load migration sets of up to three files with arbitrary
// names and contents. Load must never panic; every error must be a
// *ValidationError, or several joined with errors.Join, each naming a file
// of the set; and a set it accepts must be sorted by positive, distinct
// versions with checksums and directives that match the files.
//
//	go test -run '^$' -fuzz '^FuzzLoad$' -fuzztime 10s ./runner/
func FuzzLoad(f *testing.F) {
	f.Add("0001_a.sql", []byte("CREATE TABLE a (id int);"), "0002_b.up.sql", []byte("SELECT 2;"), "README.md", []byte("# x"))
	f.Add("1_notx.sql", []byte("-- lockmigrate:no-transaction\nCREATE INDEX CONCURRENTLY i ON t (a);\nSELECT 1;\n"),
		"2_b.down.sql", []byte("DROP TABLE b;"), "3_c.sql", []byte("\ufeffSELECT 3;"))
	f.Add("1_a.sql", []byte("SELECT 1"), "01_b.sql", []byte("SELECT 1"), "abc.sql", []byte{})
	f.Add("1_a.sql", []byte("-- lockmigrate:no-transactoin\nSELECT 1"), "0_zero.sql", []byte{}, "99999999999999999999_big.sql", []byte{})
	f.Add("1_a.sql", []byte("-- lockmigrate:no-transaction\nSELECT 'oops"), "2_$$.sql", []byte("-- lockmigrate:no-transaction\nDO $x$ BEGIN END $x$;"), "sub/3_c.sql", []byte("SELECT 3"))
	f.Add("1_b.sql", []byte("-- backfill\n-- lockmigrate:backfill sleep=1ms max_batches=3\n\n-- lockmigrate:phase contract\nUPDATE t SET a = 1 WHERE id IN (SELECT id FROM t WHERE a IS NULL LIMIT 10);\n"),
		"2_c.sql", []byte("-- lockmigrate:phase contract\nSELECT 1;\n-- lockmigrate:no-transaction\n"), "3_d.sql", []byte("-- lockmigrate:backfill max_rows=0\nUPDATE t SET a = 1"))
	f.Add("9223372036854775807_max.sql", []byte("\xef\xbb\xbf-- lockmigrate:no-transaction\r\nSELECT 1;"), "1_.up.sql", []byte("\xff\xfe"), "1_x.SQL", []byte("SELECT 1"))
	f.Add("00001_goose.sql", []byte("-- +goose Up\nCREATE TABLE a (id int);\n-- +goose Down\nDROP TABLE a;\n"),
		"20240101000000_dbmate.sql", []byte("-- migrate:up transaction:false\nCREATE INDEX CONCURRENTLY i ON a (id);\n-- migrate:down\n"),
		"3_tern.sql", []byte("SELECT 1;\n---- create above / drop below ----\nSELECT 2;\n"))
	f.Fuzz(func(t *testing.T, n1 string, d1 []byte, n2 string, d2 []byte, n3 string, d3 []byte) {
		fsys := fstest.MapFS{}
		for _, file := range []struct {
			name string
			data []byte
		}{{n1, d1}, {n2, d2}, {n3, d3}} {
			// Only names a real directory could hold: valid, unique, and
			// not both a file and a directory.
			if !fs.ValidPath(file.name) || file.name == "." {
				continue
			}
			if _, dup := fsys[file.name]; dup || clashes(fsys, file.name) {
				continue
			}
			fsys[file.name] = &fstest.MapFile{Data: file.data}
		}

		migs, err := Load(fsys)
		if err != nil {
			if migs != nil {
				t.Fatalf("Load returned migrations together with an error: %v", err)
			}
			checkValidationErrors(t, err, fsys)
			return
		}
		var prev int64
		for _, m := range migs {
			file, ok := fsys[m.File]
			if !ok || strings.Contains(m.File, "/") {
				t.Fatalf("migration from %q, which is not a top-level file of the set", m.File)
			}
			if m.Version <= 0 || m.Version <= prev {
				t.Fatalf("versions not positive and strictly increasing: %d after %d", m.Version, prev)
			}
			prev = m.Version
			if m.Name == "" || !strings.HasSuffix(m.File, ".sql") || strings.HasSuffix(m.File, ".down.sql") {
				t.Fatalf("bad migration %+v", m)
			}
			// The part that runs: the whole file in lockmigrate's format
			// (and golang-migrate's), the up section of the others.
			sec, err := format.Parse(m.File, file.Data, format.Auto)
			if err != nil || Format(sec.Format) != m.Format {
				t.Fatalf("%s: loaded as %s, but the format parser says %+v, %v", m.File, m.Format, sec, err)
			}
			up := sec.Up
			if m.Format == FormatLockmigrate || m.Format == FormatGolangMigrate {
				up = file.Data
			}
			sum := sha256.Sum256(up)
			if m.Checksum != hex.EncodeToString(sum[:]) {
				t.Fatalf("%s: checksum %s is not the SHA-256 of the part that runs", m.File, m.Checksum)
			}
			if m.SQL != strings.TrimPrefix(string(up), "\ufeff") {
				t.Fatalf("%s: SQL differs from the part that runs without its BOM", m.File)
			}
			if want := leadingDirective(up, NoTransactionDirective) || leadingDirective(up, BackfillDirective) || sec.NoTransaction; m.NoTransaction != want {
				t.Fatalf("%s: NoTransaction = %v, want %v", m.File, m.NoTransaction, want)
			}
			if want := leadingDirective(up, PhaseDirective); (m.Phase == PhaseContract) != want {
				t.Fatalf("%s: Phase = %q, contract directive %v", m.File, m.Phase, want)
			}
			if !m.NoTransaction && m.statements != nil {
				t.Fatalf("%s: a transactional file was split", m.File)
			}
		}
		// Deterministic: the same set loads the same way.
		again, err := Load(fsys)
		if err != nil || len(again) != len(migs) {
			t.Fatalf("second Load differs: %d migrations, %v", len(again), err)
		}
	})
}

// leadingDirective reports whether the directive d (alone, or for the
// backfill directive followed by options) is one of the lines of the
// file's leading comment block (blank and "--" lines).
func leadingDirective(data []byte, d string) bool {
	for _, line := range strings.Split(string(bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))), "\n") {
		line = strings.TrimSpace(line)
		norm := strings.Join(strings.Fields(line), " ")
		switch {
		case strings.HasPrefix(line, "-- lockmigrate:") && (norm == d || d == BackfillDirective && strings.HasPrefix(norm, d+" ")):
			return true
		case line != "" && !strings.HasPrefix(line, "--"):
			return false
		}
	}
	return false
}

// clashes reports whether name would be both a file and a directory in
// fsys (a/b next to a), which no real file system allows.
func clashes(fsys fstest.MapFS, name string) bool {
	for other := range fsys {
		if strings.HasPrefix(other, name+"/") || strings.HasPrefix(name, other+"/") {
			return true
		}
	}
	return false
}

// checkValidationErrors fails unless err is a *ValidationError or a join of
// them (recursively), each with a kind, a detail, and a file of the set.
func checkValidationErrors(t *testing.T, err error, fsys fstest.MapFS) {
	t.Helper()
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs := j.Unwrap()
		if len(errs) == 0 {
			t.Fatalf("empty joined error %q", err)
		}
		for _, e := range errs {
			checkValidationErrors(t, e, fsys)
		}
		return
	}
	var ve *ValidationError
	if !errors.As(err, &ve) || ve != err {
		t.Fatalf("error %T is not a *ValidationError: %v", err, err)
	}
	if ve.Kind == "" || ve.Detail == "" || ve.File == "" {
		t.Fatalf("incomplete ValidationError %+v", ve)
	}
	if _, ok := fsys[ve.File]; !ok {
		t.Fatalf("ValidationError names %q, which is not in the set", ve.File)
	}
	if !strings.Contains(ve.Error(), ve.File) {
		t.Fatalf("message %q does not name the file %q", ve.Error(), ve.File)
	}
}
