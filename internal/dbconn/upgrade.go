package dbconn

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// upgrade makes a *pgx.Conn of an open pgconn session, on the same server
// session. pgx has no constructor from a *pgconn.PgConn, and connecting
// anew would give up the session (and cost another backend), so upgrade
// hijacks pg's socket and lets pgx.ConnectConfig "connect" through a
// dialer that returns it: the start-up message pgx sends is swallowed, and
// pgx reads the server's start-up reply as pg received it — authentication
// done, the parameters the server reported, the cancellation key, ready —
// re-encoded from the hijacked state. From then on every byte goes to and
// comes from the server unchanged.
func upgrade(ctx context.Context, cfg *pgx.ConnConfig, pg *pgconn.PgConn) (*pgx.Conn, error) {
	if pg == nil {
		return nil, errors.New("the session is closed")
	}
	if err := pg.SyncConn(ctx); err != nil {
		closeWithin(ctx, pg.Close) // ctx may be the run's, already cancelled
		return nil, err
	}
	hc, err := pg.Hijack()
	if err != nil {
		closeWithin(ctx, pg.Close)
		return nil, err
	}
	hello, err := startupReply(hc)
	if err != nil {
		_ = hc.Conn.Close()
		return nil, err
	}
	c := cfg.Copy()
	// The session is authenticated, encrypted if it is, validated and set
	// up: nothing of that is done again.
	c.TLSConfig, c.Fallbacks, c.ValidateConnect, c.AfterNetConnect, c.AfterConnect = nil, nil, nil, nil, nil
	c.OnNotification = nil // pgx installs its own
	dial, tlsConf, direct := cfg.DialFunc, hc.TLSConfig, cfg.SSLNegotiation == "direct"
	var used atomic.Bool
	c.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if used.CompareAndSwap(false, true) {
			return &replayConn{Conn: hc.Conn, reply: hello}, nil
		}
		// Later dials are cancellation requests: a new connection to
		// the same server, encrypted as the session is.
		return dialCancel(ctx, dial, tlsConf, direct, network, addr)
	}
	conn, err := pgx.ConnectConfig(ctx, c)
	if err != nil {
		_ = hc.Conn.Close()
		return nil, err
	}
	return conn, nil
}

// startupReply is the server's start-up reply as pg received it, the
// messages pgconn's connect reads up to ReadyForQuery.
func startupReply(hc *pgconn.HijackedConn) ([]byte, error) {
	if hc.TxStatus != 'I' {
		return nil, fmt.Errorf("the session is not idle (transaction status %q)", hc.TxStatus)
	}
	msgs := []pgproto3.BackendMessage{&pgproto3.AuthenticationOk{}}
	for _, name := range slices.Sorted(maps.Keys(hc.ParameterStatuses)) {
		msgs = append(msgs, &pgproto3.ParameterStatus{Name: name, Value: hc.ParameterStatuses[name]})
	}
	msgs = append(msgs, &pgproto3.BackendKeyData{ProcessID: hc.PID, SecretKey: hc.SecretKey},
		&pgproto3.ReadyForQuery{TxStatus: hc.TxStatus})
	var buf []byte
	for _, m := range msgs {
		var err error
		if buf, err = m.Encode(buf); err != nil {
			return nil, err
		}
	}
	return buf, nil
}

// replayConn is the hijacked socket as pgx's connect sees it: the first
// write, the start-up message, never reaches the server (which would take
// it for a malformed query), and the first reads return reply.
type replayConn struct {
	net.Conn
	reply   []byte // what is left of the start-up reply
	skip    int    // bytes of the start-up message still to swallow
	started bool   // the start-up message's length has been read
}

func (c *replayConn) Write(b []byte) (int, error) {
	n := 0
	if !c.started {
		// The start-up message: length, then protocol version 3.x.
		if len(b) < 8 || binary.BigEndian.Uint16(b[4:6]) != 3 {
			return 0, errors.New("dbconn: replay: the first message is not a start-up message")
		}
		c.started, c.skip = true, int(binary.BigEndian.Uint32(b[0:4]))
	}
	if c.skip > 0 {
		n = min(c.skip, len(b))
		c.skip -= n
		b = b[n:]
	}
	if len(b) == 0 {
		return n, nil
	}
	m, err := c.Conn.Write(b)
	return n + m, err
}

func (c *replayConn) Read(b []byte) (int, error) {
	if len(c.reply) > 0 {
		n := copy(b, c.reply)
		c.reply = c.reply[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// sslRequestCode is the SSLRequest message's code (PostgreSQL protocol).
const sslRequestCode = 80877103

// dialCancel opens the connection a cancellation request is sent on, as
// pgconn does for a session it opened: over TLS when the session is (the
// request carries the session's secret key), after an SSLRequest unless
// the negotiation is direct.
func dialCancel(ctx context.Context, dial pgconn.DialFunc, tlsConf *tls.Config, direct bool, network, addr string) (net.Conn, error) {
	conn, err := dial(ctx, network, addr)
	if err != nil || tlsConf == nil {
		return conn, err
	}
	if !direct {
		var req [8]byte
		binary.BigEndian.PutUint32(req[0:4], 8)
		binary.BigEndian.PutUint32(req[4:8], sslRequestCode)
		var resp [1]byte
		if _, err = conn.Write(req[:]); err == nil {
			_, err = io.ReadFull(conn, resp[:])
		}
		if err == nil && resp[0] != 'S' {
			err = errors.New("server refused TLS for the cancellation request")
		}
		if err != nil {
			_ = conn.Close()
			return nil, err
		}
	}
	return tls.Client(conn, tlsConf), nil
}
