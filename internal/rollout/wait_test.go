package rollout_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lockmigrate/lockmigrate/internal/rollout"
	"github.com/lockmigrate/lockmigrate/internal/rollout/rollouttest"
)

const (
	webSelector    = "app.kubernetes.io/instance=rel,app.kubernetes.io/name=web"
	workerSelector = "app.kubernetes.io/name=worker,app.kubernetes.io/instance in (rel)"
)

func TestParseWorkloads(t *testing.T) {
	got, err := rollout.ParseWorkloads(" deployment/web, sts/worker,Deployment/web,,deploy/api ")
	if err != nil {
		t.Fatal(err)
	}
	want := []rollout.Workload{{Kind: "deployment", Name: "web"}, {Kind: "statefulset", Name: "worker"}, {Kind: "deployment", Name: "api"}}
	if len(got) != len(want) {
		t.Fatalf("%v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%v, want %v", got, want)
		}
	}
	for _, bad := range []string{"web", "daemonset/agent", "deployment/", "deployment/Web", "deployment/-web", "deployment/web/x"} {
		if _, err := rollout.ParseWorkloads(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func client(t *testing.T, s *rollouttest.Server) *rollout.Client {
	t.Helper()
	c, err := rollout.InCluster(s.Dir, s.Host, s.Port, "")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// waitFor starts a wait and returns its result channel.
func waitFor(t *testing.T, w rollout.Waiter) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := w.Wait(context.Background())
		done <- err
	}()
	return done
}

// look waits until the wait has been answered n more times with key and
// file (key " " file).
func look(t *testing.T, s *rollouttest.Server, key string, n int) {
	t.Helper()
	for n > 0 {
		if <-s.Served() == key {
			n--
		}
	}
}

// TestWaitFollowsARollout: the wait does not return while the Deployment
// is mid-rollout, while the controller has not observed the new spec,
// while the status is complete but an old pod is still terminating, nor
// while the StatefulSet is rolling; it returns within a poll of the
// rollout completing. Old pods that failed (evicted) do not count.
func TestWaitFollowsARollout(t *testing.T) {
	s := rollouttest.Start(t, "shop")
	s.Workload("deployments", "web", "deployment-rolling.json", webSelector, "pods-rolling.json")
	s.Workload("statefulsets", "worker", "statefulset-rolling.json", workerSelector, "sts-pods-rolling.json")
	const poll = 20 * time.Millisecond
	done := waitFor(t, rollout.Waiter{Client: client(t, s), Timeout: time.Minute, Poll: poll,
		Workloads: []rollout.Workload{{Kind: "deployment", Name: "web"}, {Kind: "statefulset", Name: "worker"}}})
	deployment := "/apis/apps/v1/namespaces/shop/deployments/web"
	for _, stage := range []struct{ object, pods string }{
		{"deployment-rolling.json", "pods-rolling.json"},
		{"deployment-unobserved.json", "pods-complete.json"},
		{"deployment-complete.json", "pods-terminating.json"},
		{"deployment-complete.json", "pods-complete.json"}, // the StatefulSet still rolls
	} {
		s.Workload("deployments", "web", stage.object, webSelector, stage.pods)
		// Two answers of this stage: at least one whole look at it.
		look(t, s, deployment+" "+stage.object, 2)
		if stage.object == "deployment-complete.json" {
			look(t, s, "pods?"+webSelector+" "+stage.pods, 2)
		}
		select {
		case err := <-done:
			t.Fatalf("wait returned at stage %v: %v", stage, err)
		default:
		}
	}
	s.Workload("statefulsets", "worker", "statefulset-complete.json", workerSelector, "sts-pods-complete.json")
	completed := time.Now()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if took := time.Since(completed); took > 2*time.Second {
		t.Fatalf("returned %v after the rollout completed, polling every %v", took, poll)
	}
}

// TestWaitTimeout: a rollout that never completes (progress deadline
// exceeded) ends in ErrTimeout after the timeout, naming what is pending.
func TestWaitTimeout(t *testing.T) {
	s := rollouttest.Start(t, "shop")
	s.Workload("deployments", "web", "deployment-stuck.json", webSelector, "pods-rolling.json")
	start := time.Now()
	_, err := rollout.Waiter{Client: client(t, s), Timeout: 300 * time.Millisecond, Poll: 20 * time.Millisecond,
		Workloads: []rollout.Workload{{Kind: "deployment", Name: "web"}}}.Wait(context.Background())
	took := time.Since(start)
	if !errors.Is(err, rollout.ErrTimeout) || took < 300*time.Millisecond || took > 5*time.Second {
		t.Fatalf("after %v: %v", took, err)
	}
	for _, want := range []string{"deployment/web", "2 of 3 replicas updated", "ProgressDeadlineExceeded", "300ms", "not run"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}

// TestWaitFinalErrors: a denial (403, as RBAC answers for a name missing
// from the Role), a bad token (401) and a workload that does not exist
// (404) end the wait at once; a cancelled run returns its cause.
func TestWaitFinalErrors(t *testing.T) {
	s := rollouttest.Start(t, "shop")
	s.Deny("deployments", "web")
	s.Missing("deployments", "gone")
	c := client(t, s)
	wait := func(c *rollout.Client, name string) error {
		_, err := rollout.Waiter{Client: c, Timeout: time.Minute, Poll: 10 * time.Millisecond,
			Workloads: []rollout.Workload{{Kind: "deployment", Name: name}}}.Wait(context.Background())
		return err
	}
	var api *rollout.APIError
	err := wait(c, "web")
	if !errors.As(err, &api) || !api.Denied() || !strings.Contains(err.Error(), "cannot get resource") || !strings.Contains(err.Error(), "Role allowing get") {
		t.Fatalf("403: %v", err)
	}
	if err := wait(c, "gone"); !errors.As(err, &api) || !api.NotFound() || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("404: %v", err)
	}
	bad := *c
	bad.TokenFile = t.TempDir() + "/token"
	if err := wait(&bad, "web"); err == nil || !strings.Contains(err.Error(), "service account token") {
		t.Fatalf("no token: %v", err)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	stop := errors.New("SIGTERM")
	s.Workload("deployments", "web", "deployment-rolling.json", webSelector, "pods-rolling.json")
	go func() {
		look(t, s, "/apis/apps/v1/namespaces/shop/deployments/web deployment-rolling.json", 2)
		cancel(stop)
	}()
	if _, err := (rollout.Waiter{Client: c, Timeout: time.Minute, Poll: 10 * time.Millisecond,
		Workloads: []rollout.Workload{{Kind: "deployment", Name: "web"}}}).Wait(ctx); !errors.Is(err, stop) {
		t.Fatalf("cancelled: %v", err)
	}
}

// TestInCluster: outside a pod, or without a token, the error says what is
// missing.
func TestInCluster(t *testing.T) {
	s := rollouttest.Start(t, "shop")
	var cfg *rollout.ConfigError
	if _, err := rollout.InCluster(s.Dir, "", "", ""); !errors.As(err, &cfg) || !strings.Contains(err.Error(), "KUBERNETES_SERVICE_HOST") {
		t.Fatalf("no host: %v", err)
	}
	if _, err := rollout.InCluster(t.TempDir(), s.Host, s.Port, ""); !errors.As(err, &cfg) || !strings.Contains(err.Error(), "automountServiceAccountToken") {
		t.Fatalf("no token: %v", err)
	}
	c, err := rollout.InCluster(s.Dir, s.Host, s.Port, "")
	if err != nil || c.Namespace != "shop" {
		t.Fatalf("%v %+v", err, c)
	}
	if c, err := rollout.InCluster(s.Dir, s.Host, s.Port, "other"); err != nil || c.Namespace != "other" {
		t.Fatalf("%v %+v", err, c)
	}
}
