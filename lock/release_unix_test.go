//go:build unix

package lock_test

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/lockmigrate/lockmigrate/internal/pgtest"
	"github.com/lockmigrate/lockmigrate/lock"
)

// TestReleaseTimeout: a terminated backend that does not exit keeps the
// lock, and Release gives up after Timeout with ErrReleaseTimeout. The
// holder is kept from exiting by stopping its backend process (SIGSTOP):
// pg_terminate_backend's SIGTERM then waits until SIGCONT, as for a backend
// stuck in the kernel. That needs the right to signal the server's
// processes, which the tests have (they started it, or are root).
func TestReleaseTimeout(t *testing.T) {
	const key = 6
	ctx := context.Background()
	url := pgtest.Shared().NewDB(t)
	holder, bystander, watcher := connect(t, url), connect(t, url), connect(t, url)
	pgtest.MustLock(t, holder, key)
	pgtest.MustLock(t, bystander, key+1)
	backend := int(pid(holder))
	if err := syscall.Kill(backend, syscall.SIGSTOP); err != nil {
		t.Fatalf("stop backend %d: %v", backend, err)
	}
	// Before the database is dropped (cleanups run last in, first out):
	// DROP DATABASE waits for the stopped backend to exit.
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			if err := syscall.Kill(backend, syscall.SIGCONT); err != nil {
				t.Errorf("resume backend %d: %v", backend, err)
			}
		}
	}
	t.Cleanup(resume)
	a := lock.New(watcher, key, nil)
	start := time.Now()
	rep, err := a.Release(ctx, lock.ReleaseOptions{Force: true, Timeout: 300 * time.Millisecond})
	took := time.Since(start)
	t.Logf("Release = %+v, %v after %v", rep, err, took)
	if !errors.Is(err, lock.ErrReleaseTimeout) || took < 300*time.Millisecond {
		t.Fatalf("Release = %v after %v; want ErrReleaseTimeout after 300ms", err, took)
	}
	if rep == nil || rep.Action != lock.ReleaseTerminated || rep.TargetPID != int32(backend) || rep.ReleasedMS != nil {
		t.Fatalf("report %+v; want terminated, target %d, no release time", rep, backend)
	}
	// The timeout may have ended a query of the watcher's in flight, and
	// pgx then closes that connection (the test's connections keep pgx's
	// default; the binary's send a cancel request instead): look on a new
	// one.
	after := connect(t, url)
	assertHeld(t, after, key, int32(backend))
	resume()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := lock.New(after, key, nil).WaitReleased(wctx, int32(backend)); err != nil {
		t.Fatalf("after SIGCONT: %v", err)
	}
	assertHeld(t, after, key+1, pid(bystander))
}
