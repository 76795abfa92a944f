package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/lockmigrate/lockmigrate/internal/pgtest"
)

// contractReplicas of the example Deployment in the contract scenarios.
const contractReplicas = 4

// The contract Job's log events around its rollout wait
// (internal/rollout).
const (
	waitingEvent  = "waiting for the rollout before the contract migrations"
	completeEvent = "rollout complete; running the contract migrations"
)

// contractRelease is a release of the chart with the contract phase on,
// waiting for the example Deployment.
type contractRelease struct {
	ns, rel string
	db      *pgx.Conn
	r       *recorder
	deps    *deploymentRecorder
}

func (c *contractRelease) job() string         { return c.rel + "-lockmigrate" }
func (c *contractRelease) contractJob() string { return c.rel + "-lockmigrate-contract" }
func (c *contractRelease) deployment() string  { return c.rel + "-lockmigrate-example-app" }

// values of the release: the contract phase waiting for the example
// Deployment, and the API server's address as pods reach it. The kubelet
// gives pods the kubernetes Service's address (127.200.0.1:443, no
// kube-proxy behind it); an explicit container variable overrides it.
func (c *contractRelease) values(tag string, overrides ...values) values {
	v := chartValues(tag, values{
		"example": values{"deployment": values{
			"enabled": true, "replicas": contractReplicas, "image": env.pauseImage}},
		"contract": values{"enabled": true, "waitFor": []string{"deployment/" + c.deployment()}},
		"extraEnv": []values{
			{"name": "KUBERNETES_SERVICE_HOST", "value": env.gateway},
			{"name": "KUBERNETES_SERVICE_PORT", "value": env.apiPort},
		},
	})
	for _, o := range overrides {
		merge(v, o)
	}
	return v
}

func newContractRelease(t *testing.T, ns, rel string) *contractRelease {
	t.Helper()
	newNamespace(t, ns)
	c := &contractRelease{ns: ns, rel: rel}
	c.db = pgtest.Connect(t, newDatabaseSecret(t, ns, "app-database"))
	c.r = record(t, ns)
	c.deps = recordDeployments(t, ns)
	return c
}

// TestContractWaitsForRollout upgrades a release to an image with an
// expand file (6) and a contract file (7): the pre-upgrade Job applies 6
// only, the post-upgrade contract Job waits while the Deployment rolls out
// and applies 7 once every new pod is ready and no old pod is left.
func TestContractWaitsForRollout(t *testing.T) {
	t.Parallel()
	failedSummary(t)
	ctx := context.Background()
	c := newContractRelease(t, "lm-contract", "contract")

	since := c.knownJobs()
	if res := helmInstall(t, ctx, "install", c.rel, c.ns, c.values("v1")); res.err != nil {
		t.Fatalf("helm install --wait failed: %v", res.err)
	}
	installPod := c.jobPodApplied(t, c.job(), since, "applied", []int64{1, 2, 3, 4, 5})
	c.jobPodApplied(t, c.contractJob(), since, "up_to_date", nil)
	old := map[types.UID]string{}
	for _, p := range c.r.podsOf(withLabel("app.kubernetes.io/component", "example-app")) {
		old[p.pod.UID] = p.pod.Name
	}
	dep, err := kc.AppsV1().Deployments(c.ns).Get(ctx, c.deployment(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gen0 := dep.Generation

	// No --wait: Helm runs the post-upgrade hook right after applying the
	// new Deployment, so the contract Job has the rollout to wait for.
	since = c.knownJobs()
	res := helm(t, ctx, c.values("contract"), "upgrade", c.rel, chartDir, "--namespace", c.ns, "--timeout", "3m")
	if res.err != nil {
		t.Fatalf("helm upgrade failed: %v", res.err)
	}
	expandPod := c.jobPodApplied(t, c.job(), since, "applied", []int64{6})
	contractPod := c.jobPodApplied(t, c.contractJob(), since, "applied", []int64{7})
	contractRec := c.r.podsOf(func(p *corev1.Pod) bool { return p.UID == contractPod.UID })[0]

	h := history(t, c.db, "public")
	assertHistory(t, h, 7, func(v int64) string {
		switch v {
		case 6:
			return expandPod.Name
		case 7:
			return contractPod.Name
		}
		return installPod.Name
	})
	assertAuditOnce(t, c.db, "public", 7)
	if n := pgtest.QueryInt(t, c.db, `SELECT count(*) FROM information_schema.columns
		WHERE table_name = 'users' AND column_name IN ('nickname', 'last_name')`); n != 1 ||
		pgtest.QueryInt(t, c.db, `SELECT count(*) FROM information_schema.columns
		WHERE table_name = 'users' AND column_name = 'nickname'`) != 1 {
		t.Fatalf("users: want nickname added and last_name dropped")
	}
	contractAt := h[6].appliedAt

	done := c.rolloutDone(t, old, gen0, contractAt)
	waits, waitedMS := rolloutWaitLog(t, contractRec.logs["lockmigrate"])
	if len(waits) == 0 || !contractRec.firstSeen.Before(done.at) {
		t.Fatalf("contract pod %s (seen %s) logged %d waits before the rollout completed at %s; want it started mid-rollout and waiting",
			contractPod.Name, contractRec.firstSeen.Format(time.RFC3339Nano), len(waits), done.at.Format(time.RFC3339Nano))
	}
	lag := contractAt.Sub(done.at)
	if lag <= 0 || lag > 5*time.Second {
		t.Fatalf("contract file applied at %s, %s after the rollout completed at %s; want after it, within 5 s",
			contractAt.Format(time.RFC3339Nano), lag, done.at.Format(time.RFC3339Nano))
	}
	summary(t, "helm upgrade (no --wait) %s; pre-upgrade Job applied [6] only (expand); contract Job pod seen %s before the rollout "+
		"completed, logged %d waits (first: %q), waited %d ms; rollout complete at %s (Deployment %d/%d updated+available seen %s, "+
		"last old pod ended or gone %s, API: Progressing %s, last old container finished %s); contract 7 applied_at %s, %s after; "+
		"each of 1-7 once, users.last_name dropped",
		ms(res.elapsed), ms(done.at.Sub(contractRec.firstSeen)), len(waits), waits[0], waitedMS,
		done.at.Format("15:04:05.000"), contractReplicas, contractReplicas, done.depSeen.Format("15:04:05.000"),
		done.lastOldGone.Format("15:04:05.000"), done.progressing.Format("15:04:05"), done.oldFinished.Format("15:04:05"),
		contractAt.Format("15:04:05.000"), ms(lag))
}

// jobPodApplied waits for a Job named name that the recorder had not seen
// at since (the install's contract Job may be created within the second
// the upgrade starts), checks it completed with one pod that exited 0 with
// outcome and applied, and returns that pod.
func (c *contractRelease) jobPodApplied(t *testing.T, name string, since map[types.UID]bool, outcome string, applied []int64) *corev1.Pod {
	t.Helper()
	job := c.newJob(t, name, since, 3*time.Minute)
	if jobCondition(job, batchv1.JobComplete) == nil {
		t.Fatalf("Job %s did not complete: %s", name, conditions(job))
	}
	pod := onlyPod(t, c.r, job)
	st, msg := terminated(t, pod, "lockmigrate")
	if st.ExitCode != 0 || msg.Outcome != outcome || !slices.Equal(msg.Applied, applied) {
		t.Fatalf("Job %s pod %s: exit %d, outcome %s, applied %v; want 0, %s, %v",
			name, pod.Name, st.ExitCode, msg.Outcome, msg.Applied, outcome, applied)
	}
	return pod
}

// knownJobs are the UIDs of the Jobs recorded so far.
func (c *contractRelease) knownJobs() map[types.UID]bool {
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	known := map[types.UID]bool{}
	for uid := range c.r.jobs {
		known[uid] = true
	}
	return known
}

// newJob waits until a Job named name, not in known, is Complete or
// Failed, and returns it.
func (c *contractRelease) newJob(t testing.TB, name string, known map[types.UID]bool, timeout time.Duration) *batchv1.Job {
	t.Helper()
	var job *batchv1.Job
	c.r.waitFor(t, timeout, "a new Job "+name+" to finish", func(r *recorder) bool {
		for _, j := range r.jobsLocked(name) {
			if !known[j.UID] && (jobCondition(j, batchv1.JobComplete) != nil || jobCondition(j, batchv1.JobFailed) != nil) {
				job = j
				return true
			}
		}
		return false
	})
	return job
}

// rolloutCompletion is when the rollout completed, as this machine saw it
// (the later of the Deployment's status and the last old pod's end: seen
// Succeeded/Failed or removed, whichever came first, as internal/rollout
// counts an ended pod as gone), with the API's own (whole-second) times
// for the same.
type rolloutCompletion struct {
	at, depSeen, lastOldGone time.Time
	progressing, oldFinished time.Time
}

// rolloutDone checks that the rollout of the Deployment's generation after
// gen0 completed (every new pod ready, never restarted, every old pod
// removed) and returns when. The API's times, in whole seconds, must not be
// after contractAt either.
func (c *contractRelease) rolloutDone(t *testing.T, old map[types.UID]string, gen0 int64, contractAt time.Time) rolloutCompletion {
	t.Helper()
	var done rolloutCompletion
	seen, dep := c.deps.firstComplete(c.deployment(), gen0)
	if dep == nil {
		t.Fatalf("Deployment %s never seen complete after generation %d", c.deployment(), gen0)
	}
	done.depSeen = seen
	for _, cond := range dep.Status.Conditions {
		if cond.Type == appsv1.DeploymentProgressing && cond.Reason == "NewReplicaSetAvailable" {
			done.progressing = cond.LastUpdateTime.Time
		}
	}
	for _, rec := range c.r.podsOf(func(p *corev1.Pod) bool { _, ok := old[p.UID]; return ok }) {
		if !rec.deleted {
			t.Fatalf("old pod %s still exists after the contract Job completed", rec.pod.Name)
		}
		gone := rec.deletedSeen
		if !rec.endedSeen.IsZero() && rec.endedSeen.Before(gone) {
			gone = rec.endedSeen
		}
		if gone.After(done.lastOldGone) {
			done.lastOldGone = gone
		}
		for _, cs := range rec.pod.Status.ContainerStatuses {
			if f := cs.State.Terminated; f != nil && f.FinishedAt.After(done.oldFinished) {
				done.oldFinished = f.FinishedAt.Time
			}
		}
	}
	if n := c.restartsOf(old); n != 0 {
		t.Fatalf("old pods restarted %d times", n)
	}
	done.at = done.depSeen
	if done.lastOldGone.After(done.at) {
		done.at = done.lastOldGone
	}
	whole := contractAt.Truncate(time.Second)
	if done.progressing.IsZero() || done.progressing.After(whole) || done.oldFinished.After(whole) {
		t.Fatalf("API times: Progressing NewReplicaSetAvailable %s, last old container finished %s; contract applied at %s",
			done.progressing, done.oldFinished, contractAt)
	}
	newPods := c.r.podsOf(func(p *corev1.Pod) bool {
		_, isOld := old[p.UID]
		return !isOld && p.Labels["app.kubernetes.io/component"] == "example-app"
	})
	if len(newPods) != contractReplicas {
		t.Fatalf("%d new pods, want %d", len(newPods), contractReplicas)
	}
	for _, rec := range newPods {
		if rec.deleted || !ready(rec.pod) {
			t.Fatalf("new pod %s: deleted %v, ready %v", rec.pod.Name, rec.deleted, ready(rec.pod))
		}
		assertNoRestarts(t, rec.pod)
	}
	return done
}

func (c *contractRelease) restartsOf(uids map[types.UID]string) int {
	return (&shop{r: c.r}).restartsOf(uids)
}

// rolloutWaitLog returns the pending reasons of the "waiting" events of a
// contract run's JSON log and the waited_ms of its "rollout complete" event
// (failing t without one).
func rolloutWaitLog(t testing.TB, log string) ([]string, int64) {
	t.Helper()
	var waits []string
	waited := int64(-1)
	for _, line := range strings.Split(log, "\n") {
		var ev struct {
			Msg      string `json:"msg"`
			Pending  string `json:"pending"`
			WaitedMS int64  `json:"waited_ms"`
		}
		if json.Unmarshal([]byte(line), &ev) != nil {
			continue
		}
		switch ev.Msg {
		case waitingEvent:
			waits = append(waits, ev.Pending)
		case completeEvent:
			waited = ev.WaitedMS
		}
	}
	if waited < 0 {
		t.Fatalf("contract Job log has no %q event:\n%s", completeEvent, log)
	}
	return waits, waited
}

// deploymentRecorder keeps every version of the Deployments of a namespace
// the API server sends, with when it was seen.
type deploymentRecorder struct {
	mu   sync.Mutex
	seen []deploymentSeen
}

type deploymentSeen struct {
	at  time.Time
	dep *appsv1.Deployment
}

func recordDeployments(t *testing.T, ns string) *deploymentRecorder {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := &deploymentRecorder{}
	f := informers.NewSharedInformerFactoryWithOptions(kc, 0, informers.WithNamespace(ns))
	inf := f.Apps().V1().Deployments().Informer()
	add := func(o any) {
		if dep, ok := o.(*appsv1.Deployment); ok {
			d.mu.Lock()
			d.seen = append(d.seen, deploymentSeen{at: time.Now(), dep: dep.DeepCopy()})
			d.mu.Unlock()
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: add, UpdateFunc: func(_, o any) { add(o) },
	}); err != nil {
		cancel()
		t.Fatal(err)
	}
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		cancel()
		t.Fatal("deployment recorder: informer did not sync")
	}
	t.Cleanup(func() { cancel(); f.Shutdown() })
	return d
}

// firstComplete returns the first version of Deployment name with a
// generation above gen0 whose status shows a completed rollout (the
// controller observed it; every replica updated and available, none old),
// and when it was seen.
func (d *deploymentRecorder) firstComplete(name string, gen0 int64) (time.Time, *appsv1.Deployment) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range d.seen {
		dep, st := s.dep, s.dep.Status
		want := int32(1)
		if dep.Spec.Replicas != nil {
			want = *dep.Spec.Replicas
		}
		if dep.Name == name && dep.Generation > gen0 && st.ObservedGeneration >= dep.Generation &&
			st.UpdatedReplicas == want && st.Replicas == want && st.AvailableReplicas == want {
			return s.at, dep
		}
	}
	return time.Time{}, nil
}

// TestContractDenied runs the contract Job with a ServiceAccount that has
// no Role (contract.rbac.create=false): the API server refuses the rollout
// check, the pod exits 3 and its termination message says so.
func TestContractDenied(t *testing.T) {
	t.Parallel()
	failedSummary(t)
	ctx := context.Background()
	c := newContractRelease(t, "lm-contract-denied", "denied")
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "plain", Namespace: c.ns}}
	if _, err := kc.CoreV1().ServiceAccounts(c.ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	requireDenied(t, c.ns, "plain")
	// The contract image: a contract file is pending, so the contract Job
	// asks the API (with nothing pending it returns up_to_date unasked).
	since := c.knownJobs()
	res := helmInstall(t, ctx, "install", c.rel, c.ns, c.values("contract", values{"contract": values{
		"rbac": values{"create": false}, "serviceAccountName": "plain", "backoffLimit": 0}}))
	if res.err == nil {
		t.Fatal("helm install succeeded, want the post-install contract Job to fail")
	}
	c.jobPodApplied(t, c.job(), since, "applied", []int64{1, 2, 3, 4, 5, 6})
	job := c.newJob(t, c.contractJob(), since, time.Minute)
	if jobCondition(job, batchv1.JobFailed) == nil {
		t.Fatalf("contract Job: %s; want Failed", conditions(job))
	}
	pod := onlyPod(t, c.r, job)
	st, msg := terminated(t, pod, "lockmigrate")
	if st.ExitCode != 3 || msg.ExitCode != 3 || !strings.Contains(msg.Error, "HTTP 403") ||
		!strings.Contains(msg.Error, "forbidden") {
		t.Fatalf("contract pod %s: exit %d (message %d), error %q; want 3, HTTP 403 forbidden", pod.Name, st.ExitCode, msg.ExitCode, msg.Error)
	}
	if pod.Spec.ServiceAccountName != "plain" {
		t.Fatalf("contract pod runs as %q, want plain", pod.Spec.ServiceAccountName)
	}
	if n := len(history(t, c.db, "public")); n != 6 {
		t.Fatalf("history has %d rows, want 6 (the contract file not applied)", n)
	}
	summary(t, "contract.rbac.create=false with a plain ServiceAccount: helm install failed after %s; contract Job %s, 1 pod, exit %d; "+
		"termination message (%s): %s", ms(res.elapsed), failedReason(job), st.ExitCode, msg.ErrorKind, msg.Error)
}

func failedReason(j *batchv1.Job) string {
	if c := jobCondition(j, batchv1.JobFailed); c != nil {
		return fmt.Sprintf("Failed (%s)", c.Reason)
	}
	return "not failed"
}

// requireDenied fails t unless the API server denies the ServiceAccount sa,
// which has no Role, to get Deployments: under AlwaysAllow authorisation
// there would be no denial to see.
func requireDenied(t *testing.T, ns, sa string) {
	t.Helper()
	review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: "system:serviceaccount:" + ns + ":" + sa,
		ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: "get",
			Group: "apps", Resource: "deployments"}}}
	res, err := kc.AuthorizationV1().SubjectAccessReviews().Create(context.Background(), review, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("SubjectAccessReview: %v", err)
	}
	if res.Status.Allowed {
		t.Fatalf("the API server allows %s to get Deployments without a Role (%s); want RBAC to deny it",
			review.Spec.User, res.Status.Reason)
	}
}
