package runner

import (
	"context"
	"errors"
	"fmt"
	"strings"

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
	var problems []error
	for _, m := range p.pending {
		if !m.NoTransaction && m.Version > p.baselined {
			if err := checkTxControl(m); err != nil {
				problems = append(problems, err)
			}
			if err := checkNoTxStatements(m); err != nil {
				problems = append(problems, err)
			}
		}
	}
	return problems
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
	for _, st := range stmts {
		words := strings.Fields(strings.ToUpper(st.SQL))
		if len(words) == 0 {
			continue
		}
		w0 := strings.TrimRight(words[0], ";")
		next := func() string {
			for _, w := range words[1:] {
				if w != "WORK" && w != "TRANSACTION" {
					return strings.TrimRight(w, ";")
				}
			}
			return ""
		}
		bad := false
		switch w0 {
		case "BEGIN", "START", "COMMIT", "END", "ABORT":
			bad = true
		case "ROLLBACK":
			bad = next() != "TO"
		case "PREPARE":
			bad = len(words) > 1 && strings.TrimRight(words[1], ";") == "TRANSACTION"
		}
		if bad {
			return &ValidationError{Kind: KindTransactionControl, Version: m.Version, File: m.File,
				Detail: fmt.Sprintf("line %d: %q ends the transaction lockmigrate runs this file in; "+
					"remove it (each file is already one transaction), or mark the file "+
					"\"-- lockmigrate:no-transaction\" to run its statements one by one", st.Line, firstLine(st.SQL))}
		}
	}
	return nil
}
