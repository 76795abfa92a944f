package runner

import (
	"errors"
	"fmt"
	"strings"
)

// ValidationKind names what a ValidationError found.
type ValidationKind string

// The kinds of validation failure. All of them are deterministic: retrying the
// same binary against the same database cannot succeed, so they map to a
// dedicated exit code that a Job's podFailurePolicy can treat as final.
const (
	KindMalformedName    ValidationKind = "malformed_name"
	KindDuplicateVersion ValidationKind = "duplicate_version"
	KindChecksumMismatch ValidationKind = "checksum_mismatch"
	KindOutOfOrder       ValidationKind = "out_of_order"
	KindInterrupted      ValidationKind = "interrupted"
	KindTransactionMode  ValidationKind = "transaction_mode"
	KindMalformedSQL     ValidationKind = "malformed_sql"
	KindUnreadable       ValidationKind = "unreadable_file"
	// KindTransactionControl: a transactional file holds BEGIN, COMMIT,
	// ROLLBACK or the like, which would end the transaction lockmigrate
	// wraps it in and commit the file apart from its history row.
	KindTransactionControl ValidationKind = "transaction_control"
	// KindFormat: a file that its format's own tool would read differently
	// from how it would run (goose ENVSUB, tern templates, annotations the
	// tool refuses), or a set mixing formats.
	KindFormat ValidationKind = "format"
	// KindDownSection: a down marker of goose, dbmate or tern in the part
	// of a file that would run.
	KindDownSection ValidationKind = "down_section"
	// KindNoMigrations: the set holds no migration at all.
	KindNoMigrations ValidationKind = "no_migrations"
)

// ValidationError reports a migration set that is broken in itself or that
// disagrees with the history recorded in the database.
type ValidationError struct {
	Kind    ValidationKind
	Version int64  // 0 when the problem has no version (an unparsable name)
	File    string // the file concerned, when known
	Detail  string
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	b.WriteString("validation failed (")
	b.WriteString(string(e.Kind))
	b.WriteString(")")
	if e.File != "" {
		b.WriteString(": ")
		b.WriteString(e.File)
	} else if e.Version != 0 {
		fmt.Fprintf(&b, ": version %d", e.Version)
	}
	b.WriteString(": ")
	b.WriteString(e.Detail)
	return b.String()
}

// MigrationError reports a migration whose SQL failed. Its transaction, if it
// had one, was rolled back before the error was returned.
type MigrationError struct {
	Version int64
	File    string
	// Line is the 1-based line of the failing statement in File, 0 if unknown.
	Line int
	// Statement is the first line of the failing statement, if known.
	Statement string
	// StatementIndex is the 1-based index of the failing statement in a
	// no-transaction file, whose earlier statements stay committed; 0 for a
	// transactional file, which was rolled back whole.
	StatementIndex int
	Err            error
}

func (e *MigrationError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "migration %s (version %d) failed", e.File, e.Version)
	if e.StatementIndex > 0 {
		fmt.Fprintf(&b, " at statement %d", e.StatementIndex)
	}
	if e.Line > 0 {
		fmt.Fprintf(&b, " at line %d", e.Line)
	}
	if e.Statement != "" {
		fmt.Fprintf(&b, " in statement %q", e.Statement)
	}
	fmt.Fprintf(&b, ": %v", e.Err)
	return b.String()
}

func (e *MigrationError) Unwrap() error { return e.Err }

// ErrWaitTimeout is returned in wait mode when the lock was not obtained
// within the configured wait timeout.
var ErrWaitTimeout = errors.New("timed out waiting for the advisory lock")

// ErrReadOnly is returned when the lock holder finds itself on a server that
// cannot take writes: a standby, or default_transaction_read_only=on (as
// after some failovers). Failing before the first DDL gives a clear message
// instead of "cannot execute CREATE TABLE in a read-only transaction".
var ErrReadOnly = errors.New("connected to a read-only server")

// ErrNothingToResolve is returned by Resolve when the version has no
// interrupted ("running") history row.
var ErrNothingToResolve = errors.New("nothing to resolve")
