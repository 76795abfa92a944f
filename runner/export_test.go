package runner

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

// TryTx runs r's bookkeeping transaction helper.
func TryTx(r *Runner, ctx context.Context, fn func(pgx.Tx) error) error { return r.tryTx(ctx, fn) }

// SetLagProbe makes r read the replication lag from probe (lag, standbys,
// hidden standbys) instead of pg_stat_replication, and poll it every poll.
func SetLagProbe(r *Runner, poll time.Duration, probe func(context.Context) (lag time.Duration, standbys, hidden int, err error)) {
	lagPoll = poll
	r.lagProbe = func(ctx context.Context) (replicationLag, error) {
		lag, n, hidden, err := probe(ctx)
		return replicationLag{max: lag, standby: "standby-1", standbys: n, hidden: hidden}, err
	}
}
