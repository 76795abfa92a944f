package k8s

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
)

// renderChart runs helm template on chart with the given arguments (for
// the oldest supported Kubernetes) and strictly decodes what it renders.
func renderChart(t testing.TB, chart string, args ...string) []object {
	t.Helper()
	all := append([]string{"template", release, chart, "--namespace", "test", "--kube-version", kubeVersion}, args...)
	out, stderr, ok := runHelm(t, all...)
	if !ok {
		t.Fatalf("helm %s failed:\n%s", strings.Join(all, " "), stderr)
	}
	return decodeStream(t, []byte(out), "helm template "+strings.Join(args, " "))
}

// lintSummary is the interesting part of helm lint's output.
var lintProblem = regexp.MustCompile(`(?m)^\[(WARNING|ERROR)\].*$`)

// TestChartLint runs helm lint --strict with every CI values file.
func TestChartLint(t *testing.T) {
	for _, f := range ciValues(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			t.Parallel()
			out, stderr, ok := runHelm(t, "lint", "--strict", "--kube-version", kubeVersion, chartDir, "-f", f)
			if !ok || !strings.Contains(out, "1 chart(s) linted, 0 chart(s) failed") {
				t.Fatalf("helm lint --strict -f %s failed:\n%s%s", f, out, stderr)
			}
			if p := lintProblem.FindAllString(out, -1); len(p) > 0 {
				t.Fatalf("helm lint --strict -f %s: %s", f, strings.Join(p, "; "))
			}
			t.Logf("helm lint --strict -f %s: %s", filepath.Base(f), strings.TrimSpace(lastLine(out)))
		})
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndex(s, "\n")+1:]
}

// TestChartRender renders the chart with every CI values file, decodes
// every document strictly and checks the hook Job, the ServiceAccount and
// the example Deployment against the values.
func TestChartRender(t *testing.T) {
	for _, f := range ciValues(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			t.Parallel()
			v := loadValues(t, filepath.Join(chartDir, "values.yaml"), f)
			objs := renderChart(t, chartDir, "-f", f)
			for _, o := range objs {
				t.Logf("%s: %s %s", o.source, o.kind, o.name)
				switch o.obj.(type) {
				case *batchv1.Job, *appsv1.Deployment, *corev1.ServiceAccount, *rbacv1.Role, *rbacv1.RoleBinding:
				default:
					t.Errorf("%s: unexpected kind %s", o.source, o.kind)
				}
			}

			pre, post := jobsByHook(t, objs)
			jobs := exactly(t, "pre-upgrade Jobs", pre, btoi(v.bool("job.enabled")))
			contractJobs := exactly(t, "contract Jobs", post, btoi(v.bool("job.enabled") && v.bool("contract.enabled")))
			sas := exactly(t, "ServiceAccounts of the pre-upgrade Job", migrationSAs(objs), btoi(v.bool("job.enabled") && v.bool("serviceAccount.create")))
			deps := only[*appsv1.Deployment](t, objs, btoi(v.bool("example.deployment.enabled")))
			weight, err := strconv.Atoi(v.str("job.hookWeight"))
			if err != nil {
				t.Fatalf("job.hookWeight: %v", err)
			}

			for _, job := range jobs {
				what := "Job " + job.Name
				checkHookAnnotations(t, what, job.Annotations, weight, jobDeletePolicy)
				c := checkJob(t, what, job, v.str("job.onLocked"))
				checkValuesEnv(t, what, v, job.Spec.Template.Spec, c, true)
				checkShards(t, what, v, job)
				checkPhase(t, what, c, expandPhase(v))
				if got, want := *job.Spec.BackoffLimit, v.get("job.backoffLimit"); float64(got) != want {
					t.Errorf("%s: backoffLimit %d, values %v", what, got, want)
				}
				if got, want := *job.Spec.ActiveDeadlineSeconds, v.get("job.activeDeadlineSeconds"); float64(got) != want {
					t.Errorf("%s: activeDeadlineSeconds %d, values %v", what, got, want)
				}
				sa := job.Spec.Template.Spec.ServiceAccountName
				if len(sas) == 1 && sa != sas[0].Name {
					t.Errorf("%s: serviceAccountName %q, want the created %q", what, sa, sas[0].Name)
				}
				if len(sas) == 0 && sa != v.str("serviceAccount.name") && !(sa == "default" && v.str("serviceAccount.name") == "") {
					t.Errorf("%s: serviceAccountName %q with serviceAccount.name=%q", what, sa, v.str("serviceAccount.name"))
				}
			}
			for _, job := range contractJobs {
				c := checkContractJob(t, v, job, contractRBAC(objs), jobs[0].Spec.Template.Spec.ServiceAccountName)
				checkValuesEnv(t, "contract Job "+job.Name, v, job.Spec.Template.Spec, c, true)
				checkShards(t, "contract Job "+job.Name, v, job)
			}
			for _, sa := range sas {
				// Created before the Job, which runs before ordinary resources exist.
				checkHookAnnotations(t, "ServiceAccount "+sa.Name, sa.Annotations, weight-1, saDeletePolicy)
				if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
					t.Errorf("ServiceAccount %s: automountServiceAccountToken = %v, want false", sa.Name, ptrStr(sa.AutomountServiceAccountToken))
				}
			}
			for _, d := range deps {
				what := "Deployment " + d.Name
				ps := d.Spec.Template.Spec
				if len(ps.InitContainers) != 1 {
					t.Fatalf("%s: %d init containers, want 1", what, len(ps.InitContainers))
				}
				ic := ps.InitContainers[0]
				if ic.Name != v.str("initContainer.name") {
					t.Errorf("%s: init container %q, want %q", what, ic.Name, v.str("initContainer.name"))
				}
				checkPodSecurityContext(t, what, ps.SecurityContext)
				checkRestricted(t, what, ps)
				checkContainer(t, what, ic, v.str("initContainer.onLocked"))
				checkMounts(t, what, ps, ic)
				checkValuesEnv(t, what, v, ps, ic, false)
				checkPhase(t, what, ic, expandPhase(v))
			}
		})
	}
}

// migrationSAs are the ServiceAccounts of the pre-upgrade Job (not the
// contract Job's).
func migrationSAs(objs []object) []*corev1.ServiceAccount {
	var out []*corev1.ServiceAccount
	for _, o := range objs {
		if sa, ok := o.obj.(*corev1.ServiceAccount); ok && sa.Labels["app.kubernetes.io/component"] == "migration" {
			out = append(out, sa)
		}
	}
	return out
}

// checkValuesEnv checks that the container's environment carries the
// values' database, lockmigrate and Pushgateway settings.
//
// The hook Job (job true) takes its wait timeout from job.waitTimeout when
// that is set.
func checkValuesEnv(t *testing.T, what string, v values, ps corev1.PodSpec, c corev1.Container, job bool) {
	t.Helper()
	secretRef := func(name, secret, key string) {
		t.Helper()
		e, ok := envOf(c, name)
		if !ok || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
			t.Errorf("%s: %s is not from a Secret: %+v", what, name, e)
			return
		}
		r := e.ValueFrom.SecretKeyRef
		if r.Name != secret || r.Key != key || (r.Optional != nil && *r.Optional) {
			t.Errorf("%s: %s from Secret %q key %q (optional %v), want %q key %q, required",
				what, name, r.Name, r.Key, ptrStr(r.Optional), secret, key)
		}
	}
	literal := func(name, want string) {
		t.Helper()
		e, ok := envOf(c, name)
		switch {
		case want == "" && ok:
			t.Errorf("%s: %s=%q set, want unset (empty value)", what, name, e.Value)
		case want != "" && (e.Value != want || e.ValueFrom != nil):
			t.Errorf("%s: %s = %+v, want %q", what, name, e, want)
		}
	}
	switch mode := v.str("database.mode"); mode {
	case "url":
		secretRef("DATABASE_URL", v.str("database.existingSecret"), v.str("database.urlKey"))
	case "urlFile":
		literal("DATABASE_URL_FILE", strings.TrimSuffix(v.str("database.urlFileMountPath"), "/")+"/"+v.str("database.urlKey"))
		found := false
		for _, vol := range ps.Volumes {
			found = found || (vol.Secret != nil && vol.Secret.SecretName == v.str("database.existingSecret"))
		}
		if !found {
			t.Errorf("%s: no volume of Secret %q", what, v.str("database.existingSecret"))
		}
	case "pg":
		for name, key := range map[string]string{"PGHOST": "host", "PGPORT": "port", "PGDATABASE": "database",
			"PGUSER": "user", "PGSSLMODE": "sslmode", "PGCONNECT_TIMEOUT": "connectTimeout"} {
			literal(name, v.str("database.pg."+key))
		}
		if v.str("database.existingSecret") != "" {
			secretRef("PGPASSWORD", v.str("database.existingSecret"), v.str("database.passwordKey"))
		}
	default:
		t.Fatalf("database.mode %q", mode)
	}
	waitTimeout := v.str("config.waitTimeout")
	if job && v.str("job.waitTimeout") != "" {
		waitTimeout = v.str("job.waitTimeout")
	}
	literal("LOCKMIGRATE_WAIT_TIMEOUT", waitTimeout)
	for name, key := range map[string]string{
		"LOCKMIGRATE_CONNECT_TIMEOUT":   "connectTimeout",
		"LOCKMIGRATE_LOCK_KEY":          "lockKey",
		"LOCKMIGRATE_SCHEMA":            "schema",
		"LOCKMIGRATE_TABLE":             "table",
		"LOCKMIGRATE_DIR":               "dir",
		"LOCKMIGRATE_FORMAT":            "format",
		"LOCKMIGRATE_TRANSACTION":       "transaction",
		"LOCKMIGRATE_LOCK_TIMEOUT":      "lockTimeout",
		"LOCKMIGRATE_LOCK_RETRIES":      "lockRetries",
		"LOCKMIGRATE_STATEMENT_TIMEOUT": "statementTimeout",
		"LOCKMIGRATE_BACKFILL_SLEEP":    "backfillSleep",
		"LOCKMIGRATE_BACKFILL_MAX_LAG":  "backfillMaxLag",
		"LOCKMIGRATE_LOG_FORMAT":        "logFormat",
		"LOCKMIGRATE_LOG_LEVEL":         "logLevel",
	} {
		literal(name, v.str("config."+key))
	}
	if v.bool("config.allowOutOfOrder") {
		literal("LOCKMIGRATE_ALLOW_OUT_OF_ORDER", "true")
	} else {
		literal("LOCKMIGRATE_ALLOW_OUT_OF_ORDER", "")
	}
	if url := v.str("pushgateway.url"); url != "" {
		literal("LOCKMIGRATE_PUSHGATEWAY_URL", url)
		literal("LOCKMIGRATE_PUSHGATEWAY_JOB", v.str("pushgateway.job"))
		literal("LOCKMIGRATE_PUSHGATEWAY_TIMEOUT", v.str("pushgateway.timeout"))
		literal("LOCKMIGRATE_PUSHGATEWAY_USERNAME", v.str("pushgateway.username"))
		if s := v.str("pushgateway.existingSecret"); s != "" {
			secretRef("LOCKMIGRATE_PUSHGATEWAY_PASSWORD", s, v.str("pushgateway.passwordKey"))
		}
	} else {
		for _, e := range c.Env {
			if strings.HasPrefix(e.Name, "LOCKMIGRATE_PUSHGATEWAY_") {
				t.Errorf("%s: %s set without pushgateway.url", what, e.Name)
			}
		}
	}
	if q := v.str("tenants.query"); q != "" {
		literal("LOCKMIGRATE_TENANTS_QUERY", q)
		literal("LOCKMIGRATE_TENANT_CONCURRENCY", v.str("tenants.concurrency"))
		literal("LOCKMIGRATE_TENANT_FAIL_FAST", map[bool]string{true: "true"}[v.bool("tenants.failFast")])
		shards := ""
		if job && v.get("tenants.shards").(float64) > 1 {
			shards = v.str("tenants.shards")
		}
		literal("LOCKMIGRATE_SHARDS", shards) // the init container never shards
	} else {
		for _, name := range []string{"LOCKMIGRATE_TENANTS_QUERY", "LOCKMIGRATE_TENANT_CONCURRENCY", "LOCKMIGRATE_TENANT_FAIL_FAST", "LOCKMIGRATE_SHARDS"} {
			literal(name, "")
		}
	}
	// Kubernetes sets the index of an Indexed Job's pod itself.
	literal("JOB_COMPLETION_INDEX", "")
	extra, _ := v.get("extraEnv").([]any)
	for _, x := range extra {
		name, _ := x.(map[string]any)["name"].(string)
		if _, ok := envOf(c, name); !ok {
			t.Errorf("%s: extraEnv %s missing", what, name)
		}
	}
}

// checkShards: with tenants.shards above 1 (and a tenants query) the hook
// Job is an Indexed Job running every shard at once; otherwise it is the
// ordinary one-pod Job.
func checkShards(t *testing.T, what string, v values, job *batchv1.Job) {
	t.Helper()
	s := job.Spec
	shards := int32(v.get("tenants.shards").(float64))
	if v.str("tenants.query") != "" && shards > 1 {
		if s.CompletionMode == nil || *s.CompletionMode != batchv1.IndexedCompletion ||
			s.Completions == nil || *s.Completions != shards || s.Parallelism == nil || *s.Parallelism != shards {
			t.Errorf("%s: completionMode %s, completions %s, parallelism %s; want Indexed, %d, %d",
				what, ptrStr(s.CompletionMode), ptrStr(s.Completions), ptrStr(s.Parallelism), shards, shards)
		}
		return
	}
	if s.CompletionMode != nil || s.Completions != nil || s.Parallelism != nil {
		t.Errorf("%s: completionMode %s, completions %s, parallelism %s; want unset (one pod)",
			what, ptrStr(s.CompletionMode), ptrStr(s.Completions), ptrStr(s.Parallelism))
	}
}

// helmFails runs helm with args and fails the test unless it fails with
// every one of wants in its error output.
func helmFails(t *testing.T, wants []string, args ...string) {
	t.Helper()
	out, stderr, ok := runHelm(t, args...)
	if ok {
		t.Errorf("helm %s succeeded, want a failure mentioning %q", strings.Join(args, " "), wants)
		return
	}
	for _, w := range wants {
		if !strings.Contains(out+stderr, w) {
			t.Errorf("helm %s: output does not mention %q:\n%s%s", strings.Join(args, " "), w, out, stderr)
		}
	}
}

// TestChartSchemaRejectsTypos: values.schema.json refuses misspelled keys
// and impossible values, in helm template and in helm lint.
func TestChartSchemaRejectsTypos(t *testing.T) {
	base := filepath.Join(chartDir, "ci", "defaults-values.yaml")
	for _, c := range []struct{ set, want string }{
		{"databse.mode=url", "databse"},
		{"job.backofLimit=1", "backofLimit"},
		{"job.hookweight=1", "hookweight"},
		{"database.existingsecret=x", "existingsecret"},
		{"database.pg.hots=db", "hots"},
		{"config.waitTimout=1m", "waitTimout"},
		{"pushgateway.usename=u", "usename"},
		{"image.tga=1", "tga"},
		{"serviceAccount.automountServiceAccountToken=true", "automountServiceAccountToken"},
		{"example.deployment.replica=1", "replica"},
		{"job.onLocked=wiat", "onLocked"},
		{"initContainer.onLocked=Wait", "onLocked"},
		{"database.mode=postgres", "mode"},
		{"config.waitTimeout=10 minutes", "waitTimeout"},
		{"job.waitTimeout=forever", "waitTimeout"},
		{"config.transaction=every", "transaction"},
		{"config.format=flyway", "format"},
		{"pushgateway.url=pushgateway:9091", "url"},
		{"pushgateway.grouping.instance=x", "instance"},
		{"job.hookWeight=early", "hookWeight"},
		{"tenants.shard=4", "shard"},
		{"tenants.concurrency=0", "concurrency"},
		{"tenants.concurrency=257", "concurrency"},
		{"tenants.shards=0", "shards"},
		{"tenants.failFast=maybe", "failFast"},
		{"contract.waitfor={deployment/web}", "waitfor"},
		{"contract.waitFor={daemonset/agent}", "waitFor"},
		{"contract.waitFor={deployment/Web}", "waitFor"},
		{"contract.waitTimeout=soon", "waitTimeout"},
		{"contract.rbac.enabled=true", "enabled"},
		{"config.backfillSleep=a while", "backfillSleep"},
	} {
		t.Run(c.set, func(t *testing.T) {
			t.Parallel()
			helmFails(t, []string{c.want}, "template", release, chartDir, "--kube-version", kubeVersion, "-f", base, "--set", c.set)
			helmFails(t, []string{c.want}, "lint", "--strict", "--kube-version", kubeVersion, chartDir, "-f", base, "--set", c.set)
		})
	}
}

// TestChartRequiredValues: what the schema cannot say, the templates
// refuse with a message naming the value.
func TestChartRequiredValues(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"no database Secret", nil, "database.existingSecret is required"},
		{"urlFile without Secret", []string{"--set", "database.mode=urlFile"}, "database.existingSecret is required"},
		{"pg without host", []string{"--set", "database.mode=pg"}, "database.pg.host is required"},
		{"Pushgateway password without user", []string{"--set", "database.existingSecret=s,pushgateway.url=http://pg:9091,pushgateway.existingSecret=p"},
			"pushgateway.username is required"},
		{"shards without a tenants query", []string{"--set", "database.existingSecret=s,tenants.shards=4"}, "tenants.shards above 1 requires tenants.query"},
		{"init container only, no database Secret", []string{"--set", "job.enabled=false,example.deployment.enabled=true"}, "database.existingSecret is required"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			helmFails(t, []string{c.want}, append([]string{"template", release, chartDir, "--kube-version", kubeVersion}, c.args...)...)
		})
	}
}

// TestChartKubeVersion: the chart refuses clusters without
// podFailurePolicy (beta and on by default from 1.26).
func TestChartKubeVersion(t *testing.T) {
	helmFails(t, []string{"kubeVersion"}, "template", release, chartDir, "--kube-version", "1.25.9",
		"-f", filepath.Join(chartDir, "ci", "defaults-values.yaml"))
}

// TestChartJobDisabled: with job.enabled=false the chart renders nothing
// (it is used for its init-container template only), even when a
// ServiceAccount is asked for.
func TestChartJobDisabled(t *testing.T) {
	objs := renderChart(t, chartDir, "-f", filepath.Join(chartDir, "ci", "defaults-values.yaml"),
		"--set", "job.enabled=false,serviceAccount.create=true")
	if len(objs) != 0 {
		t.Fatalf("rendered %d objects, want none", len(objs))
	}
}

// TestAppChart renders and lints testdata/app-chart, an application chart
// that depends on lockmigrate the way the README shows: the hook Job comes
// from the subchart, the init container from the named template called
// with .Subcharts.lockmigrate. The init container must be the lockmigrate
// one (its image tag from lockmigrate's appVersion, not the app's), and the
// subchart's schema must accept what Helm passes it (global values).
func TestAppChart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "app-chart")
	copyDir(t, "testdata/app-chart", dir)
	copyDir(t, chartDir, filepath.Join(dir, "charts", "lockmigrate"))

	out, stderr, ok := runHelm(t, "lint", "--strict", "--kube-version", kubeVersion, dir, "--with-subcharts")
	if !ok || lintProblem.MatchString(out) {
		t.Fatalf("helm lint --strict --with-subcharts app-chart failed:\n%s%s", out, stderr)
	}
	t.Logf("helm lint app-chart: %s", lastLine(out))

	objs := renderChart(t, dir)
	v := loadValues(t, filepath.Join(chartDir, "values.yaml"))
	mergeInto(v, loadValues(t, "testdata/app-chart/values.yaml").get("lockmigrate").(map[string]any))
	pre, post := jobsByHook(t, objs)
	job := exactly(t, "pre-upgrade Jobs", pre, 1)[0]
	checkHookAnnotations(t, "Job "+job.Name, job.Annotations, 0, jobDeletePolicy)
	c := checkJob(t, "Job "+job.Name, job, "wait")
	checkValuesEnv(t, "Job "+job.Name, v, job.Spec.Template.Spec, c, true)
	checkPhase(t, "Job "+job.Name, c, "expand")
	cj := exactly(t, "contract Jobs", post, 1)[0]
	cc := checkContractJob(t, v, cj, contractRBAC(objs), job.Spec.Template.Spec.ServiceAccountName)
	checkValuesEnv(t, "contract Job "+cj.Name, v, cj.Spec.Template.Spec, cc, true)

	dep := only[*appsv1.Deployment](t, objs, 1)[0]
	ps := dep.Spec.Template.Spec
	if len(ps.InitContainers) != 1 || len(ps.Containers) != 1 {
		t.Fatalf("Deployment %s: %d init containers, %d containers; want 1 and 1", dep.Name, len(ps.InitContainers), len(ps.Containers))
	}
	ic := ps.InitContainers[0]
	checkContainer(t, "Deployment "+dep.Name, ic, "wait")
	checkPhase(t, "Deployment "+dep.Name, ic, "expand")
	checkMounts(t, "Deployment "+dep.Name, ps, ic)
	checkValuesEnv(t, "Deployment "+dep.Name, v, ps, ic, false)
	checkRestricted(t, "Deployment "+dep.Name, ps)
	if want := "ghcr.io/lockmigrate/lockmigrate:" + chartAppVersion(t); ic.Image != want || c.Image != want {
		t.Errorf("images: init container %q, Job %q; want %q (lockmigrate's appVersion)", ic.Image, c.Image, want)
	}
	if ps.Containers[0].Image == ic.Image {
		t.Errorf("the application container runs the lockmigrate image")
	}
}

func chartAppVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^appVersion:\s*"?([^"\s]+)"?`).FindSubmatch(b)
	if m == nil {
		t.Fatal("Chart.yaml: no appVersion")
	}
	return string(m[1])
}

// copyDir copies the regular files of src into dst, recursively.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}
