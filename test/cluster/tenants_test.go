package cluster

import (
	"context"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/lockmigrate/lockmigrate/internal/pgtest"
)

const shards = 4

// TestTenantsIndexed: the hook Job with tenants.shards=4 is an Indexed Job;
// the Job controller runs 4 pods at once and gives each its
// JOB_COMPLETION_INDEX (the chart does not set it), each pod migrates the
// tenants of its shard (FNV-1a 64 of the schema name modulo 4), and every
// tenant is migrated exactly once, by the pod of its shard.
func TestTenantsIndexed(t *testing.T) {
	t.Parallel()
	failedSummary(t)
	const ns, rel = "lm-tenants", "fleet"
	newNamespace(t, ns)
	dbURL := newDatabaseSecret(t, ns, "app-database")
	db := pgtest.Connect(t, dbURL)
	var tenants []string
	for i := 1; i <= 12; i++ {
		tenants = append(tenants, fmt.Sprintf("tenant_%02d", i))
	}
	for _, schema := range append([]string{"billing"}, tenants...) {
		if _, err := db.Exec(context.Background(), "CREATE SCHEMA "+schema); err != nil {
			t.Fatal(err)
		}
	}
	r := record(t, ns)
	v := chartValues("v1", values{"tenants": values{
		"query": `SELECT nspname FROM pg_namespace WHERE nspname LIKE 'tenant\_%'`, "shards": shards, "concurrency": 2}})
	if c := renderJob(t, rel, ns, v).Spec.Template.Spec.Containers[0]; containerEnv(c, "JOB_COMPLETION_INDEX") != nil {
		t.Fatal("the chart sets JOB_COMPLETION_INDEX itself; the test must see Kubernetes set it")
	}

	since := time.Now()
	res := helmInstall(t, context.Background(), "install", rel, ns, v)
	if res.err != nil {
		t.Fatalf("helm install failed: %v", res.err)
	}
	job := finishedJob(t, r, rel+"-lockmigrate", since, 30*time.Second)
	if jobCondition(job, batchv1.JobComplete) == nil || job.Spec.CompletionMode == nil ||
		*job.Spec.CompletionMode != batchv1.IndexedCompletion || *job.Spec.Completions != shards || *job.Spec.Parallelism != shards {
		t.Fatalf("hook Job: %s, mode %v; want a Complete Indexed Job of %d", conditions(job), job.Spec.CompletionMode, shards)
	}
	byShard := checkShardPods(t, r, job, tenants)
	sizes := make([]int, shards)
	for _, tenant := range tenants {
		shard := shardOf(tenant)
		sizes[shard]++
		assertHistory(t, history(t, db, tenant), 5, func(int64) string { return byShard[shard] })
		assertAuditOnce(t, db, tenant, 5)
	}
	if n := pgtest.QueryInt(t, db, `SELECT count(*) FROM pg_tables WHERE schemaname = 'billing'`); n != 0 {
		t.Fatalf("schema billing (not a tenant) got %d tables", n)
	}
	summary(t, "Indexed Job, %d pods at once with JOB_COMPLETION_INDEX 0-%d set by the Job controller; shards of %v tenants; "+
		"each of the %d tenants migrated once (5 migrations) by its shard's pod; helm install --wait %s",
		shards, shards-1, sizes, len(tenants), ms(res.elapsed))
}

// checkShardPods checks the Job's pods, one per index, and returns the pod
// name of each shard.
func checkShardPods(t testing.TB, r *recorder, job *batchv1.Job, tenants []string) []string {
	t.Helper()
	pods := r.podsOf(ownedBy(job.UID))
	if len(pods) != shards {
		t.Fatalf("%d pods, want %d (one per index, no retry)", len(pods), shards)
	}
	byShard := make([]string, shards)
	for _, rec := range pods {
		p := rec.pod
		idx, err := strconv.Atoi(p.Annotations[batchv1.JobCompletionIndexAnnotation])
		if err != nil || idx < 0 || idx >= shards || byShard[idx] != "" {
			t.Fatalf("pod %s: completion index %q (taken: %v)", p.Name, p.Annotations[batchv1.JobCompletionIndexAnnotation], byShard)
		}
		byShard[idx] = p.Name
		if got := indexEnv(p); got != strconv.Itoa(idx) {
			t.Fatalf("pod %s (index %d): JOB_COMPLETION_INDEX resolves to %q", p.Name, idx, got)
		}
		st, msg := terminated(t, p, "lockmigrate")
		want := 0
		for _, tenant := range tenants {
			if shardOf(tenant) == idx {
				want++
			}
		}
		if st.ExitCode != 0 || msg.Tenants == nil || msg.Tenants.Shard == nil ||
			msg.Tenants.Shard.Index != idx || msg.Tenants.Shard.Count != shards ||
			msg.Tenants.Total != want || msg.Tenants.Applied != want {
			t.Fatalf("pod %s (index %d): exit %d, termination message %+v; want shard %d/%d with %d tenants applied",
				p.Name, idx, st.ExitCode, msg.Tenants, idx, shards, want)
		}
	}
	if slices.Contains(byShard, "") {
		t.Fatalf("indexes without a pod: %v", byShard)
	}
	return byShard
}

// shardOf is the shard of a tenant schema, computed here independently of
// lockmigrate (docs/multi-tenant.md: FNV-1a 64 of the name, modulo N).
func shardOf(schema string) int {
	h := fnv.New64a()
	h.Write([]byte(schema))
	return int(h.Sum64() % shards)
}

// indexEnv resolves the JOB_COMPLETION_INDEX variable of the pod's
// container: the Job controller adds it as a reference to the pod's
// completion-index label (annotation before Kubernetes 1.28). "" when it is
// missing or refers to anything else.
func indexEnv(p *corev1.Pod) string {
	e := containerEnv(p.Spec.Containers[0], "JOB_COMPLETION_INDEX")
	if e == nil || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil {
		return ""
	}
	switch e.ValueFrom.FieldRef.FieldPath {
	case "metadata.labels['" + batchv1.JobCompletionIndexAnnotation + "']":
		return p.Labels[batchv1.JobCompletionIndexAnnotation]
	case "metadata.annotations['" + batchv1.JobCompletionIndexAnnotation + "']":
		return p.Annotations[batchv1.JobCompletionIndexAnnotation]
	}
	return ""
}
