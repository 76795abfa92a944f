package runner

import (
	"errors"
	"fmt"
	"slices"

	"github.com/lockmigrate/lockmigrate/internal/sqlsplit"
)

// KindNeedsNoTransaction: a transactional file holds a statement that
// PostgreSQL refuses inside a transaction block (CREATE INDEX
// CONCURRENTLY, VACUUM, ...). Running it would fail with 25001 after the
// file's earlier statements ran and rolled back; refusing it first names
// the directive that fixes it.
const KindNeedsNoTransaction ValidationKind = "needs_no_transaction"

// lintIgnorePrefix starts a lint suppression comment ("-- lockmigrate:
// lint-ignore <rule> <reason>", read by `lockmigrate lint`), which may be a
// file's first line without being a directive.
const lintIgnorePrefix = "-- lockmigrate:lint-ignore"

// checkNoTxStatements refuses a transactional file holding a statement
// that cannot run in a transaction block. It recognises them by their
// keywords (sqlsplit.Words, comments skipped), which for these statements
// is exact: each is one of PostgreSQL's top-level commands, told apart by
// its first words. Those the keywords cannot decide (CREATE / DROP
// SUBSCRIPTION, which depend on the slot; ALTER TYPE ... ADD VALUE, which
// depends on the server version) are left to `lockmigrate lint`: this
// check has no way to be overridden, so it must never refuse a file that
// would run. A file the splitter cannot read passes, as in checkTxControl.
func checkNoTxStatements(m *Migration) error {
	stmts, err := sqlsplit.Split(m.SQL)
	if err != nil {
		return nil
	}
	return noTxProblem(m, stmts)
}

// noTxProblem is checkNoTxStatements on m's statements, already split.
func noTxProblem(m *Migration, stmts []sqlsplit.Statement) error {
	for _, st := range stmts {
		if what := needsNoTransaction(leadingWords(st.SQL)); what != "" {
			return &ValidationError{Kind: KindNeedsNoTransaction, Version: m.Version, File: m.File,
				Detail: fmt.Sprintf("line %d: %q: %s cannot run inside a transaction block, and this file runs in one; "+
					"make %q the file's first line to run its statements one at a time, outside any transaction",
					st.Line, firstLine(st.SQL), what, NoTransactionDirective)}
		}
	}
	return nil
}

// leadingWords returns the words of a statement needsNoTransaction reads:
// five for most commands, 32 for the three whose checks look further
// (ALTER TABLE ... DETACH PARTITION, CLUSTER, REINDEX). Most statements
// of a migration are CREATE TABLE or INSERT, whose every word Words
// would otherwise scan and upper-case.
func leadingWords(sql string) []string {
	w := sqlsplit.Words(sql, 5)
	if len(w) == 5 && (w[0] == "ALTER" || w[0] == "CLUSTER" || w[0] == "REINDEX") {
		w = sqlsplit.Words(sql, 32)
	}
	return w
}

// needsNoTransaction names the command of a statement's leading words
// when PostgreSQL refuses it inside a transaction block, else "".
func needsNoTransaction(w []string) string {
	at := func(i int) string {
		if i < len(w) {
			return w[i]
		}
		return ""
	}
	switch at(0) {
	case "VACUUM":
		return "VACUUM"
	case "CREATE", "DROP":
		i := 1
		if at(0) == "CREATE" && at(1) == "UNIQUE" {
			i = 2
		}
		switch {
		case at(i) == "INDEX" && at(i+1) == "CONCURRENTLY":
			return at(0) + " INDEX CONCURRENTLY"
		case at(1) == "DATABASE" || at(1) == "TABLESPACE":
			return at(0) + " " + at(1)
		}
	case "REINDEX":
		return reindexNoTx(w)
	case "ALTER":
		switch {
		case at(1) == "SYSTEM":
			return "ALTER SYSTEM"
		case at(1) == "DATABASE" && at(3) == "SET" && at(4) == "TABLESPACE":
			return "ALTER DATABASE ... SET TABLESPACE"
		case at(1) == "TABLE":
			if i := slices.Index(w, "DETACH"); i > 0 && at(i+1) == "PARTITION" && slices.Contains(w[i:], "CONCURRENTLY") {
				return "ALTER TABLE ... DETACH PARTITION ... CONCURRENTLY"
			}
		}
	case "CLUSTER":
		rest := w[1:]
		if len(rest) == 0 || slices.Equal(rest, []string{"VERBOSE"}) || at(1) == "(" && at(len(w)-1) == ")" {
			return "CLUSTER without a table"
		}
	case "DISCARD":
		if at(1) == "ALL" {
			return "DISCARD ALL"
		}
	}
	return ""
}

// reindexNoTx: REINDEX [ (options) ] {INDEX|TABLE|SCHEMA|DATABASE|SYSTEM}
// [CONCURRENTLY] name. SCHEMA, DATABASE and SYSTEM never run in a
// transaction block; the others not when CONCURRENTLY, also as an option
// ("(CONCURRENTLY)", not "(CONCURRENTLY false)").
func reindexNoTx(w []string) string {
	i, concurrent := 1, false
	if i < len(w) && w[i] == "(" {
		for i++; i < len(w) && w[i] != ")"; i++ {
			if w[i] == "CONCURRENTLY" {
				next := ""
				if i+1 < len(w) {
					next = w[i+1]
				}
				concurrent = next != "FALSE" && next != "OFF" && next != "0"
			}
		}
		i++
	}
	if i >= len(w) {
		return ""
	}
	kind := w[i]
	if i+1 < len(w) && w[i+1] == "CONCURRENTLY" {
		concurrent = true
	}
	switch {
	case kind == "SCHEMA" || kind == "DATABASE" || kind == "SYSTEM":
		return "REINDEX " + kind
	case concurrent && (kind == "INDEX" || kind == "TABLE"):
		return "REINDEX ... CONCURRENTLY"
	}
	return ""
}

// CheckNoTransactionStatements checks every transactional migration of
// migs newer than baselineVersion as a run checks the pending ones (see
// checkNoTxStatements), for validate without a database. Unlike
// CheckTransactionControl's warnings, these are errors: no run can apply
// such a file, and one recorded by a baseline is below baselineVersion.
func CheckNoTransactionStatements(migs []*Migration, baselineVersion int64) error {
	var problems []error
	for _, m := range migs {
		if m.NoTransaction || m.Version <= baselineVersion {
			continue
		}
		if err := checkNoTxStatements(m); err != nil {
			problems = append(problems, err)
		}
	}
	return errors.Join(problems...)
}

// KindLint: `lockmigrate lint`, or the lint of the pending files before a
// run applies them (LOCKMIGRATE_LINT=error), found statements at error.
// The runner never lints; the kind is here with the others so that the
// CLI's exit code and the logs name it like every validation failure.
const KindLint ValidationKind = "lint"
