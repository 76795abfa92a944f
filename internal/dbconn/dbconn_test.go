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
