// Package pgparse is lockmigrate's binding to libpg_query, the parser of
// PostgreSQL itself (through github.com/pganalyze/pg_query_go/v6, cgo). It
// returns each statement of a file as a generic parse-tree node with the
// byte offsets of its first and last token, so that package lint can read
// any statement without depending on the binding's generated protobuf
// types, whose package initialisation would run in every process.
//
// Nothing here runs before the first Parse: a run that lints nothing (the
// lock-free fast path of every replica) never calls into the parser. The
// library's own package initialisation (pg_query_init, which allocates
// PostgreSQL's top memory context) does run at process start; it is
// measured in docs/lint.md. In a build without cgo the parser is absent:
// Parse returns ErrUnavailable.
package pgparse

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
)

// Version is the PostgreSQL release whose grammar the parser implements
// (libpg_query 17).
const Version = 17

// ErrUnavailable is returned by Parse in a binary built without cgo.
var ErrUnavailable = errors.New("this lockmigrate was built without the PostgreSQL parser (CGO_ENABLED=0); build it with cgo to lint")

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

// Available reports whether this binary has the parser.
func Available() bool { return available }

// Parse parses sql, which may hold many statements. A text the grammar
// rejects is a *SyntaxError; a text holding a NUL byte, which no
// PostgreSQL query can hold, is one too.
func Parse(sql string) ([]Stmt, error) {
	if !available {
		return nil, ErrUnavailable
	}
	if i := strings.IndexByte(sql, 0); i >= 0 {
		return nil, &SyntaxError{Msg: "NUL byte in the text", Offset: i}
	}
	parses.Add(1)
	raw, err := parseJSON(sql)
	if err != nil {
		return nil, located(sql, err)
	}
	var tree struct {
		Stmts []struct {
			Stmt     map[string]any `json:"stmt"`
			Location int            `json:"stmt_location"`
			Len      int            `json:"stmt_len"`
		} `json:"stmts"`
	}
	if err := json.Unmarshal([]byte(raw), &tree); err != nil {
		return nil, fmt.Errorf("decode the parse tree: %w", err)
	}
	toks, err := scan(sql)
	if err != nil {
		return nil, located(sql, err)
	}
	out := make([]Stmt, 0, len(tree.Stmts))
	for _, s := range tree.Stmts {
		end := len(sql)
		if s.Len > 0 {
			end = s.Location + s.Len
		}
		st := Stmt{Node: wrapped(s.Stmt), Start: -1}
		for _, t := range toks {
			if t.start >= s.Location && t.end <= end && !t.comment {
				if st.Start < 0 {
					st.Start = t.start
				}
				st.End = t.end
			}
		}
		if st.Start < 0 {
			st.Start, st.End = s.Location, end
		}
		out = append(out, st)
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
