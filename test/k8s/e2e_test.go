package k8s

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/lockmigrate/lockmigrate/internal/pgtest"
	"github.com/lockmigrate/lockmigrate/internal/pushtest"
)

// copies is how many pods start at once.
const copies = 10

// namespace is what metadata.namespace resolves to.
const namespace = "test"

// TestEndToEnd runs the lockmigrate container exactly as the chart renders
// it, for the hook Job and for the init container, with the URL from a
// Secret (ci/defaults-values.yaml) and with PG* variables plus a
// Pushgateway behind basic auth (ci/pushgateway-auth-values.yaml): the
// container's env becomes the process environment (Secrets resolved from
// fake ones pointing at a throwaway PostgreSQL, the downward API filled
// in), and 10 copies of the real binary start at one instant, as replicas
// do. All must exit 0, exactly one must apply the migrations, and each
// migration must have run once.
func TestEndToEnd(t *testing.T) {
	bin := lockmigrateBinary(t)
	for _, file := range []string{"defaults-values.yaml", "pushgateway-auth-values.yaml"} {
		t.Run(strings.TrimSuffix(file, "-values.yaml"), func(t *testing.T) {
			path := filepath.Join(chartDir, "ci", file)
			v := loadValues(t, filepath.Join(chartDir, "values.yaml"), path)
			objs := renderChart(t, chartDir, "-f", path, "--set", "example.deployment.enabled=true")
			pre, _ := jobsByHook(t, objs)
			job := exactly(t, "pre-upgrade Jobs", pre, 1)[0]
			dep := only[*appsv1.Deployment](t, objs, 1)[0]
			for _, target := range []struct {
				name string
				pod  corev1.PodSpec
				c    corev1.Container
				// pod names as Kubernetes makes them
				podPrefix string
			}{
				{"job", job.Spec.Template.Spec, job.Spec.Template.Spec.Containers[0], job.Name + "-"},
				{"init-container", dep.Spec.Template.Spec, dep.Spec.Template.Spec.InitContainers[0], dep.Name + "-7d9f8b6c5d-"},
			} {
				t.Run(target.name, func(t *testing.T) {
					runReplicas(t, bin, v, target.pod, target.c, target.podPrefix)
				})
			}
		})
	}
}

// cluster is the fake cluster state the environment is resolved against.
type cluster struct {
	secrets map[string]*corev1.Secret
}

func (c cluster) addSecret(name string, data map[string]string) {
	s, ok := c.secrets[name]
	if !ok {
		s = &corev1.Secret{Data: map[string][]byte{}}
		s.Name, s.Namespace = name, namespace
		c.secrets[name] = s
	}
	for k, v := range data {
		s.Data[k] = []byte(v)
	}
}

// resolveEnv turns a container's env into a process environment the way
// the kubelet does: literal values as they are, secretKeyRef from the
// fake Secrets, fieldRef metadata.name and metadata.namespace from the
// pod. replace overrides literal values that name cluster addresses (the
// database host, the Pushgateway URL); each must be present in env.
func resolveEnv(t *testing.T, env []corev1.EnvVar, cl cluster, pod string, replace map[string]string) []string {
	t.Helper()
	var out []string
	used := map[string]bool{}
	for _, e := range env {
		val := e.Value
		switch {
		case e.ValueFrom == nil:
			if strings.Contains(val, "$(") {
				t.Fatalf("env %s=%q uses $(VAR) expansion, which this test does not implement", e.Name, val)
			}
			if r, ok := replace[e.Name]; ok {
				val, used[e.Name] = r, true
			}
		case e.ValueFrom.SecretKeyRef != nil:
			r := e.ValueFrom.SecretKeyRef
			s, ok := cl.secrets[r.Name]
			if !ok {
				t.Fatalf("env %s: Secret %q does not exist (the pod would stay in CreateContainerConfigError)", e.Name, r.Name)
			}
			b, ok := s.Data[r.Key]
			if !ok {
				t.Fatalf("env %s: Secret %q has no key %q (it has %v)", e.Name, r.Name, r.Key, keys(s.Data))
			}
			val = string(b)
		case e.ValueFrom.FieldRef != nil:
			switch p := e.ValueFrom.FieldRef.FieldPath; p {
			case "metadata.name":
				val = pod
			case "metadata.namespace":
				val = namespace
			default:
				t.Fatalf("env %s: fieldRef %s not implemented by this test", e.Name, p)
			}
		default:
			t.Fatalf("env %s: valueFrom %+v not implemented by this test", e.Name, e.ValueFrom)
		}
		out = append(out, e.Name+"="+val)
	}
	for name := range replace {
		if !used[name] {
			t.Fatalf("the rendered env has no literal %s to point at the test's server", name)
		}
	}
	return out
}

// run is one finished copy.
type run struct {
	pod      string
	code     int
	stderr   string
	finished map[string]any // the "run finished" log event
	term     map[string]any // the termination message
}

// runReplicas sets up a database (and a Pushgateway when the values push
// metrics), starts `copies` processes with the container's environment,
// releases them together and checks the outcome.
func runReplicas(t *testing.T, bin string, v values, pod corev1.PodSpec, c corev1.Container, podPrefix string) {
	srv := pgtest.Shared()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// A database owned by a password-authenticated role, as in production.
	adminURL := srv.NewDB(t)
	u, err := url.Parse(adminURL)
	if err != nil {
		t.Fatal(err)
	}
	dbName := strings.TrimPrefix(u.Path, "/")
	role, password := "lm_e2e_migrator", "pa$$ w0rd/with:specials@"
	if user := v.str("database.pg.user"); v.str("database.mode") == "pg" && user != "" {
		role = user // PGUSER is used as rendered
	}
	srv.CreateRole(t, role, password)
	if err := srv.Exec(ctx, dbName, "ALTER DATABASE "+pgx.Identifier{dbName}.Sanitize()+" OWNER TO "+pgx.Identifier{role}.Sanitize()); err != nil {
		t.Fatal(err)
	}

	cl := cluster{secrets: map[string]*corev1.Secret{}}
	replace := map[string]string{}
	var secrets []string // must never be printed
	switch mode := v.str("database.mode"); mode {
	case "url":
		cl.addSecret(v.str("database.existingSecret"), map[string]string{v.str("database.urlKey"): srv.URLFor(dbName, role, password)})
	case "pg":
		cl.addSecret(v.str("database.existingSecret"), map[string]string{v.str("database.passwordKey"): password})
		replace["PGHOST"] = srv.Host()
		replace["PGPORT"] = strconv.Itoa(srv.Port())
		replace["PGDATABASE"] = dbName
		replace["PGSSLMODE"] = "disable" // the test server has no TLS
	default:
		t.Fatalf("database.mode %s not covered by this test", mode)
	}
	secrets = append(secrets, password)

	var gw *pushtest.Gateway
	if v.str("pushgateway.url") != "" {
		auth := v.str("pushgateway.existingSecret") != ""
		gw = pushtest.Start(t, auth)
		replace["LOCKMIGRATE_PUSHGATEWAY_URL"] = gw.URL
		if auth {
			if got := v.str("pushgateway.username"); got != pushtest.Username {
				t.Fatalf("pushgateway.username = %q; the test gateway's user is %q", got, pushtest.Username)
			}
			cl.addSecret(v.str("pushgateway.existingSecret"), map[string]string{v.str("pushgateway.passwordKey"): pushtest.Password})
			secrets = append(secrets, pushtest.Password)
		}
	}

	// Run as the image's user when we can (we are root), from "/" like a
	// container, writing the termination message to a file per copy.
	dir, err := os.MkdirTemp(workDir, "run")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		uid, gid := runAs(pod, c)
		cred = &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}
		if err := os.Chown(dir, int(uid), int(gid)); err != nil {
			t.Fatal(err)
		}
		t.Logf("running the copies as %d:%d", uid, gid)
	}

	type proc struct {
		cmd    *exec.Cmd
		stdin  interface{ Close() error }
		stderr *bytes.Buffer
		pod    string
		term   string
	}
	procs := make([]*proc, copies)
	for i := range procs {
		p := &proc{pod: fmt.Sprintf("%s%05x", podPrefix, 0x1a2b3+i*7919), term: filepath.Join(dir, fmt.Sprintf("termination-%d", i))}
		env := resolveEnv(t, c.Env, cl, p.pod, replace)
		env = append(env, "LOCKMIGRATE_TERMINATION_LOG="+p.term, "PATH="+os.Getenv("PATH"))
		// Each copy blocks on its stdin until all have started.
		args := append([]string{"-c", `cat >/dev/null; exec "$0" "$@"`, bin}, c.Args...)
		p.cmd = exec.CommandContext(ctx, "sh", args...)
		p.cmd.Env = env
		p.cmd.Dir = "/"
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		p.stderr = &bytes.Buffer{}
		p.cmd.Stderr = p.stderr
		in, err := p.cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		p.stdin = in
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs[i] = p
	}
	start := time.Now()
	for _, p := range procs {
		p.stdin.Close()
	}
	var runs []run
	for _, p := range procs {
		err := p.cmd.Wait()
		r := run{pod: p.pod, code: p.cmd.ProcessState.ExitCode(), stderr: p.stderr.String()}
		if err != nil && r.code == 0 {
			t.Fatalf("%s: %v", p.pod, err)
		}
		r.finished = finishedEvent(t, p.pod, r.stderr)
		if b, err := os.ReadFile(p.term); err != nil {
			t.Errorf("%s: no termination message: %v", p.pod, err)
		} else {
			if strings.Count(strings.TrimSpace(string(b)), "\n") != 0 || len(b) > 4096 {
				t.Errorf("%s: termination message is not one line of at most 4 KiB: %q", p.pod, b)
			}
			if err := json.Unmarshal(b, &r.term); err != nil {
				t.Errorf("%s: termination message is not JSON: %v: %q", p.pod, err, b)
			}
			for _, s := range secrets {
				if strings.Contains(string(b), s) {
					t.Errorf("%s: a secret appears in the termination message", p.pod)
				}
			}
		}
		for _, s := range secrets {
			if strings.Contains(r.stderr, s) {
				t.Errorf("%s: a secret appears in the log", p.pod)
			}
		}
		runs = append(runs, r)
	}
	t.Logf("%d copies finished in %s", copies, time.Since(start).Round(time.Millisecond))

	// Every copy exits 0; one applies, the others wait for it (or find
	// the schema current, or skip, as ON_LOCKED says).
	onLocked, _ := envOf(c, "LOCKMIGRATE_ON_LOCKED")
	others := map[string]bool{"up_to_date": true, "waited": onLocked.Value == "wait", "skipped": onLocked.Value == "skip"}
	var winners []string
	for _, r := range runs {
		outcome, _ := r.finished["outcome"].(string)
		t.Logf("%s: exit %d, %s", r.pod, r.code, outcome)
		if r.code != 0 {
			t.Errorf("%s: exit code %d, want 0; log:\n%s", r.pod, r.code, r.stderr)
		}
		switch {
		case outcome == "applied":
			winners = append(winners, r.pod)
		case !others[outcome]:
			t.Errorf("%s: outcome %q (LOCKMIGRATE_ON_LOCKED=%s)", r.pod, outcome, onLocked.Value)
		}
		if r.term != nil && (r.term["outcome"] != outcome || r.term["exit_code"] != float64(0)) {
			t.Errorf("%s: termination message %v, log says %s", r.pod, r.term, outcome)
		}
		if gw != nil && r.finished["metrics_pushed"] != true {
			t.Errorf("%s: metrics not pushed: %v", r.pod, r.finished)
		}
	}
	if len(winners) != 1 {
		t.Fatalf("%d copies applied the migrations (%v), want exactly 1", len(winners), winners)
	}

	// The embedded migrations ran once each, by the winner.
	want := embeddedMigrations(t)
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n, distinct int
	if err := conn.QueryRow(ctx, "SELECT count(*), count(DISTINCT version) FROM schema_audit").Scan(&n, &distinct); err != nil {
		t.Fatal(err)
	}
	if n != want || distinct != want {
		t.Errorf("schema_audit: %d rows, %d versions; want %d and %d (each migration once)", n, distinct, want, want)
	}
	var applied int
	var by []string
	if err := conn.QueryRow(ctx, "SELECT count(*), array_agg(DISTINCT applied_by) FROM lockmigrate_history WHERE state = 'applied'").
		Scan(&applied, &by); err != nil {
		t.Fatal(err)
	}
	if applied != want || len(by) != 1 || by[0] != winners[0] {
		t.Errorf("history: %d applied by %v; want %d by %s (POD_NAME from the downward API)", applied, by, want, winners[0])
	}

	if gw != nil {
		checkPushed(t, gw, c, want)
	}
}

// runAs is the user and group the container runs as.
func runAs(pod corev1.PodSpec, c corev1.Container) (uid, gid uint32) {
	uid, gid = imageUser, imageUser
	if s := pod.SecurityContext; s != nil {
		if s.RunAsUser != nil {
			uid = uint32(*s.RunAsUser)
		}
		if s.RunAsGroup != nil {
			gid = uint32(*s.RunAsGroup)
		}
	}
	if s := c.SecurityContext; s != nil {
		if s.RunAsUser != nil {
			uid = uint32(*s.RunAsUser)
		}
		if s.RunAsGroup != nil {
			gid = uint32(*s.RunAsGroup)
		}
	}
	return uid, gid
}

// finishedEvent returns the run's "run finished" log event; every line of
// the log must be a JSON object.
func finishedEvent(t *testing.T, pod, stderr string) map[string]any {
	t.Helper()
	var ev map[string]any
	sc := bufio.NewScanner(strings.NewReader(stderr))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Errorf("%s: log line is not JSON: %q", pod, line)
			continue
		}
		if m["msg"] == "run finished" {
			if ev != nil {
				t.Errorf("%s: two run finished events", pod)
			}
			ev = m
		}
	}
	if ev == nil {
		t.Errorf("%s: no run finished event in:\n%s", pod, stderr)
		return map[string]any{}
	}
	return ev
}

func embeddedMigrations(t *testing.T) int {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot, "migrations", "*.sql"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no migrations in %s/migrations: %v", repoRoot, err)
	}
	return len(files)
}

// checkPushed: the runs pushed into one group, job plus the grouping
// labels the chart rendered, holding the winner's figures.
func checkPushed(t *testing.T, gw *pushtest.Gateway, c corev1.Container, want int) {
	t.Helper()
	labels := map[string]string{"job": "lockmigrate"}
	if e, ok := envOf(c, "LOCKMIGRATE_PUSHGATEWAY_JOB"); ok {
		labels["job"] = e.Value
	}
	if e, ok := envOf(c, "LOCKMIGRATE_PUSHGATEWAY_GROUPING"); ok {
		for _, kv := range strings.Split(e.Value, ",") {
			k, v, _ := strings.Cut(kv, "=")
			labels[k] = v
		}
	}
	groups := gw.Groups(t)
	if len(groups) != 1 {
		t.Fatalf("Pushgateway groups %v, want one", groups)
	}
	for k, v := range labels {
		if groups[0][k] != v {
			t.Errorf("Pushgateway group %v: %s=%q, want %q", groups[0], k, groups[0][k], v)
		}
	}
	found := false
	for _, line := range strings.Split(gw.Metrics(t), "\n") {
		if strings.HasPrefix(line, "lockmigrate_migrations_applied{") && strings.Contains(line, `job="`+labels["job"]+`"`) {
			found = true
			if !strings.HasSuffix(line, " "+strconv.Itoa(want)) {
				t.Errorf("Pushgateway: %s, want %d", line, want)
			}
		}
	}
	if !found {
		t.Errorf("Pushgateway: no lockmigrate_migrations_applied for job %s", labels["job"])
	}
}
