package fleet

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
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
	// Rows, filled when Surveyor.KeepRows is set, holds the history rows
	// (every column, ascending by version) of each pending tenant that has
	// a history table, possibly none; a pending tenant absent from it has no
	// history table. They come from the survey's own chunk queries: no
	// query is sent per tenant.
	Rows map[string][]runner.HistoryRow
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
	// Phase is the run's phase (runner.Options.Phase): a tenant is current
	// when every migration the phase applies is, as the tenant's runner
	// would answer up_to_date; "" is runner.PhaseAll.
	Phase runner.Phase
	// KeepRows makes Survey read every column of the history rows and
	// return the pending tenants' rows in Survey.Rows, for a dry run that
	// plans each of them (plan); a run's fast path needs only version,
	// state and checksum, which cost the server less to send. With KeepRows a
	// chunk that cannot be read is an error (naming its tenants), since its
	// tenants could not be planned.
	KeepRows bool
}

// Survey lists the tenants and finds which are pending, without any lock,
// in 2 + ceil(tenants with a history table / ChunkSize) queries: the
// tenants query, one catalog query for the tenants that have a history
// table, and one UNION ALL query per chunk of them that returns their
// history rows (version, state, checksum; baseline rows count as applied). A tenant is
// current when every migration of the run's phase is applied, no applied
// migration of the set has another checksum and no row of the phase (or of
// a version the set does not know) is in another state (running); applied versions unknown to the set
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
	current, err := s.readChunks(ctx, sv, withTable)
	if err != nil {
		return sv, err
	}
	for _, t := range sv.Tenants {
		if !current[t] {
			sv.Pending = append(sv.Pending, t)
		}
	}
	return sv, nil
}

// readChunks reads the history rows of the tenants with a history table,
// one query per chunk of them, into sv (Queries, Ahead, Rows), and returns
// the current ones.
func (s Surveyor) readChunks(ctx context.Context, sv *Survey, withTable []string) (map[string]bool, error) {
	current := map[string]bool{}
	if s.KeepRows {
		sv.Rows = map[string][]runner.HistoryRow{}
	}
	need := s.inPhase()
	for start := 0; start < len(withTable); start += s.ChunkSize {
		chunk := withTable[start:min(start+s.ChunkSize, len(withTable))]
		states, rows, err := s.chunk(ctx, chunk)
		sv.Queries++
		if err != nil {
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) {
				return nil, err
			}
			if s.KeepRows {
				return nil, fmt.Errorf("read the history tables of tenants %s to %s (%d tenants, one query): %w",
					chunk[0], chunk[len(chunk)-1], len(chunk), err)
			}
			// A tenant dropped since the catalog query, or a history table
			// this role cannot read: leave the chunk to the runners, which
			// decide per tenant (and report what is wrong with one).
			s.Logger.LogAttrs(ctx, slog.LevelWarn, "fast path could not read a chunk of history tables; its tenants are checked one by one",
				slog.Int("tenants", len(chunk)), slog.String("first", chunk[0]), slog.String("error", err.Error()))
			continue
		}
		for i, st := range states {
			if st.current(need) {
				current[chunk[i]] = true
				if st.ahead > 0 {
					sv.Ahead = append(sv.Ahead, chunk[i])
				}
			} else if s.KeepRows {
				slices.SortFunc(rows[i], func(a, b runner.HistoryRow) int { return cmp.Compare(a.Version, b.Version) })
				sv.Rows[chunk[i]] = rows[i]
			}
		}
	}
	return current, nil
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

// inPhase is how many migrations of the set a run in s.Phase applies.
func (s Surveyor) inPhase() int {
	n := 0
	for _, m := range s.Migrations {
		if m.InPhase(s.Phase) {
			n++
		}
	}
	return n
}

// historyState is one tenant's history as the fast path sees it.
type historyState struct {
	matched   int // applied rows of known versions with the set's checksum
	mismatch  int // applied rows of known versions with another checksum
	unsettled int // rows in another state than applied (running, ...), of the run's phase or unknown versions
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
// branches cost it several times what sending the rows costs. Each branch
// ends in OFFSET 0, which keeps the planner from pulling the branches up
// into one append relation of 500 members: that costs it more per branch
// the more branches there are (planning one chunk of 500 tenants, each
// table opened for the first time in the session: about 95 ms pulled up,
// 45 ms with OFFSET 0; 1,400 ms against 95 ms at 1,000 branches). With
// KeepRows it also returns every tenant's rows (every column), unsorted.
func (s Surveyor) chunk(ctx context.Context, tenants []string) ([]historyState, [][]runner.HistoryRow, error) {
	checksums := make(map[int64]*runner.Migration, len(s.Migrations))
	for _, m := range s.Migrations {
		checksums[m.Version] = m
	}
	qctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	rows, err := s.Conn.Query(qctx, s.chunkQuery(tenants))
	if err != nil {
		return nil, nil, err
	}
	out := make([]historyState, len(tenants))
	var (
		i               int
		version         int64
		state, checksum string
		full            runner.HistoryRow
		kept            [][]runner.HistoryRow
	)
	scans := []any{&i, &version, &state, &checksum}
	if s.KeepRows {
		kept = make([][]runner.HistoryRow, len(tenants))
		scans = append(scans, &full.Name, &full.AppliedAt, &full.DurationMS, &full.AppliedBy, &full.RunID, &full.StatementsDone)
	}
	_, err = pgx.ForEachRow(rows, scans, func() error {
		if i < 0 || i >= len(out) {
			return fmt.Errorf("fast path: unexpected row for tenant %d", i)
		}
		if s.KeepRows {
			full.Version, full.State, full.Checksum = version, state, checksum
			kept[i] = append(kept[i], full)
		}
		h := &out[i]
		m, known := checksums[version]
		switch {
		case state != runner.StateApplied && state != runner.StateBaseline:
			// A row left running by the other phase's file is that
			// phase's business, as for the runner (runner/phase.go).
			if !known || m.InPhase(s.Phase) {
				h.unsettled++
			}
		case !known:
			h.ahead++
		case checksum != m.Checksum:
			h.mismatch++
		case m.InPhase(s.Phase):
			h.matched++
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return out, kept, nil
}

// chunkQuery is chunk's UNION ALL query, one branch per tenant.
func (s Surveyor) chunkQuery(tenants []string) string {
	columns := ", version, state, checksum FROM "
	if s.KeepRows {
		columns = ", version, state, checksum, name, applied_at, duration_ms, applied_by, coalesce(run_id::text, ''), statements_done FROM "
	}
	var b strings.Builder
	for i, t := range tenants {
		if i > 0 {
			b.WriteString("\nUNION ALL ")
		}
		b.WriteString("(SELECT ")
		b.WriteString(strconv.Itoa(i))
		b.WriteString(columns)
		b.WriteString(pgx.Identifier{t, s.Table}.Sanitize())
		b.WriteString(" OFFSET 0)")
	}
	return b.String()
}
