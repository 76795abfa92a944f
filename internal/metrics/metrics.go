// Package metrics turns the result of one lockmigrate run into Prometheus
// metric families and pushes them to a Pushgateway.
//
// A Pushgateway keeps, per grouping key, the last pushed value of every
// metric family; a push with POST ("add") replaces only the families it
// carries. Every run therefore pushes only the families it knows to be true:
// a replica that skipped (another one held the lock) pushes its lock
// metrics, but not the schema version or the success timestamp, which would
// otherwise overwrite what the replica that applied the migrations pushed.
// Runs of all replicas share one group (no pod name in the grouping key):
// the Pushgateway never forgets a group, and pod names change every rollout.
//
// The families are client_golang gauges, gathered from a registry of the
// push's own and sent with its push package: client_golang is the
// project's specified metrics dependency, and it maintains the exposition
// format and the Pushgateway protocol (protobuf body, @base64 grouping
// values) that this package used to write by hand. The registry is private,
// never the default one, because the default one also carries the Go and
// process collectors, which would push the memory and file descriptors of a
// process that lives a second into the group every replica shares.
//
// The price is package initialisation, which every start pays whether it
// pushes or not: procfs compiles its regular expressions, client_golang
// registers those default collectors in the default registry, protobuf sets
// up its descriptors. Measured on "lockmigrate version" (Go 1.26,
// linux/amd64, CGO_ENABLED=0 -trimpath -ldflags "-s -w"), client_golang
// v1.25.0 against the hand-written code: binary 11.5 -> 13.5 MB (+2.1 MB);
// start-up 1.52 M -> 3.14 M instructions (callgrind, median of 10), of the
// extra 1.6 M about 40 % procfs, 37 % client_golang's own init and 15 %
// protobuf; about +1 ms of wall time and +1.9 MB of RSS.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Outcomes, as in the run's "run finished" log event.
var Outcomes = []string{"applied", "up_to_date", "skipped", "waited", "failed"}

// ErrorKinds are the values of the kind label of lockmigrate_last_failure.
var ErrorKinds = []string{"migration", "config", "connect", "wait_timeout", "validation", "signal"}

// Run is what one run did, as far as it got.
type Run struct {
	Version   string // binary version, for lockmigrate_build_info
	Outcome   string // one of Outcomes
	ErrorKind string // one of ErrorKinds when Outcome is "failed"
	Start     time.Time
	End       time.Time

	ConnectAttempts int // 0 when the run never tried to connect

	// LockTried is set when the run called the lock (the fast path did not
	// suffice); LockConflict when it found the lock held by another session.
	LockTried    bool
	LockConflict bool
	LockAcquired bool
	LockAttempts int
	LockWait     time.Duration
	LockHeld     time.Duration

	// SchemaKnown is set when SchemaVersion and Pending describe the
	// database as the run left it: it found the schema current, or it held
	// the lock while applying.
	SchemaKnown   bool
	SchemaVersion int64
	Pending       int

	// ApplyTried is set when the run held the lock with migrations pending.
	ApplyTried         bool
	Applied            int
	LockTimeoutRetries int

	// Tenants is set by a multi-tenant run, which pushes no lock or schema
	// families (they describe one history table).
	Tenants *Tenants

	// PendingExpand and PendingContract count the pending migrations of
	// each phase (with SchemaKnown): an expand run's Pending leaves out the
	// contract files waiting for the post-rollout Job.
	PendingExpand, PendingContract int
	// Backfill is set by a run that worked on backfills.
	Backfill *Backfill
	// Lint is set by a run that linted its pending files
	// (LOCKMIGRATE_LINT): only those push lint_findings, so the replicas
	// that skip or find nothing pending never overwrite the count.
	Lint *LintFindings
}

// LintFindings counts a run's lint findings by severity.
type LintFindings struct {
	Errors, Warnings int
}

// Backfill sums what a run did of its backfills.
type Backfill struct {
	Rows, Batches int64
	Duration      time.Duration
}

// Phases are the values of the phase label of migrations_pending_phase.
var Phases = []string{"expand", "contract"}

// Tenants counts the tenants of a multi-tenant run (its shard's, when
// sharded).
type Tenants struct {
	Total   int // tenants of the run
	Pending int // not confirmed current at the end: failed, skipped or not attempted
	Failed  int
	Applied int // tenants this run migrated
}

// Succeeded reports whether the run confirmed the schema is current.
func (r Run) Succeeded() bool {
	return r.Outcome == "applied" || r.Outcome == "up_to_date" || r.Outcome == "waited"
}

// families collects a run's gauges; every name is prefixed lockmigrate_.
type families []prometheus.Collector

func gaugeOpts(name, help string) prometheus.GaugeOpts {
	return prometheus.GaugeOpts{Namespace: "lockmigrate", Name: name, Help: help}
}

func (fs *families) gauge(name, help string, v float64) {
	g := prometheus.NewGauge(gaugeOpts(name, help))
	g.Set(v)
	*fs = append(*fs, g)
}

// oneOf is a family with one sample per value of label, 1 for the value
// that holds and 0 for the others, so a query never sees a stale 1.
func (fs *families) oneOf(name, help, label string, values []string, holds string) {
	g := prometheus.NewGaugeVec(gaugeOpts(name, help), []string{label})
	for _, v := range values {
		g.WithLabelValues(v).Set(boolf(v == holds))
	}
	*fs = append(*fs, g)
}

// byLabel is a family with one sample per value of label, values[i] for
// labels[i].
func (fs *families) byLabel(name, help, label string, labels []string, values []float64) {
	g := prometheus.NewGaugeVec(gaugeOpts(name, help), []string{label})
	for i, l := range labels {
		g.WithLabelValues(l).Set(values[i])
	}
	*fs = append(*fs, g)
}

func unix(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

func boolf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Families returns exactly the families this run should push, as gauges to
// register in a registry, which gathers them sorted by name. The families,
// by who pushes them:
//
//   - every run: build_info, last_run_timestamp_seconds,
//     run_duration_seconds, run_outcome{outcome}, connect_attempts;
//   - runs that called the lock: lock_acquired, lock_wait_seconds,
//     lock_attempts; those that found it held also
//     last_lock_conflict_timestamp_seconds;
//   - runs that held it: lock_held_seconds;
//   - runs that held it with work to do: migrations_applied,
//     lock_timeout_retries;
//   - runs that know the schema: schema_version, migrations_pending,
//     migrations_pending_phase{phase};
//   - runs that ran a backfill: backfill_rows, backfill_batches,
//     backfill_duration_seconds;
//   - successful runs: last_success_timestamp_seconds;
//   - failed runs: last_failure_timestamp_seconds, last_failure{kind};
//   - multi-tenant runs: tenants_total, tenants_pending, tenants_failed,
//     tenants_applied;
//   - runs that linted their pending files: lint_findings{severity}.
func (r Run) Families() []prometheus.Collector {
	var fs families
	// One value, which holds: build_info is always 1.
	fs.oneOf("build_info", "Version of the lockmigrate binary of the last run (always 1).", "version", []string{r.Version}, r.Version)
	fs.gauge("last_run_timestamp_seconds", "Unix time at which the last run ended.", unix(r.End))
	fs.gauge("run_duration_seconds", "Wall time of the last run, connection included.", r.End.Sub(r.Start).Seconds())
	fs.oneOf("run_outcome", "Outcome of the last run: 1 for its outcome, 0 for the others.", "outcome", Outcomes, r.Outcome)
	fs.gauge("connect_attempts", "Connection attempts of the last run (above 1: it retried).", float64(r.ConnectAttempts))

	if r.LockTried {
		fs.gauge("lock_acquired", "1 if the last run that tried the advisory lock won it, 0 if not.", boolf(r.LockAcquired))
		fs.gauge("lock_wait_seconds", "Time the last run that tried the lock spent between its first try and the grant or giving up.", r.LockWait.Seconds())
		fs.gauge("lock_attempts", "Try-lock calls of the last run that tried the lock (above 1: it waited and retried).", float64(r.LockAttempts))
		if r.LockConflict {
			fs.gauge("last_lock_conflict_timestamp_seconds", "Unix time of the last run that found the lock held by another session.", unix(r.End))
		}
	}
	if r.LockAcquired {
		fs.gauge("lock_held_seconds", "Time the last run that won the lock held it.", r.LockHeld.Seconds())
	}
	if r.ApplyTried {
		fs.gauge("migrations_applied", "Migrations applied by the last run that had migrations to apply.", float64(r.Applied))
		fs.gauge("lock_timeout_retries", "lock_timeout (55P03) retries of the last run that had migrations to apply.", float64(r.LockTimeoutRetries))
	}
	if r.SchemaKnown {
		fs.gauge("schema_version", "Highest applied migration version, as last confirmed.", float64(r.SchemaVersion))
		fs.gauge("migrations_pending", "Migrations of the binary not yet applied, as last confirmed.", float64(r.Pending))
	}
	if r.SchemaKnown {
		fs.byLabel("migrations_pending_phase", "Migrations of the binary not yet applied, per phase (expand: before the rollout; contract: after it), as last confirmed.",
			"phase", Phases, []float64{float64(r.PendingExpand), float64(r.PendingContract)})
	}
	if b := r.Backfill; b != nil {
		fs.gauge("backfill_rows", "Rows changed by backfill batches in the last run that ran a backfill.", float64(b.Rows))
		fs.gauge("backfill_batches", "Backfill batches that changed rows in the last run that ran a backfill.", float64(b.Batches))
		fs.gauge("backfill_duration_seconds", "Time the last run that ran a backfill spent in backfills, pauses included.", b.Duration.Seconds())
	}
	if t := r.Tenants; t != nil {
		fs.gauge("tenants_total", "Tenants of the last multi-tenant run (of its shard).", float64(t.Total))
		fs.gauge("tenants_pending", "Tenants the last multi-tenant run left not confirmed current (failed, skipped or not attempted).", float64(t.Pending))
		fs.gauge("tenants_failed", "Tenants whose migration failed in the last multi-tenant run.", float64(t.Failed))
		fs.gauge("tenants_applied", "Tenants the last multi-tenant run applied migrations to.", float64(t.Applied))
	}
	if l := r.Lint; l != nil {
		g := prometheus.NewGaugeVec(gaugeOpts("lint_findings", "Lint findings in the pending files of the last run that linted them, by severity."), []string{"severity"})
		g.WithLabelValues("error").Set(float64(l.Errors))
		g.WithLabelValues("warning").Set(float64(l.Warnings))
		fs = append(fs, g)
	}
	if r.Succeeded() {
		fs.gauge("last_success_timestamp_seconds", "Unix time of the last run that confirmed the schema current (applied, up_to_date or waited).", unix(r.End))
	}
	if r.Outcome == "failed" {
		fs.gauge("last_failure_timestamp_seconds", "Unix time of the last failed run.", unix(r.End))
		fs.oneOf("last_failure", "Kind of the last failure: 1 for its kind, 0 for the others.", "kind", ErrorKinds, r.ErrorKind)
	}
	return fs
}
