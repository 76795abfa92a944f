//go:build unix && !linux

package dirfs

import "syscall"

// openRead opens dir/name for reading.
func openRead(dir, name string, _ *scratch) (int, error) {
	path := dir
	if name != "." {
		path += "/" + name
	}
	return syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
}
