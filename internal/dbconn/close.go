package dbconn

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

// closeTimeout bounds closing a connection: the Terminate message and the
// socket's close, never a wait on the server.
const closeTimeout = 5 * time.Second

// Close closes conn even after ctx was cancelled (a run stopped by a signal
// still ends its session cleanly), within closeTimeout.
func Close(ctx context.Context, conn *pgx.Conn) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeTimeout)
	defer cancel()
	_ = conn.Close(cctx)
}
