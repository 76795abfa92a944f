//go:build linux

package dirfs

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestReadDirMatchesOSDirFS lists directories through FS and os.DirFS:
// names, order, types, Info and errors must be the same, for a directory
// larger than one getdents buffer too.
func TestReadDirMatchesOSDirFS(t *testing.T) {
	dir := t.TempDir()
	for i := range 1200 {
		name := fmt.Sprintf("%d_a_rather_long_migration_name_to_fill_the_getdents_buffer_%d.sql", i, i)
		if err := os.WriteFile(filepath.Join(dir, name), []byte("SELECT 1;"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "sub.sql"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sub.sql", "inner.sql"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, l := range [][2]string{{"0_a_rather_long_migration_name_to_fill_the_getdents_buffer_0.sql", "link.sql"}, {"nowhere", "broken.sql"}, {"sub.sql", "dirlink.sql"}} {
		if err := os.Symlink(l[0], filepath.Join(dir, l[1])); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo.sql"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "plain"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	fast, std := New(dir), os.DirFS(dir)
	for _, name := range []string{".", "sub.sql", "dirlink.sql", "plain", "missing", "../x", "", "nul\x00"} {
		got, gerr := fast.ReadDir(name)
		want, werr := fs.ReadDir(std, name)
		if (gerr == nil) != (werr == nil) || gerr != nil && gerr.Error() != werr.Error() {
			t.Fatalf("%q: error %v, os.DirFS %v", name, gerr, werr)
		}
		if len(got) != len(want) {
			t.Fatalf("%q: %d entries, os.DirFS %d", name, len(got), len(want))
		}
		for i := range got {
			g, w := got[i], want[i]
			if g.Name() != w.Name() || g.IsDir() != w.IsDir() || g.Type() != w.Type() || fmt.Sprint(g) != fmt.Sprint(w) {
				t.Fatalf("%q entry %d: %v, os.DirFS %v", name, i, g, w)
			}
			gi, gerr := g.Info()
			wi, werr := w.Info()
			if (gerr == nil) != (werr == nil) || gerr == nil && (gi.Name() != wi.Name() || gi.Mode() != wi.Mode() || gi.Size() != wi.Size()) {
				t.Fatalf("%q entry %s: Info %v, %v; os.DirFS %v, %v", name, g.Name(), gi, gerr, wi, werr)
			}
		}
	}
}
