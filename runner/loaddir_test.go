package runner

import (
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/lockmigrate/lockmigrate/internal/dirfs"
)

// writeSet writes files into a new temporary directory.
func writeSet(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestLoadDirFSMatchesOSDirFS: the binary reads LOCKMIGRATE_DIR through
// dirfs; Load must return exactly what it returns through os.DirFS, for
// valid sets and for every kind of problem.
func TestLoadDirFSMatchesOSDirFS(t *testing.T) {
	valid := map[string]string{
		"0001_a.sql":      "CREATE TABLE a (id int);",
		"0002_b.up.sql":   "-- lockmigrate:no-transaction\nCREATE INDEX CONCURRENTLY i ON a (id);\nSELECT 1;",
		"0002_b.down.sql": "DROP INDEX i;",
		"3_bom.sql":       "\ufeffSELECT 3;",
		"4_empty.sql":     "",
		"README.md":       "# not a migration",
	}
	broken := map[string]string{
		"1_a.sql":  "SELECT 1;",
		"01_b.sql": "SELECT 2;", // duplicate version 1
		"x_c.sql":  "",
		"2_d.sql":  "-- lockmigrate:bogus\nSELECT 1;",
		"3_e.sql":  "-- lockmigrate:no-transaction\nSELECT 'unterminated",
	}
	for name, files := range map[string]map[string]string{"valid": valid, "broken": broken} {
		t.Run(name, func(t *testing.T) {
			dir := writeSet(t, files)
			if name == "broken" {
				// Unreadable: a dangling symlink.
				if err := os.Symlink("gone.sql", filepath.Join(dir, "9_gone.sql")); err != nil {
					t.Fatal(err)
				}
			}
			fast, ferr := Load(dirfs.New(dir))
			std, serr := Load(os.DirFS(dir))
			if !reflect.DeepEqual(fast, std) {
				t.Fatalf("migrations differ:\ndirfs    %+v\nos.DirFS %+v", fast, std)
			}
			if fmt.Sprint(ferr) != fmt.Sprint(serr) {
				t.Fatalf("errors differ:\ndirfs    %v\nos.DirFS %v", ferr, serr)
			}
			if name == "valid" && (ferr != nil || len(fast) != 4) {
				t.Fatalf("valid set: %d migrations, %v", len(fast), ferr)
			}
			if name == "broken" && ferr == nil {
				t.Fatal("broken set loaded")
			}
		})
	}
}

// BenchmarkLoadDir loads 200 small files, the bench's no-op set, through
// os.DirFS and through dirfs.
func BenchmarkLoadDir(b *testing.B) {
	files := map[string]string{}
	for i := 1; i <= 200; i++ {
		files[fmt.Sprintf("%04d_t%d.sql", i, i)] = fmt.Sprintf("CREATE TABLE t%d (id bigint primary key, v text);\nCREATE INDEX ON t%d (v);\n", i, i)
	}
	dir := writeSet(b, files)
	for _, fsys := range []struct {
		name string
		fs   fs.FS
	}{{"os.DirFS", os.DirFS(dir)}, {"dirfs", dirfs.New(dir)}} {
		b.Run(fsys.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Load(fsys.fs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestLoadParallelMatchesSequential: a set large enough to be loaded by
// several goroutines (dirfs) gives what one goroutine gives (os.DirFS,
// which LoadFormat never shares out): the same migrations in the same
// order, and for a broken set the same errors in the same order.
func TestLoadParallelMatchesSequential(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(max(2, runtime.GOMAXPROCS(0))))
	if !concurrentFS(dirfs.New(t.TempDir())) || concurrentFS(os.DirFS(".")) {
		t.Fatal("concurrentFS: dirfs must be shared out, os.DirFS not")
	}
	n := 3*parallelLoad + 7
	valid := map[string]string{}
	for i := 1; i <= n; i++ {
		body := fmt.Sprintf("CREATE TABLE t%d (id bigint);\n", i)
		if i%97 == 0 {
			body = "-- lockmigrate:no-transaction\nCREATE INDEX CONCURRENTLY ON t1 (id);\nSELECT 1;\n"
		}
		valid[fmt.Sprintf("%05d_t%d.sql", i, i)] = body
	}
	broken := maps.Clone(valid)
	broken["00100_dup.sql"] = "SELECT 1;" // duplicate version 100
	broken[fmt.Sprintf("%05d_bad.sql", n+1)] = "-- lockmigrate:bogus\nSELECT 1;"
	broken["00700_t700.sql"] = "-- lockmigrate:no-transaction\nSELECT 'unterminated"
	broken["x_name.sql"] = ""
	for name, files := range map[string]map[string]string{"valid": valid, "broken": broken} {
		t.Run(name, func(t *testing.T) {
			dir := writeSet(t, files)
			par, perr := Load(dirfs.New(dir))
			seq, serr := Load(os.DirFS(dir))
			if !reflect.DeepEqual(par, seq) {
				t.Fatalf("migrations differ: %d loaded in parallel, %d in sequence", len(par), len(seq))
			}
			if fmt.Sprint(perr) != fmt.Sprint(serr) {
				t.Fatalf("errors differ:\nparallel   %v\nsequential %v", perr, serr)
			}
			if name == "valid" && (perr != nil || len(par) != n) {
				t.Fatalf("valid set: %d of %d migrations, %v", len(par), n, perr)
			}
			if name == "broken" && strings.Count(fmt.Sprint(perr), "\n") != 3 {
				t.Fatalf("broken set: want 4 problems, got %v", perr)
			}
		})
	}
}
