package runner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lockmigrate/lockmigrate/internal/sqlquote"
)

// History row states.
const (
	StateApplied = "applied"
	// StateRunning marks a no-transaction migration in progress. Found by a
	// run that holds the lock, it means the previous holder died mid-file.
	StateRunning = "running"
)

// HistoryRow is one row of the history table.
type HistoryRow struct {
	Version        int64     `json:"version"`
	Name           string    `json:"name"`
	Checksum       string    `json:"checksum"`
	AppliedAt      time.Time `json:"applied_at"`
	DurationMS     int64     `json:"duration_ms"`
	AppliedBy      string    `json:"applied_by"`
	RunID          string    `json:"run_id"`
	State          string    `json:"state"`
	StatementsDone int32     `json:"statements_done"`
}

// history knows the SQL of one history table.
type history struct {
	ident string // quoted "schema"."table"
	// schemaIdent is the quoted schema alone.
	schemaIdent  string
	schema, name string
}

func newHistory(schema, table string) history {
	return history{
		ident:       pgx.Identifier{schema, table}.Sanitize(),
		schemaIdent: pgx.Identifier{schema}.Sanitize(),
		schema:      schema,
		name:        table,
	}
}

// read returns every history row ordered by version. A missing table or
// schema is not an error: it means nothing was ever applied. Creating the
// table is left to the lock holder, because concurrent CREATE TABLE IF NOT
// EXISTS statements race in the catalog and one of them fails.
func (h history) read(ctx context.Context, conn Conn) (rows []HistoryRow, exists bool, err error) {
	r, err := conn.Query(ctx, `SELECT version, name, checksum, applied_at, duration_ms, applied_by,
       coalesce(run_id::text, ''), state, statements_done
  FROM `+h.ident+` ORDER BY version`)
	if err != nil {
		return nil, false, h.readErr(err)
	}
	rows, err = pgx.CollectRows(r, func(row pgx.CollectableRow) (HistoryRow, error) {
		var hr HistoryRow
		err := row.Scan(&hr.Version, &hr.Name, &hr.Checksum, &hr.AppliedAt, &hr.DurationMS,
			&hr.AppliedBy, &hr.RunID, &hr.State, &hr.StatementsDone)
		return hr, err
	})
	if err != nil {
		return nil, false, h.readErr(err)
	}
	return rows, true, nil
}

// readBrief returns the columns that decide whether anything is to be done
// (version, checksum, state), ordered by version, for the lock-free fast
// path that every replica start runs. Leaving out the other columns, and the
// ORDER BY (sorted here instead), roughly halves the query's cost on a new
// backend: no timestamptz or uuid output (the first timestamptz output of a
// session loads the time zone), no sort or index-path planning, and half the
// bytes. Like read, it treats a missing table as an empty history.
//
// known, when not nil, finds the migration of a version: a row whose
// checksum is its migration's shares that string instead of a copy (and
// rows are allocated for as many rows as known has migrations), since
// every start reads every row and the copies were most of what the
// collector had to scan at 10,000 migrations.
//
// On a pgx connection the rows are read with COPY ... TO STDOUT, which the
// server runs without planning the query: on a new backend the planner's
// first look at the table and its index cost it about as much again as
// the round trip (0.4 ms against 0.75 ms for the SELECT, measured on
// PostgreSQL 15). The SELECT remains for any other Conn, for a COPY the
// server refuses (a proxy that does not support it), and for values COPY
// escapes, which readBrief does not decode.
func (h history) readBrief(ctx context.Context, conn Conn, known *migIndex) ([]HistoryRow, error) {
	if pc, ok := conn.(interface{ PgConn() *pgconn.PgConn }); ok {
		var out bytes.Buffer
		if known != nil {
			out.Grow(96 * known.len()) // a row is about 80 bytes: no copies as the buffer grows
		}
		_, err := pc.PgConn().CopyTo(ctx, &out, `COPY `+h.ident+` (version, checksum, state) TO STDOUT`)
		if err != nil && (h.readErr(err) == nil || ctx.Err() != nil) {
			return nil, h.readErr(err) // no table (no history), or the run was stopped
		}
		if err == nil {
			if rows, ok := parseBriefCopy(out.Bytes(), known); ok {
				return rows, nil
			}
		}
	}
	return h.readBriefSelect(ctx, conn, known)
}

// parseBriefCopy reads the text of COPY (version, checksum, state) TO
// STDOUT into rows sorted by version. ok is false for text it does not
// read exactly as the server meant it: a backslash (an escape, or a NULL),
// a row without three fields, a version that is not a plain decimal.
func parseBriefCopy(text []byte, known *migIndex) (rows []HistoryRow, ok bool) {
	if bytes.IndexByte(text, '\\') >= 0 {
		return nil, false
	}
	if known != nil {
		rows = make([]HistoryRow, 0, known.len())
	}
	for len(text) > 0 {
		end := bytes.IndexByte(text, '\n')
		if end < 0 {
			return nil, false
		}
		line := text[:end]
		text = text[end+1:]
		tab1 := bytes.IndexByte(line, '\t')
		if tab1 < 0 {
			return nil, false
		}
		tab2 := bytes.IndexByte(line[tab1+1:], '\t') + tab1 + 1
		if tab2 <= tab1 || bytes.IndexByte(line[tab2+1:], '\t') >= 0 {
			return nil, false // not three fields
		}
		hr, ok := briefValues(line[:tab1], line[tab1+1:tab2], line[tab2+1:], known)
		if !ok {
			return nil, false
		}
		rows = append(rows, hr)
	}
	sortRows(rows)
	return rows, true
}

// readBriefSelect is readBrief with a SELECT.
func (h history) readBriefSelect(ctx context.Context, conn Conn, known *migIndex) ([]HistoryRow, error) {
	r, err := conn.Query(ctx, `SELECT version, checksum, state FROM `+h.ident)
	if err != nil {
		return nil, h.readErr(err)
	}
	defer r.Close()
	var rows []HistoryRow
	if known != nil {
		rows = make([]HistoryRow, 0, known.len())
	}
	for r.Next() {
		hr, ok := briefRow(r.FieldDescriptions(), r.RawValues(), known)
		if !ok {
			err = r.Scan(&hr.Version, &hr.Checksum, &hr.State)
		}
		if err != nil {
			break
		}
		rows = append(rows, hr)
	}
	r.Close()
	if err == nil {
		err = r.Err()
	}
	if err != nil {
		return nil, h.readErr(err)
	}
	sortRows(rows)
	return rows, nil
}

// sortRows sorts rows by version, unless they came sorted.
func sortRows(rows []HistoryRow) {
	if !slices.IsSortedFunc(rows, func(a, b HistoryRow) int { return cmpInt64(a.Version, b.Version) }) {
		slices.SortFunc(rows, func(a, b HistoryRow) int { return cmpInt64(a.Version, b.Version) })
	}
}

// briefRow decodes a row of readBrief from its text-format values, which
// is what the server sends the query: pgx's Scan, with its per-value plan
// lookups and conversions, cost more per row than everything else a no-op
// does with it. ok is false for anything else (a binary-format column, a
// NULL, a version that is not a plain decimal), which the caller leaves to
// Scan, whose errors are kept.
func briefRow(fds []pgconn.FieldDescription, raw [][]byte, known *migIndex) (hr HistoryRow, ok bool) {
	if len(fds) != 3 || len(raw) != 3 {
		return hr, false
	}
	for i := range fds {
		if fds[i].Format != pgx.TextFormatCode || raw[i] == nil {
			return hr, false
		}
	}
	return briefValues(raw[0], raw[1], raw[2], known)
}

// briefValues makes a brief row of the text of its three values.
func briefValues(version, checksum, state []byte, known *migIndex) (hr HistoryRow, ok bool) {
	v, ok := parseDecimal(version)
	if !ok {
		return hr, false
	}
	hr.Version = v
	if m := known.get(v); m != nil && m.Checksum == string(checksum) {
		hr.Checksum = m.Checksum
	} else {
		hr.Checksum = string(checksum)
	}
	switch string(state) {
	case StateApplied:
		hr.State = StateApplied // no copy of the usual values
	case StateRunning:
		hr.State = StateRunning
	default:
		hr.State = string(state)
	}
	return hr, true
}

// parseDecimal parses a bigint's text form: decimal digits with an
// optional minus sign; ok is false for anything else or out of range.
func parseDecimal(b []byte) (v int64, ok bool) {
	digits := b
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		digits = b[1:]
	}
	if len(digits) == 0 {
		return 0, false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	if len(digits) > 18 { // may overflow
		n, err := strconv.ParseInt(string(b), 10, 64)
		return n, err == nil
	}
	for _, c := range digits {
		v = v*10 + int64(c-'0')
	}
	if neg {
		v = -v
	}
	return v, true
}

func (h history) readErr(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000") {
		return nil // undefined_table, invalid_schema_name
	}
	return fmt.Errorf("read history table %s: %w", h.ident, err)
}

// ensure creates the schema and table when missing. The caller holds the
// lock. The schema is created only when absent, because CREATE SCHEMA IF NOT
// EXISTS checks the CREATE privilege on the database before it checks for
// existence, and application roles often lack that privilege.
func (h history) ensure(ctx context.Context, conn Conn) error {
	var schemaExists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, h.schema).Scan(&schemaExists); err != nil {
		return fmt.Errorf("look up schema %s: %w", h.schemaIdent, err)
	}
	sql := ""
	if !schemaExists {
		sql = "CREATE SCHEMA IF NOT EXISTS " + h.schemaIdent + ";\n"
	}
	sql += `CREATE TABLE IF NOT EXISTS ` + h.ident + ` (
    version         bigint      PRIMARY KEY,
    name            text        NOT NULL,
    checksum        text        NOT NULL,
    applied_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    duration_ms     bigint      NOT NULL DEFAULT 0,
    applied_by      text        NOT NULL DEFAULT '',
    run_id          uuid,
    state           text        NOT NULL DEFAULT 'applied' ` + stateCheck + `,
    statements_done integer     NOT NULL DEFAULT 0
)`
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("create history table %s: %w", h.ident, err)
	}
	return nil
}

// serverDuration is the time since the arrival of the current query, in
// milliseconds, as the server measures it.
const serverDuration = `(extract(epoch FROM clock_timestamp() - statement_timestamp()) * 1000)::bigint`

// insertAppliedLiteral is the statement that records m as applied, with
// its values inlined as literals so that it can travel in the same
// simple-protocol query as the migration and commit with it. durationMS is
// an SQL expression: serverDuration when the file travels in the same query.
func (h history) insertAppliedLiteral(m *Migration, durationMS, appliedBy, runID string) string {
	return `INSERT INTO ` + h.ident + ` (version, name, checksum, applied_at, duration_ms, applied_by, run_id, state)
VALUES (` + strconv.FormatInt(m.Version, 10) + `, ` + sqlquote.Literal(m.Name) + `, ` + sqlquote.Literal(m.Checksum) +
		`, clock_timestamp(), ` + durationMS + `, ` + sqlquote.Literal(appliedBy) + `, ` + sqlquote.Literal(runID) + `::uuid, 'applied')`
}
