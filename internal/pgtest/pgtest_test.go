package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func TestMain(m *testing.M) {
	os.Exit(Main(m, Options{}))
}

func queryString(t *testing.T, conn *pgx.Conn, sql string, args ...any) string {
	t.Helper()
	var s string
	if err := conn.QueryRow(context.Background(), sql, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func TestNewDBDistinct(t *testing.T) {
	s := Shared()
	url1, url2 := s.NewDB(t), s.NewDB(t)
	if url1 == url2 {
		t.Fatalf("NewDB returned the same URL twice: %s", url1)
	}
	c1, c2 := Connect(t, url1), Connect(t, url2)
	db1 := queryString(t, c1, "SELECT current_database()")
	db2 := queryString(t, c2, "SELECT current_database()")
	if db1 == db2 {
		t.Fatalf("both URLs lead to database %s", db1)
	}
	t.Logf("databases: %s, %s", db1, db2)

	ctx := context.Background()
	if _, err := c1.Exec(ctx, "CREATE TABLE only_in_first (id int)"); err != nil {
		t.Fatal(err)
	}
	if got := queryString(t, c1, "SELECT coalesce(to_regclass('only_in_first')::text, '')"); got != "only_in_first" {
		t.Fatalf("table missing in first database: %q", got)
	}
	if got := queryString(t, c2, "SELECT coalesce(to_regclass('only_in_first')::text, '')"); got != "" {
		t.Fatalf("table leaked into second database: %q", got)
	}
}

func TestNewDBParallel(t *testing.T) {
	s := Shared()
	for i := range 8 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			conn := Connect(t, s.NewDB(t))
			if _, err := conn.Exec(context.Background(), "CREATE TABLE t (id int)"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestNewDBDropped(t *testing.T) {
	s := Shared()
	var name string
	t.Run("create", func(t *testing.T) {
		name = queryString(t, Connect(t, s.NewDB(t)), "SELECT current_database()")
	})
	conn := Connect(t, s.AdminURL("postgres"))
	if n := queryString(t, conn, "SELECT count(*)::text FROM pg_database WHERE datname = $1", name); n != "0" {
		t.Fatalf("database %s still exists after its test finished", name)
	}
}

func TestDBName(t *testing.T) {
	cases := []struct {
		test string
		seq  int64
		want string
	}{
		{"TestFoo", 1, "t_testfoo_1"},
		{"TestFoo/sub case#01", 12, "t_testfoo_sub_case_01_12"},
		{"Test/ünïcode--x", 3, "t_test_n_code_x_3"},
	}
	for _, c := range cases {
		if got := dbName(c.test, c.seq); got != c.want {
			t.Errorf("dbName(%q, %d) = %q, want %q", c.test, c.seq, got, c.want)
		}
	}
	long := dbName(strings.Repeat("TestVeryLongName/", 20), 123456)
	if len(long) > 63 || !strings.HasSuffix(long, "_123456") || strings.Contains(long, "__") {
		t.Errorf("bad long name %q (%d bytes)", long, len(long))
	}
}

func TestCreateRolePassword(t *testing.T) {
	s := Shared()
	db := s.NewDB(t)
	dbName := queryString(t, Connect(t, db), "SELECT current_database()")
	const role, password = "lm_app", `s3cr'et\pw`
	s.CreateRole(t, role, password)
	// PostgreSQL 15 no longer lets PUBLIC create in schema public.
	if err := s.Exec(context.Background(), dbName, "GRANT CREATE ON SCHEMA public TO "+role); err != nil {
		t.Fatal(err)
	}

	conn := Connect(t, s.URLFor(dbName, role, password))
	if got := queryString(t, conn, "SELECT current_user::text"); got != role {
		t.Fatalf("current_user = %q, want %q", got, role)
	}
	// The role owns an object in the test database; cleanup must still be
	// able to drop the role (databases are dropped first).
	if _, err := conn.Exec(context.Background(), "CREATE TABLE owned_by_role (id int)"); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bad, err := pgx.Connect(ctx, s.URLFor(dbName, role, "wrong"))
	if err == nil {
		_ = bad.Close(ctx)
		t.Fatal("connected with a wrong password")
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
		t.Fatalf("wrong password: got %v, want SQLSTATE 28P01", err)
	}
}

func TestRestartKeepsData(t *testing.T) {
	s := Shared()
	url := s.NewDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dbName := queryString(t, Connect(t, url), "SELECT current_database()")
	if err := s.Exec(ctx, dbName, "CREATE TABLE survivor (id int); INSERT INTO survivor VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	port := s.Port()
	start := time.Now()
	if err := s.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("Restart took %s", time.Since(start))
	if s.Port() != port {
		t.Fatalf("port changed from %d to %d", port, s.Port())
	}
	if got := queryString(t, Connect(t, url), "SELECT id::text FROM survivor"); got != "42" {
		t.Fatalf("survivor row = %q, want 42", got)
	}
}

func TestStartStop(t *testing.T) {
	start := time.Now()
	s, err := Start(Options{ExtraConf: []string{"max_connections = 20"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Start took %s (port %d, dir %s)", time.Since(start), s.Port(), s.SocketDir())
	t.Cleanup(func() { _ = s.Stop() })

	if len(s.SocketDir()+"/.s.PGSQL.65535") >= 100 {
		t.Errorf("socket path too long: %s", s.SocketDir())
	}
	conn := Connect(t, s.AdminURL("postgres"))
	if got := queryString(t, conn, "SHOW max_connections"); got != "20" {
		t.Errorf("max_connections = %s, want 20 (ExtraConf must win)", got)
	}
	if got := queryString(t, conn, "SHOW password_encryption"); got != "scram-sha-256" {
		t.Errorf("password_encryption = %s", got)
	}
	if got := queryString(t, conn, "SHOW fsync"); got != "off" {
		t.Errorf("fsync = %s", got)
	}
	_ = conn.Close(context.Background())

	// The Unix socket works as well.
	sock := Connect(t, fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres", s.SocketDir(), s.Port()))
	_ = sock.Close(context.Background())

	pid := s.proc.pid
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.SocketDir()); !os.IsNotExist(err) {
		t.Errorf("cluster directory %s still exists after Stop (stat: %v)", s.SocketDir(), err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("postmaster %d still running after Stop (kill 0: %v)", pid, err)
	}
	if err := s.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if err := s.Restart(context.Background()); err == nil {
		t.Error("Restart after Stop succeeded")
	}
}

func TestMissingBinaries(t *testing.T) {
	_, err := Start(Options{BinDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "server binaries not found") || !strings.Contains(err.Error(), "PG_BIN") {
		t.Fatalf("Start with empty BinDir: %v", err)
	}
}

func TestStartFailureReportsLog(t *testing.T) {
	_, err := Start(Options{ExtraConf: []string{"no_such_setting = 1"}})
	if err == nil {
		t.Fatal("Start with an invalid setting succeeded")
	}
	if !strings.Contains(err.Error(), "server log tail") || !strings.Contains(err.Error(), "no_such_setting") {
		t.Fatalf("error lacks the server log tail: %v", err)
	}
}
