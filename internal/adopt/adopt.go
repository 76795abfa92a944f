// Package adopt reads the version table of another migrator (golang-migrate,
// goose, tern, dbmate) and says which of lockmigrate's migrations that tool already
// applied, so they can be recorded as a baseline instead of being run again.
// It only reads; writing the baseline is the runner's job, under its lock.
package adopt

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lockmigrate/lockmigrate/internal/listfmt"
)

// Tool names a migrator lockmigrate can take over from.
type Tool string

// The tools adopt understands.
const (
	GolangMigrate Tool = "golang-migrate"
	Goose         Tool = "goose"
	Tern          Tool = "tern"
	Dbmate        Tool = "dbmate"
)

// Tools lists the supported tools, in the order help text shows them.
var Tools = []Tool{GolangMigrate, Goose, Tern, Dbmate}

// Querier is the part of *pgx.Conn Read needs.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Source is the version table to read.
type Source struct {
	Tool Tool
	// Schema of the table; empty means the search path, as golang-migrate
	// (current_schema()) and goose (an unqualified name) resolve it.
	Schema string
	// Table name; empty means the tool's default.
	Table string
}

// defaults are each tool's own defaults: golang-migrate's postgres driver
// (x-migrations-table, in current_schema()), goose's TableName() (unqualified),
// tern's version_table (public.schema_version), dbmate's --migrations-table
// (unqualified: the first schema of the search path).
var defaults = map[Tool]struct{ schema, table string }{
	GolangMigrate: {"", "schema_migrations"},
	Goose:         {"", "goose_db_version"},
	Tern:          {"public", "schema_version"},
	Dbmate:        {"", "schema_migrations"},
}

// WithDefaults fills in the tool's default schema and table.
func (s Source) WithDefaults() Source {
	d := defaults[s.Tool]
	if s.Table == "" {
		s.Table = d.table
		if s.Schema == "" {
			s.Schema = d.schema
		}
	}
	return s
}

// Result is what the other tool's table says.
type Result struct {
	Tool Tool
	// Table is the version table read, schema-qualified and quoted.
	Table string
	// Version is the tool's current version (the highest applied), 0 when
	// it applied nothing.
	Version int64
	// Versions are the migrations of the set to record as baseline,
	// ascending; empty when the tool applied nothing.
	Versions []int64
}

// Kind says why a table cannot be adopted.
type Kind string

// The reasons Read refuses.
const (
	KindMissingTable   Kind = "missing_table"   // no such table
	KindDirty          Kind = "dirty"           // golang-migrate: the last migration failed part-way
	KindRowCount       Kind = "row_count"       // a one-row table with another count
	KindUnknownVersion Kind = "unknown_version" // the tool applied a version that is no file of the set
	KindGap            Kind = "gap"             // goose, dbmate: a file of the set below its version was never applied
	KindWrongColumns   Kind = "wrong_columns"   // the table exists but is not that tool's version table
)

// Error is a version table that cannot be adopted as it is. Each one is
// deterministic: running adopt again on the same database cannot succeed.
type Error struct {
	Tool   Tool
	Table  string // as looked for or found
	Kind   Kind
	Detail string
	Err    error // the underlying cause, if any
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("adopt %s: %s (%s): %s", e.Tool, e.Table, e.Kind, e.Detail)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// Read reads src's version table and returns the versions of the migration
// set (known, any order) the tool has applied. It refuses with *Error when
// the table is missing or its content is not a state the set can continue
// from; other errors are query failures.
func Read(ctx context.Context, q Querier, src Source, known []int64) (*Result, error) {
	src = src.WithDefaults()
	read, ok := readers[src.Tool]
	if !ok {
		return nil, fmt.Errorf("adopt: unknown tool %q (want one of %s)", src.Tool, toolList())
	}
	table, err := resolve(ctx, q, src)
	if err != nil {
		return nil, err
	}
	set := slices.Clone(known)
	slices.Sort(set)
	res := &Result{Tool: src.Tool, Table: table}
	fail := func(kind Kind, format string, args ...any) error {
		return &Error{Tool: src.Tool, Table: table, Kind: kind, Detail: fmt.Sprintf(format, args...)}
	}
	if err := read(ctx, q, res, set, fail); err != nil {
		return nil, err
	}
	return res, nil
}

// reader fills res from the table res.Table, given the sorted set.
type reader func(ctx context.Context, q Querier, res *Result, set []int64, fail func(Kind, string, ...any) error) error

var readers = map[Tool]reader{
	GolangMigrate: readGolangMigrate,
	Goose:         readGoose,
	Tern:          readTern,
	Dbmate:        readDbmate,
}

func toolList() string {
	var s []string
	for _, t := range Tools {
		s = append(s, string(t))
	}
	return strings.Join(s, ", ")
}

// resolve finds the table as the tool would (to_regclass follows the search
// path for an unqualified name) and returns its qualified, quoted name.
func resolve(ctx context.Context, q Querier, src Source) (string, error) {
	ident := pgx.Identifier{src.Table}
	if src.Schema != "" {
		ident = pgx.Identifier{src.Schema, src.Table}
	}
	var (
		schema, table *string
		current       string
	)
	err := q.QueryRow(ctx, `SELECT n.nspname, c.relname, coalesce(current_schema(), '')
  FROM (SELECT to_regclass($1) AS oid) r
  LEFT JOIN pg_class c ON c.oid = r.oid
  LEFT JOIN pg_namespace n ON n.oid = c.relnamespace`, ident.Sanitize()).Scan(&schema, &table, &current)
	if err != nil {
		return "", fmt.Errorf("adopt %s: look up table %s: %w", src.Tool, ident.Sanitize(), err)
	}
	if schema == nil {
		where := "in schema " + ident[0]
		if src.Schema == "" {
			where = fmt.Sprintf("in the search path (current schema %q)", current)
		}
		return "", &Error{Tool: src.Tool, Table: ident.Sanitize(), Kind: KindMissingTable,
			Detail: fmt.Sprintf("%s's version table not found %s; was the database migrated by %s, "+
				"and with another table name or schema (--table, --schema)?", src.Tool, where, src.Tool)}
	}
	return pgx.Identifier{*schema, *table}.Sanitize(), nil
}

// upTo returns the versions of set that are at most v.
func upTo(set []int64, v int64) []int64 {
	var out []int64
	for _, k := range set {
		if k <= v {
			out = append(out, k)
		}
	}
	return out
}

// readGolangMigrate: golang-migrate's postgres driver keeps one row
// (version, dirty), rewritten (TRUNCATE, INSERT) on every step; no row means
// no version (nothing applied, or everything migrated down). Migrations are
// applied in version order, so every file up to version is applied.
func readGolangMigrate(ctx context.Context, q Querier, res *Result, set []int64, fail func(Kind, string, ...any) error) error {
	type row struct {
		version int64
		dirty   bool
	}
	rows, err := q.Query(ctx, `SELECT version, dirty FROM `+res.Table)
	if err != nil {
		return dbmateHint(ctx, q, queryErr(res, err))
	}
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		err := r.Scan(&x.version, &x.dirty)
		return x, err
	})
	if err != nil {
		return dbmateHint(ctx, q, queryErr(res, err))
	}
	switch {
	case len(got) == 0:
		return nil
	case len(got) > 1:
		return fail(KindRowCount, "%d rows; golang-migrate keeps exactly one (version, dirty) row, so this table was edited by hand", len(got))
	case got[0].dirty:
		return fail(KindDirty, "version %d is dirty: its migration failed part-way; inspect the database, finish or undo "+
			"that migration, then run `migrate force %d` (or the previous version) with golang-migrate, and adopt again",
			got[0].version, got[0].version)
	case !slices.Contains(set, got[0].version):
		return fail(KindUnknownVersion, "golang-migrate is at version %d, which is no file of this migration set "+
			"(the sets must have the same versions)", got[0].version)
	}
	res.Version = got[0].version
	res.Versions = upTo(set, res.Version)
	return nil
}

// readGoose: goose_db_version(id, version_id, is_applied, tstamp) is a log.
// goose reads it newest id first, and the newest row of each version says
// whether that version is applied (goose v3 deletes the rows of a version
// migrated down; older releases appended is_applied = false). Version 0 is
// the row goose writes when it creates the table. goose can apply
// migrations out of order (-allow-missing), so the applied set must be
// exactly the files of the set up to the highest one: a file below it that
// goose never applied is a gap, refused because nobody knows whether its
// effects are in the database.
func readGoose(ctx context.Context, q Querier, res *Result, set []int64, fail func(Kind, string, ...any) error) error {
	rows, err := q.Query(ctx, `SELECT version_id FROM (
SELECT DISTINCT ON (version_id) version_id, is_applied
  FROM `+res.Table+`
 WHERE version_id <> 0
 ORDER BY version_id, id DESC) latest
 WHERE is_applied ORDER BY version_id`)
	if err != nil {
		return queryErr(res, err)
	}
	applied, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return queryErr(res, err)
	}
	return applySet(res, set, applied, "applied out of order, or migrated down and up", fail)
}

// applySet records applied, the ascending versions a tool that keeps a set
// of applied versions (goose, dbmate) applied, as res's baseline: each must
// be a file of set, and every file of set up to the highest must be among
// them, because nobody knows whether the effects of a file in a gap are in
// the database. why says how the tool can leave a gap.
func applySet(res *Result, set, applied []int64, why string, fail func(Kind, string, ...any) error) error {
	if len(applied) == 0 {
		return nil
	}
	var unknown, gaps []int64
	for _, v := range applied {
		if !slices.Contains(set, v) {
			unknown = append(unknown, v)
		}
	}
	if len(unknown) > 0 {
		return fail(KindUnknownVersion, "%s applied version(s) %s, which are no files of this migration set "+
			"(the sets must have the same versions)", res.Tool, listfmt.Versions(unknown))
	}
	res.Version = applied[len(applied)-1]
	for _, v := range upTo(set, res.Version) {
		if !slices.Contains(applied, v) {
			gaps = append(gaps, v)
		}
	}
	if len(gaps) > 0 {
		return fail(KindGap, "%s is at version %d but never applied version(s) %s of this set (%s); "+
			"apply or remove them with %s first, so that every file up to %d is applied",
			res.Tool, res.Version, listfmt.Versions(gaps), why, res.Tool, res.Version)
	}
	res.Versions = applied
	return nil
}

// readTern: tern's version table holds one int4 row, the sequence number of
// the last migration applied; its files are numbered 1, 2, 3... by their
// prefix (001_x.sql is 1) with no gaps, and 0 means nothing applied.
func readTern(ctx context.Context, q Querier, res *Result, set []int64, fail func(Kind, string, ...any) error) error {
	rows, err := q.Query(ctx, `SELECT version::bigint FROM `+res.Table)
	if err != nil {
		return queryErr(res, err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return queryErr(res, err)
	}
	switch {
	case len(got) != 1:
		return fail(KindRowCount, "%d rows; tern keeps exactly one version row, so this table was edited by hand", len(got))
	case got[0] == 0:
		return nil
	case !slices.Contains(set, got[0]):
		return fail(KindUnknownVersion, "tern is at version %d, which is no file of this migration set "+
			"(tern numbers files by their prefix: 001_x.sql is version 1; the sets must have the same versions)", got[0])
	}
	res.Version = got[0]
	res.Versions = upTo(set, res.Version)
	return nil
}

// queryErr wraps a failed read of the version table. A table without the
// tool's columns is not that tool's table: a refusal, not a crash.
func queryErr(res *Result, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "42703" || pgErr.Code == "42804") { // undefined_column, datatype_mismatch
		return &Error{Tool: res.Tool, Table: res.Table, Kind: KindWrongColumns,
			Detail: fmt.Sprintf("the table is not %s's version table (wrong columns)", res.Tool), Err: err}
	}
	return fmt.Errorf("adopt %s: read %s: %w", res.Tool, res.Table, err)
}
