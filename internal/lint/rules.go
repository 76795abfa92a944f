package lint

import "sync"

// Severity is how bad a finding is: an error fails `lockmigrate lint`
// (exit 5) and, with LOCKMIGRATE_LINT=error, the run; a warning is
// reported only.
type Severity string

// The severities.
const (
	SeverityError   Severity = "error"
	SeverityWarning Severity = "warning"
)

// Rule is one check: its id (what a suppression names), its default
// severity, and the safe alternative a finding points at.
type Rule struct {
	ID       string
	Severity Severity
	// Style rules are off unless enabled (LOCKMIGRATE_LINT_ENABLE).
	Style bool
	// Summary is the one-line description (SARIF shortDescription).
	Summary string
	// Fix is the safe alternative, one line.
	Fix string
	// Example is the file of examples/zero-downtime/ showing the pattern.
	Example string
	// SizeDependent rules are only warnings, online, on a table whose
	// estimated rows are under Options.SmallTableRows.
	SizeDependent bool
}

// The rule ids.
const (
	RuleNoTransaction       = "no-transaction-required"
	RuleIndexConcurrently   = "index-concurrently"
	RuleConstraintNotValid  = "constraint-not-valid"
	RuleValidateSameTx      = "validate-same-transaction"
	RuleSetNotNull          = "set-not-null"
	RuleAddColumnNotNull    = "add-column-not-null"
	RuleAddColumnRewrite    = "add-column-rewrite"
	RuleAlterColumnType     = "alter-column-type"
	RuleUniqueUsingIndex    = "unique-using-index"
	RuleRenameColumn        = "rename-column"
	RuleRenameTable         = "rename-table"
	RuleDropColumn          = "drop-column"
	RuleDropTable           = "drop-table"
	RuleVacuumFull          = "vacuum-full"
	RuleCluster             = "cluster"
	RuleLockTable           = "lock-table"
	RuleUnbatchedDML        = "unbatched-dml"
	RuleEnumAddValueTx      = "enum-add-value-transaction"
	RuleSyntax              = "syntax-error"
	RuleSuppression         = "lint-ignore"
	RulePreferJSONB         = "prefer-jsonb"
	RulePreferTimestamptz   = "prefer-timestamptz"
	RulePreferText          = "prefer-text"
	RulePreferIdentity      = "prefer-identity"
	RulePreferBigintPrimary = "prefer-bigint-primary-key"
)

const examples = "examples/zero-downtime/"

// Rules lists every rule in the order docs/lint.md presents them.
var Rules = []Rule{
	{ID: RuleNoTransaction, Severity: SeverityError,
		Summary: "statement that cannot run inside a transaction block, in a transactional file",
		Fix:     `move it to a file whose first line is "-- lockmigrate:no-transaction"`,
		Example: examples + "0006_plan_index_concurrently.sql"},
	{ID: RuleIndexConcurrently, Severity: SeverityError, SizeDependent: true,
		Summary: "CREATE INDEX, DROP INDEX or REINDEX without CONCURRENTLY on an existing table blocks its writes (CREATE, REINDEX) or reads and writes (DROP) for the whole build",
		Fix:     "use CREATE INDEX CONCURRENTLY / DROP INDEX CONCURRENTLY / REINDEX ... CONCURRENTLY in a no-transaction file",
		Example: examples + "0006_plan_index_concurrently.sql"},
	{ID: RuleConstraintNotValid, Severity: SeverityError, SizeDependent: true,
		Summary: "ADD CONSTRAINT ... FOREIGN KEY or CHECK without NOT VALID scans the table under a lock that blocks writes",
		Fix:     "add it NOT VALID, then VALIDATE CONSTRAINT in a later migration",
		Example: examples + "0004_plan_check_not_valid.sql"},
	{ID: RuleValidateSameTx, Severity: SeverityError, SizeDependent: true,
		Summary: "VALIDATE CONSTRAINT in the same transaction as its NOT VALID add: the scan runs while the add's ACCESS EXCLUSIVE lock is held",
		Fix:     "validate in a later migration (its own transaction)",
		Example: examples + "0005_plan_check_validate.sql"},
	{ID: RuleSetNotNull, Severity: SeverityError, SizeDependent: true,
		Summary: "ALTER COLUMN ... SET NOT NULL scans the whole table under ACCESS EXCLUSIVE unless a validated CHECK (col IS NOT NULL) proves it (PostgreSQL 12+)",
		Fix:     "add CHECK (col IS NOT NULL) NOT VALID, VALIDATE it in a later migration, then SET NOT NULL and drop the check",
		Example: examples + "0007_plan_set_not_null.sql"},
	{ID: RuleAddColumnNotNull, Severity: SeverityError,
		Summary: "ADD COLUMN ... NOT NULL without a default fails on a table that has rows",
		Fix:     "add the column nullable, backfill it in batches, then SET NOT NULL behind a validated check (or give it a constant default)",
		Example: examples + "0002_add_plan_nullable.sql"},
	{ID: RuleAddColumnRewrite, Severity: SeverityError, SizeDependent: true,
		Summary: "ADD COLUMN with a volatile default (or any default before PostgreSQL 11), or GENERATED ... STORED, rewrites the table under ACCESS EXCLUSIVE",
		Fix:     "add the column without a default (or with a constant one), then backfill it in batches",
		Example: examples + "0003_backfill_plan.sql"},
	{ID: RuleAlterColumnType, Severity: SeverityError, SizeDependent: true,
		Summary: "ALTER COLUMN ... TYPE rewrites the table (and its indexes) under ACCESS EXCLUSIVE unless the change is a binary-compatible widening",
		Fix:     "add a column of the new type, backfill it in batches, switch the application, then drop the old one (varchar(n) to varchar(m>n) or text, and numeric(p,s) to numeric(p'>p,s), need no rewrite)",
		Example: examples + "0003_backfill_plan.sql"},
	{ID: RuleUniqueUsingIndex, Severity: SeverityError, SizeDependent: true,
		Summary: "ADD PRIMARY KEY / ADD UNIQUE builds its index under ACCESS EXCLUSIVE",
		Fix:     "CREATE UNIQUE INDEX CONCURRENTLY in a no-transaction file, then ADD CONSTRAINT ... UNIQUE / PRIMARY KEY USING INDEX",
		Example: examples + "0006_plan_index_concurrently.sql"},
	{ID: RuleRenameColumn, Severity: SeverityWarning,
		Summary: "renaming a column breaks the application version still running during the rollout",
		Fix:     "add the new column, write both, backfill, switch reads, then drop the old one in a later release",
		Example: examples + "0002_add_plan_nullable.sql"},
	{ID: RuleRenameTable, Severity: SeverityWarning,
		Summary: "renaming a table breaks the application version still running during the rollout",
		Fix:     "create the new table (or a view under the old name), migrate the application, then drop the old name in a later release",
		Example: examples + "0002_add_plan_nullable.sql"},
	{ID: RuleDropColumn, Severity: SeverityWarning,
		Summary: "dropping a column breaks the application version still running during the rollout",
		Fix:     "stop using the column in one release, drop it in the next",
		Example: examples + "0007_plan_set_not_null.sql"},
	{ID: RuleDropTable, Severity: SeverityWarning,
		Summary: "dropping a table breaks the application version still running during the rollout",
		Fix:     "stop using the table in one release, drop it in the next",
		Example: examples + "0007_plan_set_not_null.sql"},
	{ID: RuleVacuumFull, Severity: SeverityError, SizeDependent: true,
		Summary: "VACUUM FULL rewrites the table under ACCESS EXCLUSIVE",
		Fix:     "let autovacuum work, or use pg_repack / pg_squeeze outside the migration",
		Example: examples + "0003_backfill_plan.sql"},
	{ID: RuleCluster, Severity: SeverityError, SizeDependent: true,
		Summary: "CLUSTER rewrites the table under ACCESS EXCLUSIVE",
		Fix:     "use pg_repack outside the migration",
		Example: examples + "0003_backfill_plan.sql"},
	{ID: RuleLockTable, Severity: SeverityError,
		Summary: "LOCK TABLE in SHARE mode or stronger blocks the table's writers (or readers) until the migration's transaction ends",
		Fix:     "rely on the locks the statements take, with LOCKMIGRATE_LOCK_TIMEOUT so they give up instead of queueing",
		Example: examples + "0002_add_plan_nullable.sql"},
	{ID: RuleUnbatchedDML, Severity: SeverityError, SizeDependent: true,
		Summary: "UPDATE / DELETE without WHERE on an existing table, in one transaction, locks every row until it commits",
		Fix:     "backfill in batches in a no-transaction file, committing after each batch",
		Example: examples + "0003_backfill_plan.sql"},
	{ID: RuleEnumAddValueTx, Severity: SeverityError,
		Summary: "ALTER TYPE ... ADD VALUE cannot run inside a transaction block before PostgreSQL 12",
		Fix:     `move it to a "-- lockmigrate:no-transaction" file`,
		Example: examples + "0006_plan_index_concurrently.sql"},
	{ID: RuleSyntax, Severity: SeverityError,
		Summary: "the file does not parse as PostgreSQL SQL",
		Fix:     "fix the syntax (the server would refuse it too)"},
	{ID: RuleSuppression, Severity: SeverityError,
		Summary: "a lint-ignore comment without a rule and a reason, naming an unknown rule, or (a warning) matching no finding",
		Fix:     `write "-- lockmigrate:lint-ignore <rule> <reason>" on the line right before the statement`},
	{ID: RulePreferJSONB, Severity: SeverityWarning, Style: true,
		Summary: "json stores text and re-parses it on every access",
		Fix:     "use jsonb"},
	{ID: RulePreferTimestamptz, Severity: SeverityWarning, Style: true,
		Summary: "timestamp without time zone loses the offset of every value",
		Fix:     "use timestamptz"},
	{ID: RulePreferText, Severity: SeverityWarning, Style: true,
		Summary: "char(n) pads with spaces and is no faster than text",
		Fix:     "use text (with a CHECK on length if needed)"},
	{ID: RulePreferIdentity, Severity: SeverityWarning, Style: true,
		Summary: "serial creates a sequence owned loosely by the column",
		Fix:     "use bigint GENERATED ALWAYS AS IDENTITY"},
	{ID: RulePreferBigintPrimary, Severity: SeverityWarning, Style: true,
		Summary: "an int (int4) primary key runs out at 2^31",
		Fix:     "use bigint"},
}

// ruleByID is Rules indexed, built on first use: a process that lints
// nothing builds nothing.
var ruleByID = sync.OnceValue(func() map[string]*Rule {
	m := make(map[string]*Rule, len(Rules))
	for i := range Rules {
		m[Rules[i].ID] = &Rules[i]
	}
	return m
})

// LookupRule returns the rule with that id.
func LookupRule(id string) (Rule, bool) {
	r, ok := ruleByID()[id]
	if !ok {
		return Rule{}, false
	}
	return *r, true
}
