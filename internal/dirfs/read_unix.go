//go:build unix

package dirfs

import (
	"io/fs"
	"syscall"
)

// readFile reads dir/name with raw system calls: no fcntl, no poller
// registration (regular files are never pollable) and no fstat, which a
// buffer that is usually large enough makes unnecessary. s holds the
// caller's buffers, kept from one file to the next; the result is copied
// out of the read buffer at its exact size, so 200 small files do not
// leave 200 large buffers for the collector.
func readFile(dir, name string, s *scratch) ([]byte, error) {
	var fd int
	for {
		var err error
		fd, err = openRead(dir, name, s)
		if err == nil {
			break
		}
		if err != syscall.EINTR {
			return nil, &fs.PathError{Op: "open", Path: name, Err: err}
		}
	}
	defer syscall.Close(fd)
	if cap(s.buf) < firstBuf || cap(s.buf) > keepBuf {
		s.buf = make([]byte, 0, firstBuf)
	}
	b := s.buf[:0]
	defer func() { s.buf = b[:0] }()
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // grow
		}
		n, err := syscall.Read(fd, b[len(b):cap(b)])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "read", Path: name, Err: err}
		}
		if n == 0 {
			break
		}
		b = b[:len(b)+n]
	}
	out := make([]byte, len(b))
	copy(out, b)
	return out, nil
}
