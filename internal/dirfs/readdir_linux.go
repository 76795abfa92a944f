//go:build linux

package dirfs

import (
	"encoding/binary"
	"io/fs"
	"os"
	"slices"
	"strings"
	"syscall"
)

// readDir lists dir/name with getdents64. ok is false when it cannot list
// the directory exactly as os.ReadDir would without more system calls (any
// error; an entry of a file system that does not give its type), and the
// caller then asks os.DirFS.
func readDir(dir, name string, s *scratch) (list []fs.DirEntry, ok bool) {
	fd, err := openDir(dir, name, s)
	if err != nil {
		return nil, false
	}
	defer syscall.Close(fd)
	if cap(s.buf) < firstBuf || cap(s.buf) > keepBuf {
		s.buf = make([]byte, 0, firstBuf)
	}
	buf := s.buf[:cap(s.buf)]
	parent := dir
	if name != "." {
		parent += "/" + name
	}
	var (
		entries []dirEntry
		names   strings.Builder // every name in one allocation
		ends    []int
	)
	for {
		n, err := syscall.Getdents(fd, buf)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, false
		}
		if n <= 0 {
			break
		}
		for b := buf[:n]; len(b) >= 19; {
			// struct linux_dirent64: ino 8, off 8, reclen 2, type 1, name.
			reclen := int(binary.NativeEndian.Uint16(b[16:18]))
			if reclen < 19 || reclen > len(b) {
				return nil, false
			}
			rec := b[19:reclen]
			typ, known := modeOf(b[18])
			b = b[reclen:]
			if i := slices.Index(rec, 0); i >= 0 {
				rec = rec[:i]
			}
			if string(rec) == "." || string(rec) == ".." {
				continue
			}
			if !known {
				return nil, false
			}
			names.Write(rec)
			ends = append(ends, names.Len())
			entries = append(entries, dirEntry{parent: parent, typ: typ})
		}
	}
	all, start := names.String(), 0
	for i, end := range ends {
		entries[i].name, start = all[start:end], end
	}
	// The entries stay in place; pointers to them are sorted. Directories
	// often list in (or in reverse of) the order their files were made.
	ptrs := make([]*dirEntry, len(entries))
	for i := range entries {
		ptrs[i] = &entries[i]
	}
	byName := func(a, b *dirEntry) int { return strings.Compare(a.name, b.name) }
	if !slices.IsSortedFunc(ptrs, byName) {
		slices.Reverse(ptrs)
		if !slices.IsSortedFunc(ptrs, byName) {
			slices.SortFunc(ptrs, byName)
		}
	}
	list = make([]fs.DirEntry, len(ptrs))
	for i, e := range ptrs {
		list[i] = e
	}
	return list, true
}

// modeOf is the type bits of a getdents d_type, as os.ReadDir gives them;
// known is false for DT_UNKNOWN, which only a stat resolves.
func modeOf(t byte) (m fs.FileMode, known bool) {
	switch t {
	case syscall.DT_BLK:
		return fs.ModeDevice, true
	case syscall.DT_CHR:
		return fs.ModeDevice | fs.ModeCharDevice, true
	case syscall.DT_DIR:
		return fs.ModeDir, true
	case syscall.DT_FIFO:
		return fs.ModeNamedPipe, true
	case syscall.DT_LNK:
		return fs.ModeSymlink, true
	case syscall.DT_REG:
		return 0, true
	case syscall.DT_SOCK:
		return fs.ModeSocket, true
	}
	return 0, false
}

// dirEntry is one entry of readDir, as os.ReadDir's entries behave: the
// type from the directory, Info from lstat.
type dirEntry struct {
	parent, name string
	typ          fs.FileMode
}

func (e *dirEntry) Name() string      { return e.name }
func (e *dirEntry) IsDir() bool       { return e.typ.IsDir() }
func (e *dirEntry) Type() fs.FileMode { return e.typ }
func (e *dirEntry) String() string    { return fs.FormatDirEntry(e) }

// Info describes the entry as os.ReadDir's does: lstat, the error a
// removed file gives included.
func (e *dirEntry) Info() (fs.FileInfo, error) { return os.Lstat(e.parent + "/" + e.name) }
