package format

import (
	"github.com/lockmigrate/lockmigrate/internal/sqlsplit"
)

// Statements splits the section into the statements a no-transaction run
// executes one by one: lockmigrate's splitter, except that each goose
// StatementBegin ... StatementEnd block is one statement, sent whole as
// goose sends it. Offsets and lines are those of SQL (so of the file).
func (s *Section) Statements() ([]sqlsplit.Statement, error) {
	var out []sqlsplit.Statement
	add := func(from, to int, whole bool) error {
		stmts, err := sqlsplit.Split(s.SQL[from:to])
		if err != nil {
			if se, ok := err.(*sqlsplit.SyntaxError); ok {
				se.Offset += from
				se.Line = lineAt(s.SQL, se.Offset)
			}
			return err
		}
		if whole && len(stmts) > 1 {
			first, last := stmts[0], stmts[len(stmts)-1]
			stmts = []sqlsplit.Statement{{SQL: s.SQL[from+first.Offset : from+last.Offset+len(last.SQL)], Offset: first.Offset}}
		}
		for _, st := range stmts {
			st.Offset += from
			st.Line = lineAt(s.SQL, st.Offset)
			out = append(out, st)
		}
		return nil
	}
	at := 0
	for _, w := range s.whole {
		if err := add(at, w[0], false); err != nil {
			return nil, err
		}
		if err := add(w[0], w[1], true); err != nil {
			return nil, err
		}
		at = w[1]
	}
	if err := add(at, len(s.SQL), false); err != nil {
		return nil, err
	}
	return out, nil
}
