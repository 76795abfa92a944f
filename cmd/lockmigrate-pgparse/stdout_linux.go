//go:build cgo

package main

import (
	"os"
	"syscall"
)

// protocolOut moves the protocol's stream off file descriptor 1, and points
// 1 at stderr: whatever the C library might print can then never reach the
// client as a frame.
func protocolOut() (*os.File, error) {
	fd, err := syscall.Dup(1)
	if err != nil {
		return nil, err
	}
	syscall.CloseOnExec(fd)
	if err := syscall.Dup3(2, 1, 0); err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), "protocol"), nil
}
