package earlydial

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// TestTargetIsPgconns: where Target names an address, it is the one host
// and port pgconn's own parse of the URL connects to; where pgconn would
// connect elsewhere or to more than one place, Target names none.
func TestTargetIsPgconns(t *testing.T) {
	cases := []struct {
		url  string
		want string // "" for no early dial
	}{
		{"postgres://u@127.0.0.1:55432/db?sslmode=disable", "127.0.0.1:55432"},
		{"postgresql://u:p@db.example:6432/app", "db.example:6432"},
		{"postgres://db.example/app", "db.example:5432"},
		{"postgres://u:p%40ss@db.example:5433", "db.example:5433"},
		{"postgres://u:p@ss@db.example:5433/app", ""},
		{"postgres://[::1]:5433/app", "[::1]:5433"},
		{"postgres://[::1]/app", "[::1]:5432"},
		{"postgres://u@h:5432/app?application_name=x&sslmode=require", "h:5432"},
		{"postgres://u@h:5432/app?sslmode=require#frag", ""},
		{"postgres://u@h1,h2:5432/app", ""},
		{"postgres://u@h1:5432,h2:5433/app", ""},
		{"postgres://u@h:5432/app?host=/tmp", ""},
		{"postgres://u@h:5432/app?hostaddr=10.0.0.1", ""},
		{"postgres://u@h:5432/app?port=5433", ""},
		{"postgres://u@h/app?service=prod", ""},
		{"postgres://%2Ftmp/app", ""},
		{"postgres:///app", ""},
		{"postgres://u@h:x/app", ""},
		{"host=h port=5432 dbname=app", ""},
		{"mysql://h:3306/app", ""},
		{"", ""},
	}
	for _, tc := range cases {
		getenv := func(k string) string {
			if k == "DATABASE_URL" {
				return tc.url
			}
			return ""
		}
		got, ok := Target(nil, getenv)
		if !ok {
			got = ""
		}
		if got != tc.want {
			t.Errorf("%q: Target %q, want %q", tc.url, got, tc.want)
			continue
		}
		if got == "" {
			continue
		}
		cfg, err := pgconn.ParseConfig(tc.url)
		if err != nil {
			t.Errorf("%q: pgconn cannot parse it: %v", tc.url, err)
			continue
		}
		if pg := net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))); pg != got {
			t.Errorf("%q: Target %q, pgconn connects to %q", tc.url, got, pg)
		}
		for _, fb := range cfg.Fallbacks {
			if fb.Host != cfg.Host || fb.Port != cfg.Port {
				t.Errorf("%q: pgconn would also try %s:%d", tc.url, fb.Host, fb.Port)
			}
		}
	}
}

// TestTargetOnlyForMigrate: the early dial is for the init container's
// migrate run, and not when DATABASE_URL_FILE replaces the URL.
func TestTargetOnlyForMigrate(t *testing.T) {
	env := map[string]string{"DATABASE_URL": "postgres://h:5432/app"}
	for _, tc := range []struct {
		args []string
		file string
		want bool
	}{
		{nil, "", true}, {[]string{"migrate"}, "", true}, {[]string{"status"}, "", false},
		{[]string{"migrate", "extra"}, "", false}, {[]string{"version"}, "", false},
		{[]string{"-test.run=X"}, "", false}, {nil, "/secrets/url", false},
	} {
		env["DATABASE_URL_FILE"] = tc.file
		if _, ok := Target(tc.args, func(k string) string { return env[k] }); ok != tc.want {
			t.Errorf("args %q, DATABASE_URL_FILE %q: early dial %v, want %v", tc.args, tc.file, ok, tc.want)
		}
	}
}

// listen is a TCP listener on loopback whose accepted connections arrive on
// the channel.
func listen(t *testing.T) (addr string, accepted <-chan net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	ch := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			ch <- c
		}
	}()
	return l.Addr().String(), ch
}

func dialTo(addr string) func() (net.Conn, error) {
	return func() (net.Conn, error) { return net.Dial("tcp", addr) }
}

// TestTakeHandsOverOnce: the connection dialled early is the one Take
// returns for its address, once, and it carries bytes to the server side.
func TestTakeHandsOverOnce(t *testing.T) {
	addr, accepted := listen(t)
	d := start(dialTo(addr))
	c, ok := d.take(context.Background(), "tcp", addr)
	if !ok {
		t.Fatal("Take did not hand over the connection to its own address")
	}
	defer c.Close()
	server := <-accepted
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(server, b); err != nil || b[0] != 'x' {
		t.Fatalf("server read %q, %v", b, err)
	}
	if c2, ok := d.take(context.Background(), "tcp", addr); ok || c2 != nil {
		t.Fatal("a second Take got a connection")
	}
}

// TestTakeOtherAddressCloses: Take for an address or network the early
// connection was not opened to returns nothing and closes it (the server
// side reads EOF), and so does every later Take.
func TestTakeOtherAddressCloses(t *testing.T) {
	for _, tc := range []struct{ network, addr string }{{"tcp", "127.0.0.1:1"}, {"unix", ""}} {
		addr, accepted := listen(t)
		if tc.addr == "" {
			tc.addr = addr
		}
		d := start(dialTo(addr))
		if c, ok := d.take(context.Background(), tc.network, tc.addr); ok || c != nil {
			t.Fatalf("%s %s: Take handed over a connection to %s", tc.network, tc.addr, addr)
		}
		server := <-accepted
		server.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := server.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
			t.Fatalf("%s %s: the unused connection is not closed: %d, %v", tc.network, tc.addr, n, err)
		}
		if _, ok := d.take(context.Background(), "tcp", addr); ok {
			t.Fatal("a Take after a refused one got the connection")
		}
	}
}

// TestTakeWithoutEarlyDial: no early dial (a failed one, or none started)
// gives nothing.
func TestTakeWithoutEarlyDial(t *testing.T) {
	d := start(func() (net.Conn, error) { return nil, errors.New("refused") })
	if _, ok := d.take(context.Background(), "tcp", "127.0.0.1:5432"); ok {
		t.Fatal("Take of a failed dial handed something over")
	}
	var none *dial
	if _, ok := none.take(context.Background(), "tcp", "127.0.0.1:5432"); ok {
		t.Fatal("Take without an early dial handed something over")
	}
}

// TestTakeGivesUpWithContext: Take waits for a dial still in progress only
// as long as its context; the connection that dial then makes is closed.
func TestTakeGivesUpWithContext(t *testing.T) {
	addr, accepted := listen(t)
	release := make(chan struct{})
	d := start(func() (net.Conn, error) { <-release; return net.Dial("tcp", addr) })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, ok := d.take(ctx, "tcp", addr); ok {
		t.Fatal("Take with a done context handed over a connection")
	}
	close(release)
	server := <-accepted
	server.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := server.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("the connection dialled after the give-up is not closed: %d, %v", n, err)
	}
}
