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
	"strings"
	"sync"
)

// firstBuf is the size of the read buffer: migration files are almost all
// smaller, so one read fills it and the next finds the end of the file.
const firstBuf = 16 << 10

// keepBuf caps the buffer kept between files: one very large file grows it
// for itself, and the next file starts again from firstBuf.
const keepBuf = 1 << 20

// FS is a directory's files, like os.DirFS(dir), with the same error values
// (a *fs.PathError naming the path relative to dir).
type FS struct {
	dir  string
	base fs.FS
	// mu guards scratch, the buffers ReadFile reuses from file to file.
	// FS is safe for concurrent use: a ReadFile that finds mu taken uses
	// buffers from scratchPool instead.
	mu      sync.Mutex
	scratch scratch
}

// scratch are ReadFile's buffers: buf, the read buffer (a fresh one per
// file had to be zeroed each time, which cost more than the read itself),
// and path, the NUL-terminated path the open system call takes (building a
// string and copying it for the call cost two allocations per file).
type scratch struct {
	buf, path []byte
}

// New returns the file system rooted at dir.
func New(dir string) *FS {
	return &FS{dir: dir, base: os.DirFS(dir)}
}

// Open opens name as os.DirFS does.
func (f *FS) Open(name string) (fs.File, error) { return f.base.Open(name) }

// ReadDir lists name as os.DirFS does, sorted by file name. Where it can
// (Linux, types known from the directory itself) it reads the directory
// with getdents into entries allocated together, sorted without interface
// calls: os.ReadDir's entry per file and sort cost as much per file as
// reading the file. Anything else, errors included, is os.DirFS's.
func (f *FS) ReadDir(name string) ([]fs.DirEntry, error) {
	if f.dir != "" && validPath(name) {
		f.mu.Lock()
		entries, ok := readDir(f.dir, name, &f.scratch)
		f.mu.Unlock()
		if ok {
			return entries, nil
		}
	}
	return fs.ReadDir(f.base, name)
}

// Stat describes name as os.DirFS does.
func (f *FS) Stat(name string) (fs.FileInfo, error) { return fs.Stat(f.base, name) }

// ReadFile returns the contents of name.
func (f *FS) ReadFile(name string) ([]byte, error) {
	if f.dir == "" || !validPath(name) {
		return fs.ReadFile(f.base, name) // the same refusal as os.DirFS
	}
	if f.mu.TryLock() {
		defer f.mu.Unlock()
		return readFile(f.dir, name, &f.scratch)
	}
	// Another goroutine reads (runner loads a large set in parallel): a
	// scratch of its own from the pool, not a wait for the lock.
	s := scratchPool.Get().(*scratch)
	defer scratchPool.Put(s)
	return readFile(f.dir, name, s)
}

// scratchPool holds the buffers of concurrent ReadFile calls.
var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// validPath reports whether name is a valid path (fs.ValidPath) without a
// NUL, which os.DirFS refuses with errors of its own. A plain file name,
// ASCII and without "/", is checked here: fs.ValidPath's UTF-8 validation
// cost as much as the rest of a file's path handling.
func validPath(name string) bool {
	for i := 0; i < len(name); i++ {
		if c := name[i]; c >= 0x80 || c == '/' || c == 0 {
			return fs.ValidPath(name) && strings.IndexByte(name, 0) < 0
		}
	}
	return name != "" && name != ".."
}

var (
	_ fs.ReadDirFS  = (*FS)(nil)
	_ fs.ReadFileFS = (*FS)(nil)
	_ fs.StatFS     = (*FS)(nil)
)
