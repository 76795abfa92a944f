package cluster

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/lockmigrate/lockmigrate/internal/pgtest"
)

// TestSIGTERM: the hook Job's pod is deleted while it runs a slow
// migration (0006 sleeps). The kubelet stops it with SIGTERM: exit 143, the
// migration's transaction rolled back (its audit row, written before the
// sleep, is gone), the advisory lock released, and a second Job that was
// waiting for the lock takes over and applies 0006. The hook Job retries
// and finds the schema current, so helm install succeeds.
func TestSIGTERM(t *testing.T) {
	t.Parallel()
	failedSummary(t)
	const ns, rel, waiter = "lm-sigterm", "sig", "sigwait"
	newNamespace(t, ns)
	dbURL := newDatabaseSecret(t, ns, "app-database")
	db := pgtest.Connect(t, dbURL)
	ctx := context.Background()
	if _, err := db.Exec(ctx, `CREATE TABLE cluster_test_gate (seconds int NOT NULL);
		INSERT INTO cluster_test_gate VALUES (600)`); err != nil {
		t.Fatal(err)
	}
	r := record(t, ns)
	v := chartValues("slow")

	since := time.Now()
	done := helmBackground(t, "install", rel, ns, v)
	// A: the hook Job's pod, asleep in 0006 (after 1-5), holding the lock.
	a := waitSession(t, db, "lockmigrate/"+rel+"-lockmigrate-", "pg_sleep", 2*time.Minute)
	podA := strings.TrimPrefix(a.appName, "lockmigrate/")
	// B: the chart's Job rendered for another release, waiting for the lock
	// (its session's last query tried it: A holds it).
	createJob(t, ns, renderJob(t, waiter, ns, v))
	b := waitSession(t, db, "lockmigrate/"+waiter+"-lockmigrate-", "pg_try_advisory_lock", 2*time.Minute)

	if _, err := db.Exec(ctx, `UPDATE cluster_test_gate SET seconds = 0`); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	if err := kc.CoreV1().Pods(ns).Delete(ctx, podA, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete pod %s: %v", podA, err)
	}
	msgA := checkInterrupted(t, r, podA)
	podB, msgB := checkTookOver(t, r, waiter+"-lockmigrate", since)
	res := waitHelm(t, done, 3*time.Minute)
	if res.err != nil {
		t.Fatalf("helm install failed: %v", res.err)
	}
	retry := hookRetried(t, r, rel+"-lockmigrate", since, podA)
	h := checkRolledBack(t, db, a, podB)
	summary(t, "hook pod deleted asleep in 0006: exit 143 (%s), its INSERT rolled back, lock released; waiting Job "+
		"(backend %d) got the lock after %d ms of waiting and applied 6 %s after the delete; hook Job retried (%s); "+
		"helm install %s", msgA.Error, b.pid, msgB.LockWaitMS, ms(h[5].appliedAt.Sub(deleted)), retry, ms(res.elapsed))
}

// checkInterrupted checks that the deleted pod stopped on SIGTERM with
// exit 143 and 0006 not applied, and that it released the lock.
func checkInterrupted(t testing.TB, r *recorder, podA string) termination {
	t.Helper()
	pa := terminatedPod(t, r, time.Minute, "pod "+podA+" to stop", "lockmigrate",
		func(p *corev1.Pod) bool { return p.Name == podA })
	stA, msgA := terminated(t, pa, "lockmigrate")
	if stA.ExitCode != 143 || msgA.ErrorKind != "signal_15" || slices.Contains(msgA.Applied, 6) {
		t.Fatalf("pod %s: exit %d, kind %q, applied %v; want 143, signal_15, 6 not applied",
			podA, stA.ExitCode, msgA.ErrorKind, msgA.Applied)
	}
	if logA := r.logOf(pa.UID, "lockmigrate"); !strings.Contains(logA, `"msg":"advisory lock released"`) {
		t.Fatalf("pod %s's log does not say it released the lock:\n%s", podA, logA)
	}
	return msgA
}

// checkTookOver checks that the waiting Job waited for the lock, then got
// it and applied 0006.
func checkTookOver(t testing.TB, r *recorder, job string, since time.Time) (*corev1.Pod, termination) {
	t.Helper()
	jobB := finishedJob(t, r, job, since, 2*time.Minute)
	podB := onlyPod(t, r, jobB)
	stB, msgB := terminated(t, podB, "lockmigrate")
	if jobCondition(jobB, batchv1.JobComplete) == nil || stB.ExitCode != 0 || msgB.Outcome != "applied" ||
		!slices.Equal(msgB.Applied, []int64{6}) || msgB.LockWaitMS <= 0 {
		t.Fatalf("waiting Job: %s; pod %s exit %d, outcome %s, applied %v, waited %d ms; want applied [6] after a wait",
			conditions(jobB), podB.Name, stB.ExitCode, msgB.Outcome, msgB.Applied, msgB.LockWaitMS)
	}
	if logB := r.logOf(podB.UID, "lockmigrate"); !strings.Contains(logB, `"msg":"advisory lock held elsewhere, waiting"`) {
		t.Fatalf("pod %s's log does not show it waiting for the lock:\n%s", podB.Name, logB)
	}
	return podB, msgB
}

// checkRolledBack checks the database after the take-over: 1-5 applied by
// the deleted pod, 6 by the waiting Job's, each once; no audit row of 0006
// from the deleted pod's backend (its transaction was rolled back); no
// advisory lock left. It returns the history.
func checkRolledBack(t testing.TB, db *pgx.Conn, a session, podB *corev1.Pod) []historyRow {
	t.Helper()
	podA := strings.TrimPrefix(a.appName, "lockmigrate/")
	h := history(t, db, "public")
	assertHistory(t, h, 6, func(v int64) string {
		if v == 6 {
			return podB.Name
		}
		return podA
	})
	assertAuditOnce(t, db, "public", 6)
	if n := pgtest.QueryInt(t, db, `SELECT count(*) FROM schema_audit WHERE version = 6 AND backend = $1`, a.pid); n != 0 {
		t.Fatalf("%d audit rows of 0006 written by pod %s's backend %d survived its SIGTERM", n, podA, a.pid)
	}
	if n := advisoryLocks(t, db); n != 0 {
		t.Fatalf("%d advisory locks left", n)
	}
	return h
}

// hookRetried checks that the hook Job completed with a second pod after the
// deleted one, and returns what that pod found.
func hookRetried(t testing.TB, r *recorder, name string, since time.Time, deletedPod string) string {
	t.Helper()
	job := finishedJob(t, r, name, since, 30*time.Second)
	if jobCondition(job, batchv1.JobComplete) == nil {
		t.Fatalf("hook Job: %s; want Complete", conditions(job))
	}
	pods := r.podsOf(ownedBy(job.UID))
	if len(pods) != 2 || pods[0].pod.Name != deletedPod {
		t.Fatalf("hook Job pods: %d (first %s), want the deleted %s and one retry", len(pods), pods[0].pod.Name, deletedPod)
	}
	st, msg := terminated(t, pods[1].pod, "lockmigrate")
	if st.ExitCode != 0 || (msg.Outcome != "up_to_date" && msg.Outcome != "waited") {
		t.Fatalf("retry pod %s: exit %d, outcome %s", pods[1].pod.Name, st.ExitCode, msg.Outcome)
	}
	disrupted := "no DisruptionTarget condition"
	for _, c := range pods[0].pod.Status.Conditions {
		if c.Type == corev1.DisruptionTarget && c.Status == corev1.ConditionTrue {
			disrupted = "DisruptionTarget " + c.Reason
		}
	}
	return "deleted pod: " + disrupted + ", Job failed count " + strconv.Itoa(int(job.Status.Failed)) + "; retry pod " + msg.Outcome
}

// renderJob renders the chart's hook Job for release rel with v.
func renderJob(t testing.TB, rel, ns string, v values) *batchv1.Job {
	t.Helper()
	res := helm(t, context.Background(), v, "template", rel, chartDir, "--namespace", ns, "--show-only", "templates/job.yaml")
	if res.err != nil {
		t.Fatalf("helm template: %v", res.err)
	}
	var job batchv1.Job
	if err := yaml.UnmarshalStrict([]byte(res.out), &job); err != nil {
		t.Fatalf("rendered Job: %v", err)
	}
	return &job
}

func createJob(t testing.TB, ns string, job *batchv1.Job) {
	t.Helper()
	if _, err := kc.BatchV1().Jobs(ns).Create(context.Background(), job, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create Job %s: %v", job.Name, err)
	}
}
