// Package backoff computes jittered exponential delays. Many replicas start at
// the same instant; without jitter their retries stay in lock-step and hit the
// database (or its connection limit) together on every round.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Policy describes an exponential backoff with "equal jitter": each delay is
// drawn uniformly from [d/2, d] where d doubles from Initial up to Max. Half of
// the delay stays deterministic so retries make progress; the other half
// spreads a herd of replicas apart.
type Policy struct {
	Initial time.Duration
	Max     time.Duration
}

// Delay returns the jittered delay before retry number attempt (1-based).
func (p Policy) Delay(attempt int) time.Duration {
	d := p.Initial
	if d <= 0 {
		d = 100 * time.Millisecond
	}
	for i := 1; i < attempt && (p.Max <= 0 || d < p.Max); i++ {
		d *= 2
	}
	if p.Max > 0 && d > p.Max {
		d = p.Max
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// Sleep waits for d or until ctx is done, whichever comes first, and returns
// the context's error in the latter case. It never sleeps past ctx's deadline.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}
