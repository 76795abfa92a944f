package cluster

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/lockmigrate/lockmigrate/internal/pgtest"
)

// replicas of the example Deployment.
const replicas = 5

// shop is one release of the chart with the example Deployment, taken
// through an install and three upgrades.
type shop struct {
	ns, rel string
	db      *pgx.Conn
	r       *recorder
}

func (s *shop) job() string        { return s.rel + "-lockmigrate" }
func (s *shop) deployment() string { return s.rel + "-lockmigrate-example-app" }

func (s *shop) values(tag string) values {
	return chartValues(tag, values{"example": values{"deployment": values{
		"enabled": true, "replicas": replicas, "image": env.pauseImage}}})
}

// appPods lists the Deployment's pods that exist now and are not being
// deleted (the API server's view, not the recorder's).
func (s *shop) appPods(t testing.TB) []corev1.Pod {
	t.Helper()
	list, err := kc.CoreV1().Pods(s.ns).List(context.Background(), metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/instance=" + s.rel + ",app.kubernetes.io/component=example-app"})
	if err != nil {
		t.Fatal(err)
	}
	var pods []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			pods = append(pods, p)
		}
	}
	return pods
}

// TestInstallUpgrade takes one release through the chart's life: install
// with the example Deployment (5 replicas, init containers, restricted Pod
// Security), an upgrade that brings a new migration in a new image, an
// upgrade to an image whose applied file was edited (exit 5) and one whose
// new migration fails (exit 1).
func TestInstallUpgrade(t *testing.T) {
	t.Parallel()
	s := &shop{ns: "lm-shop", rel: "shop"}
	newNamespace(t, s.ns)
	s.db = pgtest.Connect(t, newDatabaseSecret(t, s.ns, "app-database"))
	s.r = record(t, s.ns)
	steps := []struct {
		name string
		fn   func(*testing.T, *shop)
	}{
		{"install", testInstall},
		{"upgrade", testUpgrade},
		{"tampered", testTampered},
		{"failing", testFailing},
	}
	for i, step := range steps {
		if !t.Run(step.name, func(t *testing.T) { failedSummary(t); step.fn(t, s) }) {
			for _, rest := range steps[i+1:] {
				summary(t, "%s: NOT RUN (%s failed)", rest.name, step.name)
			}
			return
		}
	}
}

// failedSummary adds a summary line for t if it fails, so that a failed
// scenario shows in the summary block too.
func failedSummary(t *testing.T) {
	t.Cleanup(func() {
		if t.Failed() {
			summary(t, "FAILED (see the test log above)")
		}
	})
}

func testInstall(t *testing.T, s *shop) {
	refusal := defaultPodRefused(t, s.ns)
	since := time.Now()
	res := helmInstall(t, context.Background(), "install", s.rel, s.ns, s.values("v1"))
	if res.err != nil {
		t.Fatalf("helm install --wait failed: %v", res.err)
	}
	job := finishedJob(t, s.r, s.job(), since, 30*time.Second)
	if jobCondition(job, batchv1.JobComplete) == nil {
		t.Fatalf("hook Job did not complete: %s", conditions(job))
	}
	pod := onlyPod(t, s.r, job)
	st, msg := terminated(t, pod, "lockmigrate")
	if st.ExitCode != 0 || msg.Outcome != "applied" || !slices.Equal(msg.Applied, []int64{1, 2, 3, 4, 5}) {
		t.Fatalf("hook Job pod %s: exit %d, outcome %s, applied %v; want 0, applied, [1 2 3 4 5]",
			pod.Name, st.ExitCode, msg.Outcome, msg.Applied)
	}
	assertHistory(t, history(t, s.db, "public"), 5, func(int64) string { return pod.Name })
	assertAuditOnce(t, s.db, "public", 5)

	pods := s.appPods(t)
	if len(pods) != replicas {
		t.Fatalf("%d pods of the Deployment, want %d", len(pods), replicas)
	}
	outcomes := map[string]int{}
	for i := range pods {
		p := &pods[i]
		if p.Status.Phase != corev1.PodRunning {
			t.Fatalf("pod %s is %s, want Running", p.Name, p.Status.Phase)
		}
		st, msg := terminated(t, p, "lockmigrate")
		if st.ExitCode != 0 || (msg.Outcome != "up_to_date" && msg.Outcome != "waited") {
			t.Fatalf("pod %s: init container exit %d, outcome %s; want 0, up_to_date or waited", p.Name, st.ExitCode, msg.Outcome)
		}
		outcomes[msg.Outcome]++
		assertNoRestarts(t, p)
	}
	summary(t, "helm install --wait %s; hook Job pod applied 1-5 in %d ms; %d pods Running, init containers %v; "+
		"each migration once; a pod without security context refused: %s", ms(res.elapsed), msg.DurationMS, len(pods), outcomes, refusal)
}

// defaultPodRefused checks that the namespace enforces the restricted
// standard: a pod with no security context, which the baseline standard
// admits, is refused (dry run: nothing is created even if it were
// admitted). It returns what the refusal names.
func defaultPodRefused(t testing.TB, ns string) string {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "no-security-context", Namespace: ns},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: env.pauseImage,
			ImagePullPolicy: corev1.PullNever}}},
	}
	_, err := kc.CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	const want = `violates PodSecurity "restricted:latest"`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("pod without a security context in %s: err = %v, want a refusal that %s", ns, err, want)
	}
	// "...: allowPrivilegeEscalation != false (container "c" must set ...), ..."
	var checks []string
	for _, part := range strings.Split(err.Error()[strings.Index(err.Error(), want)+len(want)+2:], "), ") {
		checks = append(checks, strings.TrimSpace(strings.SplitN(part, " (", 2)[0]))
	}
	return want + ": " + strings.Join(checks, ", ")
}

func assertNoRestarts(t testing.TB, p *corev1.Pod) {
	t.Helper()
	for _, cs := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		if cs.RestartCount != 0 {
			t.Fatalf("pod %s: container %s restarted %d times", p.Name, cs.Name, cs.RestartCount)
		}
	}
}

func testUpgrade(t *testing.T, s *shop) {
	old := map[types.UID]string{}
	for _, p := range s.appPods(t) {
		old[p.UID] = p.Name
	}
	minReady := s.trackReady()
	since := time.Now()
	res := helmInstall(t, context.Background(), "upgrade", s.rel, s.ns, s.values("v2"))
	if res.err != nil {
		t.Fatalf("helm upgrade --wait failed: %v", res.err)
	}
	job := finishedJob(t, s.r, s.job(), since, 30*time.Second)
	pod := onlyPod(t, s.r, job)
	st, msg := terminated(t, pod, "lockmigrate")
	if st.ExitCode != 0 || msg.Outcome != "applied" || !slices.Equal(msg.Applied, []int64{6}) {
		t.Fatalf("hook Job pod %s: exit %d, outcome %s, applied %v; want 0, applied, [6]", pod.Name, st.ExitCode, msg.Outcome, msg.Applied)
	}
	h := history(t, s.db, "public")
	assertHistory(t, h, 6, func(v int64) string {
		if v == 6 {
			return pod.Name
		}
		return h[v-1].appliedBy
	})
	assertAuditOnce(t, s.db, "public", 6)
	appliedAt := h[5].appliedAt

	first, last := s.checkNewPods(t, old, appliedAt)
	s.checkOldPods(t, old)
	if m := minReady(); m < replicas-1 {
		t.Fatalf("during the rollout only %d pods were ready, want at least %d (maxUnavailable 25%%)", m, replicas-1)
	}
	summary(t, "helm upgrade --wait %s; hook Job applied 6 at %s; %d new pods created %s-%s after it, "+
		"init containers up_to_date at schema 6, exit 0; old pods: 0 restarts, all deleted, ready replicas never below %d/%d",
		ms(res.elapsed), appliedAt.Format("15:04:05.000"), replicas, ms(first), ms(last), minReady(), replicas)
}

// checkNewPods checks the pods of the new ReplicaSet: each created after
// the hook applied 6 at appliedAt, its init container exited 0 finding the
// schema current, nothing restarted. It returns how long after appliedAt
// the first and the last of them appeared.
func (s *shop) checkNewPods(t *testing.T, old map[types.UID]string, appliedAt time.Time) (first, last time.Duration) {
	t.Helper()
	newPods := s.r.podsOf(func(p *corev1.Pod) bool {
		_, isOld := old[p.UID]
		return !isOld && p.Labels["app.kubernetes.io/component"] == "example-app"
	})
	if len(newPods) != replicas {
		t.Fatalf("%d new pods, want %d", len(newPods), replicas)
	}
	for i, rec := range newPods {
		p := rec.pod
		// creationTimestamp has whole seconds; the recorder saw the pod at
		// firstSeen, after its creation, on the same clock as PostgreSQL.
		if p.CreationTimestamp.Time.Before(appliedAt.Truncate(time.Second)) || !rec.firstSeen.After(appliedAt) {
			t.Fatalf("new pod %s created %s (seen %s), before the hook applied 6 at %s", p.Name,
				p.CreationTimestamp.Format(time.RFC3339), rec.firstSeen.Format(time.RFC3339Nano), appliedAt.Format(time.RFC3339Nano))
		}
		st, msg := terminated(t, p, "lockmigrate")
		if st.ExitCode != 0 || (msg.Outcome != "up_to_date" && msg.Outcome != "waited") || msg.SchemaVersion != 6 {
			t.Fatalf("new pod %s: init container exit %d, outcome %s, schema %d; want 0, up_to_date, 6",
				p.Name, st.ExitCode, msg.Outcome, msg.SchemaVersion)
		}
		assertNoRestarts(t, p)
		d := rec.firstSeen.Sub(appliedAt)
		if i == 0 || d < first {
			first = d
		}
		last = max(last, d)
	}
	return first, last
}

// checkOldPods waits for the old ReplicaSet's pods to go (helm --wait
// returns once the new ones are ready) and checks that none of their
// containers ever restarted.
func (s *shop) checkOldPods(t *testing.T, old map[types.UID]string) {
	t.Helper()
	s.r.waitFor(t, time.Minute, "the old pods to be deleted", func(r *recorder) bool {
		for uid := range old {
			if rec := r.pods[uid]; rec == nil || !rec.deleted {
				return false
			}
		}
		return true
	})
	if n := s.restartsOf(old); n != 0 {
		t.Fatalf("pods of the old ReplicaSet restarted %d times", n)
	}
}

// trackReady starts counting the Deployment's ready pods (ready, not being
// deleted) on every pod change, and returns a function giving the lowest
// count seen since.
func (s *shop) trackReady() func() int {
	lowest := replicas
	s.r.mu.Lock()
	defer s.r.mu.Unlock()
	s.r.watch = append(s.r.watch, func(r *recorder) {
		n := 0
		for _, rec := range r.pods {
			p := rec.pod
			if p.Labels["app.kubernetes.io/component"] == "example-app" && !rec.deleted && p.DeletionTimestamp == nil && ready(p) {
				n++
			}
		}
		lowest = min(lowest, n)
	})
	return func() int {
		s.r.mu.Lock()
		defer s.r.mu.Unlock()
		return lowest
	}
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// restartsOf adds up the highest restart counts the recorder saw for the
// containers of the pods in uids.
func (s *shop) restartsOf(uids map[types.UID]string) int {
	s.r.mu.Lock()
	defer s.r.mu.Unlock()
	n := 0
	for uid := range uids {
		if rec := s.r.pods[uid]; rec != nil {
			for _, c := range rec.maxRestarts {
				n += int(c)
			}
		}
	}
	return n
}

// failedUpgrade runs `helm upgrade --wait` to tag, which must fail at the
// hook: the Job fails at once by its podFailurePolicy, with one pod that
// exited wantExit, and the running pods stay as they were.
func failedUpgrade(t *testing.T, s *shop, tag string, wantExit int32) (*corev1.Pod, termination, string) {
	t.Helper()
	before := s.appPods(t)
	since := time.Now()
	res := helmInstall(t, context.Background(), "upgrade", s.rel, s.ns, s.values(tag))
	if res.err == nil {
		t.Fatalf("helm upgrade to %s succeeded, want the pre-upgrade hook to fail", tag)
	}
	job := finishedJob(t, s.r, s.job(), since, 30*time.Second)
	failed := jobCondition(job, batchv1.JobFailed)
	if failed == nil || failed.Reason != batchv1.JobReasonPodFailurePolicy {
		t.Fatalf("hook Job: %s; want Failed by PodFailurePolicy", conditions(job))
	}
	rec := onlyPodRecord(t, s.r, job)
	pod := rec.pod
	st, msg := terminated(t, pod, "lockmigrate")
	if st.ExitCode != wantExit || msg.ExitCode != int(wantExit) {
		t.Fatalf("hook Job pod %s: exit %d (message: %d), want %d", pod.Name, st.ExitCode, msg.ExitCode, wantExit)
	}
	after := s.appPods(t)
	if !samePods(before, after) {
		t.Fatalf("the running pods changed after the failed upgrade: %v -> %v", podNames(before), podNames(after))
	}
	for i := range after {
		if after[i].Status.Phase != corev1.PodRunning {
			t.Fatalf("pod %s is %s after the failed upgrade", after[i].Name, after[i].Status.Phase)
		}
		assertNoRestarts(t, &after[i])
	}
	// As the recorder saw them: the pod's exit, then the Job's failure.
	gap := s.r.conditionSeen(job.UID, batchv1.JobFailed).Sub(rec.terminatedSeen["lockmigrate"])
	return pod, msg, fmt.Sprintf("helm upgrade failed after %s; Job Failed (PodFailurePolicy) %s after the pod's exit %d, 1 pod; "+
		"%d running pods unchanged, 0 restarts", ms(res.elapsed), ms(gap), st.ExitCode, len(after))
}

func samePods(a, b []corev1.Pod) bool {
	return slices.Equal(podNames(a), podNames(b))
}

func podNames(pods []corev1.Pod) []string {
	var names []string
	for _, p := range pods {
		names = append(names, p.Name+"/"+string(p.UID))
	}
	slices.Sort(names)
	return names
}

func testTampered(t *testing.T, s *shop) {
	_, msg, what := failedUpgrade(t, s, "tampered", 5)
	if msg.ErrorKind != "validation" || !strings.Contains(msg.Error, tamperedFile) {
		t.Fatalf("termination message: kind %q, error %q; want validation naming %s", msg.ErrorKind, msg.Error, tamperedFile)
	}
	if n := len(history(t, s.db, "public")); n != 6 {
		t.Fatalf("history has %d rows after the failed upgrade, want 6", n)
	}
	summary(t, "image with %s edited: %s; termination message: %s", tamperedFile, what, msg.Error)
}

func testFailing(t *testing.T, s *shop) {
	_, msg, what := failedUpgrade(t, s, "failing", 1)
	if msg.ErrorKind != "migration" || !strings.Contains(msg.Error, failing) {
		t.Fatalf("termination message: kind %q, error %q; want migration naming %s", msg.ErrorKind, msg.Error, failing)
	}
	h := history(t, s.db, "public")
	cols := pgtest.QueryInt(t, s.db, `SELECT count(*) FROM information_schema.columns
		WHERE table_name = 'orders' AND column_name = 'shipped_at'`)
	if len(h) != 6 || cols != 0 {
		t.Fatalf("after the failed migration: %d history rows (want 6), orders.shipped_at present %d (want 0: rolled back)", len(h), cols)
	}
	assertAuditOnce(t, s.db, "public", 6)
	summary(t, "image with failing %s: %s; rolled back (no orders.shipped_at); termination message: %s", failing, what, msg.Error)
}
