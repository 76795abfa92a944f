// Command floor is the lower bound the benchmark compares migrators with.
//
// Without FLOOR_DIR it opens one pgx connection (DATABASE_URL), sends one
// statement, SELECT pg_try_advisory_lock(1), and exits: any migrator's
// "nothing to do" start costs at least process start, one connection and one
// round trip.
//
// With FLOOR_DIR it is the least a lock-then-apply migrator can do: it takes
// pg_try_advisory_lock(1) and exits 0 if another session holds it (like
// lockmigrate's skip mode); otherwise it creates floor_history if missing,
// reads the applied versions, and applies every other "<version>_*.sql" file
// of FLOOR_DIR in version order, each file and its history row in one
// transaction sent as one simple-protocol query ("<file>\n;INSERT INTO
// floor_history ..."), which PostgreSQL runs as one implicit transaction:
// one round trip per migration. It validates nothing and reports nothing:
// it is a floor, not a tool.
//
// It uses the same query mode as lockmigrate (exec: one round trip per
// statement, no prepared statement cache).
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

func main() {
	if err := run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	cfg, err := pgx.ParseConfig(os.Getenv("DATABASE_URL"))
	if err != nil {
		return err
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var won bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock(1)").Scan(&won); err != nil {
		return err
	}
	dir := os.Getenv("FLOOR_DIR")
	if dir == "" || !won {
		return nil
	}
	return apply(ctx, conn, dir)
}

type file struct {
	version int64
	path    string
}

func apply(ctx context.Context, conn *pgx.Conn, dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var files []file
	for _, e := range entries {
		head, _, ok := strings.Cut(e.Name(), "_")
		if !ok || e.IsDir() || !strings.HasSuffix(e.Name(), ".sql") {
			continue
		}
		v, err := strconv.ParseInt(head, 10, 64)
		if err != nil {
			return fmt.Errorf("%s: %w", e.Name(), err)
		}
		files = append(files, file{v, filepath.Join(dir, e.Name())})
	}
	slices.SortFunc(files, func(a, b file) int { return int(a.version - b.version) })

	if _, err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS floor_history (version bigint PRIMARY KEY)"); err != nil {
		return err
	}
	rows, err := conn.Query(ctx, "SELECT version FROM floor_history")
	if err != nil {
		return err
	}
	done, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return err
	}
	for _, f := range files {
		if slices.Contains(done, f.version) {
			continue
		}
		sql, err := os.ReadFile(f.path)
		if err != nil {
			return err
		}
		// The newline keeps the separator out of a trailing comment.
		q := string(sql) + "\n;INSERT INTO floor_history (version) VALUES (" + strconv.FormatInt(f.version, 10) + ")"
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", f.path, err)
		}
	}
	return nil
}
