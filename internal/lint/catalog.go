package lint

import (
	"context"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lockmigrate/lockmigrate/internal/lint/pgparse"
)

// Querier is the part of *pgx.Conn an online lint reads the catalog with.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// catalog is what the live database says about the tables, indexes and
// functions the linted statements name. Offline it is empty.
type catalog struct {
	online  bool
	version int
	tables  map[string]tableInfo
	// indexTable maps an existing index to its table.
	indexTable map[string]string
	// columns: type, NOT NULL, and whether a validated CHECK (col IS NOT
	// NULL) proves it, by table and column.
	columns  map[string]map[string]columnInfo
	volatile map[string]bool
}

type tableInfo struct {
	exists bool
	// rows is pg_class.reltuples, or 0 for a never-analyzed table of size
	// 0, or -1 when unknown.
	rows float64
}

type columnInfo struct {
	typ     colType
	notNull bool
	proven  bool
}

func (c *catalog) indexExists(key string) bool { _, ok := c.indexTable[key]; return ok }

func (c *catalog) notNull(table, col string) bool { return c.columns[table][col].notNull }

func (c *catalog) proven(table, col string) bool { return c.columns[table][col].proven }

func (c *catalog) column(table, col string) (colType, bool) {
	ci, ok := c.columns[table][col]
	return ci.typ, ok && ci.typ.name != ""
}

// names collects the relation and function names the linted statements
// mention, as the catalog queries take them. A table first mentioned by a
// plain CREATE TABLE cannot be in the catalog yet (the CREATE would fail):
// it is left out, so that a set of new tables is linted without asking.
func names(files []parsedFile) (rels, funcs []string) {
	seenR, seenF := map[string]bool{}, map[string]bool{}
	for _, p := range files {
		if p.Applied {
			continue
		}
		for _, st := range p.stmts {
			st.Node.Walk(func(n pgparse.Node) bool {
				// Walk visits a statement before its children.
				if n.Type == "CreateStmt" && !n.Bool("if_not_exists") {
					seenR[tableKey(n.Child("relation"))] = true
				}
				if n.Type == "" && n.Str("relname") != "" {
					if k := tableKey(n); !seenR[k] {
						seenR[k] = true
						rels = append(rels, k)
					}
				}
				if n.Type == "FuncCall" {
					f := n.Strings("funcname")
					if name := f[len(f)-1]; !seenF[name] {
						seenF[name] = true
						funcs = append(funcs, name)
					}
				}
				if n.Type == "DropStmt" {
					for _, o := range n.List("objects") {
						if k := nameKey(o.Strings("items")); !seenR[k] {
							seenR[k] = true
							rels = append(rels, k)
						}
					}
				}
				return true
			})
		}
	}
	return rels, funcs
}

// regclassText writes a tracked name as to_regclass reads it.
func regclassText(key string) string {
	parts := strings.SplitN(key, ".", 2)
	for i, p := range parts {
		parts[i] = `"` + strings.ReplaceAll(p, `"`, `""`) + `"`
	}
	return strings.Join(parts, ".")
}

// catalogQuery reads what the rules need of each relation the files name.
// A table never analyzed (reltuples -1) is sized with sizeOf: its size
// tells an empty table from one of unknown row count.
const catalogQuery = `
SELECT k, coalesce(c.relkind IN ('r', 'p', 'm'), false), coalesce(c.relkind = 'i', false),
       CASE WHEN c.reltuples >= 0 THEN c.reltuples
            WHEN {size}(c.oid) = 0 THEN 0 ELSE -1 END::float8,
       coalesce(t.key, ''),
       CASE WHEN t.reltuples >= 0 THEN t.reltuples
            WHEN {size}(t.oid) = 0 THEN 0 ELSE -1 END::float8
FROM unnest($1::text[], $2::text[]) AS n(k, reg)
LEFT JOIN pg_class c ON c.oid = to_regclass(n.reg)
LEFT JOIN pg_index i ON i.indexrelid = c.oid
LEFT JOIN LATERAL (SELECT tc.oid, tc.reltuples,
       CASE WHEN ns.nspname = 'public' THEN tc.relname ELSE ns.nspname || '.' || tc.relname END AS key
       FROM pg_class tc JOIN pg_namespace ns ON ns.oid = tc.relnamespace WHERE tc.oid = i.indrelid) t ON true`

// pg_relation_size takes an ACCESS SHARE lock on the table: behind a session
// that holds it ACCESS EXCLUSIVE (a long migration, a LOCK TABLE) it would
// stall the gate, and the run, without limit. The catalog is therefore read
// under sizeLockTimeout; when that runs out, the query is sent again with
// unknownSize, which counts a never-analyzed table as one of unknown row
// count, as offline.
const (
	sizeLockTimeout = "1s"
	relationSize    = "pg_relation_size"
	// unknownSize sizes the oid value itself (4 bytes): never 0, no lock.
	unknownSize = "pg_column_size"
)

const columnsQuery = `
SELECT n.k, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       EXISTS (SELECT 1 FROM pg_constraint co WHERE co.conrelid = a.attrelid AND co.contype = 'c' AND co.convalidated
               AND pg_get_constraintdef(co.oid) = 'CHECK ((' || quote_ident(a.attname) || ' IS NOT NULL))')
FROM unnest($1::text[], $2::text[]) AS n(k, reg)
JOIN pg_attribute a ON a.attrelid = to_regclass(n.reg) AND a.attnum > 0 AND NOT a.attisdropped`

// readCatalog asks the database about every name the files mention: four
// queries at most, whatever the number of files (three when the files call
// no function, one or two when they name no table that may exist).
func readCatalog(ctx context.Context, db Querier, files []parsedFile) (_ *catalog, err error) {
	c := &catalog{online: true, tables: map[string]tableInfo{}, indexTable: map[string]string{},
		columns: map[string]map[string]columnInfo{}, volatile: map[string]bool{}}
	rels, funcs := names(files)
	if len(rels) == 0 {
		// No table to size: the version is all there is to read (and the
		// functions), with no lock_timeout to set around it.
		rows, err := db.Query(ctx, `SELECT current_setting('server_version_num')::int / 10000`)
		if err != nil {
			return nil, err
		}
		if _, err = pgx.ForEachRow(rows, []any{&c.version}, func() error { return nil }); err != nil {
			return nil, err
		}
		return c, c.readFuncs(ctx, db, funcs)
	}
	regs := make([]string, len(rels))
	for i, k := range rels {
		regs[i] = regclassText(k)
	}
	var saved string
	rows, err := db.Query(ctx, `SELECT current_setting('server_version_num')::int / 10000, current_setting('lock_timeout'),
	       set_config('lock_timeout', $1, false)`, sizeLockTimeout)
	if err != nil {
		return nil, err
	}
	if _, err = pgx.ForEachRow(rows, []any{&c.version, &saved, nil}, func() error { return nil }); err != nil {
		return nil, err
	}
	defer func() {
		// The session's own setting back, even after a cancellation.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		rows, rerr := db.Query(rctx, `SELECT set_config('lock_timeout', $1, false)`, saved)
		if rerr == nil {
			rows.Close()
			rerr = rows.Err()
		}
		if err == nil && rerr != nil {
			err = rerr
		}
	}()
	if err := c.readFuncs(ctx, db, funcs); err != nil {
		return nil, err
	}
	if err := c.readTables(ctx, db, rels, regs); err != nil {
		return nil, err
	}
	return c, c.readColumns(ctx, db, rels, regs)
}

func (c *catalog) readFuncs(ctx context.Context, db Querier, funcs []string) error {
	// No call, no question: the lookup would find nothing, and in the new
	// session of a migrate run planning it against pg_proc costs the
	// server about 1 ms (PostgreSQL 15), the round trip aside.
	if len(funcs) == 0 {
		return nil
	}
	rows, err := db.Query(ctx, `SELECT DISTINCT proname::text FROM pg_proc WHERE proname = ANY($1::text[]) AND provolatile = 'v'`, funcs)
	if err != nil {
		return err
	}
	var name string
	_, err = pgx.ForEachRow(rows, []any{&name}, func() error { c.volatile[name] = true; return nil })
	return err
}

func (c *catalog) readTables(ctx context.Context, db Querier, rels, regs []string) error {
	rows, err := db.Query(ctx, strings.ReplaceAll(catalogQuery, "{size}", relationSize), rels, regs)
	if err == nil {
		err = c.scanTables(rows)
	}
	if isLockTimeout(err) {
		rows, err = db.Query(ctx, strings.ReplaceAll(catalogQuery, "{size}", unknownSize), rels, regs)
		if err == nil {
			err = c.scanTables(rows)
		}
	}
	return err
}

// isLockTimeout reports a lock_timeout (SQLSTATE 55P03).
func isLockTimeout(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "55P03"
}

func (c *catalog) scanTables(rows pgx.Rows) error {
	var (
		key, table       string
		isTable, isIndex bool
		rows1, tableRows *float64
	)
	_, err := pgx.ForEachRow(rows, []any{&key, &isTable, &isIndex, &rows1, &table, &tableRows}, func() error {
		if isTable {
			c.tables[key] = tableInfo{exists: true, rows: deref(rows1)}
		}
		if isIndex && table != "" {
			c.indexTable[key] = table
			if _, ok := c.tables[table]; !ok {
				c.tables[table] = tableInfo{exists: true, rows: deref(tableRows)}
			}
		}
		return nil
	})
	return err
}

func deref(f *float64) float64 {
	if f == nil {
		return -1
	}
	return *f
}

// formatTypes maps format_type's names to the parser's. Like every
// table of this package it is built on first use: package variables with
// maps or compiled expressions would be built at every process start, also
// by the replicas that never lint.
var formatTypes = sync.OnceValue(func() map[string]string {
	return map[string]string{"character varying": "varchar", "character": "bpchar", "integer": "int4",
		"bigint": "int8", "smallint": "int2", "bit varying": "varbit", "timestamp without time zone": "timestamp",
		"timestamp with time zone": "timestamptz", "double precision": "float8", "real": "float4", "boolean": "bool"}
})

var typeMods = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^([^(]+)(?:\(([0-9, ]+)\))?(.*)$`) })

func parseFormatType(s string) colType {
	m := typeMods().FindStringSubmatch(s)
	if m == nil {
		return colType{name: s}
	}
	name := strings.TrimSpace(m[1] + m[3])
	if n, ok := formatTypes()[name]; ok {
		name = n
	}
	t := colType{name: name}
	for _, part := range strings.Split(m[2], ",") {
		if v, err := strconv.Atoi(strings.TrimSpace(part)); err == nil {
			t.mods = append(t.mods, v)
		}
	}
	return t
}

func (c *catalog) readColumns(ctx context.Context, db Querier, rels, regs []string) error {
	rows, err := db.Query(ctx, columnsQuery, rels, regs)
	if err != nil {
		return err
	}
	var (
		key, col, typ   string
		notNull, proven bool
	)
	_, err = pgx.ForEachRow(rows, []any{&key, &col, &typ, &notNull, &proven}, func() error {
		if c.columns[key] == nil {
			c.columns[key] = map[string]columnInfo{}
		}
		c.columns[key][col] = columnInfo{typ: parseFormatType(typ), notNull: notNull, proven: proven}
		return nil
	})
	return err
}
