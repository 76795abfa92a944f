package cluster

import (
	"context"
	"net/url"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/lockmigrate/lockmigrate/internal/pgtest"
	"github.com/lockmigrate/lockmigrate/lock"
)

// jobPods matches the pods of the Jobs named job (the Job controller's
// label).
func jobPods(job string) func(*corev1.Pod) bool {
	return withLabel("batch.kubernetes.io/job-name", job)
}

// TestRetryUnreachable: the database's address refuses connections for the
// hook Job's first pod, which exits 3 (unreachable) once its connect budget
// is spent; the Job controller retries (3 is not in the FailJob rule) and
// the second pod, with the database reachable, applies everything.
func TestRetryUnreachable(t *testing.T) {
	t.Parallel()
	failedSummary(t)
	const ns, rel = "lm-retry", "retry"
	newNamespace(t, ns)
	dbURL := sharedServer().NewDB(t)
	// The pods' URL points at an address where nothing listens yet.
	addr := reserveAddr(t)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = addr
	createSecret(t, ns, "app-database", u.String())
	r := record(t, ns)
	v := chartValues("v1", values{"config": values{"connectTimeout": "4s"}})

	since := time.Now()
	done := helmBackground(t, "install", rel, ns, v)
	first := terminatedPod(t, r, 2*time.Minute, "the first pod to exit", "lockmigrate", jobPods(rel+"-lockmigrate"))
	st1, msg1 := terminated(t, first, "lockmigrate")
	if st1.ExitCode != 3 || msg1.ErrorKind != "connect" {
		t.Fatalf("first pod %s: exit %d, kind %q; want 3, connect", first.Name, st1.ExitCode, msg1.ErrorKind)
	}
	// The database comes back at that address.
	forward(t, addr, dbURL)
	res := waitHelm(t, done, 3*time.Minute)
	if res.err != nil {
		t.Fatalf("helm install failed: %v", res.err)
	}
	job := finishedJob(t, r, rel+"-lockmigrate", since, 30*time.Second)
	if jobCondition(job, batchv1.JobComplete) == nil || job.Status.Failed != 1 {
		t.Fatalf("hook Job: %s, %d failed pods; want Complete after 1 failure", conditions(job), job.Status.Failed)
	}
	pods := r.podsOf(ownedBy(job.UID))
	if len(pods) != 2 {
		t.Fatalf("%d pods, want 2 (one failure, one retry)", len(pods))
	}
	st2, msg2 := terminated(t, pods[1].pod, "lockmigrate")
	if st2.ExitCode != 0 || msg2.Outcome != "applied" || len(msg2.Applied) != 5 {
		t.Fatalf("retry pod %s: exit %d, outcome %s, applied %v", pods[1].pod.Name, st2.ExitCode, msg2.Outcome, msg2.Applied)
	}
	db := pgtest.Connect(t, dbURL)
	assertHistory(t, history(t, db, "public"), 5, func(int64) string { return pods[1].pod.Name })
	assertAuditOnce(t, db, "public", 5)
	backoff := pods[1].firstSeen.Sub(pods[0].terminatedSeen["lockmigrate"])
	summary(t, "first pod exit 3 (connect) after %d ms, termination message: %s; Job controller retried %s later; "+
		"second pod applied 1-5; Job Complete with 1 failure; helm install --wait %s",
		msg1.DurationMS, msg1.Error, ms(backoff), ms(res.elapsed))
}

// helmBackground starts helmInstall in the background; the result comes
// on the channel. If t ends first (it failed), helm is killed and waited
// for, so that it does not outlive the test.
func helmBackground(t *testing.T, verb, rel, ns string, v values) <-chan helmResult {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan helmResult, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		done <- helmInstall(t, ctx, verb, rel, ns, v)
	}()
	t.Cleanup(func() {
		cancel()
		<-finished
	})
	return done
}

// waitHelm waits for a helm command started in the background.
func waitHelm(t testing.TB, done <-chan helmResult, timeout time.Duration) helmResult {
	t.Helper()
	select {
	case res := <-done:
		return res
	case <-time.After(timeout):
		t.Fatalf("helm still running after %s", timeout)
		return helmResult{}
	}
}

// TestDeadline: another session holds the migration lock, so the hook Job
// (onLocked wait, waitTimeout 5m) waits; activeDeadlineSeconds (15) ends
// the Job: Kubernetes stops the pod (SIGTERM, exit 143), the Job fails with
// DeadlineExceeded and helm reports the failure long before its --timeout.
func TestDeadline(t *testing.T) {
	t.Parallel()
	failedSummary(t)
	const ns, rel, deadline = "lm-deadline", "deadline", 15
	newNamespace(t, ns)
	dbURL := newDatabaseSecret(t, ns, "app-database")
	holder := pgtest.Connect(t, dbURL)
	pgtest.MustLock(t, holder, lock.DefaultKey("public", "lockmigrate_history"))
	r := record(t, ns)
	v := chartValues("v1", values{"job": values{"activeDeadlineSeconds": deadline, "waitTimeout": "5m"}})

	since := time.Now()
	res := helmInstall(t, context.Background(), "install", rel, ns, v)
	if res.err == nil {
		t.Fatal("helm install succeeded while the lock was held")
	}
	job := finishedJob(t, r, rel+"-lockmigrate", since, 30*time.Second)
	failed := jobCondition(job, batchv1.JobFailed)
	if failed == nil || failed.Reason != batchv1.JobReasonDeadlineExceeded {
		t.Fatalf("hook Job: %s; want Failed with DeadlineExceeded", conditions(job))
	}
	pods := r.podsOf(ownedBy(job.UID))
	if len(pods) != 1 {
		t.Fatalf("%d pods, want 1", len(pods))
	}
	p := terminatedPod(t, r, time.Minute, "the pod stopped by the deadline", "lockmigrate", ownedBy(job.UID))
	st, msg := terminated(t, p, "lockmigrate")
	if st.ExitCode != 143 || msg.ExitCode != 143 || msg.ErrorKind != "signal_15" {
		t.Fatalf("pod %s: exit %d, message exit %d kind %q; want 143, signal_15", p.Name, st.ExitCode, msg.ExitCode, msg.ErrorKind)
	}
	if n := pgtest.QueryInt(t, holder, `SELECT count(*) FROM pg_tables WHERE tablename = 'schema_audit'`); n != 0 {
		t.Fatal("a migration ran although the lock was held")
	}
	// As the recorder saw them, from the start of helm install.
	rec := r.podsOf(ownedBy(job.UID))[0]
	summary(t, "lock held elsewhere, the pod waited; after helm started: Job FailureTarget (DeadlineExceeded) at %s, "+
		"pod deleted at %s, exit 143 at %s, Job Failed at %s (activeDeadlineSeconds %d); termination message: "+
		"outcome %s, kind %s, waited %d ms; helm install failed after %s",
		ms(r.conditionSeen(job.UID, batchv1.JobFailureTarget).Sub(since)), ms(rec.deletingSeen.Sub(since)),
		ms(rec.terminatedSeen["lockmigrate"].Sub(since)), ms(r.conditionSeen(job.UID, batchv1.JobFailed).Sub(since)),
		deadline, msg.Outcome, msg.ErrorKind, msg.LockWaitMS, ms(res.elapsed))
}
