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
}

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

// family builds a gauge vector, registers it and returns it.
func family(reg *prometheus.Registry, name, help string, labels ...string) *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "lockmigrate", Name: name, Help: help}, labels)
	reg.MustRegister(g)
	return g
}

func gauge(reg *prometheus.Registry, name, help string, v float64) {
	family(reg, name, help).WithLabelValues().Set(v)
}

func unix(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

func boolf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Registry returns a private registry holding exactly the families this run
// should push. The families, by who pushes them:
//
//   - every run: build_info, last_run_timestamp_seconds,
//     run_duration_seconds, run_outcome{outcome}, connect_attempts;
//   - runs that called the lock: lock_acquired, lock_wait_seconds,
//     lock_attempts; those that found it held also
//     last_lock_conflict_timestamp_seconds;
//   - runs that held it: lock_held_seconds;
//   - runs that held it with work to do: migrations_applied,
//     lock_timeout_retries;
//   - runs that know the schema: schema_version, migrations_pending;
//   - successful runs: last_success_timestamp_seconds;
//   - failed runs: last_failure_timestamp_seconds, last_failure{kind};
//   - multi-tenant runs: tenants_total, tenants_pending, tenants_failed,
//     tenants_applied.
func (r Run) Registry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	family(reg, "build_info", "Version of the lockmigrate binary of the last run (always 1).", "version").
		WithLabelValues(r.Version).Set(1)
	gauge(reg, "last_run_timestamp_seconds", "Unix time at which the last run ended.", unix(r.End))
	gauge(reg, "run_duration_seconds", "Wall time of the last run, connection included.", r.End.Sub(r.Start).Seconds())
	outcome := family(reg, "run_outcome", "Outcome of the last run: 1 for its outcome, 0 for the others.", "outcome")
	for _, o := range Outcomes {
		outcome.WithLabelValues(o).Set(boolf(o == r.Outcome))
	}
	gauge(reg, "connect_attempts", "Connection attempts of the last run (above 1: it retried).", float64(r.ConnectAttempts))

	if r.LockTried {
		gauge(reg, "lock_acquired", "1 if the last run that tried the advisory lock won it, 0 if not.", boolf(r.LockAcquired))
		gauge(reg, "lock_wait_seconds", "Time the last run that tried the lock spent between its first try and the grant or giving up.", r.LockWait.Seconds())
		gauge(reg, "lock_attempts", "Try-lock calls of the last run that tried the lock (above 1: it waited and retried).", float64(r.LockAttempts))
		if r.LockConflict {
			gauge(reg, "last_lock_conflict_timestamp_seconds", "Unix time of the last run that found the lock held by another session.", unix(r.End))
		}
	}
	if r.LockAcquired {
		gauge(reg, "lock_held_seconds", "Time the last run that won the lock held it.", r.LockHeld.Seconds())
	}
	if r.ApplyTried {
		gauge(reg, "migrations_applied", "Migrations applied by the last run that had migrations to apply.", float64(r.Applied))
		gauge(reg, "lock_timeout_retries", "lock_timeout (55P03) retries of the last run that had migrations to apply.", float64(r.LockTimeoutRetries))
	}
	if r.SchemaKnown {
		gauge(reg, "schema_version", "Highest applied migration version, as last confirmed.", float64(r.SchemaVersion))
		gauge(reg, "migrations_pending", "Migrations of the binary not yet applied, as last confirmed.", float64(r.Pending))
	}
	if t := r.Tenants; t != nil {
		gauge(reg, "tenants_total", "Tenants of the last multi-tenant run (of its shard).", float64(t.Total))
		gauge(reg, "tenants_pending", "Tenants the last multi-tenant run left not confirmed current (failed, skipped or not attempted).", float64(t.Pending))
		gauge(reg, "tenants_failed", "Tenants whose migration failed in the last multi-tenant run.", float64(t.Failed))
		gauge(reg, "tenants_applied", "Tenants the last multi-tenant run applied migrations to.", float64(t.Applied))
	}
	if r.Succeeded() {
		gauge(reg, "last_success_timestamp_seconds", "Unix time of the last run that confirmed the schema current (applied, up_to_date or waited).", unix(r.End))
	}
	if r.Outcome == "failed" {
		gauge(reg, "last_failure_timestamp_seconds", "Unix time of the last failed run.", unix(r.End))
		kinds := family(reg, "last_failure", "Kind of the last failure: 1 for its kind, 0 for the others.", "kind")
		for _, k := range ErrorKinds {
			kinds.WithLabelValues(k).Set(boolf(k == r.ErrorKind))
		}
	}
	return reg
}
