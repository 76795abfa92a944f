package cli

import (
	"context"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/lockmigrate/lockmigrate/internal/dbconn"
)

// earlyConn is a migrate run's connection, opened while the migration files
// are read and hashed: the server's fork, authentication and start-up, the
// largest part of a run that finds nothing to do, then overlap with that
// work instead of following it. The run takes it with app.connect.
type earlyConn struct {
	done     chan struct{}
	cancel   context.CancelFunc
	gate     *logGate
	conn     *dbconn.Session
	attempts int
	err      error
}

// connectEarly starts opening the run's connection in the background.
func (a *app) connectEarly(ctx context.Context) {
	cctx, cancel := context.WithCancel(ctx)
	ec := &earlyConn{done: make(chan struct{}), cancel: cancel, gate: &logGate{open: make(chan struct{})}}
	log := slog.New(gatedHandler{a.log.Handler(), ec.gate})
	go func() {
		defer close(ec.done)
		ec.conn, ec.attempts, ec.err = dbconn.Open(cctx, a.opts.conn, a.cfg.ConnectTimeout, log)
	}()
	a.early = ec
	// Let the connection start now, on this P: left in the run queue, it
	// waited for an idle P's thread to wake up and steal it, which took up
	// to a millisecond, mostly after the files were read, and the
	// connection is what a no-op start waits for. It yields back at its
	// first wait on the network.
	runtime.Gosched()
}

// takeEarly waits for the early connection, if one was started, and hands
// it over; its log events (connect retries) flow from now on, after the
// run's own "run started".
func (a *app) takeEarly() (ec *earlyConn, ok bool) {
	ec, a.early = a.early, nil
	if ec == nil {
		return nil, false
	}
	ec.gate.release(false)
	<-ec.done // Connect returns when the run's context ends
	ec.cancel()
	return ec, true
}

// dropEarly abandons an early connection the run will not use (setup
// failed after starting it), discarding its log events.
func (a *app) dropEarly(ctx context.Context) {
	ec := a.early
	if ec == nil {
		return
	}
	a.early = nil
	ec.gate.release(true)
	ec.cancel()
	<-ec.done
	if ec.conn != nil {
		ec.conn.Close(ctx)
	}
}

// logGate holds log events back until release: an early connection's
// retries must not be logged before the run has logged its start, nor at
// all when the run ends before using the connection.
type logGate struct {
	open chan struct{}
	once sync.Once
	drop atomic.Bool
}

func (g *logGate) release(drop bool) {
	g.once.Do(func() {
		g.drop.Store(drop)
		close(g.open)
	})
}

// gatedHandler is a slog.Handler that waits for its gate before handling.
type gatedHandler struct {
	slog.Handler
	gate *logGate
}

func (h gatedHandler) Handle(ctx context.Context, r slog.Record) error {
	<-h.gate.open
	if h.gate.drop.Load() {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h gatedHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return gatedHandler{h.Handler.WithAttrs(as), h.gate}
}

func (h gatedHandler) WithGroup(name string) slog.Handler {
	return gatedHandler{h.Handler.WithGroup(name), h.gate}
}
