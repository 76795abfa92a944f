package cli

import (
	"log/slog"

	"github.com/lockmigrate/lockmigrate/internal/metrics"
	"github.com/lockmigrate/lockmigrate/runner"
)

// phaseAttrs are the "run finished" event's fields of phases and
// backfills: pending work per phase, and the backfills' totals.
func phaseAttrs(res *runner.Result) []slog.Attr {
	attrs := []slog.Attr{slog.Int("pending_expand", res.PendingExpand), slog.Int("pending_contract", res.PendingContract)}
	if b := backfillMetrics(res); b != nil {
		var maxBatch int64
		for _, s := range res.Backfills {
			maxBatch = max(maxBatch, s.MaxBatch.Milliseconds())
		}
		attrs = append(attrs, slog.Int64("backfill_rows", b.Rows), slog.Int64("backfill_batches", b.Batches),
			slog.Int64("backfill_ms", b.Duration.Milliseconds()), slog.Int64("backfill_max_batch_ms", maxBatch))
	}
	return attrs
}

// backfillMetrics sums the run's backfills; nil when it ran none.
func backfillMetrics(res *runner.Result) *metrics.Backfill {
	if len(res.Backfills) == 0 {
		return nil
	}
	b := &metrics.Backfill{}
	for _, s := range res.Backfills {
		b.Rows += s.Rows
		b.Batches += s.Batches
		b.Duration += s.Duration
	}
	return b
}
