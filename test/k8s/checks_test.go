package k8s

import (
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// The contract every lockmigrate Job and container must meet, wherever it
// comes from (the chart's hook Job, its init container template, deploy/).
const (
	containerName = "lockmigrate"
	imageUser     = 65532 // the image's user and group
	// helmDefaultTimeout is `helm --timeout`'s default; the Job's deadline
	// must be shorter.
	helmDefaultTimeout = 300
)

// Exit codes that fail the Job at once (README: 1 migration failed,
// 2 configuration, 5 validation).
var finalExitCodes = []int32{1, 2, 5}

// Hook delete policies: the Job is replaced at the next run and deleted
// once it succeeded (a failed one stays for its logs); the ServiceAccount
// only replaced (Argo CD may judge it "succeeded" before the Job starts).
const (
	jobDeletePolicy = "before-hook-creation,hook-succeeded"
	saDeletePolicy  = "before-hook-creation"
)

// checkHookAnnotations checks the Helm hook annotations of a hook resource.
func checkHookAnnotations(t *testing.T, what string, ann map[string]string, wantWeight int, wantDelete string) {
	t.Helper()
	if got := ann["helm.sh/hook"]; got != "pre-install,pre-upgrade" {
		t.Errorf("%s: helm.sh/hook = %q, want %q", what, got, "pre-install,pre-upgrade")
	}
	w, ok := ann["helm.sh/hook-weight"]
	if !ok {
		t.Errorf("%s: no helm.sh/hook-weight (hooks must be ordered explicitly)", what)
	} else if n, err := strconv.Atoi(w); err != nil || n != wantWeight {
		t.Errorf("%s: helm.sh/hook-weight = %q, want %q", what, w, strconv.Itoa(wantWeight))
	}
	if got := ann["helm.sh/hook-delete-policy"]; got != wantDelete {
		t.Errorf("%s: helm.sh/hook-delete-policy = %q, want %q", what, got, wantDelete)
	}
}

// checkJob checks a lockmigrate Job (hook or plain) and returns its
// lockmigrate container.
func checkJob(t *testing.T, what string, job *batchv1.Job, wantOnLocked string) corev1.Container {
	t.Helper()
	s := job.Spec
	if s.BackoffLimit == nil {
		t.Errorf("%s: no backoffLimit", what)
	}
	if d := s.ActiveDeadlineSeconds; d == nil || *d <= 0 || *d >= helmDefaultTimeout {
		t.Errorf("%s: activeDeadlineSeconds = %v, want set, > 0 and < helm's default --timeout (%ds)", what, ptrStr(d), helmDefaultTimeout)
	}
	if s.TTLSecondsAfterFinished != nil {
		t.Errorf("%s: ttlSecondsAfterFinished = %d, want unset", what, *s.TTLSecondsAfterFinished)
	}
	checkPodFailurePolicy(t, what, s.PodFailurePolicy)
	ps := s.Template.Spec
	if ps.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("%s: restartPolicy = %q, want Never", what, ps.RestartPolicy)
	}
	if ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken {
		t.Errorf("%s: automountServiceAccountToken = %v, want false", what, ptrStr(ps.AutomountServiceAccountToken))
	}
	if len(ps.InitContainers) != 0 || len(ps.Containers) != 1 {
		t.Fatalf("%s: %d init containers and %d containers, want 0 and 1", what, len(ps.InitContainers), len(ps.Containers))
	}
	c := ps.Containers[0]
	if c.Name != containerName {
		t.Errorf("%s: container %q, want %q (podFailurePolicy names it)", what, c.Name, containerName)
	}
	checkPodSecurityContext(t, what, ps.SecurityContext)
	checkRestricted(t, what, ps)
	checkContainer(t, what, c, wantOnLocked)
	checkMounts(t, what, ps, c)
	if s.ActiveDeadlineSeconds != nil {
		checkTimeoutsNested(t, what, c, time.Duration(*s.ActiveDeadlineSeconds)*time.Second)
	}
	return c
}

// checkTimeoutsNested: lockmigrate's own deadlines (connect; wait, in wait
// mode) end before the Job's, so a stuck run exits with its own exit code
// and message instead of being killed by DeadlineExceeded.
func checkTimeoutsNested(t *testing.T, what string, c corev1.Container, deadline time.Duration) {
	t.Helper()
	for _, d := range []struct {
		name string
		def  time.Duration // the binary's default
		only string        // applies only with this ON_LOCKED
	}{
		{"LOCKMIGRATE_CONNECT_TIMEOUT", time.Minute, ""},
		{"LOCKMIGRATE_WAIT_TIMEOUT", 10 * time.Minute, "wait"},
	} {
		if onLocked, _ := envOf(c, "LOCKMIGRATE_ON_LOCKED"); d.only != "" && onLocked.Value != d.only {
			continue
		}
		v := d.def
		if e, ok := envOf(c, d.name); ok {
			var err error
			if v, err = time.ParseDuration(e.Value); err != nil {
				t.Errorf("%s: %s=%q: %v", what, d.name, e.Value, err)
				continue
			}
		}
		if v >= deadline {
			t.Errorf("%s: %s is %s, not below activeDeadlineSeconds (%s)", what, d.name, v, deadline)
		}
	}
}

func checkPodFailurePolicy(t *testing.T, what string, p *batchv1.PodFailurePolicy) {
	t.Helper()
	if p == nil {
		t.Errorf("%s: no podFailurePolicy", what)
		return
	}
	var failJob, ignore bool
	for _, r := range p.Rules {
		switch {
		case r.Action == batchv1.PodFailurePolicyActionFailJob && r.OnExitCodes != nil:
			e := r.OnExitCodes
			if e.ContainerName == nil || *e.ContainerName != containerName {
				t.Errorf("%s: FailJob rule: containerName = %v, want %q", what, ptrStr(e.ContainerName), containerName)
			}
			if e.Operator != batchv1.PodFailurePolicyOnExitCodesOpIn || !reflect.DeepEqual(e.Values, finalExitCodes) {
				t.Errorf("%s: FailJob rule: %s %v, want In %v", what, e.Operator, e.Values, finalExitCodes)
			}
			if len(r.OnPodConditions) != 0 {
				t.Errorf("%s: FailJob rule also has onPodConditions", what)
			}
			failJob = true
		case r.Action == batchv1.PodFailurePolicyActionIgnore && len(r.OnPodConditions) > 0:
			want := []batchv1.PodFailurePolicyOnPodConditionsPattern{{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue}}
			if !reflect.DeepEqual(r.OnPodConditions, want) || r.OnExitCodes != nil {
				t.Errorf("%s: Ignore rule = %+v, want onPodConditions %+v only", what, r, want)
			}
			ignore = true
		default:
			t.Errorf("%s: unexpected podFailurePolicy rule %+v", what, r)
		}
	}
	if !failJob || !ignore || len(p.Rules) != 2 {
		t.Errorf("%s: podFailurePolicy rules %+v, want FailJob on exit codes %v of %q and Ignore on DisruptionTarget",
			what, p.Rules, finalExitCodes, containerName)
	}
}

// checkPodSecurityContext checks the Job pod's security context.
func checkPodSecurityContext(t *testing.T, what string, sc *corev1.PodSecurityContext) {
	t.Helper()
	if sc == nil {
		t.Errorf("%s: no pod securityContext", what)
		return
	}
	if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Errorf("%s: pod runAsNonRoot = %v, want true", what, ptrStr(sc.RunAsNonRoot))
	}
	for name, v := range map[string]*int64{"runAsUser": sc.RunAsUser, "runAsGroup": sc.RunAsGroup, "fsGroup": sc.FSGroup} {
		if v == nil || *v != imageUser {
			t.Errorf("%s: pod %s = %v, want %d", what, name, ptrStr(v), imageUser)
		}
	}
	if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: pod seccompProfile = %+v, want RuntimeDefault", what, sc.SeccompProfile)
	}
}

// checkContainer checks the lockmigrate container (the Job's, or an init
// container).
func checkContainer(t *testing.T, what string, c corev1.Container, wantOnLocked string) {
	t.Helper()
	what = fmt.Sprintf("%s: container %s", what, c.Name)
	if c.Image == "" {
		t.Errorf("%s: no image", what)
	}
	if len(c.Command) != 0 || len(c.Args) != 0 {
		t.Errorf("%s: command %q args %q, want none (the image's entrypoint runs migrate)", what, c.Command, c.Args)
	}
	if c.TerminationMessagePolicy != corev1.TerminationMessageFallbackToLogsOnError {
		t.Errorf("%s: terminationMessagePolicy = %q, want FallbackToLogsOnError", what, c.TerminationMessagePolicy)
	}
	if p := c.TerminationMessagePath; p != "" && p != "/dev/termination-log" {
		t.Errorf("%s: terminationMessagePath = %q, want the default /dev/termination-log (the binary's default LOCKMIGRATE_TERMINATION_LOG)", what, p)
	}
	sc := c.SecurityContext
	if sc == nil {
		t.Errorf("%s: no securityContext", what)
	} else {
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("%s: allowPrivilegeEscalation = %v, want false", what, ptrStr(sc.AllowPrivilegeEscalation))
		}
		if sc.Capabilities == nil || !reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
			t.Errorf("%s: capabilities = %+v, want drop [ALL], add none", what, sc.Capabilities)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("%s: readOnlyRootFilesystem = %v, want true", what, ptrStr(sc.ReadOnlyRootFilesystem))
		}
		if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
			t.Errorf("%s: runAsNonRoot = %v, want true", what, ptrStr(sc.RunAsNonRoot))
		}
		if sc.Privileged != nil && *sc.Privileged {
			t.Errorf("%s: privileged", what)
		}
		for name, v := range map[string]*int64{"runAsUser": sc.RunAsUser, "runAsGroup": sc.RunAsGroup} {
			if v != nil && *v != imageUser {
				t.Errorf("%s: %s = %d, want %d (the image's user)", what, name, *v, imageUser)
			}
		}
	}
	r := c.Resources
	if r.Requests.Cpu().IsZero() || r.Requests.Memory().IsZero() || r.Limits.Memory().IsZero() {
		t.Errorf("%s: resources %+v, want cpu and memory requests and a memory limit", what, r)
	}

	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		if _, dup := env[e.Name]; dup {
			t.Errorf("%s: env %s set twice", what, e.Name)
		}
		env[e.Name] = e
	}
	for name, path := range map[string]string{"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"} {
		e, ok := env[name]
		if !ok || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != path || e.Value != "" {
			t.Errorf("%s: env %s = %+v, want valueFrom.fieldRef.fieldPath %s", what, name, e, path)
		} else if v := e.ValueFrom.FieldRef.APIVersion; v != "" && v != "v1" {
			t.Errorf("%s: env %s fieldRef apiVersion %q", what, name, v)
		}
	}
	if got := env["LOCKMIGRATE_ON_LOCKED"].Value; got != wantOnLocked {
		t.Errorf("%s: LOCKMIGRATE_ON_LOCKED = %q, want %q", what, got, wantOnLocked)
	}
	if _, ok := env["LOCKMIGRATE_TERMINATION_LOG"]; ok {
		t.Errorf("%s: sets LOCKMIGRATE_TERMINATION_LOG; the default (/dev/termination-log) is Kubernetes' terminationMessagePath", what)
	}
	// Credentials never as literals.
	for _, name := range []string{"DATABASE_URL", "PGPASSWORD", "LOCKMIGRATE_PUSHGATEWAY_PASSWORD"} {
		if e, ok := env[name]; ok && (e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil) {
			t.Errorf("%s: env %s is not from a Secret (secretKeyRef): %+v", what, name, e)
		}
	}
	_, url := env["DATABASE_URL"]
	_, file := env["DATABASE_URL_FILE"]
	_, host := env["PGHOST"]
	if n := btoi(url) + btoi(file) + btoi(host); n != 1 {
		t.Errorf("%s: want exactly one of DATABASE_URL, DATABASE_URL_FILE, PGHOST; have %d", what, n)
	}
}

// checkMounts checks that every volume mount of c names a volume of the
// pod, and that DATABASE_URL_FILE lies in a mounted Secret that holds it.
func checkMounts(t *testing.T, what string, ps corev1.PodSpec, c corev1.Container) {
	t.Helper()
	vols := map[string]corev1.Volume{}
	for _, v := range ps.Volumes {
		vols[v.Name] = v
	}
	for _, m := range c.VolumeMounts {
		if _, ok := vols[m.Name]; !ok {
			t.Errorf("%s: container %s mounts volume %q, which the pod does not have", what, c.Name, m.Name)
		}
		if !m.ReadOnly {
			t.Errorf("%s: container %s mounts %q read-write; lockmigrate only reads", what, c.Name, m.Name)
		}
	}
	for _, e := range c.Env {
		if e.Name != "DATABASE_URL_FILE" {
			continue
		}
		found := false
		for _, m := range c.VolumeMounts {
			rel, ok := strings.CutPrefix(e.Value, strings.TrimSuffix(m.MountPath, "/")+"/")
			v := vols[m.Name]
			if !ok || v.Secret == nil {
				continue
			}
			if len(v.Secret.Items) == 0 {
				found = true // the whole Secret; rel is one of its keys
			}
			for _, it := range v.Secret.Items {
				found = found || it.Path == rel
			}
		}
		if !found {
			t.Errorf("%s: DATABASE_URL_FILE=%s is not a file of a mounted Secret", what, e.Value)
		}
	}
}

// checkRestricted applies the "restricted" Pod Security Standard
// (https://kubernetes.io/docs/concepts/security/pod-security-standards/)
// to a pod spec: every container, init containers included.
func checkRestricted(t *testing.T, what string, ps corev1.PodSpec) {
	t.Helper()
	if ps.HostNetwork || ps.HostPID || ps.HostIPC {
		t.Errorf("%s: uses host namespaces", what)
	}
	allowed := func(v corev1.VolumeSource) bool {
		return v.ConfigMap != nil || v.CSI != nil || v.DownwardAPI != nil || v.EmptyDir != nil ||
			v.Ephemeral != nil || v.PersistentVolumeClaim != nil || v.Projected != nil || v.Secret != nil
	}
	for _, v := range ps.Volumes {
		if !allowed(v.VolumeSource) {
			t.Errorf("%s: volume %s has a type the restricted profile forbids", what, v.Name)
		}
	}
	psc := ps.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	if psc.RunAsUser != nil && *psc.RunAsUser == 0 {
		t.Errorf("%s: pod runAsUser 0", what)
	}
	all := append(append([]corev1.Container{}, ps.InitContainers...), ps.Containers...)
	for _, c := range all {
		sc := c.SecurityContext
		if sc == nil {
			sc = &corev1.SecurityContext{}
		}
		cw := what + ": container " + c.Name
		if sc.Privileged != nil && *sc.Privileged {
			t.Errorf("%s: privileged", cw)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("%s: allowPrivilegeEscalation must be false", cw)
		}
		if sc.Capabilities == nil || !contains(sc.Capabilities.Drop, "ALL") {
			t.Errorf("%s: must drop ALL capabilities", cw)
		} else {
			for _, a := range sc.Capabilities.Add {
				if a != "NET_BIND_SERVICE" {
					t.Errorf("%s: adds capability %s", cw, a)
				}
			}
		}
		nonRoot := sc.RunAsNonRoot
		if nonRoot == nil {
			nonRoot = psc.RunAsNonRoot
		}
		if nonRoot == nil || !*nonRoot {
			t.Errorf("%s: runAsNonRoot must be true (pod or container)", cw)
		}
		if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
			t.Errorf("%s: runAsUser 0", cw)
		}
		sp := sc.SeccompProfile
		if sp == nil {
			sp = psc.SeccompProfile
		}
		if sp == nil || (sp.Type != corev1.SeccompProfileTypeRuntimeDefault && sp.Type != corev1.SeccompProfileTypeLocalhost) {
			t.Errorf("%s: seccompProfile must be RuntimeDefault or Localhost (pod or container)", cw)
		}
		for _, p := range c.Ports {
			if p.HostPort != 0 {
				t.Errorf("%s: hostPort", cw)
			}
		}
	}
}

// envOf returns the env entry name of c.
func envOf(c corev1.Container, name string) (corev1.EnvVar, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e, true
		}
	}
	return corev1.EnvVar{}, false
}

// values is a chart's values: the chart's values.yaml with a values file
// merged over it, as Helm does.
type values map[string]any

func loadValues(t testing.TB, files ...string) values {
	t.Helper()
	merged := map[string]any{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := yaml.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		mergeInto(merged, m)
	}
	return merged
}

func mergeInto(dst, src map[string]any) {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				mergeInto(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
}

// get returns the value at a dotted path, or nil.
func (v values) get(path string) any {
	var cur any = map[string]any(v)
	for _, k := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[k]
	}
	return cur
}

func (v values) str(path string) string {
	x := v.get(path)
	if x == nil {
		return ""
	}
	return fmt.Sprint(x)
}

func (v values) bool(path string) bool {
	b, _ := v.get(path).(bool)
	return b
}

func ptrStr[T any](p *T) string {
	if p == nil {
		return "<unset>"
	}
	return fmt.Sprint(*p)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func contains[T comparable](s []T, x T) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}
