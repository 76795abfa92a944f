// Package dirfs is os.DirFS with a cheaper ReadFile. A run reads every file
// of LOCKMIGRATE_DIR at each start, and through *os.File each read costs ten
// system calls (open, four fcntl and an epoll_ctl to try the poller, fstat,
// two reads, close); on the virtual machines pods run on, system calls are
// the bulk of a no-op start's CPU time. ReadFile here does open, read until
// end of file, close: four calls for a small file.
package dirfs

import (
	"io/fs"
	"os"
)

// FS is a directory's files, like os.DirFS(dir), with the same error values
// (a *fs.PathError naming the path relative to dir).
type FS struct {
	dir  string
	base fs.FS
}

// New returns the file system rooted at dir.
func New(dir string) *FS {
	return &FS{dir: dir, base: os.DirFS(dir)}
}

// Open opens name as os.DirFS does.
func (f *FS) Open(name string) (fs.File, error) { return f.base.Open(name) }

// ReadDir lists name as os.DirFS does, sorted by file name.
func (f *FS) ReadDir(name string) ([]fs.DirEntry, error) { return fs.ReadDir(f.base, name) }

// Stat describes name as os.DirFS does.
func (f *FS) Stat(name string) (fs.FileInfo, error) { return fs.Stat(f.base, name) }

// ReadFile returns the contents of name.
func (f *FS) ReadFile(name string) ([]byte, error) {
	if f.dir == "" || !fs.ValidPath(name) {
		return fs.ReadFile(f.base, name) // the same refusal as os.DirFS
	}
	return readFile(f.dir, name)
}

var (
	_ fs.ReadDirFS  = (*FS)(nil)
	_ fs.ReadFileFS = (*FS)(nil)
	_ fs.StatFS     = (*FS)(nil)
)
