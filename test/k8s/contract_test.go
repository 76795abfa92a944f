package k8s

import (
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
)

// The contract phase's hook: after the release's resources are applied.
const (
	preHook  = "pre-install,pre-upgrade"
	postHook = "post-install,post-upgrade"
)

// jobsByHook splits the rendered Jobs into the pre-upgrade (expand) ones
// and the post-upgrade (contract) ones, and fails on a Job with any other
// hook.
func jobsByHook(t *testing.T, objs []object) (pre, post []*batchv1.Job) {
	t.Helper()
	for _, o := range objs {
		j, ok := o.obj.(*batchv1.Job)
		if !ok {
			continue
		}
		switch h := j.Annotations["helm.sh/hook"]; h {
		case preHook:
			pre = append(pre, j)
		case postHook:
			post = append(post, j)
		default:
			t.Errorf("Job %s: helm.sh/hook %q", j.Name, h)
		}
	}
	return pre, post
}

// exactly fails unless there are want of list, and returns it.
func exactly[T any](t *testing.T, what string, list []T, want int) []T {
	t.Helper()
	if len(list) != want {
		t.Fatalf("%d %s, want %d", len(list), what, want)
	}
	return list
}

// checkPhase: the container runs phase want (an empty want: the variable
// is unset, the binary's default all).
func checkPhase(t *testing.T, what string, c corev1.Container, want string) {
	t.Helper()
	e, ok := envOf(c, "LOCKMIGRATE_PHASE")
	switch {
	case want == "" && ok:
		t.Errorf("%s: LOCKMIGRATE_PHASE=%q, want unset", what, e.Value)
	case want != "" && (e.Value != want || e.ValueFrom != nil):
		t.Errorf("%s: LOCKMIGRATE_PHASE %+v, want %q", what, e, want)
	}
}

// expandPhase is the phase the pre-upgrade Job and the init containers
// run with values v.
func expandPhase(v values) string {
	if v.bool("job.enabled") && v.bool("contract.enabled") {
		return "expand"
	}
	return ""
}

// waitFor is contract.waitFor.
func waitFor(v values) []string {
	var out []string
	list, _ := v.get("contract.waitFor").([]any)
	for _, x := range list {
		out = append(out, x.(string))
	}
	return out
}

// contractObjects are the contract Job's RBAC objects of a rendering.
type contractObjects struct {
	sas      []*corev1.ServiceAccount
	roles    []*rbacv1.Role
	bindings []*rbacv1.RoleBinding
}

func contractRBAC(objs []object) contractObjects {
	var c contractObjects
	for _, o := range objs {
		switch x := o.obj.(type) {
		case *corev1.ServiceAccount:
			if x.Labels["app.kubernetes.io/component"] == "migration-contract" {
				c.sas = append(c.sas, x)
			}
		case *rbacv1.Role:
			c.roles = append(c.roles, x)
		case *rbacv1.RoleBinding:
			c.bindings = append(c.bindings, x)
		}
	}
	return c
}

// checkContractJob checks the post-install,post-upgrade Job as checkJob
// checks the pre-upgrade one, with what is its own: the hook, the phase,
// the rollout wait and its ServiceAccount. It returns the container.
func checkContractJob(t *testing.T, v values, job *batchv1.Job, rbac contractObjects, preSA string) corev1.Container {
	t.Helper()
	what := "contract Job " + job.Name
	weight, err := strconv.Atoi(v.str("contract.hookWeight"))
	if err != nil {
		t.Fatalf("contract.hookWeight: %v", err)
	}
	checkHook(t, what, job.Annotations, postHook, weight, jobDeletePolicy)
	wait := waitFor(v)
	ps := job.Spec.Template.Spec
	if got := ps.AutomountServiceAccountToken; got == nil || *got != (len(wait) > 0) {
		t.Errorf("%s: automountServiceAccountToken %v, want %v (only to read the workloads it waits for)", what, ptrStr(got), len(wait) > 0)
	}
	// checkJob's other checks apply as they are; it wants no token.
	copyJob := job.DeepCopy()
	copyJob.Spec.Template.Spec.AutomountServiceAccountToken = new(bool)
	c := checkJob(t, what, copyJob, v.str("job.onLocked"))
	checkPhase(t, what, c, "contract")
	if got, want := *job.Spec.ActiveDeadlineSeconds, v.get("contract.activeDeadlineSeconds"); float64(got) != want {
		t.Errorf("%s: activeDeadlineSeconds %d, values %v", what, got, want)
	}
	if got, want := *job.Spec.BackoffLimit, v.get("contract.backoffLimit"); float64(got) != want {
		t.Errorf("%s: backoffLimit %d, values %v", what, got, want)
	}
	if len(job.Name) > 63 || !strings.HasSuffix(job.Name, "-contract") {
		t.Errorf("%s: name %q", what, job.Name)
	}
	e, ok := envOf(c, "LOCKMIGRATE_CONTRACT_WAIT_FOR")
	if got := strings.Join(wait, ","); got != e.Value || ok != (got != "") {
		t.Errorf("%s: LOCKMIGRATE_CONTRACT_WAIT_FOR %+v, want %q", what, e, got)
	}
	if len(wait) == 0 {
		if ps.ServiceAccountName != preSA || len(rbac.sas)+len(rbac.roles)+len(rbac.bindings) != 0 {
			t.Errorf("%s: without waitFor: ServiceAccount %q (want the pre-upgrade Job's %q), %d ServiceAccounts, %d Roles, %d RoleBindings rendered",
				what, ps.ServiceAccountName, preSA, len(rbac.sas), len(rbac.roles), len(rbac.bindings))
		}
		return c
	}
	if d, err := time.ParseDuration(envValue(c, "LOCKMIGRATE_CONTRACT_WAIT_TIMEOUT")); err != nil ||
		d >= time.Duration(*job.Spec.ActiveDeadlineSeconds)*time.Second {
		t.Errorf("%s: LOCKMIGRATE_CONTRACT_WAIT_TIMEOUT %q (%v) not below activeDeadlineSeconds", what, envValue(c, "LOCKMIGRATE_CONTRACT_WAIT_TIMEOUT"), err)
	}
	checkRBACIn(t, what, ps.ServiceAccountName, wait, rbac, "test")
	return c
}

func envValue(c corev1.Container, name string) string {
	e, _ := envOf(c, name)
	return e.Value
}

// checkRBAC: the contract Job's ServiceAccount exists (without automount:
// the Job's pod opts in), its Role allows get on exactly the workloads
// waited for, by name, and list on pods, nothing else, and the RoleBinding
// binds the two, in namespace ns (empty for plain manifests, applied with
// -n). Ordinary resources, not hooks: Helm applies them before the post
// hooks.
func checkRBACIn(t *testing.T, what, sa string, wait []string, rbac contractObjects, ns string) {
	t.Helper()
	s := exactly(t, "contract ServiceAccounts", rbac.sas, 1)[0]
	role := exactly(t, "Roles", rbac.roles, 1)[0]
	rb := exactly(t, "RoleBindings", rbac.bindings, 1)[0]
	if s.Name != sa || s.AutomountServiceAccountToken == nil || *s.AutomountServiceAccountToken {
		t.Errorf("%s: ServiceAccount %s (automount %s), want %s without automount", what, s.Name, ptrStr(s.AutomountServiceAccountToken), sa)
	}
	for _, m := range []map[string]string{s.Annotations, role.Annotations, rb.Annotations} {
		if h, ok := m["helm.sh/hook"]; ok {
			t.Errorf("%s: RBAC object is a hook (%s): it must exist before the post hooks run", what, h)
		}
	}
	want := map[string][]string{}
	for _, w := range wait {
		kind, name, _ := strings.Cut(w, "/")
		want[kind+"s"] = append(want[kind+"s"], name)
	}
	pods := false
	for _, r := range role.Rules {
		if !slices.Equal(r.Verbs, []string{"get"}) && !slices.Equal(r.Verbs, []string{"list"}) {
			t.Errorf("%s: Role rule %+v: verbs other than get or list", what, r)
		}
		switch {
		case slices.Equal(r.APIGroups, []string{""}) && slices.Equal(r.Resources, []string{"pods"}) && slices.Equal(r.Verbs, []string{"list"}) && len(r.ResourceNames) == 0:
			pods = true
		case slices.Equal(r.APIGroups, []string{"apps"}) && len(r.Resources) == 1 && slices.Equal(r.Verbs, []string{"get"}):
			names := want[r.Resources[0]]
			if len(r.ResourceNames) == 0 || !slices.Equal(r.ResourceNames, names) {
				t.Errorf("%s: Role allows get on %s %v, want exactly %v", what, r.Resources[0], r.ResourceNames, names)
			}
			delete(want, r.Resources[0])
		default:
			t.Errorf("%s: unexpected Role rule %+v", what, r)
		}
	}
	if !pods || len(want) != 0 {
		t.Errorf("%s: Role %+v lacks list on pods (%v) or get on %v", what, role.Rules, pods, want)
	}
	if rb.RoleRef.Kind != "Role" || rb.RoleRef.Name != role.Name || len(rb.Subjects) != 1 ||
		rb.Subjects[0].Kind != "ServiceAccount" || rb.Subjects[0].Name != sa || rb.Subjects[0].Namespace != ns {
		t.Errorf("%s: RoleBinding %+v does not bind Role %s to ServiceAccount %s", what, rb, role.Name, sa)
	}
}

// checkHook is checkHookAnnotations for any hook.
func checkHook(t *testing.T, what string, ann map[string]string, hook string, weight int, del string) {
	t.Helper()
	if got := ann["helm.sh/hook"]; got != hook {
		t.Errorf("%s: helm.sh/hook = %q, want %q", what, got, hook)
	}
	if got := ann["helm.sh/hook-weight"]; got != strconv.Itoa(weight) {
		t.Errorf("%s: helm.sh/hook-weight = %q, want %q", what, got, strconv.Itoa(weight))
	}
	if got := ann["helm.sh/hook-delete-policy"]; got != del {
		t.Errorf("%s: helm.sh/hook-delete-policy = %q, want %q", what, got, del)
	}
}

// TestChartPhases: by default the pre-upgrade Job and the init container
// run expand and a contract Job runs after the rollout, with no wait and
// no API access; with waitFor the contract Job waits, with its own
// ServiceAccount and a Role limited to the named workloads; with
// contract.enabled=false there are no phases at all.
func TestChartPhases(t *testing.T) {
	defaults := filepath.Join(chartDir, "ci", "defaults-values.yaml")
	for _, tt := range []struct {
		name         string
		set          string
		phase        string // pre-upgrade Job and init container
		contractJobs int
		wait         []string
	}{
		{"defaults", "example.deployment.enabled=true", "expand", 1, nil},
		{"wait for a Deployment and a StatefulSet", "example.deployment.enabled=true,contract.waitFor={deployment/web,statefulset/worker}",
			"expand", 1, []string{"deployment/web", "statefulset/worker"}},
		{"no phases", "example.deployment.enabled=true,contract.enabled=false,contract.waitFor={deployment/web}", "", 0, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v := loadValues(t, filepath.Join(chartDir, "values.yaml"), defaults)
			objs := renderChart(t, chartDir, "-f", defaults, "--set", tt.set)
			pre, post := jobsByHook(t, objs)
			job := exactly(t, "pre-upgrade Jobs", pre, 1)[0]
			checkPhase(t, "Job "+job.Name, job.Spec.Template.Spec.Containers[0], tt.phase)
			dep := only[*appsv1.Deployment](t, objs, 1)[0]
			checkPhase(t, "init container", dep.Spec.Template.Spec.InitContainers[0], tt.phase)
			rbac := contractRBAC(objs)
			for _, j := range exactly(t, "contract Jobs", post, tt.contractJobs) {
				mergeInto(v, map[string]any{"contract": map[string]any{"waitFor": toAny(tt.wait)}})
				c := checkContractJob(t, v, j, rbac, job.Spec.Template.Spec.ServiceAccountName)
				checkValuesEnv(t, "contract Job "+j.Name, v, j.Spec.Template.Spec, c, true)
			}
			if tt.contractJobs == 0 && len(rbac.sas)+len(rbac.roles)+len(rbac.bindings) != 0 {
				t.Errorf("contract RBAC rendered without a contract Job")
			}
		})
	}
}

func toAny(s []string) []any {
	out := []any{}
	for _, x := range s {
		out = append(out, x)
	}
	return out
}

// checkDeployContract: deploy/contract-job.yaml is the chart's contract Job
// for the example Deployment (contract.waitFor deployment/<app>), with its
// ServiceAccount, Role and RoleBinding, and an Argo CD PostSync hook.
func checkDeployContract(t *testing.T, objs []object, secret *corev1.Secret, app string) {
	t.Helper()
	const what = "deploy/contract-job.yaml"
	job := only[*batchv1.Job](t, objs, 1)[0]
	if job.Annotations["argocd.argoproj.io/hook"] != "PostSync" {
		t.Errorf("%s: argocd.argoproj.io/hook = %q, want PostSync", what, job.Annotations["argocd.argoproj.io/hook"])
	}
	if a := job.Spec.Template.Spec.AutomountServiceAccountToken; a == nil || !*a {
		t.Errorf("%s: automountServiceAccountToken %s, want true", what, ptrStr(a))
	}
	copyJob := job.DeepCopy()
	copyJob.Spec.Template.Spec.AutomountServiceAccountToken = new(bool)
	c := checkJob(t, what, copyJob, "wait")
	checkPhase(t, what, c, "contract")
	checkSecretRefs(t, what, c, secret)
	if got := envValue(c, "LOCKMIGRATE_CONTRACT_WAIT_FOR"); got != "deployment/"+app {
		t.Errorf("%s: LOCKMIGRATE_CONTRACT_WAIT_FOR %q, want deployment/%s (the example Deployment)", what, got, app)
	}
	checkRBACIn(t, what, job.Spec.Template.Spec.ServiceAccountName, []string{"deployment/" + app}, contractRBAC(objs), "")

	chart := renderChart(t, chartDir, "--set", "database.existingSecret="+secret.Name+",contract.waitFor={deployment/"+app+"}")
	_, post := jobsByHook(t, chart)
	cjob := exactly(t, "contract Jobs", post, 1)[0]
	sameJob(t, cjob, job)
	sameContainer(t, what, cjob.Spec.Template.Spec.Containers[0], c)
	if a, b := contractRBAC(chart), contractRBAC(objs); !equalRules(a.roles[0].Rules, b.roles[0].Rules) {
		t.Errorf("%s: Role rules %+v, chart %+v", what, b.roles[0].Rules, a.roles[0].Rules)
	}
}

func equalRules(a, b []rbacv1.PolicyRule) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !slices.Equal(a[i].APIGroups, b[i].APIGroups) || !slices.Equal(a[i].Resources, b[i].Resources) ||
			!slices.Equal(a[i].ResourceNames, b[i].ResourceNames) || !slices.Equal(a[i].Verbs, b[i].Verbs) {
			return false
		}
	}
	return true
}
