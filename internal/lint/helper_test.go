package lint

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/lockmigrate/lockmigrate/internal/bintest"
	"github.com/lockmigrate/lockmigrate/internal/lint/pgparse"
)

// TestLintThroughHelper: the linter gives the same report whether the
// parser is linked in or runs as the helper a build without cgo starts
// (cmd/lockmigrate-pgparse), on every rule case, the zero-downtime examples
// and a generated set of 1,000 files; it reports the helper's cost.
func TestLintThroughHelper(t *testing.T) {
	if !pgparse.Available() {
		t.Skip("built without cgo: no in-process parser to compare with")
	}
	helper, err := bintest.BuildParser(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	type set struct {
		files []File
		opts  Options
	}
	sets := map[string]set{"examples": {readSet(t, examplesDir), Options{Enable: []string{"style"}}}}
	// Two files of one text are parsed once and both get its findings;
	// so do two with the same syntax error.
	sets["same texts"] = set{[]File{{Name: "1_a.sql", SQL: "CREATE INDEX i ON t (v);"}, {Name: "2_bad.sql", SQL: "SELEC 1;"},
		{Name: "3_a.sql", SQL: "CREATE INDEX i ON t (v);"}, {Name: "4_bad.sql", SQL: "SELEC 1;"}}, Options{}}
	for _, tc := range ruleCases {
		sets[tc.name+" (bad)"] = set{append([]File{setup}, tc.bad...), tc.opts}
		sets[tc.name+" (good)"] = set{append([]File{setup}, tc.good...), tc.opts}
	}
	c := pgparse.NewClient(helper)
	defer c.Close()
	// The first lint starts the helper: its cost is the start, the
	// handshake and the parse.
	thousand := generatedSet(1000)
	want := lintWith(t, nil, thousand, Options{})
	start := time.Now()
	got := lintWith(t, c, thousand, Options{})
	first := time.Since(start)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("1,000 files: through the helper %d findings, %d statements; in process %d, %d",
			len(got.Findings), got.Statements, len(want.Findings), want.Statements)
	}
	start = time.Now()
	lintWith(t, c, thousand, Options{})
	again := time.Since(start)
	for name, s := range sets {
		if got, want := lintWith(t, c, s.files, s.opts), lintWith(t, nil, s.files, s.opts); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: through the helper %q, in process %q", name, findingKeys(got), findingKeys(want))
		}
	}
	same := lintWith(t, c, sets["same texts"].files, Options{})
	if keys := findingKeys(same); len(keys) != 4 || keys[0][:4] != "1_a." || keys[1][:6] != "2_bad." || keys[2][:4] != "3_a." || keys[3][:6] != "4_bad." {
		t.Errorf("same texts: findings %q, want one for each of the four files", keys)
	}
	t.Logf("1,000 files (%d statements) through the helper: %s with its start, %s once running", want.Statements, first, again)
}

// lintWith lints offline through c, or in process for nil.
func lintWith(t *testing.T, c *pgparse.Client, files []File, opts Options) *Report {
	t.Helper()
	if c != nil {
		defer pgparse.Use(c)()
	}
	rep, err := Lint(context.Background(), files, opts)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}
