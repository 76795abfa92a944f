package runner

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
)

func TestLoad(t *testing.T) {
	tests := []struct {
		name     string
		files    fstest.MapFS
		versions []int64
		kinds    []ValidationKind // expected problems, in any order
	}{
		{
			name: "valid set sorted by version, down files and others ignored",
			files: fstest.MapFS{
				"10_c.up.sql":     {Data: []byte("SELECT 3")},
				"0001_a.sql":      {Data: []byte("SELECT 1")},
				"0002_b.sql":      {Data: []byte("SELECT 2")},
				"0002_b.down.sql": {Data: []byte("DROP")},
				"README.md":       {Data: []byte("# hi")},
				"embed.go":        {Data: []byte("package x")},
			},
			versions: []int64{1, 2, 10},
		},
		{
			name:  "malformed names",
			files: fstest.MapFS{"abc.sql": {}, "0_zero.sql": {}, "1_.sql": {}, "99999999999999999999_big.sql": {}},
			kinds: []ValidationKind{KindMalformedName, KindMalformedName, KindMalformedName, KindMalformedName},
		},
		{
			name:  "duplicate versions",
			files: fstest.MapFS{"0001_a.sql": {}, "1_b.up.sql": {}, "2_c.sql": {}},
			kinds: []ValidationKind{KindDuplicateVersion},
		},
		{
			name:  "unknown directive",
			files: fstest.MapFS{"1_a.sql": {Data: []byte("-- lockmigrate:no-transactoin\nSELECT 1")}},
			kinds: []ValidationKind{KindMalformedName},
		},
		{
			name:  "unterminated quote in a no-transaction file",
			files: fstest.MapFS{"1_a.sql": {Data: []byte("-- lockmigrate:no-transaction\nSELECT 'oops")}},
			kinds: []ValidationKind{KindMalformedSQL},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			migs, err := Load(tt.files)
			if len(tt.kinds) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				var got []int64
				for _, m := range migs {
					got = append(got, m.Version)
				}
				if !equal(got, tt.versions) {
					t.Fatalf("versions = %v, want %v", got, tt.versions)
				}
				return
			}
			if err == nil {
				t.Fatal("Load succeeded, want validation errors")
			}
			var got []ValidationKind
			for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
				var ve *ValidationError
				if !errors.As(e, &ve) {
					t.Fatalf("error %v is not a *ValidationError", e)
				}
				if ve.File == "" || !strings.Contains(e.Error(), ve.File) {
					t.Errorf("error does not name the file: %v", e)
				}
				got = append(got, ve.Kind)
			}
			if len(got) != len(tt.kinds) {
				t.Fatalf("problems = %v (%v), want %v", got, err, tt.kinds)
			}
		})
	}
}

func TestLoadDirectiveAndChecksum(t *testing.T) {
	migs, err := Load(fstest.MapFS{
		"1_a.sql": {Data: []byte("-- lockmigrate:no-transaction\r\nCREATE INDEX CONCURRENTLY i ON t (a);\nCREATE INDEX CONCURRENTLY j ON t (b);")},
		"2_b.sql": {Data: []byte("")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !migs[0].NoTransaction || migs[1].NoTransaction {
		t.Fatalf("NoTransaction = %v, %v", migs[0].NoTransaction, migs[1].NoTransaction)
	}
	if len(migs[0].statements) != 2 {
		t.Fatalf("statements = %d, want 2", len(migs[0].statements))
	}
	// SHA-256 of the empty file.
	if migs[1].Checksum != "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" {
		t.Fatalf("checksum = %s", migs[1].Checksum)
	}
}

func equal(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestMakePlan(t *testing.T) {
	migs := []*Migration{
		{Version: 1, File: "1_a.sql", Checksum: "c1"},
		{Version: 2, File: "2_b.sql", Checksum: "c2"},
		{Version: 3, File: "3_c.sql", Checksum: "c3", NoTransaction: true},
	}
	row := func(v int64, sum, state string) HistoryRow {
		return HistoryRow{Version: v, Checksum: sum, State: state}
	}
	tests := []struct {
		name     string
		rows     []HistoryRow
		opts     Options
		pending  int
		ahead    int
		running  int
		problems []ValidationKind
		upToDate bool
	}{
		{name: "empty history", pending: 3},
		{name: "all applied", rows: []HistoryRow{row(1, "c1", "applied"), row(2, "c2", "applied"), row(3, "c3", "applied")}, upToDate: true},
		{name: "checksum changed", rows: []HistoryRow{row(1, "zz", "applied")}, pending: 2, problems: []ValidationKind{KindChecksumMismatch}},
		{name: "out of order", rows: []HistoryRow{row(1, "c1", "applied"), row(3, "c3", "applied")}, pending: 1, problems: []ValidationKind{KindOutOfOrder}},
		{name: "out of order allowed", rows: []HistoryRow{row(1, "c1", "applied"), row(3, "c3", "applied")}, opts: Options{AllowOutOfOrder: true}, pending: 1},
		{name: "database ahead", rows: []HistoryRow{row(1, "c1", "applied"), row(2, "c2", "applied"), row(3, "c3", "applied"), row(4, "c4", "applied")}, ahead: 1, upToDate: true},
		{name: "running row", rows: []HistoryRow{row(1, "c1", "applied"), row(2, "c2", "applied"), row(3, "c3", "running")}, running: 1},
		{name: "all mode refuses no-transaction", rows: []HistoryRow{row(1, "c1", "applied")}, opts: Options{Transaction: TransactionAll}, pending: 2, problems: []ValidationKind{KindTransactionMode}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := makePlan(migs, tt.rows, tt.opts)
			if len(p.pending) != tt.pending || len(p.ahead) != tt.ahead || len(p.running) != tt.running || p.upToDate() != tt.upToDate {
				t.Fatalf("plan = pending %d ahead %d running %d upToDate %v", len(p.pending), len(p.ahead), len(p.running), p.upToDate())
			}
			if len(p.problems) != len(tt.problems) {
				t.Fatalf("problems = %v, want %v", p.problems, tt.problems)
			}
			for i, e := range p.problems {
				if e.(*ValidationError).Kind != tt.problems[i] {
					t.Fatalf("problem %d = %v, want kind %s", i, e, tt.problems[i])
				}
			}
		})
	}
}

func TestLoadStripsByteOrderMark(t *testing.T) {
	migs, err := Load(fstest.MapFS{"1_a.sql": {Data: []byte("\xef\xbb\xbf-- lockmigrate:no-transaction\nSELECT 1;")}})
	if err != nil {
		t.Fatal(err)
	}
	if !migs[0].NoTransaction || strings.HasPrefix(migs[0].SQL, "\ufeff") || len(migs[0].statements) != 1 {
		t.Fatalf("BOM not handled: %+v", migs[0])
	}
}

// TestLoadVersionsOutOfNameOrder covers sets whose names do not list in
// version order (unpadded numbers), where duplicates are found through the
// map of versions: every duplicate is reported against the first file of
// its version in name order, and the set comes out sorted by version.
func TestLoadVersionsOutOfNameOrder(t *testing.T) {
	migs, err := Load(fstest.MapFS{"1_a.sql": {}, "10_b.sql": {}, "2_c.sql": {}, "100_d.sql": {}, "3_e.sql": {}})
	if err != nil {
		t.Fatal(err)
	}
	var got []int64
	for _, m := range migs {
		got = append(got, m.Version)
	}
	if want := []int64{1, 2, 3, 10, 100}; !equal(got, want) {
		t.Fatalf("versions = %v, want %v", got, want)
	}
	_, err = Load(fstest.MapFS{"10_a.sql": {}, "2_b.sql": {}, "002_c.sql": {}, "9_d.sql": {}, "10_e.up.sql": {},
		"0010_f.sql": {}, "3_g.sql": {}})
	var msgs []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		msgs = append(msgs, e.(*ValidationError).Detail)
	}
	want := []string{"version 10 is used by both 0010_f.sql and 10_a.sql", "version 10 is used by both 0010_f.sql and 10_e.up.sql",
		"version 2 is used by both 002_c.sql and 2_b.sql"}
	if strings.Join(msgs, "\n") != strings.Join(want, "\n") {
		t.Fatalf("problems:\n%s\nwant:\n%s", strings.Join(msgs, "\n"), strings.Join(want, "\n"))
	}
}

// TestParseVersion holds parseVersion to strconv.ParseInt on digit strings
// of every length around the 18 digits it parses itself.
func TestParseVersion(t *testing.T) {
	for _, d := range []string{"0", "1", "0001", "42", "999999999999999999", "000000000000000001", "1000000000000000000",
		"9223372036854775807", "9223372036854775808", "99999999999999999999", "00000000000000000000000007"} {
		got, gerr := parseVersion(d)
		want, werr := strconv.ParseInt(d, 10, 64)
		if got != want || (gerr == nil) != (werr == nil) {
			t.Errorf("parseVersion(%q) = %d, %v; ParseInt %d, %v", d, got, gerr, want, werr)
		}
	}
}
