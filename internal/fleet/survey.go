package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/lockmigrate/lockmigrate/runner"
)

// Survey is the fleet fast path's view of the tenants of one shard.
type Survey struct {
	// Listed is the number of distinct tenants the query returned.
	Listed int
	// Tenants are the shard's tenants, sorted.
	Tenants []string
	// Pending are the tenants not known to be current, sorted: no history
	// table, a missing or changed migration, a row not in state applied, or
	// a history the fast path could not read.
	Pending []string
	// Ahead are current tenants whose history has versions unknown to the
	// migration set.
	Ahead []string
	// Queries is how many queries the survey sent.
	Queries int
}

// Surveyor runs the fleet fast path on one connection.
type Surveyor struct {
	Conn       *pgx.Conn
	Query      string
	Table      string
	Migrations []*runner.Migration
	Shard      Shard
	ChunkSize  int           // default DefaultChunkSize
	Timeout    time.Duration // per query; default DefaultQueryTimeout
	Logger     *slog.Logger  // nil discards
}

// Survey lists the tenants and finds which are pending, without any lock,
// in 2 + ceil(tenants with a history table / ChunkSize) queries: the
// tenants query, one catalog query for the tenants that have a history
// table, and one UNION ALL query per chunk of them that returns their
// history rows (version, state, checksum; baseline rows count as applied). A tenant is
// current when every migration of the set is applied with its checksum and
// no row is in another state (running); applied versions unknown to the set
// (a newer release) keep it current, with a warning. Like the single-schema fast path it
// reads without the lock, so a pending verdict is re-checked by the
// tenant's runner under its lock.
func (s Surveyor) Survey(ctx context.Context) (*Survey, error) {
	if s.ChunkSize <= 0 {
		s.ChunkSize = DefaultChunkSize
	}
	if s.Timeout <= 0 {
		s.Timeout = DefaultQueryTimeout
	}
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	sv := &Survey{}
	all, err := s.list(ctx)
	sv.Queries++
	if err != nil {
		return sv, err
	}
	sv.Listed = len(all)
	for _, t := range all {
		if s.Shard.Owns(t) {
			sv.Tenants = append(sv.Tenants, t)
		}
	}
	if len(sv.Tenants) == 0 {
		return sv, nil
	}
	withTable, err := s.withHistory(ctx, sv.Tenants)
	sv.Queries++
	if err != nil {
		return sv, err
	}
	current := map[string]bool{}
	for start := 0; start < len(withTable); start += s.ChunkSize {
		chunk := withTable[start:min(start+s.ChunkSize, len(withTable))]
		states, err := s.chunk(ctx, chunk)
		sv.Queries++
		if err != nil {
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) {
				return sv, err
			}
			// A tenant dropped since the catalog query, or a history table
			// this role cannot read: leave the chunk to the runners, which
			// decide per tenant (and report what is wrong with one).
			s.Logger.LogAttrs(ctx, slog.LevelWarn, "fast path could not read a chunk of history tables; its tenants are checked one by one",
				slog.Int("tenants", len(chunk)), slog.String("first", chunk[0]), slog.String("error", err.Error()))
			continue
		}
		for i, st := range states {
			if st.current(len(s.Migrations)) {
				current[chunk[i]] = true
				if st.ahead > 0 {
					sv.Ahead = append(sv.Ahead, chunk[i])
				}
			}
		}
	}
	for _, t := range sv.Tenants {
		if !current[t] {
			sv.Pending = append(sv.Pending, t)
		}
	}
	return sv, nil
}

// list runs the tenants query.
func (s Surveyor) list(ctx context.Context) ([]string, error) {
	qctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	rows, err := s.Conn.Query(qctx, s.Query)
	if err != nil {
		return nil, queryErr(err)
	}
	defer rows.Close()
	fds := rows.FieldDescriptions()
	if len(fds) != 1 {
		return nil, &QueryError{Err: fmt.Errorf("returned %d columns, want exactly one (the schema names)", len(fds))}
	}
	switch fds[0].DataTypeOID {
	case pgtype.TextOID, pgtype.NameOID, pgtype.VarcharOID, pgtype.BPCharOID:
	default:
		return nil, &QueryError{Err: fmt.Errorf("its column %q is not text (type oid %d); select schema names, e.g. nspname", fds[0].Name, fds[0].DataTypeOID)}
	}
	var (
		names []string
		nulls int
	)
	for rows.Next() {
		var name pgtype.Text
		if err := rows.Scan(&name); err != nil {
			return nil, &QueryError{Err: err}
		}
		if !name.Valid || name.String == "" {
			nulls++
			continue
		}
		names = append(names, name.String)
	}
	if err := rows.Err(); err != nil {
		return nil, queryErr(err)
	}
	if nulls > 0 {
		s.Logger.LogAttrs(ctx, slog.LevelWarn, "tenants query returned empty or NULL names; ignored", slog.Int("count", nulls))
	}
	return dedupe(names), nil
}

// queryErr makes a server error in the tenants query a *QueryError (a
// configuration error); anything else (a lost connection) stays as it is.
func queryErr(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && !strings.HasPrefix(pgErr.Code, "08") && !strings.HasPrefix(pgErr.Code, "57") {
		return &QueryError{Err: err}
	}
	return fmt.Errorf("tenants query: %w", err)
}

// withHistory returns the tenants (sorted) whose schema holds the history
// table; the others have nothing applied.
func (s Surveyor) withHistory(ctx context.Context, tenants []string) ([]string, error) {
	qctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	rows, err := s.Conn.Query(qctx, `SELECT n.nspname::text FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relname = $1 AND c.relkind IN ('r', 'p') AND n.nspname::text = ANY($2::text[])
 ORDER BY 1`, s.Table, tenants)
	if err != nil {
		return nil, fmt.Errorf("find tenants' history tables: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("find tenants' history tables: %w", err)
	}
	return names, nil
}

// historyState is one tenant's history as the fast path sees it.
type historyState struct {
	matched   int // applied rows of known versions with the set's checksum
	mismatch  int // applied rows of known versions with another checksum
	unsettled int // rows in another state than applied (running, ...)
	ahead     int // applied rows whose versions the set does not know
}

// current reports whether the tenant has exactly the set applied (plus,
// possibly, versions of a newer release).
func (h historyState) current(migs int) bool {
	return h.matched == migs && h.mismatch == 0 && h.unsettled == 0
}

// chunk reads the history rows of tenants in one query, each with its
// tenant's position in the chunk (so no name is ever put in a literal;
// names are quoted as identifiers). Plain rows, compared here: PostgreSQL
// plans every UNION ALL branch, and expressions or aggregates in 500
// branches cost it several times what sending the rows costs.
func (s Surveyor) chunk(ctx context.Context, tenants []string) ([]historyState, error) {
	var b strings.Builder
	for i, t := range tenants {
		if i > 0 {
			b.WriteString("\nUNION ALL ")
		}
		b.WriteString("SELECT ")
		b.WriteString(strconv.Itoa(i))
		b.WriteString(", version, state, checksum FROM ")
		b.WriteString(pgx.Identifier{t, s.Table}.Sanitize())
	}
	checksums := make(map[int64]string, len(s.Migrations))
	for _, m := range s.Migrations {
		checksums[m.Version] = m.Checksum
	}
	qctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	rows, err := s.Conn.Query(qctx, b.String())
	if err != nil {
		return nil, err
	}
	out := make([]historyState, len(tenants))
	var (
		i               int
		version         int64
		state, checksum string
	)
	_, err = pgx.ForEachRow(rows, []any{&i, &version, &state, &checksum}, func() error {
		if i < 0 || i >= len(out) {
			return fmt.Errorf("fast path: unexpected row for tenant %d", i)
		}
		h := &out[i]
		want, known := checksums[version]
		switch {
		case state != runner.StateApplied && state != runner.StateBaseline:
			h.unsettled++
		case !known:
			h.ahead++
		case checksum == want:
			h.matched++
		default:
			h.mismatch++
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
