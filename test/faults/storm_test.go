package faults

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lockmigrate/lockmigrate/internal/bintest"
	"github.com/lockmigrate/lockmigrate/internal/pgtest"
)

// TestConnectionStorm releases 100 processes at one barrier against a server
// with room for 17 ordinary connections (max_connections 20, 3 reserved for
// superusers). The lock holder's migration takes a second, and the others
// wait for it in wait mode, each holding a connection, so most of them are
// refused with 53300 at first and must retry within their connect budget.
func TestConnectionStorm(t *testing.T) {
	const procs = 100
	srv, err := pgtest.Start(pgtest.Options{MaxConnections: 20, ExtraConf: []string{"superuser_reserved_connections = 3"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	d := newTestDB(t, srv)
	dir := bintest.WriteDir(t, map[string]string{
		"1_log.sql":   "CREATE TABLE applied_log (version int NOT NULL, who text NOT NULL);\nINSERT INTO applied_log VALUES (1, current_setting('application_name'));\n",
		"2_slow.sql":  "CREATE TABLE storm (id int);\nSELECT pg_sleep(1);\nINSERT INTO applied_log VALUES (2, current_setting('application_name'));\n",
		"3_index.sql": "-- lockmigrate:no-transaction\nCREATE INDEX CONCURRENTLY storm_id ON storm (id);\nINSERT INTO applied_log VALUES (3, current_setting('application_name'));\n",
	})
	envs := make([]map[string]string, procs)
	for i := range envs {
		envs[i] = bintest.With(d.env(dir), "POD_NAME", fmt.Sprintf("storm-%03d", i),
			"LOCKMIGRATE_CONNECT_TIMEOUT", "60s", "LOCKMIGRATE_ON_LOCKED", "wait", "LOCKMIGRATE_WAIT_TIMEOUT", "60s")
	}
	start := time.Now()
	results, err := group(envs, 100*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	wall := time.Since(start)

	var (
		times                   []time.Duration
		outcomes                = map[string]int{}
		codes                   = map[int]int{}
		with53300, retries      int
		maxAttempts, maxAttempt float64
		failures                []string
		otherRetryErrors        = map[string]int{}
	)
	for i, r := range results {
		bintest.CheckNoSecrets(t, r.Stdout, r.Stderr)
		codes[r.Code]++
		times = append(times, r.Elapsed)
		fin := r.LastFinished()
		outcomes[str(fin, "outcome")]++
		if r.Code != 0 {
			failures = append(failures, fmt.Sprintf("process %d: %s", i, r.Brief()))
		}
		saw := false
		for _, ev := range r.JSONEvents() {
			if ev["msg"] != "connect failed, retrying" {
				continue
			}
			retries++
			maxAttempt = max(maxAttempt, num(ev, "attempt"))
			if e := str(ev, "error"); strings.Contains(e, "53300") {
				saw = true
			} else {
				otherRetryErrors[e]++
			}
		}
		if saw {
			with53300++
		}
		maxAttempts = max(maxAttempts, num(fin, "lock_attempts"))
	}
	minT, medT, p90T, maxT := durStats(times)
	t.Logf("exit codes %v, outcomes %v", codes, outcomes)
	t.Logf("%d of %d processes logged a 53300 retry; %d connect retries in all, at most %v attempts by one process",
		with53300, procs, retries, maxAttempt+1)
	if len(otherRetryErrors) > 0 {
		t.Logf("other retried connect errors: %v", otherRetryErrors)
	}
	t.Logf("time to finish from the barrier: min %s median %s p90 %s max %s (wall %s); most lock attempts by one process %v",
		ms(minT), ms(medT), ms(p90T), ms(maxT), ms(wall), maxAttempts)
	summary(t, "processes=%d exit0=%d applied=%d with_53300_retry=%d median=%s max=%s",
		procs, codes[0], outcomes["applied"], with53300, ms(medT), ms(maxT))

	for _, f := range failures {
		t.Error(f)
	}
	if outcomes["applied"] != 1 {
		t.Errorf("outcomes %v: want exactly one applied", outcomes)
	}
	if with53300 == 0 {
		t.Errorf("no process logged a 53300 retry: the storm did not exhaust the connections")
	}
	ctx := context.Background()
	var rows, versions int64
	c := mustConnect(t, d.admin)
	if err := c.QueryRow(ctx, `SELECT count(*), count(DISTINCT version) FROM applied_log`).Scan(&rows, &versions); err != nil || rows != 3 || versions != 3 {
		t.Errorf("applied_log: %d rows for %d versions (%v), want 3 and 3", rows, versions, err)
	}
	if n := mustInt(t, d.admin, `SELECT count(*) FROM lockmigrate_history WHERE state = 'applied'`); n != 3 {
		t.Errorf("history: %d applied, want 3", n)
	}
	if _, err := waitNoAdvisoryLocks(ctx, d.admin, 5*time.Second); err != nil {
		t.Error(err)
	}
}
