package cli

import (
	"context"
	"fmt"

	"github.com/lockmigrate/lockmigrate/runner"
)

var validateCmd = &command{
	name:  "validate",
	usage: []string{"lockmigrate validate", "check the migration set (and the database, when one is configured)"},
	run:   runValidate,
}

func runValidate(ctx context.Context, a *app, args []string) int {
	if !noArgs(args, a.stderr, "validate") {
		return exitUsage
	}
	if err := a.setup(ctx, withMigrations); err != nil {
		return exitCode(ctx, err)
	}
	checked := "offline"
	if !a.cfg.DatabaseConfigured() {
		// Without the history, a file holding its own BEGIN/COMMIT may be
		// one already applied by another tool and adopted as baseline: a
		// run never executes it, so offline it is a warning; against the
		// database (and in every run) a pending one is refused.
		if err := runner.CheckTransactionControl(a.migs); err != nil {
			a.log.Warn("transactional file ends its own transaction: a run refuses it unless it is already applied (e.g. adopted)",
				"error", err.Error())
		}
		// A statement that cannot run in a transaction block fails in any
		// run that applies the file: an error, above the baseline.
		if err := runner.CheckNoTransactionStatements(a.migs, a.cfg.BaselineVersion); err != nil {
			return a.fail(ctx, "validation failed", err)
		}
	} else {
		checked = "against the database"
		err := a.withRunner(ctx, a.opts.target, func(s session) error { return s.runner.Validate(ctx) })
		if err != nil {
			return a.fail(ctx, "validation failed", err)
		}
	}
	fmt.Fprintf(a.stdout, "ok: %d migrations valid (%s)\n", len(a.migs), checked)
	return exitOK
}
