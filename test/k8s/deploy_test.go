package k8s

import (
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/yaml"
)

// deployFiles returns the Kubernetes manifests in deploy/: every YAML file
// except kustomization.yaml (not a Kubernetes API type) and monitoring/
// (Prometheus and Grafana files, owned separately).
func deployFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(deployDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != deployDir && d.Name() == "monitoring" {
				return filepath.SkipDir
			}
			return nil
		}
		ext := filepath.Ext(path)
		if (ext == ".yaml" || ext == ".yml") && d.Name() != "kustomization.yaml" {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	return files
}

// TestDeployManifests decodes every manifest in deploy/ strictly and
// checks the Job, the init container and the Secret they read, and that
// they agree with what the chart renders from its defaults.
func TestDeployManifests(t *testing.T) {
	byFile := map[string][]object{}
	var all []object
	for _, f := range deployFiles(t) {
		objs := decodeFile(t, f)
		if len(objs) == 0 {
			t.Errorf("%s: no Kubernetes object", f)
		}
		for _, o := range objs {
			t.Logf("%s: %s %s", f, o.kind, o.name)
		}
		byFile[filepath.Base(f)] = objs
		all = append(all, objs...)
	}
	for _, want := range []string{"job.yaml", "contract-job.yaml", "deployment-with-init-container.yaml", "secret.example.yaml"} {
		if _, ok := byFile[want]; !ok {
			t.Fatalf("deploy/%s missing", want)
		}
	}

	secret := only[*corev1.Secret](t, byFile["secret.example.yaml"], 1)[0]
	job := only[*batchv1.Job](t, byFile["job.yaml"], 1)[0]
	if job.Annotations["argocd.argoproj.io/hook"] != "PreSync" {
		t.Errorf("deploy/job.yaml: argocd.argoproj.io/hook = %q, want PreSync", job.Annotations["argocd.argoproj.io/hook"])
	}
	jc := checkJob(t, "deploy/job.yaml", job, "wait")
	checkSecretRefs(t, "deploy/job.yaml", jc, secret)

	dep := only[*appsv1.Deployment](t, byFile["deployment-with-init-container.yaml"], 1)[0]
	ps := dep.Spec.Template.Spec
	if len(ps.InitContainers) != 1 {
		t.Fatalf("deploy/deployment-with-init-container.yaml: %d init containers, want 1", len(ps.InitContainers))
	}
	ic := ps.InitContainers[0]
	checkPodSecurityContext(t, "deploy/deployment-with-init-container.yaml", ps.SecurityContext)
	checkRestricted(t, "deploy/deployment-with-init-container.yaml", ps)
	checkContainer(t, "deploy/deployment-with-init-container.yaml", ic, "wait")
	checkMounts(t, "deploy/deployment-with-init-container.yaml", ps, ic)
	checkSecretRefs(t, "deploy/deployment-with-init-container.yaml", ic, secret)

	// The plain manifests are what the chart renders from its defaults
	// (plus the Secret's name and the wait timeouts they spell out).
	wait := func(c corev1.Container) string { e, _ := envOf(c, "LOCKMIGRATE_WAIT_TIMEOUT"); return e.Value }
	chart := renderChart(t, chartDir, "--set", "database.existingSecret="+secret.Name+
		",config.waitTimeout="+wait(jc)+",example.deployment.enabled=true")
	pre, _ := jobsByHook(t, chart)
	cjob := exactly(t, "pre-upgrade Jobs", pre, 1)[0]
	sameJob(t, cjob, job)
	sameContainer(t, "deploy/job.yaml", cjob.Spec.Template.Spec.Containers[0], jc)
	checkPhase(t, "deploy/job.yaml", jc, "expand")
	checkPhase(t, "deploy/deployment-with-init-container.yaml", ic, "expand")
	checkDeployContract(t, byFile["contract-job.yaml"], secret, dep.Name)
	// The init container as the chart renders it with phases on (the
	// default: its contract Job runs after the rollout).
	chart = renderChart(t, chartDir, "--set", "database.existingSecret="+secret.Name+
		",config.waitTimeout="+wait(ic)+",example.deployment.enabled=true")
	cdep := only[*appsv1.Deployment](t, chart, 1)[0]
	sameContainer(t, "deploy/deployment-with-init-container.yaml", cdep.Spec.Template.Spec.InitContainers[0], ic)
	if !equality.Semantic.DeepEqual(cdep.Spec.Template.Spec.SecurityContext, ps.SecurityContext) {
		t.Errorf("deploy/deployment-with-init-container.yaml: pod securityContext %+v, chart %+v", ps.SecurityContext, cdep.Spec.Template.Spec.SecurityContext)
	}

	checkKustomization(t, all)
}

// checkSecretRefs: every secretKeyRef of c names the example Secret and
// one of its keys.
func checkSecretRefs(t *testing.T, what string, c corev1.Container, s *corev1.Secret) {
	t.Helper()
	for _, e := range c.Env {
		if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
			continue
		}
		r := e.ValueFrom.SecretKeyRef
		_, inString := s.StringData[r.Key]
		_, inData := s.Data[r.Key]
		if r.Name != s.Name || !(inString || inData) {
			t.Errorf("%s: %s from Secret %q key %q; secret.example.yaml is %q with keys %v",
				what, e.Name, r.Name, r.Key, s.Name, keys(s.StringData))
		}
	}
}

func sameJob(t *testing.T, chart, plain *batchv1.Job) {
	t.Helper()
	for _, f := range []struct {
		name        string
		chart, mine any
	}{
		{"backoffLimit", chart.Spec.BackoffLimit, plain.Spec.BackoffLimit},
		{"activeDeadlineSeconds", chart.Spec.ActiveDeadlineSeconds, plain.Spec.ActiveDeadlineSeconds},
		{"podFailurePolicy", chart.Spec.PodFailurePolicy, plain.Spec.PodFailurePolicy},
		{"pod securityContext", chart.Spec.Template.Spec.SecurityContext, plain.Spec.Template.Spec.SecurityContext},
		{"restartPolicy", chart.Spec.Template.Spec.RestartPolicy, plain.Spec.Template.Spec.RestartPolicy},
		{"automountServiceAccountToken", chart.Spec.Template.Spec.AutomountServiceAccountToken, plain.Spec.Template.Spec.AutomountServiceAccountToken},
	} {
		if !equality.Semantic.DeepEqual(f.chart, f.mine) {
			t.Errorf("deploy/job.yaml: %s differs from the chart's default: %s vs %s", f.name, dump(f.mine), dump(f.chart))
		}
	}
}

// sameContainer compares a plain manifest's lockmigrate container with the
// chart's, env as a set (order does not matter to the binary).
func sameContainer(t *testing.T, what string, chart, plain corev1.Container) {
	t.Helper()
	envMap := func(c corev1.Container) map[string]corev1.EnvVar {
		m := map[string]corev1.EnvVar{}
		for _, e := range c.Env {
			m[e.Name] = e
		}
		return m
	}
	norm := func(c corev1.Container) corev1.Container {
		c.Env = nil
		return c
	}
	if !equality.Semantic.DeepEqual(envMap(chart), envMap(plain)) {
		t.Errorf("%s: env differs from the chart's default:\n%s\nchart:\n%s", what, dump(plain.Env), dump(chart.Env))
	}
	if !equality.Semantic.DeepEqual(norm(chart), norm(plain)) {
		t.Errorf("%s: container differs from the chart's default:\n%s\nchart:\n%s", what, dump(norm(plain)), dump(norm(chart)))
	}
}

// checkKustomization: deploy/kustomization.yaml lists existing manifests
// (the Job; not the example Secret) and pins the image the Job uses.
func checkKustomization(t *testing.T, objs []object) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Resources  []string `json:"resources"`
		Images     []struct {
			Name    string `json:"name"`
			NewName string `json:"newName,omitempty"`
			NewTag  string `json:"newTag,omitempty"`
			Digest  string `json:"digest,omitempty"`
		} `json:"images"`
	}
	if err := yaml.UnmarshalStrict(b, &k); err != nil {
		t.Fatalf("deploy/kustomization.yaml (only apiVersion, kind, resources and images are expected): %v", err)
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Errorf("deploy/kustomization.yaml: %s %s", k.APIVersion, k.Kind)
	}
	if !contains(k.Resources, "job.yaml") {
		t.Errorf("deploy/kustomization.yaml: resources %v lack job.yaml", k.Resources)
	}
	for _, r := range k.Resources {
		if strings.Contains(r, "secret.example") || strings.HasPrefix(r, "monitoring") {
			t.Errorf("deploy/kustomization.yaml: lists %s", r)
		}
		if _, err := os.Stat(filepath.Join(deployDir, r)); err != nil {
			t.Errorf("deploy/kustomization.yaml: resource %s: %v", r, err)
		}
	}
	images := map[string]bool{}
	for _, o := range objs {
		if j, ok := o.obj.(*batchv1.Job); ok {
			for _, c := range j.Spec.Template.Spec.Containers {
				images[c.Image] = true
			}
		}
	}
	for _, im := range k.Images {
		if !images[im.Name+":"+im.NewTag] {
			t.Errorf("deploy/kustomization.yaml: image %s:%s is not the Job's (%v)", im.Name, im.NewTag, keys(images))
		}
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func dump(v any) string {
	b, err := yaml.Marshal(v)
	if err != nil {
		return err.Error()
	}
	return string(b)
}
