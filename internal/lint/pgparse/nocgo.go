//go:build !cgo

package pgparse

import (
	"fmt"
	"sync"
)

// builtin is the parser a process uses unless Use installs a Client: in a
// build without cgo, the helper next to the running executable, started
// on the first Parse or Scan and kept for the process's life.
var builtin = sync.OnceValue(func() backend {
	path, err := HelperPath()
	if err != nil {
		return missing{fmt.Errorf("%w: cannot locate its helper %s: %w", ErrUnavailable, HelperName, err)}
	}
	return NewClient(path)
})

// missing is a parser that cannot be found.
type missing struct{ err error }

func (m missing) scanProtobuf(string) ([]byte, error)         { return nil, m.err }
func (m missing) parseAndScan(string) (string, []byte, error) { return "", nil, m.err }
func (m missing) unavailable() error                          { return m.err }
