// Package pgparse is lockmigrate's binding to libpg_query, the parser of
// PostgreSQL itself (through github.com/pganalyze/pg_query_go/v6, cgo). It
// returns each statement of a file as a generic parse-tree node with the
// byte offsets of its first and last token, so that package lint can read
// any statement without depending on the binding's generated protobuf
// types, whose package initialisation would run in every process.
//
// Built with cgo, the parser is linked in. Built without (the shipped
// lockmigrate, CGO_ENABLED=0), it is a second binary, lockmigrate-pgparse
// (cmd/lockmigrate-pgparse, static cgo), found next to the running
// executable and started as a co-process on the first Parse or Scan, once
// per process: a run that lints nothing (the lock-free fast path of every
// replica) neither maps the parser nor starts it. docs/lint.md measures
// both.
package pgparse

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// Version is the PostgreSQL release whose grammar the parser implements
// (libpg_query 17).
const Version = 17

// ErrUnavailable is the error of a process that has no parser: built
// without cgo, with no lockmigrate-pgparse next to its executable. The
// error returned wraps it and says where the helper was looked for.
var ErrUnavailable = errors.New("lint needs the PostgreSQL parser")

// ErrHelper is wrapped by the errors of a parser helper that could not be
// started, exited, or broke the protocol: the linter could not run.
var ErrHelper = errors.New("the PostgreSQL parser helper failed")

// backend is where the texts are parsed: in this process (cgo) or by a
// Client's helper.
type backend interface {
	// parseAndScan is libpg_query's JSON parse tree of sql and the
	// lexer's protobuf ScanResult of it (through the helper, in one round
	// trip), or a *SyntaxError whose Offset is the parser's 0-based
	// character position.
	parseAndScan(sql string) (tree string, scanned []byte, err error)
	// scanProtobuf is the lexer's protobuf ScanResult of sql alone.
	scanProtobuf(sql string) ([]byte, error)
	// unavailable is nil when the backend can parse, else the error
	// (wrapping ErrUnavailable) that says why not.
	unavailable() error
}

var (
	useMu sync.Mutex
	// used is the Client installed by Use, nil for builtin.
	used backend
)

// current is the backend of the package-level functions.
func current() backend {
	useMu.Lock()
	defer useMu.Unlock()
	if used != nil {
		return used
	}
	return builtin()
}

// Use makes Parse, Scan and Available go through c instead of the built-in
// parser until restore is called: the tests run the whole linter through a
// helper built for them, and a program can point at a helper installed
// elsewhere than next to its executable.
func Use(c *Client) (restore func()) {
	useMu.Lock()
	defer useMu.Unlock()
	prev := used
	used = nil
	if c != nil {
		used = c
	}
	return func() {
		useMu.Lock()
		defer useMu.Unlock()
		used = prev
	}
}

// Stmt is one statement of a parsed text.
type Stmt struct {
	// Node is the statement, e.g. Type "IndexStmt".
	Node Node
	// Start is the byte offset of the statement's first token; End the
	// offset just after its last token (comments and the terminating
	// semicolon excluded), as package sqlsplit reports statements.
	Start, End int
}

// SyntaxError is text the parser rejects.
type SyntaxError struct {
	Msg string
	// Offset is the byte offset the parser points at (-1 when unknown).
	Offset int
}

func (e *SyntaxError) Error() string { return e.Msg }

// parses counts calls into the parser, so tests can prove that a run
// parsed nothing.
var parses atomic.Int64

// Parses reports how many texts this process has handed to the parser.
func Parses() int64 { return parses.Load() }

// Available reports whether this process can parse: built with cgo, or
// with its helper in place. It does not start the helper.
func Available() bool { return current().unavailable() == nil }

// Prestart starts the parser's helper in the background when the parser is
// one (a build without cgo, or a Client installed by Use) and none runs
// yet, so that the start (a process, its runtime, the handshake) overlaps
// the caller's other work instead of delaying its first Parse, which waits
// for it. A start that fails is reported by that first call, as it would
// have been without Prestart. With the parser linked in, it does nothing.
func Prestart() {
	if c, ok := current().(*Client); ok {
		c.prestart()
	}
}

// Unavailable is nil when Available, else the error that says where the
// helper was looked for and how to install it (wrapping ErrUnavailable).
func Unavailable() error { return current().unavailable() }

// Parse parses sql, which may hold many statements. A text the grammar
// rejects is a *SyntaxError; a text holding a NUL byte, which no
// PostgreSQL query can hold, is one too. Without a parser the error wraps
// ErrUnavailable; with a helper that failed, ErrHelper.
func Parse(sql string) ([]Stmt, error) { return parse(current(), sql) }

func parse(b backend, sql string) ([]Stmt, error) {
	if err := b.unavailable(); err != nil {
		return nil, err
	}
	if se := nulError(sql); se != nil {
		return nil, se
	}
	parses.Add(1)
	raw, scanned, err := b.parseAndScan(sql)
	return statements(sql, raw, scanned, err)
}

// pipeliner is a backend that takes many texts at once (a Client): each is
// called with every text's parseAndScan result, in order, and the error
// returned is the backend's own failure (ErrHelper), after which the texts
// not yet handed to each are not parsed.
type pipeliner interface {
	parseAndScanAll(sqls []string, each func(i int, tree string, scanned []byte, err error)) error
}

// ParseAll parses every text of sqls as Parse does, and calls each with
// the statements or the error of each text, in order. Through a helper the
// texts are sent before the first answer is read (see Client), which a
// linter of a whole migration set wants; in this process it is Parse in a
// loop. The error returned is one Parse would return for every text
// (ErrUnavailable) or a helper that failed (ErrHelper), after which each
// is not called for the texts left.
func ParseAll(sqls []string, each func(i int, stmts []Stmt, err error)) error {
	b := current()
	if err := b.unavailable(); err != nil {
		return err
	}
	pl, ok := b.(pipeliner)
	if !ok {
		for i, sql := range sqls {
			stmts, err := parse(b, sql)
			if errors.Is(err, ErrHelper) || errors.Is(err, ErrUnavailable) {
				return err
			}
			each(i, stmts, err)
		}
		return nil
	}
	// A text holding a NUL byte is refused here, as Parse does, and never
	// sent: the others are, with their positions in sqls kept.
	sent := make([]int, 0, len(sqls))
	texts := make([]string, 0, len(sqls))
	for i, sql := range sqls {
		if nulError(sql) == nil {
			sent, texts = append(sent, i), append(texts, sql)
		}
	}
	parses.Add(int64(len(texts)))
	next := 0 // the next text of sqls to hand to each
	refuseNULs := func(upTo int) {
		for ; next < upTo; next++ {
			each(next, nil, nulError(sqls[next]))
		}
	}
	if len(texts) == 0 {
		refuseNULs(len(sqls)) // nothing to start the helper for
		return nil
	}
	err := pl.parseAndScanAll(texts, func(j int, tree string, scanned []byte, err error) {
		i := sent[j]
		refuseNULs(i)
		stmts, err := statements(sqls[i], tree, scanned, err)
		each(i, stmts, err)
		next = i + 1
	})
	if err != nil {
		return err
	}
	refuseNULs(len(sqls))
	return nil
}

// nulError is the SyntaxError of a text holding a NUL byte, which no
// PostgreSQL query can hold (and C would read as its end), or nil.
func nulError(sql string) *SyntaxError {
	if i := strings.IndexByte(sql, 0); i >= 0 {
		return &SyntaxError{Msg: "NUL byte in the text", Offset: i}
	}
	return nil
}

// statements makes a text's statements out of its parse tree and tokens,
// or returns the parser's error with its offset in bytes.
func statements(sql, raw string, scanned []byte, err error) ([]Stmt, error) {
	if err != nil {
		return nil, located(sql, err)
	}
	stmts, err := treeStmts(raw)
	if err != nil {
		return nil, fmt.Errorf("decode the parse tree: %w", err)
	}
	toks, err := decodeScan(scanned)
	if err != nil {
		return nil, located(sql, err)
	}
	out := make([]Stmt, 0, len(stmts))
	for _, s := range stmts {
		end := len(sql)
		if s.Len > 0 {
			end = s.Location + s.Len
		}
		st := Stmt{Node: wrapped(s.Stmt), Start: -1}
		// The tokens are in text order and do not overlap: the
		// statement's are a run from the first at or after its location.
		i := sort.Search(len(toks), func(i int) bool { return toks[i].start >= s.Location })
		for ; i < len(toks) && toks[i].end <= end; i++ {
			if !toks[i].comment {
				if st.Start < 0 {
					st.Start = toks[i].start
				}
				st.End = toks[i].end
			}
		}
		if st.Start < 0 {
			st.Start, st.End = s.Location, end
		}
		out = append(out, st)
	}
	return out, nil
}

// rawStmt is one element of the parse tree's "stmts".
type rawStmt struct {
	Stmt          map[string]any
	Location, Len int
}

// treeStmts decodes libpg_query's JSON parse tree ({"version": …,
// "stmts": [{"stmt": {…}, "stmt_location": N, "stmt_len": N}, …]}).
func treeStmts(raw string) ([]rawStmt, error) {
	v, err := decodeTree(raw)
	if err != nil {
		return nil, err
	}
	top, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("the parse tree is not an object")
	}
	list, _ := top["stmts"].([]any)
	out := make([]rawStmt, 0, len(list))
	for _, e := range list {
		m, ok := e.(map[string]any)
		if !ok {
			return nil, errors.New("a statement of the parse tree is not an object")
		}
		st, _ := m["stmt"].(map[string]any)
		loc, _ := m["stmt_location"].(float64)
		n, _ := m["stmt_len"].(float64)
		out = append(out, rawStmt{Stmt: st, Location: int(loc), Len: int(n)})
	}
	return out, nil
}

// located turns a syntax error's character position into a byte offset.
func located(sql string, err error) error {
	var se *SyntaxError
	if errors.As(err, &se) && se.Offset >= 0 {
		se.Offset = byteOffset(sql, se.Offset)
	}
	return err
}
