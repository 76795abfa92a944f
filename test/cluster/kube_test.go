package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// Labels of the namespaces the tests make: the restricted Pod Security
// Standard enforced, as a hardened cluster does.
var restricted = map[string]string{
	"pod-security.kubernetes.io/enforce":         "restricted",
	"pod-security.kubernetes.io/enforce-version": "latest",
}

// newNamespace creates namespace name with the restricted standard
// enforced, waits for its default ServiceAccount (pods are refused before
// it exists) and deletes it when t ends.
func newNamespace(t *testing.T, name string) {
	t.Helper()
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: restricted}}
	if _, err := kc.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = kc.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	deadline := time.Now().Add(60 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := kc.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{}); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("namespace %s: no default ServiceAccount after 60 s", name)
		}
		<-tick.C
	}
}

// newDatabaseSecret creates Secret name in ns holding the pods' URL of a
// fresh database (key "url", the chart's default urlKey) and returns the
// database's URL for the test itself.
func newDatabaseSecret(t *testing.T, ns, name string) string {
	t.Helper()
	dbURL := sharedServer().NewDB(t)
	createSecret(t, ns, name, podURL(t, dbURL))
	return dbURL
}

func createSecret(t *testing.T, ns, name, podDBURL string) {
	t.Helper()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		StringData: map[string]string{"url": podDBURL}}
	if _, err := kc.CoreV1().Secrets(ns).Create(context.Background(), s, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create secret %s/%s: %v", ns, name, err)
	}
}

// values are a release's Helm values.
type values map[string]any

// chartValues are the values every release of the tests starts from: the
// image variant tag (never pulled) and the database Secret.
func chartValues(tag string, overrides ...values) values {
	v := values{
		"image":    values{"repository": imageRepo, "tag": tag, "pullPolicy": "Never"},
		"database": values{"existingSecret": "app-database"},
	}
	for _, o := range overrides {
		merge(v, o)
	}
	return v
}

// merge copies src into dst, descending into maps present in both.
func merge(dst, src values) {
	for k, sv := range src {
		if sm, ok := sv.(values); ok {
			if dm, ok := dst[k].(values); ok {
				merge(dm, sm)
				continue
			}
		}
		dst[k] = sv
	}
}

// helmResult is one finished helm command.
type helmResult struct {
	out     string
	err     error
	elapsed time.Duration
}

// helm runs the helm binary with args (plus -f of v when v is not nil)
// against the cluster.
func helm(t testing.TB, ctx context.Context, v values, args ...string) helmResult {
	t.Helper()
	home := t.TempDir()
	if v != nil {
		b, err := yaml.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(home, "values.yaml")
		if err := os.WriteFile(file, b, 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-f", file)
	}
	cmd := exec.CommandContext(ctx, env.helm, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = append(os.Environ(),
		"KUBECONFIG="+env.kubeconfig,
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"))
	t0 := time.Now()
	err := cmd.Run()
	res := helmResult{out: out.String(), err: err, elapsed: time.Since(t0)}
	t.Logf("helm %s (%s): err=%v\n%s", strings.Join(args, " "), res.elapsed.Round(time.Millisecond), err,
		indentLines(strings.TrimSpace(res.out)))
	return res
}

// helmInstall runs `helm install --wait` (or upgrade) of the chart as
// release rel in ns.
func helmInstall(t testing.TB, ctx context.Context, verb, rel, ns string, v values) helmResult {
	t.Helper()
	return helm(t, ctx, v, verb, rel, chartDir, "--namespace", ns, "--wait", "--timeout", "3m")
}

// termination is the lockmigrate termination message (one JSON line).
type termination struct {
	Outcome       string  `json:"outcome"`
	ExitCode      int     `json:"exit_code"`
	ErrorKind     string  `json:"error_kind"`
	Error         string  `json:"error"`
	Applied       []int64 `json:"applied"`
	AppliedCount  int     `json:"applied_count"`
	SchemaVersion int64   `json:"schema_version"`
	Pending       int     `json:"pending"`
	LockWaitMS    int64   `json:"lock_wait_ms"`
	DurationMS    int64   `json:"duration_ms"`
	Version       string  `json:"version"`
	Tenants       *struct {
		Total       int `json:"total"`
		Applied     int `json:"applied"`
		UpToDate    int `json:"up_to_date"`
		FailedCount int `json:"failed_count"`
		Shard       *struct {
			Index int `json:"index"`
			Count int `json:"count"`
		} `json:"shard"`
	} `json:"tenants"`
}

// terminated returns the terminated state of container name in the pod
// status, with its termination message decoded; it fails t when the
// container has not terminated or the message is not lockmigrate's.
func terminated(t testing.TB, p *corev1.Pod, name string) (*corev1.ContainerStateTerminated, termination) {
	t.Helper()
	statuses := append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...)
	for _, cs := range statuses {
		if cs.Name != name {
			continue
		}
		st := cs.State.Terminated
		if st == nil {
			t.Fatalf("pod %s: container %s has not terminated: %+v", p.Name, name, cs.State)
		}
		var msg termination
		if err := json.Unmarshal([]byte(st.Message), &msg); err != nil {
			t.Fatalf("pod %s: container %s: termination message is not lockmigrate's JSON summary: %v: %q",
				p.Name, name, err, st.Message)
		}
		return st, msg
	}
	t.Fatalf("pod %s: no status for container %s", p.Name, name)
	return nil, termination{}
}

// jobCondition returns the Job's condition of that type when it is true.
func jobCondition(j *batchv1.Job, typ batchv1.JobConditionType) *batchv1.JobCondition {
	for i := range j.Status.Conditions {
		if c := &j.Status.Conditions[i]; c.Type == typ && c.Status == corev1.ConditionTrue {
			return c
		}
	}
	return nil
}

// finishedJob waits until a Job named name created after since is Complete
// or Failed, and returns it.
func finishedJob(t testing.TB, r *recorder, name string, since time.Time, timeout time.Duration) *batchv1.Job {
	t.Helper()
	var job *batchv1.Job
	r.waitFor(t, timeout, "Job "+name+" to finish", func(r *recorder) bool {
		for _, j := range r.jobsLocked(name) {
			if !j.CreationTimestamp.Time.Before(since.Truncate(time.Second)) &&
				(jobCondition(j, batchv1.JobComplete) != nil || jobCondition(j, batchv1.JobFailed) != nil) {
				job = j
				return true
			}
		}
		return false
	})
	return job
}

// onlyPod returns the single pod of the Job, failing t when there were
// more: "at once" means no retry.
func onlyPod(t testing.TB, r *recorder, job *batchv1.Job) *corev1.Pod {
	t.Helper()
	return onlyPodRecord(t, r, job).pod
}

func onlyPodRecord(t testing.TB, r *recorder, job *batchv1.Job) podRecord {
	t.Helper()
	pods := r.podsOf(ownedBy(job.UID))
	if len(pods) != 1 {
		t.Fatalf("Job %s: %d pods, want exactly 1 (no retry)", job.Name, len(pods))
	}
	return pods[0]
}

// terminatedPod waits until a pod matching match has container name
// terminated, and returns that version of the pod.
func terminatedPod(t testing.TB, r *recorder, timeout time.Duration, what, name string, match func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	r.waitFor(t, timeout, what, func(r *recorder) bool {
		for _, rec := range r.podsLocked(match) {
			for _, cs := range rec.pod.Status.ContainerStatuses {
				if cs.Name == name && cs.State.Terminated != nil {
					pod = rec.pod
					return true
				}
			}
		}
		return false
	})
	return pod
}

func containerEnv(c corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }
