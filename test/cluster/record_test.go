package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

// recorder keeps every version of the pods and Jobs of one namespace that
// the API server sends, from before the test acts until it ends. Helm
// deletes a hook Job that succeeded, the Job controller deletes the pods of
// a Job past its deadline, a rolling update deletes the old pods: the
// recorder still has their last status (exit codes, termination messages,
// restarts), and the order in which things happened.
type recorder struct {
	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change
	pods    map[types.UID]*podRecord
	jobs    map[types.UID]*batchv1.Job
	// jobSeen is when the recorder first saw each true condition of a Job.
	jobSeen map[types.UID]map[batchv1.JobConditionType]time.Time
	// watch are called under mu after every pod change (see trackReady).
	watch []func(r *recorder)
}

// podRecord is what the recorder knows of one pod.
type podRecord struct {
	pod       *corev1.Pod // the last version seen
	firstSeen time.Time   // when the recorder first saw it (this machine's clock)
	deleted   bool
	// maxRestarts is the highest restartCount seen for each container.
	maxRestarts map[string]int32
	// terminatedSeen is when each container was first seen terminated.
	terminatedSeen map[string]time.Time
	// deletingSeen is when the pod was first seen with a deletion
	// timestamp (zero if never).
	deletingSeen time.Time
	// deletedSeen is when the pod was seen removed from the API (zero if
	// never).
	deletedSeen time.Time
	// endedSeen is when the pod was first seen in phase Succeeded or
	// Failed (zero if never): it runs nothing from then on.
	endedSeen time.Time
	// logs holds each container's log, read from the kubelet's log files
	// when the container is seen terminated (the files go with the pod).
	logs map[string]string
	// logFiles are the log files of running containers, opened when the
	// recorder first sees them running: the kubelet removes a deleted
	// pod's log directory as soon as its containers have stopped, often
	// before the recorder hears that they did, and an open file can still
	// be read after it is unlinked.
	logFiles map[string]*os.File
}

// clone copies the record, maps included, for use without the lock.
func (p *podRecord) clone() podRecord {
	c := *p
	c.maxRestarts = maps.Clone(p.maxRestarts)
	c.terminatedSeen = maps.Clone(p.terminatedSeen)
	c.logs = maps.Clone(p.logs)
	c.logFiles = nil
	return c
}

// record starts recording namespace ns until t ends.
func record(t *testing.T, ns string) *recorder {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &recorder{changed: make(chan struct{}), pods: map[types.UID]*podRecord{},
		jobs: map[types.UID]*batchv1.Job{}, jobSeen: map[types.UID]map[batchv1.JobConditionType]time.Time{}}
	f := informers.NewSharedInformerFactoryWithOptions(kc, 0, informers.WithNamespace(ns))
	podInf := f.Core().V1().Pods().Informer()
	jobInf := f.Batch().V1().Jobs().Informer()
	_, err := podInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { r.onPod(o, false) },
		UpdateFunc: func(_, o any) { r.onPod(o, false) },
		DeleteFunc: func(o any) { r.onPod(o, true) },
	})
	if err == nil {
		_, err = jobInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { r.onJob(o) },
			UpdateFunc: func(_, o any) { r.onJob(o) },
			DeleteFunc: func(o any) { r.onJob(o) },
		})
	}
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), podInf.HasSynced, jobInf.HasSynced) {
		cancel()
		t.Fatal("recorder: informers did not sync")
	}
	t.Cleanup(func() {
		if t.Failed() {
			r.dump(t)
		}
		cancel()
		f.Shutdown()
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, rec := range r.pods {
			for _, lf := range rec.logFiles {
				_ = lf.Close() // a container still running, or restarted after its log was read
			}
		}
	})
	return r
}

func (r *recorder) onPod(o any, deleted bool) {
	if tomb, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = tomb.Obj
	}
	pod, ok := o.(*corev1.Pod)
	if !ok {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	rec := r.pods[pod.UID]
	if rec == nil {
		rec = &podRecord{firstSeen: time.Now(), maxRestarts: map[string]int32{},
			terminatedSeen: map[string]time.Time{}, logs: map[string]string{}, logFiles: map[string]*os.File{}}
		r.pods[pod.UID] = rec
	}
	rec.pod = pod.DeepCopy()
	if deleted && !rec.deleted {
		rec.deletedSeen = time.Now()
	}
	rec.deleted = rec.deleted || deleted
	if pod.DeletionTimestamp != nil && rec.deletingSeen.IsZero() {
		rec.deletingSeen = time.Now()
	}
	if (pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed) && rec.endedSeen.IsZero() {
		rec.endedSeen = time.Now()
	}
	statuses := append(append([]corev1.ContainerStatus{}, pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...)
	for _, cs := range statuses {
		rec.maxRestarts[cs.Name] = max(rec.maxRestarts[cs.Name], cs.RestartCount)
		if _, open := rec.logFiles[cs.Name]; !open && cs.State.Running != nil {
			if f, err := os.Open(containerLogPath(pod, cs)); err == nil {
				rec.logFiles[cs.Name] = f
			}
		}
		if _, done := rec.logs[cs.Name]; !done && cs.State.Terminated != nil {
			rec.terminatedSeen[cs.Name] = time.Now()
			rec.logs[cs.Name] = readContainerLog(pod, cs, rec.logFiles[cs.Name])
			delete(rec.logFiles, cs.Name)
		}
	}
	for _, w := range r.watch {
		w(r)
	}
	r.notify()
}

func (r *recorder) onJob(o any) {
	if tomb, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = tomb.Obj
	}
	job, ok := o.(*batchv1.Job)
	if !ok {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.jobs[job.UID] = job.DeepCopy()
	seen := r.jobSeen[job.UID]
	if seen == nil {
		seen = map[batchv1.JobConditionType]time.Time{}
		r.jobSeen[job.UID] = seen
	}
	for _, c := range job.Status.Conditions {
		if _, ok := seen[c.Type]; !ok && c.Status == corev1.ConditionTrue {
			seen[c.Type] = time.Now()
		}
	}
	r.notify()
}

// notify wakes the waiters; r.mu must be held.
func (r *recorder) notify() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// waitFor waits until cond, called under the recorder's lock after every
// change, holds; it fails t after timeout.
func (r *recorder) waitFor(t testing.TB, timeout time.Duration, what string, cond func(*recorder) bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		ok := cond(r)
		ch := r.changed
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
	}
}

// podsOf returns copies of the records of the pods that match, oldest
// first (by first sight).
func (r *recorder) podsOf(match func(*corev1.Pod) bool) []podRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.podsLocked(match)
}

func (r *recorder) podsLocked(match func(*corev1.Pod) bool) []podRecord {
	var out []podRecord
	for _, rec := range r.pods {
		if match(rec.pod) {
			out = append(out, rec.clone())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].firstSeen.Before(out[j].firstSeen) })
	return out
}

// logOf returns the captured log of a terminated container.
func (r *recorder) logOf(uid types.UID, container string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rec := r.pods[uid]; rec != nil {
		return rec.logs[container]
	}
	return ""
}

// conditionSeen is when the recorder first saw the Job's condition typ
// true (zero if never).
func (r *recorder) conditionSeen(uid types.UID, typ batchv1.JobConditionType) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.jobSeen[uid][typ]
}

// jobsLocked returns the Jobs seen with that name (a hook Job is deleted
// and created again by each helm run), in creation order.
func (r *recorder) jobsLocked(name string) []*batchv1.Job {
	var out []*batchv1.Job
	for _, j := range r.jobs {
		if j.Name == name {
			out = append(out, j.DeepCopy())
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].CreationTimestamp.Before(&out[j].CreationTimestamp) ||
			out[i].CreationTimestamp.Equal(&out[j].CreationTimestamp) && out[i].ResourceVersion < out[j].ResourceVersion
	})
	return out
}

// ownedBy matches the pods owned by the object with that UID.
func ownedBy(uid types.UID) func(*corev1.Pod) bool {
	return func(p *corev1.Pod) bool {
		for _, o := range p.OwnerReferences {
			if o.UID == uid {
				return true
			}
		}
		return false
	}
}

// withLabel matches the pods with label key=value.
func withLabel(key, value string) func(*corev1.Pod) bool {
	return func(p *corev1.Pod) bool { return p.Labels[key] == value }
}

// containerLogPath is a container's log file in the kubelet's pod log
// directory (<ns>_<pod>_<uid>/<container>/<restart>.log, CRI format).
func containerLogPath(pod *corev1.Pod, cs corev1.ContainerStatus) string {
	return filepath.Join(env.podLogs, pod.Namespace+"_"+pod.Name+"_"+string(pod.UID), cs.Name,
		fmt.Sprintf("%d.log", cs.RestartCount))
}

// readContainerLog reads a terminated container's log, keeping only the
// messages: from open, the file opened while it ran (and closed here),
// when there is one, else from its path. kubectl logs cannot reach a
// node whose address is loopback.
func readContainerLog(pod *corev1.Pod, cs corev1.ContainerStatus, open *os.File) string {
	f := open
	if f == nil {
		var err error
		if f, err = os.Open(containerLogPath(pod, cs)); err != nil {
			return fmt.Sprintf("(no log: %v)", err)
		}
	}
	defer f.Close()
	var b strings.Builder
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		// <time> <stream> <P|F> <message>
		parts := strings.SplitN(sc.Text(), " ", 4)
		if len(parts) == 4 {
			b.WriteString(parts[3])
			if parts[2] == "F" {
				b.WriteByte('\n')
			}
		}
	}
	return b.String()
}

// dump logs everything recorded, for a failed test.
func (r *recorder) dump(t testing.TB) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, j := range r.jobs {
		t.Logf("job %s (uid %s): active=%d succeeded=%d failed=%d conditions=%s", j.Name, j.UID,
			j.Status.Active, j.Status.Succeeded, j.Status.Failed, conditions(j))
	}
	for _, rec := range r.podsLocked(func(*corev1.Pod) bool { return true }) {
		p := rec.pod
		t.Logf("pod %s: phase %s, deleted %v, first seen %s", p.Name, p.Status.Phase, rec.deleted,
			rec.firstSeen.Format(time.RFC3339Nano))
		statuses := append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...)
		for _, cs := range statuses {
			state, _ := json.Marshal(cs.State)
			t.Logf("  container %s: restarts %d, state %s", cs.Name, cs.RestartCount, state)
		}
		for name, l := range rec.logs {
			t.Logf("  log of %s:\n%s", name, indentLines(lastLines(l, 15)))
		}
	}
}

func conditions(j *batchv1.Job) string {
	var parts []string
	for _, c := range j.Status.Conditions {
		parts = append(parts, fmt.Sprintf("%s=%s(%s: %s)", c.Type, c.Status, c.Reason, c.Message))
	}
	return strings.Join(parts, " ")
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func indentLines(s string) string {
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}
