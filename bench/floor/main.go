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
// With FLOOR_READ (a directory) and no FLOOR_DIR it is the least a no-op
// that checks every file's bytes can do: while it connects and sends the
// try-lock, it reads every "*.sql" file of FLOOR_READ to its end (open,
// read until EOF, close: the system calls any reader of a file makes), on
// GOMAXPROCS goroutines from 512 files on, as lockmigrate's loader does. It
// hashes and parses nothing. Its slope over the applied migrations is the
// kernel's cost per file, against which lockmigrate's directory slope is
// read (bench/scale).
//
// It uses the same query mode as lockmigrate (exec: one round trip per
// statement, no prepared statement cache).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/jackc/pgx/v5"
)

func main() {
	if err := run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	read := make(chan error, 1)
	if dir := os.Getenv("FLOOR_READ"); dir != "" && os.Getenv("FLOOR_DIR") == "" {
		go func() { read <- readAll(dir) }()
	} else {
		read <- nil
	}
	if err := connectAndTry(ctx); err != nil {
		return err
	}
	return <-read
}

func connectAndTry(ctx context.Context) error {
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

// readAll reads every "*.sql" file of dir to its end.
func readAll(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var names []string
	for _, e := range entries {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".sql") {
			names = append(names, filepath.Join(dir, e.Name()))
		}
	}
	workers := 1
	if len(names) >= 512 {
		workers = runtime.GOMAXPROCS(0)
	}
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		errs = make([]error, workers)
	)
	for w := range workers {
		wg.Go(func() {
			buf := make([]byte, 64<<10)
			for i := next.Add(1) - 1; int(i) < len(names); i = next.Add(1) - 1 {
				if err := readFile(names[i], buf); err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// readFile reads one file with the system calls alone: os.Open adds
// fcntl and epoll_ctl calls per file that a floor should not pay.
func readFile(name string, buf []byte) error {
	fd, err := syscall.Open(name, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", name, err)
	}
	defer syscall.Close(fd)
	for {
		n, err := syscall.Read(fd, buf)
		switch {
		case errors.Is(err, syscall.EINTR):
		case err != nil:
			return fmt.Errorf("read %s: %w", name, err)
		case n == 0:
			return nil
		}
	}
}
