package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// FuzzLoad feeds Load arbitrary values for a handful of variables of every
// kind (durations, numbers, enums, identifiers, URLs, label lists). Load
// must never panic; every error must be a *Error, or several joined with
// errors.Join, each naming a variable that was set; and a configuration it
// accepts must satisfy the documented constraints. The file variables
// (DATABASE_URL_FILE, _PASSWORD_FILE) are left out: they read files.
//
//	go test -run '^$' -fuzz '^FuzzLoad$' -fuzztime 10s ./internal/config/
func FuzzLoad(f *testing.F) {
	f.Add("10m", "60s", "3", "10s", "5s", "3", "20s", "skip", "each", "public", "lockmigrate_history", "", "", "postgres://u:p@db/app")
	f.Add("ten", "-1s", "-1", "500ms", "1.5s", "0", "9999999999h", "sometimes", "some", "", "t", "instance=x", "ftp://gw", "")
	f.Add("0", "0s", "99999999999999999999", "0", "0", "0", "0", "wait", "all", strings.Repeat("s", 64), "a\x00b", "app=shop, env=prod", "http://gw:9091", "host=h sslmode=bogus")
	f.Add("1h30m", "+5s", "+3", "1e3s", "1µs", "-0", "20s", "WAIT", "each ", "My Schema", "x; DROP TABLE y", "a=1,a=2", "https://", "")
	f.Add(" 5m", "5m ", "0x10", "10s", "5s", "3", "-20s", "", "", "public", "", "job=x", "http://u:secret@gw", "")
	f.Fuzz(func(t *testing.T, wait, connect, retries, idle, interval, count, userTimeout, onLocked, transaction, schema, table, grouping, pushURL, dbURL string) {
		env := map[string]string{
			"LOCKMIGRATE_WAIT_TIMEOUT":            wait,
			"LOCKMIGRATE_CONNECT_TIMEOUT":         connect,
			"LOCKMIGRATE_LOCK_RETRIES":            retries,
			"LOCKMIGRATE_TCP_KEEPALIVES_IDLE":     idle,
			"LOCKMIGRATE_TCP_KEEPALIVES_INTERVAL": interval,
			"LOCKMIGRATE_TCP_KEEPALIVES_COUNT":    count,
			"LOCKMIGRATE_TCP_USER_TIMEOUT":        userTimeout,
			"LOCKMIGRATE_ON_LOCKED":               onLocked,
			"LOCKMIGRATE_TRANSACTION":             transaction,
			"LOCKMIGRATE_SCHEMA":                  schema,
			"LOCKMIGRATE_TABLE":                   table,
			"LOCKMIGRATE_PUSHGATEWAY_GROUPING":    grouping,
			"LOCKMIGRATE_PUSHGATEWAY_URL":         pushURL,
			"DATABASE_URL":                        dbURL,
		}
		cfg, err := Load(func(k string) string { return env[k] })
		if err != nil {
			if cfg != nil {
				t.Fatalf("Load returned a configuration together with an error: %v", err)
			}
			checkConfigErrors(t, err, env)
			return
		}
		switch {
		case cfg.WaitTimeout <= 0, cfg.ConnectTimeout <= 0, cfg.PushgatewayTimeout <= 0:
			t.Fatalf("non-positive timeout accepted: %+v", cfg)
		case cfg.LockTimeout < 0, cfg.StatementTimeout < 0, cfg.TCPKeepalivesIdle < 0, cfg.TCPKeepalivesInterval < 0, cfg.TCPUserTimeout < 0:
			t.Fatalf("negative duration accepted: %+v", cfg)
		case cfg.LockRetries < 0:
			t.Fatalf("negative LockRetries %d accepted", cfg.LockRetries)
		case cfg.OnLocked != "skip" && cfg.OnLocked != "wait":
			t.Fatalf("OnLocked %q accepted", cfg.OnLocked)
		case cfg.Transaction != "each" && cfg.Transaction != "all":
			t.Fatalf("Transaction %q accepted", cfg.Transaction)
		case cfg.Schema == "" || len(cfg.Schema) > 63 || strings.ContainsRune(cfg.Schema, 0):
			t.Fatalf("schema %q accepted", cfg.Schema)
		case cfg.Table == "" || len(cfg.Table) > 63 || strings.ContainsRune(cfg.Table, 0):
			t.Fatalf("table %q accepted", cfg.Table)
		case cfg.Grouping == nil || cfg.Grouping["job"] != "" || cfg.Grouping["instance"] != "":
			t.Fatalf("grouping %v accepted", cfg.Grouping)
		}
		if cfg.TCPKeepalivesIdle > 0 {
			if cfg.TCPKeepalivesIdle%time.Second != 0 || cfg.TCPKeepalivesInterval < time.Second ||
				cfg.TCPKeepalivesInterval%time.Second != 0 || cfg.TCPKeepalivesCount < 1 || cfg.TCPUserTimeout < time.Second {
				t.Fatalf("keepalive settings accepted: idle %v interval %v count %d user timeout %v",
					cfg.TCPKeepalivesIdle, cfg.TCPKeepalivesInterval, cfg.TCPKeepalivesCount, cfg.TCPUserTimeout)
			}
		}
		if cfg.DatabaseURL != dbURL {
			t.Fatalf("DATABASE_URL changed from %q to %q", dbURL, cfg.DatabaseURL)
		}
	})
}

// checkConfigErrors fails unless err is a *Error or a join of them, each
// naming a variable that was set and saying what it accepts; a secret value
// (the database URL) must never be quoted.
func checkConfigErrors(t *testing.T, err error, env map[string]string) {
	t.Helper()
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs := j.Unwrap()
		if len(errs) == 0 {
			t.Fatalf("empty joined error %q", err)
		}
		for _, e := range errs {
			checkConfigErrors(t, e, env)
		}
		return
	}
	var ce *Error
	if !errors.As(err, &ce) || ce != err {
		t.Fatalf("error %T is not a *config.Error: %v", err, err)
	}
	if ce.Var == "" || ce.Accept == "" {
		t.Fatalf("error without a variable or what it accepts: %+v", ce)
	}
	if _, set := env[ce.Var]; !set {
		t.Fatalf("error names %s, which the fuzzer did not set: %v", ce.Var, ce)
	}
	if !strings.Contains(ce.Error(), ce.Var) {
		t.Fatalf("message %q does not name %s", ce.Error(), ce.Var)
	}
	if u := env["DATABASE_URL"]; u != "" && len(u) > 3 && strings.Contains(ce.Error(), u) {
		t.Fatalf("message quotes DATABASE_URL: %q", ce.Error())
	}
}
