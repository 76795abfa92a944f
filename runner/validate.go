package runner

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode"

	"github.com/lockmigrate/lockmigrate/internal/sqlsplit"
)

// Checks of a migration set that stop a run before it changes anything,
// beyond those makePlan makes against the history (fastpath.go).

// Validate checks the migration set against the history without taking the
// lock: checksums, ordering, transaction mode and rows left "running" (which,
// without the lock, may also be a migration in progress right now).
func (r *Runner) Validate(ctx context.Context) error {
	rows, _, err := r.hist.read(ctx, r.conn)
	if err != nil {
		return err
	}
	p := makePlan(r.migs, rows, r.opts)
	problems := append(p.problems, p.statementProblems()...)
	for _, row := range p.running {
		e := r.interrupted(ctx, row)
		e.Detail = "in progress or interrupted: " + e.Detail
		problems = append(problems, e)
	}
	if len(problems) > 0 {
		return errors.Join(problems...)
	}
	return nil
}

// statementProblems checks the statements of the pending transactional
// files that will run (checkTxControl, checkNoTxStatements). It reads every such file, so it is
// left to the runs that are about to apply them (under the lock), validate,
// plan and status, not the lock-free fast path of every replica. A file
// applied before (by another tool, adopted as baseline) is never run, so it
// may keep its own BEGIN/COMMIT.
func (p plan) statementProblems() []error {
	problems, _ := p.checkStatements()
	return problems
}

// checkStatements is statementProblems that also reports, for each of
// p.pending (same index), whether sqlsplit.Split read the file (splits):
// the run that applies these files needs to know that too (execTx), and
// splitting every file once instead of three times is a good part of the
// client's work per migration. A file the checks do not read is false,
// which only makes execTx split it itself.
func (p plan) checkStatements() (problems []error, splits []bool) {
	splits = make([]bool, len(p.pending))
	for i, m := range p.pending {
		if m.NoTransaction || m.Version <= p.baselined {
			continue
		}
		stmts, err := sqlsplit.Split(m.SQL)
		if err != nil {
			continue // the server reports it, with its position, when it runs
		}
		splits[i] = true
		if err := txControlProblem(m, stmts); err != nil {
			problems = append(problems, err)
		}
		if err := noTxProblem(m, stmts); err != nil {
			problems = append(problems, err)
		}
	}
	return problems, splits
}

// CheckTransactionControl checks every transactional migration of migs as
// a run checks the pending ones (see checkTxControl), for validate without a
// database, which cannot tell which files are pending.
func CheckTransactionControl(migs []*Migration) error {
	var problems []error
	for _, m := range migs {
		if m.NoTransaction {
			continue
		}
		if err := checkTxControl(m); err != nil {
			problems = append(problems, err)
		}
	}
	return errors.Join(problems...)
}

// checkTxControl refuses a transactional file with a top-level statement
// that ends or starts a transaction: its COMMIT would commit the file's
// work apart from its history row (which would then commit on its own,
// outside any transaction), its ROLLBACK would undo the work and still
// record the migration as applied. ROLLBACK TO a savepoint is fine. A file
// the splitter cannot read passes: the server reports it, with its
// position, when the file runs.
func checkTxControl(m *Migration) error {
	stmts, err := sqlsplit.Split(m.SQL)
	if err != nil {
		return nil
	}
	return txControlProblem(m, stmts)
}

// txControlProblem is checkTxControl on m's statements, already split.
func txControlProblem(m *Migration, stmts []sqlsplit.Statement) error {
	for _, st := range stmts {
		if txControl(st.SQL) {
			return &ValidationError{Kind: KindTransactionControl, Version: m.Version, File: m.File,
				Detail: fmt.Sprintf("line %d: %q ends the transaction lockmigrate runs this file in; "+
					"remove it (each file is already one transaction), or mark the file "+
					"\"-- lockmigrate:no-transaction\" to run its statements one by one", st.Line, firstLine(st.SQL))}
		}
	}
	return nil
}

// txControl reports whether a statement ends or starts a transaction: its
// first word (upper-cased, as are the others) is BEGIN, START, COMMIT, END
// or ABORT, ROLLBACK not followed by TO (past WORK and TRANSACTION), or
// PREPARE TRANSACTION. Words are separated by white space and a trailing
// ";" is ignored. It reads only the words it needs: upper-casing and
// splitting a whole statement (a function body, a long INSERT) for its
// first word cost more than the rest of the check of a file.
func txControl(sql string) bool {
	rest := sql
	word := func() (string, bool) {
		rest = strings.TrimLeftFunc(rest, unicode.IsSpace)
		if rest == "" {
			return "", false
		}
		end := strings.IndexFunc(rest, unicode.IsSpace)
		if end < 0 {
			end = len(rest)
		}
		w := strings.ToUpper(rest[:end])
		rest = rest[end:]
		return w, true
	}
	w0, ok := word()
	if !ok {
		return false
	}
	switch strings.TrimRight(w0, ";") {
	case "BEGIN", "START", "COMMIT", "END", "ABORT":
		return true
	case "ROLLBACK":
		for {
			w, ok := word()
			if !ok {
				return true
			}
			if w != "WORK" && w != "TRANSACTION" {
				return strings.TrimRight(w, ";") != "TO"
			}
		}
	case "PREPARE":
		w1, ok := word()
		return ok && strings.TrimRight(w1, ";") == "TRANSACTION"
	}
	return false
}
