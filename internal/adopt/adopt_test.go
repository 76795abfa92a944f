package adopt_test

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/lockmigrate/lockmigrate/internal/adopt"
	"github.com/lockmigrate/lockmigrate/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, pgtest.Options{})) }

// The tables below are created with each tool's own DDL (golang-migrate's
// postgres driver, goose's dialectquery/postgres.go, tern's migrate.go) and
// filled as the tool leaves them. The main package's adopt tests run the
// real tools; these cover every refusal cheaply.
const (
	golangMigrateDDL = `CREATE TABLE IF NOT EXISTS %[1]s (version bigint not null primary key, dirty boolean not null)`
	gooseDDL         = `CREATE TABLE %[1]s (id serial NOT NULL, version_id bigint NOT NULL, is_applied boolean NOT NULL,
		tstamp timestamp NULL default now(), PRIMARY KEY(id)); INSERT INTO %[1]s (version_id, is_applied) VALUES (0, true)`
	ternDDL   = `CREATE TABLE %[1]s (version int4 not null)`
	dbmateDDL = `CREATE TABLE IF NOT EXISTS %[1]s (version varchar primary key)`
)

func TestRead(t *testing.T) {
	ctx := context.Background()
	set := []int64{5, 1, 2, 3, 4} // any order
	tests := []struct {
		name  string
		src   adopt.Source
		setup string // SQL; %[1]s is the table
		table string // for setup, default the tool's
		want  []int64
		ver   int64
		kind  adopt.Kind
		msg   string
	}{
		{name: "golang-migrate at 3", src: adopt.Source{Tool: adopt.GolangMigrate},
			setup: golangMigrateDDL + `; INSERT INTO %[1]s VALUES (3, false)`, want: []int64{1, 2, 3}, ver: 3},
		{name: "golang-migrate empty: nothing applied", src: adopt.Source{Tool: adopt.GolangMigrate},
			setup: golangMigrateDDL},
		{name: "golang-migrate dirty", src: adopt.Source{Tool: adopt.GolangMigrate},
			setup: golangMigrateDDL + `; INSERT INTO %[1]s VALUES (3, true)`, kind: adopt.KindDirty, msg: "migrate force 3"},
		{name: "golang-migrate dirty nil version", src: adopt.Source{Tool: adopt.GolangMigrate},
			setup: golangMigrateDDL + `; INSERT INTO %[1]s VALUES (-1, true)`, kind: adopt.KindDirty},
		{name: "golang-migrate two rows", src: adopt.Source{Tool: adopt.GolangMigrate},
			setup: golangMigrateDDL + `; INSERT INTO %[1]s VALUES (2, false), (3, false)`, kind: adopt.KindRowCount, msg: "2 rows"},
		{name: "golang-migrate unknown version", src: adopt.Source{Tool: adopt.GolangMigrate},
			setup: golangMigrateDDL + `; INSERT INTO %[1]s VALUES (7, false)`, kind: adopt.KindUnknownVersion, msg: "version 7"},
		{name: "golang-migrate x-migrations-table in a schema", src: adopt.Source{Tool: adopt.GolangMigrate, Schema: "My App", Table: "mig"},
			table: `"My App"."mig"`, setup: `CREATE SCHEMA "My App"; ` + golangMigrateDDL + `; INSERT INTO %[1]s VALUES (5, false)`,
			want: []int64{1, 2, 3, 4, 5}, ver: 5},
		{name: "golang-migrate missing", src: adopt.Source{Tool: adopt.GolangMigrate},
			kind: adopt.KindMissingTable, msg: `"schema_migrations" (missing_table): golang-migrate's version table not found in the search path (current schema "public")`},

		{name: "goose at 2", src: adopt.Source{Tool: adopt.Goose},
			setup: gooseDDL + `; INSERT INTO %[1]s (version_id, is_applied) VALUES (1, true), (2, true)`, want: []int64{1, 2}, ver: 2},
		{name: "goose bootstrap row only", src: adopt.Source{Tool: adopt.Goose}, setup: gooseDDL},
		{name: "goose down by is_applied=false (older releases)", src: adopt.Source{Tool: adopt.Goose},
			setup: gooseDDL + `; INSERT INTO %[1]s (version_id, is_applied) VALUES (1, true), (2, true), (3, true), (3, false)`,
			want:  []int64{1, 2}, ver: 2},
		{name: "goose down then up again", src: adopt.Source{Tool: adopt.Goose},
			setup: gooseDDL + `; INSERT INTO %[1]s (version_id, is_applied) VALUES (1, true), (2, true), (2, false), (2, true)`,
			want:  []int64{1, 2}, ver: 2},
		{name: "goose gap", src: adopt.Source{Tool: adopt.Goose},
			setup: gooseDDL + `; INSERT INTO %[1]s (version_id, is_applied) VALUES (1, true), (3, true), (4, true)`,
			kind:  adopt.KindGap, msg: "never applied version(s) 2"},
		{name: "goose unknown version", src: adopt.Source{Tool: adopt.Goose},
			setup: gooseDDL + `; INSERT INTO %[1]s (version_id, is_applied) VALUES (1, true), (6, true)`,
			kind:  adopt.KindUnknownVersion, msg: "6"},
		{name: "goose -table", src: adopt.Source{Tool: adopt.Goose, Table: "goose_custom"}, table: "goose_custom",
			setup: gooseDDL + `; INSERT INTO %[1]s (version_id, is_applied) VALUES (1, true)`, want: []int64{1}, ver: 1},
		{name: "goose missing", src: adopt.Source{Tool: adopt.Goose}, kind: adopt.KindMissingTable, msg: `"goose_db_version"`},

		{name: "tern at 4", src: adopt.Source{Tool: adopt.Tern},
			setup: ternDDL + `; INSERT INTO %[1]s VALUES (4)`, want: []int64{1, 2, 3, 4}, ver: 4},
		{name: "tern at 0", src: adopt.Source{Tool: adopt.Tern}, setup: ternDDL + `; INSERT INTO %[1]s VALUES (0)`},
		{name: "tern no row", src: adopt.Source{Tool: adopt.Tern}, setup: ternDDL, kind: adopt.KindRowCount, msg: "0 rows"},
		{name: "tern two rows", src: adopt.Source{Tool: adopt.Tern}, setup: ternDDL + `; INSERT INTO %[1]s VALUES (1), (2)`,
			kind: adopt.KindRowCount},
		{name: "tern unknown", src: adopt.Source{Tool: adopt.Tern}, setup: ternDDL + `; INSERT INTO %[1]s VALUES (9)`,
			kind: adopt.KindUnknownVersion, msg: "version 9"},
		{name: "tern missing", src: adopt.Source{Tool: adopt.Tern}, kind: adopt.KindMissingTable,
			msg: `"public"."schema_version" (missing_table): tern's version table not found in schema public`},
		{name: "tern wrong columns", src: adopt.Source{Tool: adopt.Tern}, setup: `CREATE TABLE %[1]s (v int)`,
			kind: adopt.KindWrongColumns},

		{name: "dbmate at 3", src: adopt.Source{Tool: adopt.Dbmate},
			setup: dbmateDDL + `; INSERT INTO %[1]s VALUES ('3'), ('1'), ('002')`, want: []int64{1, 2, 3}, ver: 3},
		{name: "dbmate empty: nothing applied", src: adopt.Source{Tool: adopt.Dbmate}, setup: dbmateDDL},
		{name: "dbmate gap", src: adopt.Source{Tool: adopt.Dbmate}, setup: dbmateDDL + `; INSERT INTO %[1]s VALUES ('1'), ('3')`,
			kind: adopt.KindGap, msg: "dbmate is at version 3 but never applied version(s) 2"},
		{name: "dbmate unknown version", src: adopt.Source{Tool: adopt.Dbmate}, setup: dbmateDDL + `; INSERT INTO %[1]s VALUES ('1'), ('20240101000000')`,
			kind: adopt.KindUnknownVersion, msg: "dbmate applied version(s) 20240101000000"},
		{name: "dbmate version not a number", src: adopt.Source{Tool: adopt.Dbmate}, setup: dbmateDDL + `; INSERT INTO %[1]s VALUES ('1a')`,
			kind: adopt.KindUnknownVersion, msg: `"1a"`},
		{name: "dbmate version spelled twice", src: adopt.Source{Tool: adopt.Dbmate}, setup: dbmateDDL + `; INSERT INTO %[1]s VALUES ('1'), ('01')`,
			kind: adopt.KindUnknownVersion, msg: "two spellings"},
		{name: "dbmate --migrations-table in a schema", src: adopt.Source{Tool: adopt.Dbmate, Schema: "ops", Table: "dbmate_versions"},
			table: "ops.dbmate_versions", setup: `CREATE SCHEMA ops; ` + dbmateDDL + `; INSERT INTO %[1]s VALUES ('1'), ('2')`,
			want: []int64{1, 2}, ver: 2},
		{name: "dbmate missing", src: adopt.Source{Tool: adopt.Dbmate}, kind: adopt.KindMissingTable,
			msg: `"schema_migrations" (missing_table): dbmate's version table not found in the search path`},
		{name: "dbmate on golang-migrate's table", src: adopt.Source{Tool: adopt.Dbmate},
			setup: golangMigrateDDL + `; INSERT INTO %[1]s VALUES (3, false)`, kind: adopt.KindWrongColumns, msg: "lockmigrate adopt golang-migrate"},
		{name: "golang-migrate on dbmate's table", src: adopt.Source{Tool: adopt.GolangMigrate},
			setup: dbmateDDL + `; INSERT INTO %[1]s VALUES ('3')`, kind: adopt.KindWrongColumns, msg: "lockmigrate adopt dbmate"},
		{name: "dbmate on another table", src: adopt.Source{Tool: adopt.Dbmate}, setup: `CREATE TABLE %[1]s (version text, note text)`,
			kind: adopt.KindWrongColumns, msg: "not dbmate's version table"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := pgtest.Shared().NewDB(t)
			conn, err := pgx.Connect(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			if tt.setup != "" {
				table := tt.table
				if table == "" {
					table = tt.src.WithDefaults().Table
					if s := tt.src.WithDefaults().Schema; s != "" {
						table = s + "." + table
					}
				}
				if _, err := conn.Exec(ctx, strings.ReplaceAll(tt.setup, "%[1]s", table)); err != nil {
					t.Fatalf("setup: %v", err)
				}
			}
			res, err := adopt.Read(ctx, conn, tt.src, set)
			if tt.kind != "" {
				var ae *adopt.Error
				if !errors.As(err, &ae) || ae.Kind != tt.kind || ae.Tool != tt.src.Tool || !strings.Contains(err.Error(), tt.msg) {
					t.Fatalf("Read = %+v, %v; want %s containing %q", res, err, tt.kind, tt.msg)
				}
				return
			}
			if err != nil || !slices.Equal(res.Versions, tt.want) || res.Version != tt.ver {
				t.Fatalf("Read = %+v, %v; want versions %v, version %d", res, err, tt.want, tt.ver)
			}
		})
	}
}

func TestReadUnknownTool(t *testing.T) {
	if _, err := adopt.Read(context.Background(), nil, adopt.Source{Tool: "flyway"}, nil); err == nil ||
		!strings.Contains(err.Error(), "golang-migrate, goose, tern, dbmate") {
		t.Fatalf("Read(flyway) = %v", err)
	}
}
