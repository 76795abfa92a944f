package cli

import (
	"context"
	"log/slog"
	"sync"

	"github.com/lockmigrate/lockmigrate/internal/config"
	"github.com/lockmigrate/lockmigrate/internal/rollout"
)

// rolloutGate is the contract run's wait for the application's rollout
// (LOCKMIGRATE_CONTRACT_WAIT_FOR), called by the runner once its lock-free
// fast path found contract work: nil when there is nothing to wait for, so
// the init containers and the pre-upgrade Job never read a service account
// file or build a client. In multi-tenant mode every tenant's runner calls
// it; once the rollout was seen complete, later calls return at once.
func rolloutGate(cfg *config.Config, log *slog.Logger) func(context.Context) error {
	if cfg.Phase != "contract" || len(cfg.WaitFor) == 0 {
		return nil
	}
	var (
		mu   sync.Mutex
		done bool
	)
	return func(ctx context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		if done {
			return nil
		}
		c, err := rollout.InCluster(cfg.ServiceAccountDir, cfg.KubernetesHost, cfg.KubernetesPort, cfg.PodNamespace)
		if err != nil {
			return err
		}
		_, err = rollout.Waiter{Client: c, Workloads: cfg.WaitFor, Timeout: cfg.ContractWaitTimeout, Logger: log}.Wait(ctx)
		done = err == nil
		return err
	}
}
