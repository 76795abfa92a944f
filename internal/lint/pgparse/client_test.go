package pgparse

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lockmigrate/lockmigrate/internal/bintest"
)

// helperBin is the helper built for this test binary by TestMain.
var helperBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "lmpgparse")
	if err == nil {
		helperBin, err = bintest.BuildParser(dir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "building the parser helper:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// newClient is a Client of the built helper, closed with the test.
func newClient(t *testing.T) *Client {
	t.Helper()
	c := NewClient(helperBin)
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return c
}

// corpus is every SQL text of the repository (migrations, examples, the
// splitter's fuzz inputs) and texts at the edges of the protocol: empty,
// comments only, multi-byte characters before an error, lexer errors, a
// large file.
func corpus(t *testing.T) map[string]string {
	t.Helper()
	root, err := bintest.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{
		"empty": "", "comment": "-- only\n/* a comment */", "syntax": "SELECT 'é';\nSELEC 1;",
		"unterminated": "SELECT 'abc", "dollar": "DO $$ BEGIN PERFORM 1; END $$;", "late error": "SELECT 1; SELECT 'ü' + ;",
		"large": strings.Repeat("INSERT INTO t (a, b) VALUES (1, 'x;y');\n", 20000),
	}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			return err
		case d.IsDir() && (d.Name() == ".git" || d.Name() == "node_modules"):
			return filepath.SkipDir
		case d.IsDir():
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		if strings.HasSuffix(path, ".sql") {
			b, err := os.ReadFile(path)
			out[rel] = string(b)
			return err
		}
		if strings.Contains(rel, "sqlsplit/testdata/fuzz/") {
			b, err := os.ReadFile(path)
			for _, line := range strings.Split(string(b), "\n") {
				if s, ok := strings.CutPrefix(line, "string("); ok {
					if u, err := strconv.Unquote(strings.TrimSuffix(s, ")")); err == nil {
						out[rel] = u
					}
				}
			}
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) < 25 {
		t.Fatalf("corpus of %d texts: the walk found too little", len(out))
	}
	return out
}

// TestClientOneProcess: the helper starts on the first call, not before,
// and serves every later one.
func TestClientOneProcess(t *testing.T) {
	c := newClient(t)
	if c.PID() != 0 {
		t.Fatal("NewClient started the helper")
	}
	before := Parses()
	var (
		pid  int
		took [3]time.Duration
	)
	for i := range 3 {
		start := time.Now()
		if _, err := c.Parse("SELECT 1"); err != nil {
			t.Fatal(err)
		}
		took[i] = time.Since(start)
		if i == 0 {
			pid = c.PID()
		}
		if c.PID() != pid || pid == 0 {
			t.Fatalf("call %d: helper %d, first %d", i, c.PID(), pid)
		}
	}
	if got := Parses() - before; got != 3 {
		t.Fatalf("Parses counted %d, want 3", got)
	}
	t.Logf("first Parse (start, handshake, parse): %s; the next two: %s, %s", took[0], took[1], took[2])
}

// TestPrestart: Prestart starts the installed Client's helper, once, and
// the next Parse uses it; a prestart that fails is the next call's error,
// once, the call after that trying again.
func TestPrestart(t *testing.T) {
	c := newClient(t)
	restore := Use(c)
	defer restore()
	Prestart()
	Prestart()
	if _, err := Parse("SELECT 1"); err != nil {
		t.Fatal(err)
	}
	pid := c.PID()
	if pid == 0 {
		t.Fatal("no helper after Prestart and Parse")
	}
	Prestart()
	if _, err := Parse("SELECT 2"); err != nil || c.PID() != pid {
		t.Fatalf("second Parse: %v, helper %d, want %d (one start)", err, c.PID(), pid)
	}

	// A helper that fails its first start and works from the second: the
	// call after the failed prestart reports that failure without a start
	// of its own (which would work), the call after it starts one.
	dir := t.TempDir()
	path := filepath.Join(dir, HelperName)
	script := "#!/bin/sh\nif [ -e " + dir + "/started ]; then exec " + helperBin + "; fi\n" +
		"touch " + dir + "/started; echo 'no parser here' >&2; exit 3\n"
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	bad := NewClient(path)
	defer bad.Close()
	bad.prestart()
	if _, err := bad.Parse("SELECT 1"); !errors.Is(err, ErrHelper) || !strings.Contains(err.Error(), "no parser here") {
		t.Fatalf("call after a failed prestart: %v, want its ErrHelper", err)
	}
	if bad.PID() != 0 {
		t.Fatal("a refused helper is kept")
	}
	if _, err := bad.Parse("SELECT 1"); err != nil || bad.PID() == 0 {
		t.Fatalf("the call after: %v, helper %d; want a new start", err, bad.PID())
	}
}

// TestClientHelperKilled: a helper killed between two parses fails the
// next one with ErrHelper, saying how it ended, rather than hanging; the
// call after that starts a new helper.
func TestClientHelperKilled(t *testing.T) {
	c := newClient(t)
	if _, err := c.Parse("SELECT 1"); err != nil {
		t.Fatal(err)
	}
	pid := c.PID()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := c.Parse("SELECT 2"); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrHelper) || !strings.Contains(err.Error(), "signal: killed") || !strings.Contains(err.Error(), helperBin) {
			t.Fatalf("after the kill: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Parse hung on a killed helper")
	}
	if _, err := c.Parse("SELECT 3"); err != nil || c.PID() == pid || c.PID() == 0 {
		t.Fatalf("after a failure: %v, helper %d (killed %d)", err, c.PID(), pid)
	}
}

// TestClientNotAHelper: a file at the helper's path that is not the
// helper, or a helper that fails, is refused with ErrHelper and what it
// said; a missing one is ErrUnavailable naming the path.
func TestClientNotAHelper(t *testing.T) {
	defer func(d time.Duration) { helloTimeout = d }(helloTimeout)
	helloTimeout = 300 * time.Millisecond
	cases := []struct{ name, script, want string }{
		{"exits at once", "echo 'no parser here' >&2; exit 3", "exit status 3); its stderr: no parser here"},
		{"echoes its input", "exec cat", `status 'H'`},
		{"prints text", "echo hello; cat >/dev/null", "malformed frame"},
		{"never answers", "exec sleep 600", "i/o timeout"},
		{"other protocol version", fmt.Sprintf(`printf 'o\000\000\000\024lockmigrate-pgparse\%03o'; cat >/dev/null`, protocolVersion+1),
			fmt.Sprintf("it speaks protocol version %d, this lockmigrate %d", protocolVersion+1, protocolVersion)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), HelperName)
			if err := os.WriteFile(path, []byte("#!/bin/sh\n"+tc.script+"\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			c := NewClient(path)
			defer c.Close()
			_, err := c.Parse("SELECT 1")
			if !errors.Is(err, ErrHelper) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("err = %v, want ErrHelper with %q", err, tc.want)
			}
			if c.PID() != 0 {
				t.Fatal("a refused helper is kept")
			}
		})
	}
	path := filepath.Join(t.TempDir(), HelperName)
	c := NewClient(path)
	restore := Use(c)
	defer restore()
	if Available() {
		t.Fatal("Available with no helper")
	}
	_, err := Parse("SELECT 1")
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), path+": no such file") || !errors.Is(Unavailable(), ErrUnavailable) {
		t.Fatalf("missing helper: %v", err)
	}
}

// TestFrames: a length over the bound and a truncated payload are errors,
// not allocations or hangs; a syntax error's offset survives, -1 too.
func TestFrames(t *testing.T) {
	if _, _, err := readFrame(bufio.NewReader(strings.NewReader("o\xff\xff\xff\xff"))); !errors.Is(err, errFrame) {
		t.Fatalf("oversized: %v", err)
	}
	if _, _, err := readFrame(bufio.NewReader(strings.NewReader("o\x00\x00\x00\x09abc"))); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated: %v", err)
	}
	for _, se := range []SyntaxError{{Msg: "m", Offset: -1}, {Msg: "é", Offset: 12345}} {
		got, err := decodeSyntax(encodeSyntax(&se))
		if err != nil || *got != se {
			t.Fatalf("%+v came back as %+v, %v", se, got, err)
		}
	}
}

// holdingHelper is a helper behind a shell that passes on the handshake,
// then holds back the first hold bytes of requests until every one of them
// has arrived (dd with a full block), then passes on up to more bytes,
// then closes the helper's input (more < 0: everything).
func holdingHelper(t *testing.T, hold, more int) string {
	t.Helper()
	tail := "cat"
	if more >= 0 {
		tail = fmt.Sprintf("dd bs=%d count=1 iflag=fullblock", max(more, 1))
		if more == 0 {
			tail = "true"
		}
	}
	script := fmt.Sprintf("#!/bin/sh\n{ dd bs=6 count=1 iflag=fullblock; dd bs=%d count=1 iflag=fullblock; %s; } 2>/dev/null | exec %s\n",
		hold, tail, helperBin)
	path := filepath.Join(t.TempDir(), HelperName)
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// parseAllWithin runs ParseAll through c and fails the test if it has not
// returned within 30 s: a client waiting for each answer before its next
// request would wait for ever on holdingHelper.
func parseAllWithin(t *testing.T, c *Client, sqls []string) (got []int, stmts [][]Stmt, errs []error, err error) {
	t.Helper()
	defer Use(c)()
	done := make(chan error, 1)
	go func() {
		done <- ParseAll(sqls, func(i int, s []Stmt, e error) {
			got, stmts, errs = append(got, i), append(stmts, s), append(errs, e)
		})
	}()
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("ParseAll hung: it waited for an answer before sending every request")
	}
	return got, stmts, errs, err
}

// TestParseAllPipelines: ParseAll sends every text before it reads the
// first answer (the helper sees none of them until it holds them all), and
// hands each result, a NUL text's and a syntax error included, to each in
// order, as Parse would return it.
func TestParseAllPipelines(t *testing.T) {
	var sqls []string
	for i := range 200 {
		sqls = append(sqls, fmt.Sprintf("CREATE TABLE t%d (id bigint);\nCREATE INDEX ON t%d (id);", i, i))
	}
	sqls[7] = "SELEC 1;"
	sqls[50] = "SELECT 1;\x00"
	hold := 0
	for i, sql := range sqls {
		if i != 50 {
			hold += 5 + len(sql) // a frame: op, length, text
		}
	}
	before := Parses()
	got, stmts, errs, err := parseAllWithin(t, NewClient(holdingHelper(t, hold, -1)), sqls)
	if err != nil {
		t.Fatal(err)
	}
	if Parses()-before != int64(len(sqls)-1) {
		t.Errorf("Parses counted %d, want %d (the NUL text is not sent)", Parses()-before, len(sqls)-1)
	}
	ref := newClient(t)
	for i, sql := range sqls {
		want, werr := ref.Parse(sql)
		if i >= len(got) || got[i] != i {
			t.Fatalf("results in the order %v, want 0…%d", got, len(sqls)-1)
		}
		if !reflect.DeepEqual(stmts[i], want) || fmt.Sprint(errs[i]) != fmt.Sprint(werr) {
			t.Errorf("text %d: %d statements, %v; Parse gives %d, %v", i, len(stmts[i]), errs[i], len(want), werr)
		}
	}
	if _, ok := errs[7].(*SyntaxError); !ok {
		t.Errorf("text 7: %v, want a SyntaxError", errs[7])
	}
}

// TestParseAllHelperEnds: a helper whose input ends after the first three
// requests answers those, and ParseAll then fails with ErrHelper, having
// handed on only those three; the next call starts a new helper.
func TestParseAllHelperEnds(t *testing.T) {
	sqls := []string{"SELECT 1", "SELECT 2", "SELECT 3", "SELECT 4", "SELECT 5"}
	c := NewClient(holdingHelper(t, 3*(5+len(sqls[0])), 0))
	defer c.Close()
	got, _, errs, err := parseAllWithin(t, c, sqls)
	if !errors.Is(err, ErrHelper) || !slices.Equal(got, []int{0, 1, 2}) {
		t.Fatalf("ParseAll: %v after %v (errors %v), want ErrHelper after [0 1 2]", err, got, errs)
	}
	if c.PID() != 0 {
		t.Fatal("a failed helper is kept")
	}
}

// TestParseAllStartsNothingForNothing: with no text to send (none, or only
// texts with a NUL byte, refused here) ParseAll starts no helper.
func TestParseAllStartsNothingForNothing(t *testing.T) {
	c := newClient(t)
	for _, sqls := range [][]string{nil, {"SELECT 1\x00"}} {
		got, _, errs, err := parseAllWithin(t, c, sqls)
		if err != nil || len(got) != len(sqls) || c.PID() != 0 {
			t.Fatalf("ParseAll(%q): %v, results %v %v, helper %d; want no start", sqls, err, got, errs, c.PID())
		}
	}
}
