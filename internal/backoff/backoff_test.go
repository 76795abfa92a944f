package backoff

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestDelayBounds(t *testing.T) {
	p := Policy{Initial: 100 * time.Millisecond, Max: time.Second}
	tests := []struct {
		attempt  int
		min, max time.Duration
	}{
		{1, 50 * time.Millisecond, 100 * time.Millisecond},
		{2, 100 * time.Millisecond, 200 * time.Millisecond},
		{4, 400 * time.Millisecond, 800 * time.Millisecond},
		{5, 500 * time.Millisecond, time.Second},
		{50, 500 * time.Millisecond, time.Second},
	}
	for _, tt := range tests {
		for range 200 {
			d := p.Delay(tt.attempt)
			if d < tt.min || d > tt.max {
				t.Fatalf("attempt %d: delay %v outside [%v, %v]", tt.attempt, d, tt.min, tt.max)
			}
		}
	}
}

func TestDelayIsJittered(t *testing.T) {
	p := Policy{Initial: time.Second, Max: time.Second}
	seen := map[time.Duration]bool{}
	for range 50 {
		seen[p.Delay(1)] = true
	}
	if len(seen) < 10 {
		t.Fatalf("only %d distinct delays in 50 draws: not jittered", len(seen))
	}
}

func TestSleepReturnsCause(t *testing.T) {
	cause := errors.New("stop")
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(cause)
	if err := Sleep(ctx, time.Hour); !errors.Is(err, cause) {
		t.Fatalf("Sleep = %v, want %v", err, cause)
	}
	if err := Sleep(context.Background(), time.Millisecond); err != nil {
		t.Fatalf("Sleep = %v", err)
	}
}
