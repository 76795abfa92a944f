package rollout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/lockmigrate/lockmigrate/internal/backoff"
)

// ErrTimeout is wrapped by the error of a wait that reached its timeout:
// the rollout did not complete in time, so the contract migrations were not
// run (exit 4, like a lock wait that timed out).
var ErrTimeout = errors.New("timed out waiting for the rollout")

// Defaults of Waiter.
const (
	DefaultPoll        = 2 * time.Second
	DefaultLogInterval = 15 * time.Second
)

// Waiter waits for the rollout of Workloads.
type Waiter struct {
	Client    *Client
	Workloads []Workload
	Timeout   time.Duration
	// Poll is the time between two looks at the workloads (DefaultPoll).
	Poll time.Duration
	// LogInterval is the least time between two "waiting" events, except
	// when the reason changes (DefaultLogInterval).
	LogInterval time.Duration
	Logger      *slog.Logger
}

// Wait returns once every workload's rollout is complete, or an error: a
// final API answer (denied: *APIError with Denied; a workload that does not
// exist), ErrTimeout after Timeout (naming what was still pending and the
// last API error, if any), or the context's cause. Transient API errors are
// logged and retried at the next poll. It returns how long it waited.
func (w Waiter) Wait(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	if w.Poll <= 0 {
		w.Poll = DefaultPoll
	}
	if w.LogInterval <= 0 {
		w.LogInterval = DefaultLogInterval
	}
	log := w.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	timeout := errors.New("rollout wait timeout")
	wctx, cancel := context.WithTimeoutCause(ctx, w.Timeout, timeout)
	defer cancel()
	var (
		last     string // the pending reasons last logged
		loggedAt time.Time
		lastErr  error
	)
	for {
		pending, err := w.pending(wctx)
		switch {
		case err == nil && len(pending) == 0:
			waited := time.Since(start)
			log.LogAttrs(ctx, slog.LevelInfo, "rollout complete; running the contract migrations",
				slog.Any("workloads", w.names()), slog.Int64("waited_ms", waited.Milliseconds()))
			return waited, nil
		case err != nil && final(err):
			return time.Since(start), err
		case err != nil && wctx.Err() == nil:
			lastErr = err
			log.LogAttrs(ctx, slog.LevelWarn, "rollout wait: Kubernetes API request failed; retrying",
				slog.String("error", err.Error()), slog.Int64("retry_in_ms", w.Poll.Milliseconds()))
		case err == nil:
			lastErr = nil
			if why := strings.Join(pending, "; "); why != last || time.Since(loggedAt) >= w.LogInterval {
				last, loggedAt = why, time.Now()
				log.LogAttrs(ctx, slog.LevelInfo, "waiting for the rollout before the contract migrations",
					slog.String("pending", why), slog.Int64("waited_ms", time.Since(start).Milliseconds()),
					slog.Duration("timeout", w.Timeout))
			}
		}
		if wctx.Err() == nil {
			_ = backoff.Sleep(wctx, w.Poll) // its error is wctx's, seen below
		}
		if wctx.Err() != nil {
			return time.Since(start), w.ended(ctx, wctx, timeout, last, lastErr)
		}
	}
}

// ended is the error of a wait whose context ended: ErrTimeout when its own
// timeout did, else the run's cancellation.
func (w Waiter) ended(ctx, wctx context.Context, timeout error, pending string, lastErr error) error {
	if !errors.Is(context.Cause(wctx), timeout) || ctx.Err() != nil {
		return context.Cause(ctx)
	}
	msg := fmt.Sprintf("of %s after %s", strings.Join(w.names(), ", "), w.Timeout)
	if pending != "" {
		msg += ": " + pending
	}
	if lastErr != nil {
		msg += "; last API error: " + lastErr.Error()
	}
	return fmt.Errorf("%w %s; the contract migrations were not run (LOCKMIGRATE_CONTRACT_WAIT_TIMEOUT)", ErrTimeout, msg)
}

// pending returns, for each workload whose rollout is not complete,
// "kind/name: why".
func (w Waiter) pending(ctx context.Context) ([]string, error) {
	var out []string
	for _, wl := range w.Workloads {
		why, err := w.Client.check(ctx, wl)
		if err != nil {
			return nil, err
		}
		if why != "" {
			out = append(out, wl.String()+": "+why)
		}
	}
	return out, nil
}

func (w Waiter) names() []string {
	out := make([]string, len(w.Workloads))
	for i, wl := range w.Workloads {
		out[i] = wl.String()
	}
	return out
}
