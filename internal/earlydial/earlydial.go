// Package earlydial opens a migrate run's TCP connection to the database
// while the process is still initialising its packages. Package
// initialisation takes about 2 ms of a no-op start (client_golang's default
// registry, procfs's regular expressions, protobuf descriptors) and cannot
// be skipped; the server's side of a new connection (accepting it, forking
// the backend) takes about as long and needs nothing from the client but the
// socket. Dialled here, in a goroutine started by this package's init, the
// two overlap: pgconn's own dial, which comes after the configuration is
// loaded, then gets a socket whose backend is already waiting for the
// start-up message (docs/performance.md has the measurements).
//
// The early dial decides nothing. It reads DATABASE_URL only to find the
// address pgconn will most likely dial, and Take hands the socket over only
// when pgconn dials exactly that address over TCP; in every other case the
// socket is closed unused (a backend that gets no start-up message exits
// without logging) and the run dials as it always did, with the errors,
// retries and settings that come from the configuration. The package
// imports only the standard library's net and its dependencies, so that its
// init runs before those of the heavy packages (TestInitOrder in
// internal/cli checks the order in the built binary).
package earlydial

import (
	"context"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// dialTimeout bounds the early dial: a run whose database does not answer
// dials again under its own connect timeout and retry policy.
const dialTimeout = 10 * time.Second

// early is the one early dial of the process, nil when none was started.
var early *dial

// used is set once Take has handed the early connection over.
var used atomic.Bool

// Used reports whether the early connection was handed over: a run's
// "connected" debug event says so.
func Used() bool { return used.Load() }

// dial is an early connection in progress or done.
type dial struct {
	done chan struct{} // closed when the dial has ended
	conn net.Conn      // nil when it failed
	once sync.Once     // the first Take consumes it
}

func init() {
	if addr, ok := Target(os.Args[1:], os.Getenv); ok {
		early = start(func() (net.Conn, error) { return (&net.Dialer{Timeout: dialTimeout}).Dial("tcp", addr) })
	}
}

// start runs open in the background.
func start(open func() (net.Conn, error)) *dial {
	d := &dial{done: make(chan struct{})}
	go func() {
		defer close(d.done)
		if c, err := open(); err == nil {
			d.conn = c
		}
	}()
	return d
}

// Target is the address a run with these arguments and environment dials
// first, when this package can tell: a migrate run (no arguments, or
// "migrate") whose DATABASE_URL is a postgres:// or postgresql:// URL naming
// one host, with no query parameter that changes where pgconn connects and
// no DATABASE_URL_FILE, which would replace it. Anything else (the libpq
// variables, a key/value DSN, several hosts, a Unix socket, a service file,
// percent-encoding in the host, an unescaped "@" in the password, a
// fragment, other commands) starts no early dial.
//
// The URL is split by hand: net/url is initialised after procfs, whose 22
// regular expressions are a tenth of a start's instructions, and this
// package's init is meant to come before them (TestTargetIsPgconns holds the
// result to pgconn's own parse).
func Target(args []string, getenv func(string) string) (addr string, ok bool) {
	if len(args) > 1 || len(args) == 1 && args[0] != "migrate" || getenv("DATABASE_URL_FILE") != "" {
		return "", false
	}
	rest, ok := strings.CutPrefix(getenv("DATABASE_URL"), "postgres://")
	if !ok {
		if rest, ok = strings.CutPrefix(getenv("DATABASE_URL"), "postgresql://"); !ok {
			return "", false
		}
	}
	authority, query := rest, ""
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		authority = rest[:i]
		if q := strings.IndexByte(rest, '?'); q >= 0 {
			query = rest[q+1:]
		}
	}
	// A second "@" (an unescaped one in the password) or a fragment is
	// read differently by different parsers: no guess.
	if strings.Count(authority, "@") > 1 || strings.Contains(rest, "#") {
		return "", false
	}
	host, port, ok := splitHostPort(authority[strings.LastIndexByte(authority, '@')+1:])
	if !ok || routes(query) {
		return "", false
	}
	return net.JoinHostPort(host, port), true
}

// splitHostPort splits a URL's host and port, 5432 when there is none. It
// refuses what is not one plain host: several (commas), a percent-encoded
// socket path or zone, a port that is not a number.
func splitHostPort(hostport string) (host, port string, ok bool) {
	bad := ",/%:[]"
	if inner, after, found := strings.Cut(strings.TrimPrefix(hostport, "["), "]"); found && hostport[0] == '[' {
		host, port, bad = inner, after, ",/%"
		if port != "" && port[0] != ':' {
			return "", "", false
		}
		port = strings.TrimPrefix(port, ":")
	} else if i := strings.LastIndexByte(hostport, ':'); i >= 0 {
		host, port = hostport[:i], hostport[i+1:]
	} else {
		host = hostport
	}
	if host == "" || strings.ContainsAny(host, bad) {
		return "", "", false
	}
	for _, c := range port {
		if c < '0' || c > '9' {
			return "", "", false
		}
	}
	if port == "" {
		port = "5432"
	}
	return host, port, true
}

// routes reports whether a URL's query names where to connect, overriding
// its host and port.
func routes(query string) bool {
	for kv := range strings.SplitSeq(query, "&") {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "host", "hostaddr", "port", "service", "servicefile":
			return true
		}
	}
	return false
}

// Take hands over the early connection when network and addr are those it
// was opened to (addr as pgconn dials it: the resolved IP and the port), and
// reports whether it did. It waits for a dial still in progress, up to ctx.
// The first call consumes the connection: a later one, or one for another
// address, gets nothing, and an early connection not handed over is closed.
func Take(ctx context.Context, network, addr string) (net.Conn, bool) {
	return early.take(ctx, network, addr)
}

func (d *dial) take(ctx context.Context, network, addr string) (c net.Conn, ok bool) {
	if d == nil {
		return nil, false
	}
	select {
	case <-d.done:
	case <-ctx.Done():
		// The caller's own dial fails on ctx at once; the early socket is
		// closed when its dial ends.
		go func() { <-d.done; d.once.Do(d.discard) }()
		return nil, false
	}
	d.once.Do(func() {
		if d.conn != nil && (network == "tcp" || network == "tcp4" || network == "tcp6") && d.conn.RemoteAddr().String() == addr {
			c, ok, d.conn = d.conn, true, nil
			used.Store(true)
			return
		}
		d.discard()
	})
	return c, ok
}

// discard closes an early connection nobody took.
func (d *dial) discard() {
	if d.conn != nil {
		d.conn.Close()
		d.conn = nil
	}
}
