//go:build cgo && !linux

package main

import "os"

// protocolOut is stdout as it is.
func protocolOut() (*os.File, error) { return os.Stdout, nil }
