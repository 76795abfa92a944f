package cli

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"github.com/lockmigrate/lockmigrate/internal/adopt"
	"github.com/lockmigrate/lockmigrate/internal/config"
	"github.com/lockmigrate/lockmigrate/internal/dbconn"
	"github.com/lockmigrate/lockmigrate/internal/fleet"
	"github.com/lockmigrate/lockmigrate/internal/lint/pgparse"
	"github.com/lockmigrate/lockmigrate/internal/rollout"
	"github.com/lockmigrate/lockmigrate/lock"
	"github.com/lockmigrate/lockmigrate/runner"
)

// The exit codes of the contract (README.md, "Exit codes").
const (
	exitOK          = 0
	exitMigration   = 1
	exitUsage       = 2
	exitUnreachable = 3
	exitWaitTimeout = 4
	exitValidation  = 5
)

// signalCause is the cancellation cause set when a signal stops the run.
type signalCause struct{ sig syscall.Signal }

func (s signalCause) Error() string { return "stopped by " + s.sig.String() }

// SignalCause is the cause main cancels Run's context with when sig
// arrives: the run then ends with sig's exit code (128 + its number),
// whatever error the cancellation produced on its way out.
func SignalCause(sig syscall.Signal) error { return signalCause{sig} }

// SignalExitCode is the exit code for a run stopped by sig.
func SignalExitCode(sig syscall.Signal) int { return 128 + int(sig) }

// usageError is a bad command line.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// exitCode is the one place that maps an error to an exit code. A signal
// wins over whatever error the cancellation produced on its way out.
func exitCode(ctx context.Context, err error) int {
	if err == nil {
		return exitOK
	}
	var sig signalCause
	if errors.As(context.Cause(ctx), &sig) {
		return SignalExitCode(sig.sig)
	}
	var (
		cfgErr   *config.Error
		parseErr *dbconn.ParseError
		usage    usageError
		connErr  *dbconn.ConnectError
		valErr   *runner.ValidationError
		migErr   *runner.MigrationError
		poolErr  *lock.PoolerError
		adoptErr *adopt.Error
		termErr  *lock.TerminateError
		tenants  *fleet.TenantsFailedError
		queryErr *fleet.QueryError
		k8sErr   *rollout.APIError
		k8sCfg   *rollout.ConfigError
	)
	switch {
	case errors.As(err, &tenants):
		// Some tenants failed, others were migrated: one code for the
		// fleet, final for a Job's podFailurePolicy like 5 would be; the
		// summary says per tenant what failed.
		return exitMigration
	case errors.As(err, &queryErr):
		return exitUsage
	case errors.As(err, &cfgErr), errors.As(err, &parseErr), errors.As(err, &usage),
		errors.Is(err, runner.ErrNothingToResolve),
		errors.As(err, &k8sCfg), errors.As(err, &k8sErr) && k8sErr.NotFound(), // the rollout wait cannot work as configured
		errors.Is(err, pgparse.ErrUnavailable): // lint asked of an installation without its parser
		return exitUsage
	case errors.As(err, &connErr), errors.Is(err, runner.ErrReadOnly), dbconn.Lost(err),
		errors.As(err, &termErr) && termErr.Denied, // the role lacks a privilege, like a failed login
		errors.As(err, &k8sErr) && k8sErr.Denied(): // so does the contract Job's ServiceAccount
		return exitUnreachable
	case errors.Is(err, runner.ErrWaitTimeout), errors.Is(err, rollout.ErrTimeout):
		return exitWaitTimeout
	case errors.As(err, &valErr), errors.As(err, &poolErr), errors.As(err, &adoptErr):
		return exitValidation
	case errors.As(err, &migErr):
		return exitMigration
	}
	return exitMigration
}

// errorKind names the class of a failure for logs (and metrics).
func errorKind(code int) string {
	switch code {
	case exitOK:
		return ""
	case exitMigration:
		return "migration"
	case exitUsage:
		return "config"
	case exitUnreachable:
		return "connect"
	case exitWaitTimeout:
		return "wait_timeout"
	case exitValidation:
		return "validation"
	}
	return fmt.Sprintf("signal_%d", code-128)
}
