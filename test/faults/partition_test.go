package faults

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lockmigrate/lockmigrate/internal/bintest"
	"github.com/lockmigrate/lockmigrate/internal/pgtest"
)

// The private /30 between the root namespace (the server side) and the
// client namespace this test creates. Traffic on it never leaves the
// machine: both ends are interfaces of a veth pair made here.
const (
	partNet        = "10.231.0."
	partServerAddr = partNet + "1"
	partClientAddr = partNet + "2"
)

// TestPartitionedHolder cuts the lock holder off from its server mid-migration
// with DROP rules both ways, and measures how long the server keeps the dead
// session's advisory lock (the keepalive settings bound it to ~25 s), how
// long a wait-mode replica on another path takes to apply the migration in
// its place, and that the partitioned process gives up instead of hanging.
func TestPartitionedHolder(t *testing.T) {
	if why := netnsUsable(); why != "" {
		t.Skipf("network namespaces or iptables cannot be used here (%s): the partition cannot be simulated", why)
	}
	sweepStaleNetwork()
	if out, _ := exec.Command("ip", "-4", "-o", "addr").CombinedOutput(); strings.Contains(string(out), partNet) {
		t.Skipf("%s0/24 is already in use on this machine:\n%s", partNet, out)
	}
	id := strconv.Itoa(os.Getpid() % 100000)
	// Interface names are limited to 15 bytes; namespace names are not.
	ns, hostIf, clientIf, tag := "lmf-part-"+strconv.Itoa(os.Getpid()), "lmfh"+id, "lmfc"+id, "lmf-"+strconv.Itoa(os.Getpid())

	// Network: a veth pair, server end in the root namespace, client end in ns.
	must := func(name string, args ...string) {
		t.Helper()
		if err := run(name, args...); err != nil {
			t.Fatal(err)
		}
	}
	must("ip", "netns", "add", ns)
	t.Cleanup(func() {
		// Deleting the namespace deletes the client end and so the pair.
		if err := run("ip", "netns", "del", ns); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		_ = run("ip", "link", "del", hostIf)
	})
	must("ip", "link", "add", hostIf, "type", "veth", "peer", "name", clientIf)
	must("ip", "link", "set", clientIf, "netns", ns)
	must("ip", "addr", "add", partServerAddr+"/30", "dev", hostIf)
	must("ip", "link", "set", hostIf, "up")
	must("ip", "netns", "exec", ns, "ip", "addr", "add", partClientAddr+"/30", "dev", clientIf)
	must("ip", "netns", "exec", ns, "ip", "link", "set", clientIf, "up")
	must("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")

	// A dedicated server listening on loopback and on the veth address, with
	// the harness's pg_hba rules plus password logins from the client end.
	hba := filepath.Join(publicDir(t), "pg_hba.conf")
	if err := os.WriteFile(hba, []byte("local all all trust\n"+
		"host all postgres 127.0.0.1/32 trust\n"+
		"host all all 127.0.0.1/32 scram-sha-256\n"+
		"host all all "+partClientAddr+"/32 scram-sha-256\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv, err := pgtest.Start(pgtest.Options{ExtraConf: []string{
		"listen_addresses = '127.0.0.1," + partServerAddr + "'",
		"hba_file = '" + hba + "'",
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })

	d := newTestDB(t, srv)
	conn := mustConnect(t, d.url)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, `CREATE TABLE applied_log (who text NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	// The file sleeps 60 s only for the partitioned holder, so the replica
	// applies the same file (same checksum) at once.
	dir := bintest.WriteDir(t, map[string]string{"1_long.sql": `CREATE TABLE part (id int);
INSERT INTO applied_log (who) VALUES (current_setting('application_name'));
SELECT pg_sleep(CASE WHEN current_setting('application_name') = 'lockmigrate/partitioned' THEN 60 ELSE 0 END);
`})
	holderURL := strings.Replace(d.url, "127.0.0.1:", partServerAddr+":", 1)
	holder, err := startProc(bintest.With(d.env(dir), "DATABASE_URL", holderURL, "POD_NAME", "partitioned"),
		runOpts{wrap: []string{"ip", "netns", "exec", ns}}, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.kill(); holder.wait(5 * time.Second) })

	watch := mustConnect(t, d.admin)
	pid, err := waitActive(ctx, watch, "lockmigrate/partitioned", "pg_sleep(CASE", 20*time.Second)
	if err != nil {
		r, _ := holder.wait(time.Second)
		t.Fatalf("holder never ran its migration: %v\n%s", err, r.Brief())
	}
	var addr string
	var locks int
	if err := watch.QueryRow(ctx, `SELECT host(client_addr), (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1)
  FROM pg_stat_activity WHERE pid = $1`, pid).Scan(&addr, &locks); err != nil || addr != partClientAddr || locks != 1 {
		t.Fatalf("holder backend %d: client %q, %d advisory locks (%v); want %s and 1", pid, addr, locks, err, partClientAddr)
	}
	t.Logf("holder backend pid %d from %s holds the lock and runs pg_sleep(60)", pid, addr)

	// Partition: drop every packet arriving on either end of the pair.
	rootRule := []string{"INPUT", "-i", hostIf, "-m", "comment", "--comment", tag, "-j", "DROP"}
	must("iptables", append([]string{"-I"}, rootRule...)...)
	t.Cleanup(func() {
		if err := run("iptables", append([]string{"-D"}, rootRule...)...); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	must("ip", "netns", "exec", ns, "iptables", "-I", "INPUT", "-i", clientIf, "-j", "DROP")
	partitioned := time.Now()
	t.Logf("partitioned at %s", partitioned.Format("15:04:05.000"))

	// A wait-mode replica on loopback, and a poller for the dead lock.
	replica, err := startProc(bintest.With(d.env(dir), "POD_NAME", "replica", "LOCKMIGRATE_ON_LOCKED", "wait",
		"LOCKMIGRATE_WAIT_TIMEOUT", "90s"), runOpts{}, false)
	if err != nil {
		t.Fatal(err)
	}
	var (
		releasedMu sync.Mutex
		released   time.Duration
	)
	pollDone := make(chan struct{})
	go func() {
		defer close(pollDone)
		for time.Since(partitioned) < 90*time.Second {
			var n int
			if err := watch.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1`, pid).Scan(&n); err != nil {
				return
			}
			if n == 0 {
				releasedMu.Lock()
				released = time.Since(partitioned)
				releasedMu.Unlock()
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()

	hr, hkilled := holder.wait(75 * time.Second)
	holderExit := time.Since(partitioned)
	rr, rkilled := replica.wait(90*time.Second - time.Since(partitioned))
	replicaDone := time.Since(partitioned)
	<-pollDone
	releasedMu.Lock()
	rel := released
	releasedMu.Unlock()
	bintest.CheckNoSecrets(t, hr.Stdout, hr.Stderr)
	bintest.CheckNoSecrets(t, rr.Stdout, rr.Stderr)

	t.Logf("server freed the dead session's lock %s after the partition", ms(rel))
	t.Logf("replica: exit %d, outcome %q, finished %s after the partition (lock_wait_ms %v, lock attempts %v)",
		rr.Code, str(rr.LastFinished(), "outcome"), ms(replicaDone), num(rr.LastFinished(), "lock_wait_ms"), num(rr.LastFinished(), "lock_attempts"))
	t.Logf("partitioned holder: exit %d %s after the partition; error: %s", hr.Code, ms(holderExit), str(hr.LastFinished(), "error"))
	t.Logf("partitioned holder's log:\n%s", hr.Stderr)
	summary(t, "lock_released=%s replica_done=%s replica_exit=%d holder_exit=%d after %s",
		ms(rel), ms(replicaDone), rr.Code, hr.Code, ms(holderExit))

	if rel == 0 || rel > 30*time.Second {
		t.Errorf("the dead holder's lock was released after %s (0 = not within 90 s), want < 30 s", ms(rel))
	}
	if hkilled || hr.Code == 0 || holderExit > 60*time.Second {
		t.Errorf("partitioned holder: exit %d after %s (killed by the test: %v), want non-zero within 60 s\n%s",
			hr.Code, ms(holderExit), hkilled, hr.Brief())
	}
	if rkilled || rr.Code != 0 || str(rr.LastFinished(), "outcome") != "applied" {
		t.Errorf("replica: %s", rr.Brief())
	}
	var rows int
	var who string
	if err := watch.QueryRow(ctx, `SELECT count(*), min(who) FROM applied_log`).Scan(&rows, &who); err != nil || rows != 1 || who != "lockmigrate/replica" {
		t.Errorf("applied_log: %d row(s), first by %q (%v); want exactly one, by the replica", rows, who, err)
	}
	if n := mustInt(t, d.admin, `SELECT count(*) FROM lockmigrate_history WHERE state = 'applied' AND applied_by = 'replica'`); n != 1 {
		t.Errorf("history: %d row(s) applied by the replica, want 1", n)
	}
	if _, err := waitNoAdvisoryLocks(ctx, d.admin, 5*time.Second); err != nil {
		t.Error(err)
	}
}

// sweepStaleNetwork removes namespaces (and with them their veth pairs) and
// root iptables rules that a test binary which died without cleaning up left
// behind; their names carry its pid.
func sweepStaleNetwork() {
	alive := func(pid int) bool {
		err := syscall.Kill(pid, 0)
		return err == nil || err == syscall.EPERM
	}
	if out, err := exec.Command("ip", "netns", "list").Output(); err == nil {
		re := regexp.MustCompile(`^lmf-(?:part|iso|probe)-(\d+)`)
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) == 0 {
				continue
			}
			if m := re.FindStringSubmatch(f[0]); m != nil {
				if pid, _ := strconv.Atoi(m[1]); pid != os.Getpid() && !alive(pid) {
					_ = run("ip", "netns", "del", f[0])
				}
			}
		}
	}
	if out, err := exec.Command("iptables", "-S", "INPUT").Output(); err == nil {
		re := regexp.MustCompile(`--comment "?lmf-(\d+)"?`)
		for _, line := range strings.Split(string(out), "\n") {
			m := re.FindStringSubmatch(line)
			if m == nil || !strings.HasPrefix(line, "-A ") {
				continue
			}
			if pid, _ := strconv.Atoi(m[1]); pid != os.Getpid() && !alive(pid) {
				args := strings.Fields(strings.Replace(line, "-A ", "-D ", 1))
				for i, a := range args {
					args[i] = strings.Trim(a, `"`)
				}
				_ = run("iptables", args...)
			}
		}
	}
}
