package lock

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// DefaultReleaseTimeout bounds Release's wait for the terminated backend to
// let go of the lock. A terminated backend normally exits in milliseconds;
// one that does not within this is stuck in the kernel or in a long
// rollback, and an operator must look at the server.
const DefaultReleaseTimeout = 30 * time.Second

// ErrReleaseTimeout ends Release's wait for the release: the terminated
// backend still held the lock when ReleaseOptions.Timeout passed.
var ErrReleaseTimeout = errors.New("the terminated backend did not release the lock in time")

// HolderChangedError: a forced Release terminated nothing because the lock
// is now held by another backend (Now) than the one targeted (Target). The
// operator's request was not carried out, and running it again, after
// looking at the new holder, is the remedy.
type HolderChangedError struct{ Target, Now int32 }

func (e HolderChangedError) Error() string {
	return fmt.Sprintf("nothing terminated: backend %d does not hold the lock, backend %d does now; "+
		"run lockmigrate unlock to see it, then unlock --force --pid %d if it is hung", e.Target, e.Now, e.Now)
}

// ReleaseAction is what Release did.
type ReleaseAction string

// The actions of a ReleaseReport.
const (
	// ReleaseNone: nothing was attempted (no Force, or a free lock and no
	// PID to check).
	ReleaseNone ReleaseAction = "none"
	// ReleaseTerminated: the target was terminated (and, without an error,
	// the lock released).
	ReleaseTerminated ReleaseAction = "terminated"
	// ReleaseNotTerminated: the target did not hold the lock when the
	// terminate ran, so nothing was done.
	ReleaseNotTerminated ReleaseAction = "not_terminated"
	// ReleaseFailed: the terminate was refused or failed (see the error).
	ReleaseFailed ReleaseAction = "failed"
)

// ReleaseOptions say whom Release may end.
type ReleaseOptions struct {
	// Force terminates the holder's backend (pg_terminate_backend) and
	// waits until the lock is released; without it Release only looks.
	Force bool
	// PID, with Force, terminates only if this backend holds the lock; 0
	// targets the holder Release finds. Ignored without Force.
	PID int32
	// Timeout bounds the wait for the release; zero or negative means
	// DefaultReleaseTimeout.
	Timeout time.Duration
}

// ReleaseReport is what Release found and did. Its JSON fields are those
// of lockmigrate unlock --json after the history table and the key, so the
// command embeds it.
type ReleaseReport struct {
	// Holder is the session found holding the lock before any action.
	Holder *Holder       `json:"holder"`
	Action ReleaseAction `json:"action"`
	// TargetPID is the backend a forced Release aimed at.
	TargetPID int32 `json:"target_pid,omitempty"`
	// ReleasedMS is the time from the terminate to the release, in
	// milliseconds with a tenth of a millisecond of precision.
	ReleasedMS *float64 `json:"released_ms,omitempty"`
	// NowHeldBy is the holder after a forced Release that terminated
	// nothing.
	NowHeldBy *Holder `json:"now_held_by,omitempty"`
}

// Release shows who holds the lock and, with opts.Force, ends that backend
// (or opts.PID, if it holds the lock at that instant: see Terminate) and
// waits until the lock is released, so that a hung runner stops blocking
// the others. A terminated holder is logged (warning "advisory lock holder
// terminated") on a.Logger.
//
// The report is nil only when the holder could not be looked up. Errors:
// a *TerminateError (Denied for a refusal) with ReleaseFailed; a
// HolderChangedError when the target did not hold the lock and another
// backend does; ErrReleaseTimeout, wrapped by WaitReleased's error, when
// the terminated backend kept the lock past opts.Timeout; otherwise query
// failures and ctx's end.
func (a *Advisory) Release(ctx context.Context, opts ReleaseOptions) (*ReleaseReport, error) {
	rep := &ReleaseReport{Action: ReleaseNone}
	var err error
	if rep.Holder, err = a.Holder(ctx); err != nil {
		return nil, err
	}
	if !opts.Force || (rep.Holder == nil && opts.PID == 0) {
		return rep, nil
	}
	rep.TargetPID = opts.PID
	if opts.PID == 0 {
		rep.TargetPID = rep.Holder.PID
	}
	terminated, err := a.Terminate(ctx, rep.TargetPID)
	if err != nil {
		rep.Action = ReleaseFailed
		return rep, err
	}
	if !terminated {
		rep.Action = ReleaseNotTerminated
		if rep.NowHeldBy, err = a.Holder(ctx); err != nil {
			return rep, err
		}
		if rep.NowHeldBy != nil {
			return rep, HolderChangedError{Target: rep.TargetPID, Now: rep.NowHeldBy.PID}
		}
		return rep, nil
	}
	rep.Action = ReleaseTerminated
	a.logTerminated(ctx, rep)
	return rep, a.waitTerminated(ctx, rep, opts.Timeout)
}

// logTerminated logs the terminated holder, or only its pid when the
// target was not the holder first seen.
func (a *Advisory) logTerminated(ctx context.Context, rep *ReleaseReport) {
	if a.Logger == nil {
		return
	}
	target := slog.Int("pid", int(rep.TargetPID))
	if rep.Holder != nil && rep.Holder.PID == rep.TargetPID {
		target = slog.Any("holder", *rep.Holder)
	}
	a.Logger.LogAttrs(ctx, slog.LevelWarn, "advisory lock holder terminated", slog.Int64("lock_key", a.Key), target)
}

// waitTerminated waits up to timeout for the terminated target to release
// the lock and records how long that took in rep.ReleasedMS.
func (a *Advisory) waitTerminated(ctx context.Context, rep *ReleaseReport, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = DefaultReleaseTimeout
	}
	wctx, cancel := context.WithTimeoutCause(ctx, timeout, ErrReleaseTimeout)
	defer cancel()
	took, err := a.WaitReleased(wctx, rep.TargetPID)
	if err != nil {
		return err
	}
	ms := float64(took.Round(100*time.Microsecond)) / float64(time.Millisecond)
	rep.ReleasedMS = &ms
	return nil
}
