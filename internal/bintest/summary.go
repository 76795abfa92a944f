package bintest

import (
	"fmt"
	"io"
	"sync"
	"testing"
)

// Summaries collects one line per test of a suite (the fault suite, the
// cluster suite): each test logs its figures as it ends, and TestMain prints
// them together after the run, so every outcome stands in one block at the
// end of a -v log.
type Summaries struct {
	// Title names the block: "==== <Title> summary ====".
	Title string
	mu    sync.Mutex
	lines []string
}

// Add logs the test's summary line and keeps it for Print.
func (s *Summaries) Add(t testing.TB, format string, args ...any) {
	t.Helper()
	line := t.Name() + ": " + fmt.Sprintf(format, args...)
	t.Log("SUMMARY " + line)
	s.mu.Lock()
	s.lines = append(s.lines, line)
	s.mu.Unlock()
}

// Print writes the block, nothing when no test added a line.
func (s *Summaries) Print(w io.Writer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.lines) == 0 {
		return
	}
	fmt.Fprintf(w, "==== %s summary ====\n", s.Title)
	for _, l := range s.lines {
		fmt.Fprintln(w, l)
	}
}
