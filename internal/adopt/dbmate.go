package adopt

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// readDbmate: dbmate's schema_migrations(version varchar primary key) holds
// one row per applied migration, its version as text (the digits before the
// file name's first "_"); migrating down deletes the row. dbmate applies
// every pending file, whatever its version, so the set can have gaps,
// refused as for goose. The table has golang-migrate's default name: it is
// told apart by its columns, so that the wrong tool is named, not guessed.
func readDbmate(ctx context.Context, q Querier, res *Result, set []int64, fail func(Kind, string, ...any) error) error {
	cols, err := columns(ctx, q, res.Table)
	if err != nil {
		return queryErr(res, err)
	}
	if !isDbmateTable(cols) {
		hint := ""
		if isGolangMigrateTable(cols) {
			hint = "; it is golang-migrate's (version bigint, dirty boolean): lockmigrate adopt golang-migrate"
		}
		return fail(KindWrongColumns, "the table is not dbmate's version table (version varchar, and no other column)%s", hint)
	}
	rows, err := q.Query(ctx, `SELECT version::text FROM `+res.Table)
	if err != nil {
		return queryErr(res, err)
	}
	texts, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return queryErr(res, err)
	}
	applied := make([]int64, 0, len(texts))
	for _, v := range texts {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return fail(KindUnknownVersion, "dbmate applied version %q, which is no positive integer and so no file of this migration set", v)
		}
		if slices.Contains(applied, n) {
			return fail(KindUnknownVersion, "dbmate applied version %d under two spellings (%s); the sets must have the same versions",
				n, strings.Join(texts, ", "))
		}
		applied = append(applied, n)
	}
	slices.Sort(applied)
	return applySet(res, set, applied, "dbmate applies every pending file, older ones included", fail)
}

// columns returns the column names of table (qualified and quoted) with
// their types as format_type prints them.
func columns(ctx context.Context, q Querier, table string) (map[string]string, error) {
	rows, err := q.Query(ctx, `SELECT attname::text, format_type(atttypid, atttypmod)
  FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped`, table)
	if err != nil {
		return nil, err
	}
	type col struct{ name, typ string }
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (col, error) {
		var c col
		err := r.Scan(&c.name, &c.typ)
		return c, err
	})
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(got))
	for _, c := range got {
		out[c.name] = c.typ
	}
	return out, nil
}

// isDbmateTable: dbmate's table has exactly one column, a text version.
func isDbmateTable(cols map[string]string) bool {
	t, ok := cols["version"]
	return ok && len(cols) == 1 && (strings.HasPrefix(t, "character varying") || t == "text")
}

// isGolangMigrateTable: golang-migrate's table is (version bigint, dirty boolean).
func isGolangMigrateTable(cols map[string]string) bool {
	return len(cols) == 2 && cols["version"] == "bigint" && cols["dirty"] == "boolean"
}

// dbmateHint adds to a refusal of golang-migrate's reader for a table with
// the wrong columns that the table is dbmate's, when it is.
func dbmateHint(ctx context.Context, q Querier, err error) error {
	var ae *Error
	if !errors.As(err, &ae) || ae.Kind != KindWrongColumns {
		return err
	}
	if cols, cerr := columns(ctx, q, ae.Table); cerr == nil && isDbmateTable(cols) {
		ae.Detail += "; it is dbmate's (version varchar): lockmigrate adopt dbmate"
	}
	return err
}
