package pgtest

import (
	"fmt"
	"os"
	"sync"
	"testing"
)

var (
	sharedMu sync.Mutex
	shared   *Server
)

// Main is meant to be called from TestMain so that a whole test binary
// shares one cluster:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, pgtest.Options{})) }
//
// It starts a server, makes it available through Shared, runs the tests,
// stops the server and returns the exit code. If the tests fail, the tail of
// the server log is printed first, because Stop deletes it. A server that
// cannot start or stop cleanly turns the exit code into a failure.
func Main(m *testing.M, opts Options) int {
	s, err := Start(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	sharedMu.Lock()
	shared = s
	sharedMu.Unlock()

	code := m.Run()

	sharedMu.Lock()
	shared = nil
	sharedMu.Unlock()
	if code != 0 && s.logSize() > 0 {
		fmt.Fprintln(os.Stderr, "pgtest: tests failed;"+s.logTail())
	}
	if err := s.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// Shared returns the server started by Main. It panics if Main is not
// running, since a test calling it without TestMain set up is a programming
// error, not a test failure.
func Shared() *Server {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared == nil {
		panic("pgtest: Shared called without a running shared server; " +
			"add `func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, pgtest.Options{})) }` to the package's tests")
	}
	return shared
}
