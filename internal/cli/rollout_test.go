package cli

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/lockmigrate/lockmigrate/internal/bintest"
	"github.com/lockmigrate/lockmigrate/internal/pgtest"
	"github.com/lockmigrate/lockmigrate/internal/rollout/rollouttest"
)

const webSelector = "app.kubernetes.io/instance=rel,app.kubernetes.io/name=web"

// contractEnv is a contract run of phaseFiles after the expand phase,
// waiting for deployment/web through the fake API server s.
func contractEnv(t *testing.T, s *rollouttest.Server) (env map[string]string, url string) {
	t.Helper()
	url, _ = secretDB(t)
	env = bintest.With(baseEnv(url), "LOCKMIGRATE_DIR", bintest.WriteDir(t, phaseFiles()))
	if r := runIn(t, context.Background(), bintest.With(env, "LOCKMIGRATE_PHASE", "expand")); r.Code != 0 {
		t.Fatalf("expand: %s", r.Stderr)
	}
	return bintest.With(env, "LOCKMIGRATE_PHASE", "contract", "LOCKMIGRATE_CONTRACT_WAIT_FOR", "deployment/web",
		"KUBERNETES_SERVICE_HOST", s.Host, "KUBERNETES_SERVICE_PORT", s.Port,
		"LOCKMIGRATE_SERVICEACCOUNT_DIR", s.Dir, "POD_NAMESPACE", s.Namespace), url
}

// TestContractWaitsForRollout: the contract run does not apply anything
// while the Deployment is mid-rollout or an old pod is still terminating,
// and applies the contract file within a few seconds (the 2 s poll) of the
// rollout completing.
func TestContractWaitsForRollout(t *testing.T) {
	s := rollouttest.Start(t, "shop")
	s.Workload("deployments", "web", "deployment-rolling.json", webSelector, "pods-rolling.json")
	env, url := contractEnv(t, s)
	done := make(chan result, 1)
	go func() { done <- runIn(t, context.Background(), env) }()
	deployment := "/apis/apps/v1/namespaces/shop/deployments/web "
	waitServed(t, s, deployment+"deployment-rolling.json", 2)
	s.Workload("deployments", "web", "deployment-complete.json", webSelector, "pods-terminating.json")
	waitServed(t, s, "pods?"+webSelector+" pods-terminating.json", 1)
	if got := audited(t, url); got != "1,2,4" {
		t.Fatalf("contract applied mid-rollout: audit %s", got)
	}
	select {
	case r := <-done:
		t.Fatalf("run ended mid-rollout: %s", r.Brief())
	default:
	}
	s.Workload("deployments", "web", "deployment-complete.json", webSelector, "pods-complete.json")
	completed := time.Now()
	r := <-done
	took := time.Since(completed)
	if r.Code != 0 || r.Finished(t)["outcome"] != "applied" || audited(t, url) != "1,2,4,3" {
		t.Fatalf("after the rollout: %s", r.Brief())
	}
	t.Logf("contract applied %v after the rollout completed", took.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Fatalf("contract run started %v after the rollout completed", took)
	}
	var waiting, complete int
	for _, ev := range r.Events(t) {
		switch ev["msg"] {
		case "waiting for the rollout before the contract migrations":
			waiting++
			if !strings.Contains(ev["pending"].(string), "deployment/web: ") {
				t.Errorf("waiting event %v", ev)
			}
		case "rollout complete; running the contract migrations":
			complete++
		}
	}
	if waiting < 2 || complete != 1 {
		t.Fatalf("%d waiting and %d complete events:\n%s", waiting, complete, r.Stderr)
	}
	// Up to date now: no request to the API at all.
	before := s.Requests()
	if r := runIn(t, context.Background(), env); r.Code != 0 || r.Finished(t)["outcome"] != "up_to_date" || s.Requests() != before {
		t.Fatalf("up-to-date contract run: %s, %d API requests", r.Brief(), s.Requests()-before)
	}
}

// waitServed waits until s answered key n times.
func waitServed(t *testing.T, s *rollouttest.Server, key string, n int) {
	t.Helper()
	for n > 0 {
		if <-s.Served() == key {
			n--
		}
	}
}

// TestContractRolloutFailures: a rollout that never completes is exit 4
// after LOCKMIGRATE_CONTRACT_WAIT_TIMEOUT, a ServiceAccount the Role does
// not allow is exit 3, a missing workload and a pod without a token exit 2;
// none applies anything.
func TestContractRolloutFailures(t *testing.T) {
	s := rollouttest.Start(t, "shop")
	s.Workload("deployments", "web", "deployment-stuck.json", webSelector, "pods-rolling.json")
	s.Deny("deployments", "api")
	s.Missing("deployments", "gone")
	env, url := contractEnv(t, s)
	for _, tt := range []struct {
		name string
		env  []string
		code int
		want []string
	}{
		{"never completes", []string{"LOCKMIGRATE_CONTRACT_WAIT_TIMEOUT", "2s"}, exitWaitTimeout,
			[]string{"timed out waiting for the rollout of deployment/web after 2s", "2 of 3 replicas updated", "ProgressDeadlineExceeded"}},
		{"denied", []string{"LOCKMIGRATE_CONTRACT_WAIT_FOR", "deployment/api"}, exitUnreachable,
			[]string{"HTTP 403", `cannot get resource \"deployments\"`, "needs a Role allowing get"}},
		{"missing", []string{"LOCKMIGRATE_CONTRACT_WAIT_FOR", "deployment/gone"}, exitUsage, []string{"HTTP 404", "not found"}},
		{"no token", []string{"LOCKMIGRATE_SERVICEACCOUNT_DIR", t.TempDir()}, exitUsage, []string{"automountServiceAccountToken"}},
		{"not in a pod", []string{"KUBERNETES_SERVICE_HOST", ""}, exitUsage, []string{"KUBERNETES_SERVICE_HOST is not set"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := runIn(t, context.Background(), bintest.With(env, tt.env...))
			if r.Code != tt.code {
				t.Fatalf("exit %d, want %d\n%s", r.Code, tt.code, r.Stderr)
			}
			msg := r.Finished(t)["error"].(string)
			for _, w := range tt.want {
				if !strings.Contains(msg, strings.ReplaceAll(w, `\"`, `"`)) {
					t.Errorf("error lacks %q: %s", w, msg)
				}
			}
			if got := audited(t, url); got != "1,2,4" {
				t.Fatalf("audit %s", got)
			}
		})
	}
	pgtest.AssertNoAdvisoryLocks(t, pgtest.Connect(t, url))
}
