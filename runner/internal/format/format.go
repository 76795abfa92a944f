// Package format reads migration files written for other migrators —
// goose, dbmate, tern, golang-migrate — as those tools read them, and finds
// the part of each file that a forward migration runs (its up section).
//
// A file of goose, dbmate or tern holds its down migration in the same
// file, after a marker. Running such a file whole would undo the migration
// it just applied, so every file is cut at its format's own down marker,
// and the part that runs is checked for down markers of every tool: one
// that the file's format does not explain is refused, never run. Where a
// tool would read a file differently from how lockmigrate would run it
// (goose's environment substitution, tern's templates, annotations goose
// rejects), the file is refused with the line, never guessed.
//
// The parsers follow the tools' own sources at the versions the tests pin
// (goose v3.30.0 internal/sqlparser, dbmate 2.36.0 pkg/dbmate/migration.go,
// tern v2.3.4 migrate/migrate.go), including their case rules.
package format

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"unsafe"
)

// Name is a migration file format.
type Name string

// The formats. Auto detects the format of each file from its markers; the
// others force every file to be read as that tool's.
const (
	Auto          Name = "auto"
	Lockmigrate   Name = "lockmigrate"
	Goose         Name = "goose"
	Dbmate        Name = "dbmate"
	Tern          Name = "tern"
	GolangMigrate Name = "golang-migrate"
)

// Names lists the accepted values of LOCKMIGRATE_FORMAT, auto first.
var Names = []Name{Auto, Lockmigrate, Goose, Dbmate, Tern, GolangMigrate}

// Valid reports whether n is one of Names.
func (n Name) Valid() bool {
	for _, v := range Names {
		if n == v {
			return true
		}
	}
	return false
}

// HasDown reports whether files of the format hold a down section of their
// own (the formats a directory must not mix).
func (n Name) HasDown() bool { return n == Goose || n == Dbmate || n == Tern }

// Section is the part of a migration file that runs.
type Section struct {
	// Format is the format the file was read as.
	Format Name
	// Up is the part of the file's bytes that runs: a prefix of the file,
	// its byte order mark included, ending where the down section starts
	// (the whole file when it has none). It is what is checksummed.
	Up []byte
	// SQL is Up without a UTF-8 byte order mark, as sent to the server. As a
	// prefix of the file it keeps the file's line numbers.
	SQL string
	// NoTransaction is set by the format's own no-transaction marker: goose
	// NO TRANSACTION, dbmate transaction:false, tern disable-tx.
	NoTransaction bool
	// whole are byte ranges of SQL that the no-transaction splitter keeps as
	// one statement (goose StatementBegin ... StatementEnd).
	whole [][2]int
}

// Error is a file that cannot be run as its format means it, at a line.
type Error struct {
	// Line is the 1-based line concerned, 0 for the whole file.
	Line int
	// Down is set when the problem is a down marker in the part that
	// would run (the safety net), as opposed to a file another tool would
	// read differently.
	Down bool
	Msg  string
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("line %d: %s", e.Line, e.Msg)
	}
	return e.Msg
}

func errorf(line int, format string, args ...any) *Error {
	return &Error{Line: line, Msg: fmt.Sprintf(format, args...)}
}

const bom = "\xef\xbb\xbf"

// lazyRegexp compiles expr on first use. The expressions read only files
// that hold a marker's plain text, which most sets never do, and compiling
// them all at package init cost every start about 0.15 M instructions.
func lazyRegexp(expr string) func() *regexp.Regexp {
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(expr) })
}

// Parse reads the file name, holding data, as format f (Auto: as the format
// its markers show) and returns the section that runs. It returns an *Error
// for a file its format would read differently, and for a down marker left
// in the part that runs.
//
// The section shares data's memory: Up is a prefix of data and SQL is read
// from it without a copy, since every start parses every file and the copy
// was one of the larger costs of loading. The caller must not change data
// afterwards.
func Parse(name string, data []byte, f Name) (Section, error) {
	data1 := bytes.TrimPrefix(data, []byte(bom))
	text := unsafe.String(unsafe.SliceData(data1), len(data1))
	skip := len(data) - len(text)
	if f == Auto || f == "" {
		var err error
		if f, err = Detect(text); err != nil {
			return Section{}, err
		}
		if f == "" {
			f = Lockmigrate
			if strings.HasSuffix(name, ".up.sql") {
				f = GolangMigrate
			}
		}
	}
	sec := Section{Format: f}
	upEnd := len(text)
	var err error
	switch f {
	case Goose, Dbmate, Tern:
		upEnd, err = parseTool(text, &sec)
	case GolangMigrate:
		if !strings.HasSuffix(name, ".up.sql") {
			err = errorf(0, `golang-migrate reads only "<version>_<name>.up.sql" (and .down.sql) files and would ignore this one; `+
				`rename it, or set LOCKMIGRATE_FORMAT to another format`)
		}
	case Lockmigrate:
	default:
		return Section{}, errorf(0, "unknown format %q", f)
	}
	if err != nil {
		return Section{}, err
	}
	sec.SQL = text[:upEnd]
	sec.Up = data[:skip+upEnd]
	if err := checkNoDown(sec.SQL, f); err != nil {
		return Section{}, err
	}
	return sec, nil
}

// parseTool parses text as sec.Format, a tool with a down section. The
// tools' parsers keep a pointer to the section they fill, so it is a copy
// on the heap, and sec, which Parse returns, stays on the stack for the
// usual file, which has no tool markers.
func parseTool(text string, sec *Section) (upEnd int, err error) {
	tool := &Section{Format: sec.Format}
	switch sec.Format {
	case Goose:
		upEnd, err = parseGoose(text, tool)
	case Dbmate:
		upEnd, err = parseDbmate(text, tool)
	default:
		upEnd, err = parseTern(text, tool)
	}
	*sec = *tool
	return upEnd, err
}

// Detect returns the tool format whose markers text holds (goose, dbmate or
// tern), "" when it holds none, and an *Error when it holds markers of more
// than one tool.
func Detect(text string) (Name, error) {
	// Each marker is looked for only where a plain substring shows it may
	// be: a file without any costs a few byte searches (loading stays fast
	// for sets of thousands of files).
	// Every marker holds a "+", a ":" or a "/": a file with none of them,
	// the usual SQL file, costs three byte scans.
	plus, colon, slash := strings.IndexByte(text, '+') >= 0, strings.IndexByte(text, ':') >= 0, strings.IndexByte(text, '/') >= 0
	var found []Name
	if plus && strings.Contains(text, "+goose") && gooseMarked(text) {
		found = append(found, Goose)
	}
	if colon && strings.Contains(text, "migrate:") && (dbmateUp().MatchString(text) || dbmateDown().MatchString(text)) {
		found = append(found, Dbmate)
	}
	if slash && strings.Contains(text, ternSeparator) || colon && strings.Contains(text, "tern: disable-tx") && ternDisableTx().MatchString(text) {
		found = append(found, Tern)
	}
	switch len(found) {
	case 0:
		return "", nil
	case 1:
		return found[0], nil
	}
	return "", errorf(0, "the file holds markers of %s; set LOCKMIGRATE_FORMAT to the format it is written in", joinNames(found))
}

func joinNames(ns []Name) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = string(n)
	}
	return strings.Join(s, " and ")
}

// lines calls fn for each line of text as bufio.ScanLines cuts it (the
// tools read files that way): the line without its "\n" and a "\r" before
// it, its 1-based number and the offset where it starts. fn returns false to
// stop.
func lines(text string, fn func(line string, no, start int) bool) {
	for no, start := 1, 0; start < len(text); no++ {
		end := strings.IndexByte(text[start:], '\n')
		next := len(text)
		if end < 0 {
			end = len(text)
		} else {
			end += start
			next = end + 1
		}
		if !fn(strings.TrimSuffix(text[start:end], "\r"), no, start) {
			return
		}
		start = next
	}
}

// lineAt is the 1-based line of text on which offset falls.
func lineAt(text string, offset int) int { return 1 + strings.Count(text[:offset], "\n") }
