package cli

import (
	"context"
	"fmt"
	"strconv"

	"github.com/lockmigrate/lockmigrate/runner"
)

var resolveCmd = &command{
	name: "resolve",
	usage: []string{"lockmigrate resolve VERSION applied|retry",
		"settle an interrupted no-transaction migration after inspecting it:",
		"applied = its effects are complete; retry = run the whole file again"},
	run: runResolve,
}

func runResolve(ctx context.Context, a *app, args []string) int {
	if len(args) != 2 {
		fmt.Fprintln(a.stderr, "lockmigrate: usage: lockmigrate resolve VERSION applied|retry")
		return exitUsage
	}
	version, err := strconv.ParseInt(args[0], 10, 64)
	action := runner.ResolveAction(args[1])
	if err != nil || version <= 0 || (action != runner.ResolveApplied && action != runner.ResolveRetry) {
		fmt.Fprintf(a.stderr, "lockmigrate: resolve: want a positive version and applied or retry, got %q\n", args)
		return exitUsage
	}
	if err := a.setup(ctx, withMigrations); err != nil {
		return exitCode(ctx, err)
	}
	err = a.withRunner(ctx, a.opts.target, func(s session) error { return s.runner.Resolve(ctx, version, action) })
	if err != nil {
		return a.fail(ctx, "resolve failed", err)
	}
	fmt.Fprintf(a.stdout, "migration %d marked %s\n", version, action)
	return exitOK
}
