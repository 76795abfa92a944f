package sqlsplit

import (
	"strings"
	"testing"
)

func TestWords(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
	}{
		{"CREATE /* x; */ unique -- y\n INDEX CONCURRENTLY i ON t (x)", "CREATE UNIQUE INDEX CONCURRENTLY I ON T"},
		{`REINDEX (concurrently) TABLE "T"`, `REINDEX ( CONCURRENTLY ) TABLE "`},
		{"SELECT E'a''b', $$x$$, 1.5", "SELECT ' , ' , 1.5"},
		{"VACUUM /* unterminated", "VACUUM"},
	} {
		if got := strings.Join(Words(tc.in, 7), " "); got != tc.want {
			t.Errorf("Words(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
