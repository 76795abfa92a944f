package faults

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lockmigrate/lockmigrate/internal/bintest"
	"github.com/lockmigrate/lockmigrate/internal/pgtest"
)

// TestReadOnlyTargets points lockmigrate at servers that cannot take writes:
// a database with default_transaction_read_only, the same with
// target_session_attrs=read-write in the URL, and a real streaming standby
// made with pg_basebackup -R (plain URL, read-write URL, and a multi-host
// URL listing the standby first, which must find the primary).
func TestReadOnlyTargets(t *testing.T) {
	ctx := context.Background()
	var figures []string
	noWrites := func(t *testing.T, admin string) {
		t.Helper()
		if n := mustInt(t, admin, `SELECT count(*) FROM pg_tables WHERE tablename = 'lockmigrate_history'`); n != 0 {
			t.Errorf("history table created on a read-only target")
		}
		if _, err := waitNoAdvisoryLocks(ctx, admin, 5*time.Second); err != nil {
			t.Error(err)
		}
	}
	dir := bintest.WriteDir(t, map[string]string{"1_t.sql": "CREATE TABLE ro_t (id int);"})

	t.Run("default_transaction_read_only", func(t *testing.T) {
		d := newTestDB(t, pgtest.Shared())
		if err := d.srv.Exec(ctx, "postgres", fmt.Sprintf(`ALTER DATABASE %s SET default_transaction_read_only = on`, ident(d.name))); err != nil {
			t.Fatal(err)
		}
		r := runBin(d.env(dir), 30*time.Second, runOpts{})
		bintest.CheckNoSecrets(t, r.Stdout, r.Stderr)
		e := str(r.LastFinished(), "error")
		t.Logf("exit %d in %s: %s", r.Code, ms(r.Elapsed), e)
		if r.Code != 3 || !strings.Contains(e, "read-only") || !strings.Contains(e, "target_session_attrs=read-write") || r.Elapsed > 5*time.Second {
			t.Errorf("want exit 3 within 5 s with the read-only advice: %s", r.Brief())
		}
		noWrites(t, d.admin)
		figures = append(figures, fmt.Sprintf("read-only db: exit %d in %s", r.Code, ms(r.Elapsed)))

		url := d.url + "&target_session_attrs=read-write"
		r = runBin(bintest.With(d.env(dir), "DATABASE_URL", url), 30*time.Second, runOpts{})
		bintest.CheckNoSecrets(t, r.Stdout, r.Stderr)
		e = str(r.LastFinished(), "error")
		t.Logf("with target_session_attrs=read-write: exit %d in %s after %d connect retries: %s",
			r.Code, ms(r.Elapsed), r.Count("connect failed, retrying"), e)
		if r.Code != 3 || !strings.Contains(e, "read only") || r.Elapsed > 5*time.Second {
			t.Errorf("want exit 3 (pgx refuses the read-only server) within 5 s: %s", r.Brief())
		}
		noWrites(t, d.admin)
		figures = append(figures, fmt.Sprintf("read-only db + read-write URL: exit %d in %s", r.Code, ms(r.Elapsed)))
	})

	t.Run("streaming standby", func(t *testing.T) {
		primary, standbyPort := startPrimaryAndStandby(t)
		d := newTestDB(t, primary)
		// The database and role reach the standby through replication.
		standbyAdmin := strings.Replace(d.admin, fmt.Sprintf(":%d/", primary.Port()), fmt.Sprintf(":%d/", standbyPort), 1)
		standbyURL := strings.Replace(d.url, fmt.Sprintf(":%d/", primary.Port()), fmt.Sprintf(":%d/", standbyPort), 1)
		deadline := time.Now().Add(30 * time.Second)
		for {
			c, err := connectURL(ctx, standbyURL)
			if err == nil {
				c.Close(ctx)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the test database never reached the standby: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}

		r := runBin(bintest.With(d.env(dir), "DATABASE_URL", standbyURL), 30*time.Second, runOpts{})
		bintest.CheckNoSecrets(t, r.Stdout, r.Stderr)
		e := str(r.LastFinished(), "error")
		t.Logf("standby, plain URL: exit %d in %s: %s", r.Code, ms(r.Elapsed), e)
		if r.Code != 3 || !strings.Contains(e, "standby") || !strings.Contains(e, "primary") || r.Elapsed > 5*time.Second {
			t.Errorf("want exit 3 within 5 s naming the standby: %s", r.Brief())
		}
		noWrites(t, standbyAdmin)
		figures = append(figures, fmt.Sprintf("standby: exit %d in %s", r.Code, ms(r.Elapsed)))

		r = runBin(bintest.With(d.env(dir), "DATABASE_URL", standbyURL+"&target_session_attrs=read-write"), 30*time.Second, runOpts{})
		bintest.CheckNoSecrets(t, r.Stdout, r.Stderr)
		t.Logf("standby, target_session_attrs=read-write: exit %d in %s: %s", r.Code, ms(r.Elapsed), str(r.LastFinished(), "error"))
		if r.Code != 3 || r.Elapsed > 5*time.Second {
			t.Errorf("want exit 3 within 5 s: %s", r.Brief())
		}
		figures = append(figures, fmt.Sprintf("standby + read-write URL: exit %d", r.Code))

		// Both hosts, standby first: read-write skips it for the primary.
		multi := fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d,127.0.0.1:%d/%s?sslmode=disable&target_session_attrs=read-write",
			d.role, urlEscape(d.password), standbyPort, primary.Port(), d.name)
		r = runBin(bintest.With(d.env(dir), "DATABASE_URL", multi), 30*time.Second, runOpts{})
		bintest.CheckNoSecrets(t, r.Stdout, r.Stderr)
		t.Logf("standby,primary with target_session_attrs=read-write: exit %d, outcome %q", r.Code, str(r.LastFinished(), "outcome"))
		if r.Code != 0 || str(r.LastFinished(), "outcome") != "applied" {
			t.Errorf("want the primary found and migrated: %s", r.Brief())
		}
		if n := mustInt(t, d.admin, `SELECT count(*) FROM lockmigrate_history`); n != 1 {
			t.Errorf("primary history: %d rows, want 1", n)
		}
		figures = append(figures, fmt.Sprintf("standby,primary + read-write URL: exit %d (%s)", r.Code, str(r.LastFinished(), "outcome")))
	})
	summary(t, "%s", strings.Join(figures, "; "))
}

func urlEscape(s string) string {
	return strings.NewReplacer("%", "%25", "/", "%2F", "@", "%40", ":", "%3A").Replace(s)
}

// startPrimaryAndStandby starts a dedicated primary that accepts replication
// from loopback, clones it with pg_basebackup -R and starts the clone as a
// hot standby on another port; both are stopped when t ends.
func startPrimaryAndStandby(t *testing.T) (*pgtest.Server, int) {
	t.Helper()
	bin := os.Getenv("PG_BIN")
	if bin == "" {
		bin = pgtest.DefaultBinDir
	}
	if _, err := os.Stat(filepath.Join(bin, "pg_basebackup")); err != nil {
		t.Skipf("pg_basebackup not found in %s: no standby can be made", bin)
	}
	pub := publicDir(t)
	hba := filepath.Join(pub, "pg_hba.conf")
	if err := os.WriteFile(hba, []byte("local all all trust\n"+
		"host all postgres 127.0.0.1/32 trust\n"+
		"host replication postgres 127.0.0.1/32 trust\n"+
		"host all all 127.0.0.1/32 scram-sha-256\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	primary, err := pgtest.Start(pgtest.Options{ExtraConf: []string{"hba_file = '" + hba + "'", "wal_level = replica"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = primary.Stop() })

	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatal(err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
		if err := os.Chown(pub, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	data := filepath.Join(pub, "standby")
	start := time.Now()
	bb := exec.Command(filepath.Join(bin, "pg_basebackup"), "-h", primary.Host(), "-p", strconv.Itoa(primary.Port()),
		"-U", "postgres", "-D", data, "-R", "-X", "stream", "--no-sync", "-c", "fast")
	bb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	bb.Env = []string{"PATH=" + os.Getenv("PATH")}
	if out, err := bb.CombinedOutput(); err != nil {
		t.Fatalf("pg_basebackup: %v\n%s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	logf, err := os.Create(filepath.Join(pub, "standby.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-c", "port="+strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="+pub, "-c", "hot_standby=on")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	admin := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := connectURL(context.Background(), admin)
		if err == nil {
			var rec bool
			err = c.QueryRow(context.Background(), "SELECT pg_is_in_recovery()").Scan(&rec)
			c.Close(context.Background())
			if err == nil && rec {
				break
			}
			if err == nil {
				t.Fatal("the clone is not in recovery")
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(pub, "standby.log"))
			t.Fatalf("standby not ready: %v\n%s", err, log)
		}
		select {
		case <-done:
			log, _ := os.ReadFile(filepath.Join(pub, "standby.log"))
			t.Fatalf("standby exited:\n%s", log)
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Logf("standby on port %d ready %s after pg_basebackup started", port, ms(time.Since(start)))
	return primary, port
}
