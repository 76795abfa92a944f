package dirfs

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
)

// TestMatchesOSDirFS reads the same names through FS and os.DirFS: the
// bytes, and the errors' text and identity, must be the same.
func TestMatchesOSDirFS(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("1_small.sql", []byte("SELECT 1;\n"))
	write("2_empty.sql", nil)
	big := bytes.Repeat([]byte("INSERT INTO t VALUES (1); -- padding\n"), 3000) // > the 16 KiB first buffer
	write("3_big.sql", big)
	write("4_exact.sql", bytes.Repeat([]byte("x"), 16<<10)) // exactly the first buffer
	if err := os.Symlink("1_small.sql", filepath.Join(dir, "5_link.sql")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("nowhere.sql", filepath.Join(dir, "6_broken.sql")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "7_dir.sql"), 0o755); err != nil {
		t.Fatal(err)
	}
	write("7_dir.sql/inner.sql", []byte("SELECT 7;"))

	fast, std := New(dir), os.DirFS(dir)
	for _, name := range []string{"1_small.sql", "2_empty.sql", "3_big.sql", "4_exact.sql", "5_link.sql",
		"6_broken.sql", "7_dir.sql", "7_dir.sql/inner.sql", "missing.sql", "../escape.sql", "/abs.sql", ".", "", "nul\x00.sql"} {
		got, gerr := fast.ReadFile(name)
		want, werr := fs.ReadFile(std, name)
		if !bytes.Equal(got, want) || (gerr == nil) != (werr == nil) {
			t.Errorf("%q: got %d bytes, %v; os.DirFS %d bytes, %v", name, len(got), gerr, len(want), werr)
			continue
		}
		if gerr != nil {
			if gerr.Error() != werr.Error() {
				t.Errorf("%q: error %q, os.DirFS %q", name, gerr, werr)
			}
			for _, target := range []error{fs.ErrNotExist, fs.ErrInvalid} {
				if errors.Is(gerr, target) != errors.Is(werr, target) {
					t.Errorf("%q: errors.Is(%v, %v) differs from os.DirFS's %v", name, gerr, target, werr)
				}
			}
		}
	}
	if got, _ := fast.ReadFile("3_big.sql"); !bytes.Equal(got, big) {
		t.Fatal("big file read wrongly")
	}
}

// TestFSContract checks the whole fs.FS contract, as testing/fstest sees it.
func TestFSContract(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string]string{"1_a.sql": "SELECT 1;", "2_b.sql": strings.Repeat("-- x\n", 10000), "sub/3_c.sql": ""} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := fstest.TestFS(New(dir), "1_a.sql", "2_b.sql", "sub/3_c.sql"); err != nil {
		t.Fatal(err)
	}
}

func TestEmptyRootRefused(t *testing.T) {
	_, gerr := New("").ReadFile("x.sql")
	_, werr := fs.ReadFile(os.DirFS(""), "x.sql")
	if gerr == nil || gerr.Error() != werr.Error() {
		t.Fatalf("got %v, os.DirFS %v", gerr, werr)
	}
}

// TestBufferReuse reads, through one FS, files that grow the shared buffer
// beyond what is kept and files that only partly fill it, in an order where
// a stale tail of a previous file would show, and concurrently: each read
// must return exactly its own file.
func TestBufferReuse(t *testing.T) {
	dir := t.TempDir()
	files := map[string][]byte{
		"1_huge.sql":  bytes.Repeat([]byte("SELECT 'huge';\n"), (keepBuf/15)+100), // > keepBuf
		"2_small.sql": []byte("SELECT 2;"),
		"3_mid.sql":   bytes.Repeat([]byte("m"), firstBuf+1),
		"4_tiny.sql":  []byte("x"),
		"5_empty.sql": nil,
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fsys := New(dir)
	order := []string{"1_huge.sql", "2_small.sql", "3_mid.sql", "4_tiny.sql", "5_empty.sql", "3_mid.sql", "2_small.sql", "1_huge.sql", "4_tiny.sql"}
	check := func(name string) error {
		got, err := fsys.ReadFile(name)
		if err != nil {
			return err
		}
		if !bytes.Equal(got, files[name]) {
			return fmt.Errorf("%s: got %d bytes, want %d", name, len(got), len(files[name]))
		}
		return nil
	}
	for _, name := range order {
		if err := check(name); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4*len(order))
	for range 4 {
		wg.Go(func() {
			for _, name := range order {
				errs <- check(name)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestValidPath holds validPath to fs.ValidPath, with NULs refused.
func TestValidPath(t *testing.T) {
	for _, name := range []string{"", ".", "..", "...", "a", "1_a.sql", "a/b", "a/../b", "/a", "a/", "a//b", "./a", "é.sql",
		"\xff.sql", "a\x00b", "a/\x00", ". ", " ", "a\\b", "..a", "a.."} {
		want := fs.ValidPath(name) && !strings.Contains(name, "\x00")
		if got := validPath(name); got != want {
			t.Errorf("validPath(%q) = %v, want %v", name, got, want)
		}
	}
}
