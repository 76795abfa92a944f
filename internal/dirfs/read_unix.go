//go:build unix

package dirfs

import (
	"io/fs"
	"syscall"
)

// readFile reads dir/name with raw system calls: no fcntl, no poller
// registration (regular files are never pollable) and no fstat, which a
// buffer that is usually large enough makes unnecessary.
func readFile(dir, name string) ([]byte, error) {
	path := dir
	if name != "." {
		path += "/" + name
	}
	var fd int
	for {
		var err error
		fd, err = syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err == nil {
			break
		}
		if err != syscall.EINTR {
			return nil, &fs.PathError{Op: "open", Path: name, Err: err}
		}
	}
	defer syscall.Close(fd)
	// Most migration files fit the stack buffer; the result is copied out
	// at its exact size, so 200 small files do not leave 200 large buffers
	// for the collector.
	var stack [16 << 10]byte
	buf := stack[:0]
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)] // grow
		}
		n, err := syscall.Read(fd, buf[len(buf):cap(buf)])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "read", Path: name, Err: err}
		}
		if n == 0 {
			break
		}
		buf = buf[:len(buf)+n]
	}
	out := make([]byte, len(buf))
	copy(out, buf)
	return out, nil
}
