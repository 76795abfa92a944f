package runner

import (
	"context"
	"slices"
	"testing"
	"unsafe"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lockmigrate/lockmigrate/internal/dbconn"
	"github.com/lockmigrate/lockmigrate/internal/pgtest"
)

// TestBriefRow covers the text-format decoding of readBrief's rows and the
// cases it leaves to pgx's Scan.
func TestBriefRow(t *testing.T) {
	text := []pgconn.FieldDescription{{Format: pgx.TextFormatCode}, {Format: pgx.TextFormatCode}, {Format: pgx.TextFormatCode}}
	binVersion := []pgconn.FieldDescription{{Format: pgx.BinaryFormatCode}, {Format: pgx.TextFormatCode}, {Format: pgx.TextFormatCode}}
	row := func(v, sum, state string) [][]byte { return [][]byte{[]byte(v), []byte(sum), []byte(state)} }
	tests := []struct {
		name string
		fds  []pgconn.FieldDescription
		raw  [][]byte
		want HistoryRow
		ok   bool
	}{
		{"applied", text, row("42", "abc", "applied"), HistoryRow{Version: 42, Checksum: "abc", State: StateApplied}, true},
		{"running", text, row("7", "", "running"), HistoryRow{Version: 7, State: StateRunning}, true},
		{"other state", text, row("7", "x", "baseline"), HistoryRow{Version: 7, Checksum: "x", State: "baseline"}, true},
		{"negative", text, row("-3", "x", "applied"), HistoryRow{Version: -3, Checksum: "x", State: StateApplied}, true},
		{"18 digits", text, row("999999999999999999", "x", "applied"), HistoryRow{Version: 999999999999999999, Checksum: "x", State: StateApplied}, true},
		{"19 digits", text, row("9223372036854775807", "x", "applied"), HistoryRow{Version: 9223372036854775807, Checksum: "x", State: StateApplied}, true},
		{"lowest", text, row("-9223372036854775808", "x", "applied"), HistoryRow{Version: -9223372036854775808, Checksum: "x", State: StateApplied}, true},
		{"out of range", text, row("9223372036854775808", "x", "applied"), HistoryRow{}, false},
		{"plus sign", text, row("+1", "x", "applied"), HistoryRow{}, false},
		{"not decimal", text, row("1e3", "x", "applied"), HistoryRow{}, false},
		{"empty version", text, row("", "x", "applied"), HistoryRow{}, false},
		{"lone minus", text, row("-", "x", "applied"), HistoryRow{}, false},
		{"NULL", text, [][]byte{[]byte("1"), nil, []byte("applied")}, HistoryRow{}, false},
		{"binary column", binVersion, row("\x00\x00\x00\x00\x00\x00\x00\x01", "x", "applied"), HistoryRow{}, false},
		{"too few columns", text[:2], row("1", "x", "applied")[:2], HistoryRow{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := briefRow(tt.fds, tt.raw, nil)
			if ok != tt.ok || ok && got != tt.want {
				t.Fatalf("briefRow = %+v, %v; want %+v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

// TestReadBriefMatchesRead reads one history both ways: the brief rows
// must be the full rows' version, checksum and state, in version order,
// whatever order the table returns them in; with the binary's own
// connection settings (text results, decoded by briefRow) and with pgx's
// defaults (binary results, left to Scan).
func TestReadBriefMatchesRead(t *testing.T) {
	ctx := context.Background()
	url := pgtest.Shared().NewDB(t)
	own, err := dbconn.Config(url, func(string) string { return "" }, "runnertest", dbconn.Keepalive{})
	if err != nil {
		t.Fatal(err)
	}
	def, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	h := newHistory("public", "lockmigrate_history")
	for i, cfg := range []*pgx.ConnConfig{own, def} {
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if i == 0 {
			fillHistory(t, conn, h)
		}
		full, _, err := h.read(ctx, conn)
		if err != nil {
			t.Fatal(err)
		}
		brief, err := h.readBrief(ctx, conn, nil)
		if err != nil {
			t.Fatal(err)
		}
		// With the set's index, a row whose checksum is its file's shares
		// the file's string (when briefRow decodes it); another keeps its
		// own.
		known := newMigIndex([]*Migration{{Version: 2, Checksum: "sum2"}, {Version: 30, Checksum: "changed"}})
		shared, err := h.readBrief(ctx, conn, &known)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(shared, brief) {
			t.Fatalf("with the index: %+v, without %+v", shared, brief)
		}
		if i == 0 && unsafe.StringData(shared[1].Checksum) != unsafe.StringData(known.get(2).Checksum) {
			t.Error("the checksum of version 2 is a copy")
		}
		if len(brief) != len(full) || len(full) != 5 {
			t.Fatalf("brief %d rows, full %d, want 5", len(brief), len(full))
		}
		for j, f := range full {
			if want := (HistoryRow{Version: f.Version, Checksum: f.Checksum, State: f.State}); brief[j] != want {
				t.Errorf("config %d, row %d: brief %+v, want %+v", i, j, brief[j], want)
			}
		}
	}
}

// fillHistory creates h, after checking that a missing table reads as an
// empty history, with rows inserted out of version order.
func fillHistory(t *testing.T, conn *pgx.Conn, h history) {
	ctx := context.Background()
	if rows, err := h.readBrief(ctx, conn, nil); err != nil || len(rows) != 0 {
		t.Fatalf("missing table: %v, %v", rows, err)
	}
	if err := h.ensure(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO `+h.ident+` (version, name, checksum, state) VALUES
		(30, 'c', 'sum30', 'applied'), (2, 'b', 'sum2', 'running'), (999999999999999999, 'big', 'sumbig', 'applied'),
		(1, 'a', '', 'baseline'), (9223372036854775807, 'max', 'summax', 'applied')`); err != nil {
		t.Fatal(err)
	}
	r, err := conn.Query(ctx, `SELECT version, checksum, state FROM `+h.ident)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, fd := range r.FieldDescriptions() {
		if fd.Format != pgx.TextFormatCode {
			t.Fatalf("the binary's settings give column %s in format %d: briefRow would never decode it", fd.Name, fd.Format)
		}
	}
}

// TestParseBriefCopy covers the COPY text readBrief decodes, and what it
// leaves to the SELECT.
func TestParseBriefCopy(t *testing.T) {
	known := newMigIndex([]*Migration{{Version: 1, Checksum: "aa"}, {Version: 2, Checksum: "bb"}})
	tests := []struct {
		text string
		want []HistoryRow // nil: not decoded
	}{
		{"", []HistoryRow{}},
		{"2\tbb\tapplied\n1\taa\tbaseline\n", []HistoryRow{{Version: 1, Checksum: "aa", State: "baseline"}, {Version: 2, Checksum: "bb", State: StateApplied}}},
		{"-3\t\trunning\n", []HistoryRow{{Version: -3, State: StateRunning}}},
		{"1\taa\tapplied", nil},      // no final newline
		{"1\taa\n", nil},             // two fields
		{"1\taa\tapplied\tx\n", nil}, // four
		{"1\t\\N\tapplied\n", nil},   // NULL
		{"1\ta\\tb\tapplied\n", nil}, // an escape
		{"x\taa\tapplied\n", nil},    // not a number
		{"99999999999999999999\ta\tapplied\n", nil},
	}
	for _, tt := range tests {
		got, ok := parseBriefCopy([]byte(tt.text), &known)
		if ok != (tt.want != nil) || ok && !slices.Equal(got, tt.want) {
			t.Errorf("%q: %+v, %v; want %+v", tt.text, got, ok, tt.want)
		}
	}
}

// queryCounter counts the queries readBrief sends through Query, which it
// uses only when it does not read the rows with COPY.
type queryCounter struct {
	*pgx.Conn
	queries int
}

func (q *queryCounter) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	q.queries++
	return q.Conn.Query(ctx, sql, args...)
}

// TestReadBriefCopy: plain values are read with COPY alone; a value COPY
// escapes sends readBrief to the SELECT, with the same rows as read gives.
func TestReadBriefCopy(t *testing.T) {
	ctx := context.Background()
	cfg, err := dbconn.Config(pgtest.Shared().NewDB(t), func(string) string { return "" }, "runnertest", dbconn.Keepalive{})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	h := newHistory("public", "lockmigrate_history")
	qc := &queryCounter{Conn: conn}
	if rows, err := h.readBrief(ctx, qc, nil); err != nil || len(rows) != 0 || qc.queries != 0 {
		t.Fatalf("missing table: %v, %v, %d queries", rows, err, qc.queries)
	}
	fillHistory(t, conn, h)
	for _, tt := range []struct {
		insert  string
		queries int
	}{
		{"", 0},
		{`INSERT INTO ` + h.ident + ` (version, name, checksum) VALUES (40, 'd', E'tab\there\\back\nline')`, 1},
	} {
		if tt.insert != "" {
			if _, err := conn.Exec(ctx, tt.insert); err != nil {
				t.Fatal(err)
			}
		}
		qc.queries = 0
		brief, err := h.readBrief(ctx, qc, nil)
		if err != nil {
			t.Fatal(err)
		}
		if qc.queries != tt.queries {
			t.Errorf("%d queries through Query, want %d", qc.queries, tt.queries)
		}
		full, _, err := h.read(ctx, conn)
		if err != nil {
			t.Fatal(err)
		}
		if len(brief) != len(full) {
			t.Fatalf("brief %d rows, full %d", len(brief), len(full))
		}
		for j, f := range full {
			if want := (HistoryRow{Version: f.Version, Checksum: f.Checksum, State: f.State}); brief[j] != want {
				t.Errorf("row %d: brief %+v, want %+v", j, brief[j], want)
			}
		}
	}
}
