//go:build linux

package dirfs

import (
	"strings"
	"syscall"
	"unsafe"
)

// openRead opens dir/name for reading with openat(2) on a path built in
// s.path, which syscall.Open would have built as a string and copied again
// to add the NUL.
func openRead(dir, name string, s *scratch) (int, error) {
	return openFlags(dir, name, s, syscall.O_RDONLY|syscall.O_CLOEXEC)
}

func openFlags(dir, name string, s *scratch, flags int) (int, error) {
	if strings.IndexByte(dir, 0) >= 0 || strings.IndexByte(name, 0) >= 0 {
		return -1, syscall.EINVAL // as syscall.Open refuses such a path
	}
	p := append(s.path[:0], dir...)
	if name != "." {
		p = append(append(p, '/'), name...)
	}
	p = append(p, 0)
	s.path = p
	fd, _, errno := syscall.Syscall6(syscall.SYS_OPENAT, uintptr(atFDCWD), uintptr(unsafe.Pointer(&p[0])),
		uintptr(flags), 0, 0, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(fd), nil
}

// atFDCWD makes openat resolve a relative path as open does (a variable:
// the negative constant does not convert to uintptr).
var atFDCWD = -0x64 // AT_FDCWD (golang.org/x/sys/unix has it; syscall does not)

// openDir opens dir/name as a directory, with the path in s.path.
func openDir(dir, name string, s *scratch) (int, error) {
	return openFlags(dir, name, s, syscall.O_RDONLY|syscall.O_CLOEXEC|syscall.O_DIRECTORY)
}
