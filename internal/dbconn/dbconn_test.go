package dbconn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestRetriable(t *testing.T) {
	pg := func(code string) error { return fmt.Errorf("connect: %w", &pgconn.PgError{Code: code}) }
	tests := []struct {
		err  error
		want bool
	}{
		{pg("53300"), true}, // too many clients
		{pg("57P03"), true}, // starting up
		{pg("57P01"), true},
		{pg("08006"), true},
		{pg("28P01"), false}, // bad password
		{pg("28000"), false}, // no pg_hba entry
		{pg("3D000"), false}, // no such database
		{pg("42501"), false},
		{&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, true},
		{&net.DNSError{Err: "no such host", Name: "db", IsNotFound: true}, true},
		{fmt.Errorf("read: %w", io.ErrUnexpectedEOF), true},
		{context.DeadlineExceeded, true},
		{errors.New("tls: failed to verify certificate"), false},
	}
	for _, tt := range tests {
		if got := Retriable(tt.err); got != tt.want {
			t.Errorf("Retriable(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestConfigFromEnvAndRedaction(t *testing.T) {
	env := map[string]string{"PGHOST": "db.example", "PGPORT": "6543", "PGUSER": "app", "PGPASSWORD": `it's\secret`, "PGDATABASE": "shop", "PGSSLMODE": "disable"}
	cfg, err := Config("", func(k string) string { return env[k] }, "lockmigrate/pod-1", Keepalive{Idle: 10 * time.Second, Interval: 5 * time.Second, Count: 3, UserTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "db.example" || cfg.Port != 6543 || cfg.User != "app" || cfg.Password != `it's\secret` || cfg.Database != "shop" {
		t.Fatalf("config from PG* = %+v", cfg.Config)
	}
	if cfg.RuntimeParams["application_name"] != "lockmigrate/pod-1" {
		t.Fatalf("application_name = %q", cfg.RuntimeParams["application_name"])
	}
	_, err = Config("postgres://u:topsecret@h:badport/db", func(string) string { return "" }, "x", Keepalive{})
	var pe *ParseError
	if !errors.As(err, &pe) || strings.Contains(err.Error(), "topsecret") {
		t.Fatalf("Config = %v; want a *ParseError without the password", err)
	}
}

func TestKeepaliveSettings(t *testing.T) {
	ka := Keepalive{Idle: 10 * time.Second, Interval: 5 * time.Second, Count: 3, UserTimeout: 20 * time.Second}
	cfg, err := Config("postgres://u@h/db", func(string) string { return "" }, "x", ka)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5", "tcp_keepalives_count": "3", "tcp_user_timeout": "20000"}
	for k, v := range want {
		if cfg.RuntimeParams[k] != v {
			t.Errorf("%s = %q, want %q", k, cfg.RuntimeParams[k], v)
		}
	}
	if ka.WorstCase() != 25*time.Second {
		t.Errorf("worst case %v, want 25s", ka.WorstCase())
	}
}

// sockopts are the keepalive options of a connected TCP socket.
func sockopts(t *testing.T, c net.Conn) [5]int {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var out [5]int
	var gerr error
	err = rc.Control(func(fd uintptr) {
		for i, o := range [][2]int{{syscall.SOL_SOCKET, syscall.SO_KEEPALIVE}, {syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE},
			{syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL}, {syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT}, {syscall.IPPROTO_TCP, tcpUserTimeout}} {
			v, err := syscall.GetsockoptInt(int(fd), o[0], o[1])
			out[i], gerr = v, errors.Join(gerr, err)
		}
	})
	if err = errors.Join(err, gerr); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestLikeDialed: a socket dialled early, with Go's defaults, gets the
// keepalive options and user timeout the run's dialer gives the sockets it
// dials itself, keepalives on or off.
func TestLikeDialed(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	addr := l.Addr().String()
	for _, ka := range []Keepalive{{Idle: 7 * time.Second, Interval: 3 * time.Second, Count: 4, UserTimeout: 11 * time.Second}, {}} {
		d := newDialer(ka)
		own, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		early, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if err := likeDialed(d, "tcp", addr, early); err != nil {
			t.Fatal(err)
		}
		if got, want := sockopts(t, early), sockopts(t, own); got != want {
			t.Errorf("%+v: the early socket's options (keepalive, idle, interval, count, user timeout) %v, the dialer's own %v", ka, got, want)
		}
		if ka.Idle > 0 && sockopts(t, own) != [5]int{1, 7, 3, 4, 11000} {
			t.Errorf("%+v: the dialer's own socket has %v", ka, sockopts(t, own))
		}
		own.Close()
		early.Close()
	}
}
