package cli

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lockmigrate/lockmigrate/internal/bintest"
)

func TestConfigErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope")
	tests := []struct {
		env  map[string]string
		want []string
	}{
		{map[string]string{"LOCKMIGRATE_ON_LOCKED": "sometimes"}, []string{"LOCKMIGRATE_ON_LOCKED", "skip, wait"}},
		{map[string]string{"LOCKMIGRATE_WAIT_TIMEOUT": "ten"}, []string{"LOCKMIGRATE_WAIT_TIMEOUT", "Go duration"}},
		{map[string]string{"LOCKMIGRATE_WAIT_TIMEOUT": "0s"}, []string{"LOCKMIGRATE_WAIT_TIMEOUT", "positive"}},
		{map[string]string{"LOCKMIGRATE_CONNECT_TIMEOUT": "-1s"}, []string{"LOCKMIGRATE_CONNECT_TIMEOUT", "not negative"}},
		{map[string]string{"LOCKMIGRATE_LOCK_TIMEOUT": "5"}, []string{"LOCKMIGRATE_LOCK_TIMEOUT", "Go duration"}},
		{map[string]string{"LOCKMIGRATE_STATEMENT_TIMEOUT": "1 hour"}, []string{"LOCKMIGRATE_STATEMENT_TIMEOUT", "Go duration"}},
		{map[string]string{"LOCKMIGRATE_LOCK_RETRIES": "x"}, []string{"LOCKMIGRATE_LOCK_RETRIES", "whole number"}},
		{map[string]string{"LOCKMIGRATE_LOCK_RETRIES": "-1"}, []string{"LOCKMIGRATE_LOCK_RETRIES", "0 or more"}},
		{map[string]string{"LOCKMIGRATE_TRANSACTION": "some"}, []string{"LOCKMIGRATE_TRANSACTION", "each, all"}},
		{map[string]string{"LOCKMIGRATE_ALLOW_OUT_OF_ORDER": "maybe"}, []string{"LOCKMIGRATE_ALLOW_OUT_OF_ORDER", "true or false"}},
		{map[string]string{"LOCKMIGRATE_LOG_FORMAT": "xml"}, []string{"LOCKMIGRATE_LOG_FORMAT", "json, text"}},
		{map[string]string{"LOCKMIGRATE_LOG_LEVEL": "loud"}, []string{"LOCKMIGRATE_LOG_LEVEL", "debug, info, warn, error"}},
		{map[string]string{"LOCKMIGRATE_SCHEMA": strings.Repeat("s", 64)}, []string{"LOCKMIGRATE_SCHEMA", "1 to 63 bytes"}},
		{map[string]string{"LOCKMIGRATE_TABLE": ""}, nil}, // empty means default: valid, but no DB here
		{map[string]string{"DATABASE_URL": "postgres://x@h/db", "DATABASE_URL_FILE": "/etc/hostname"}, []string{"DATABASE_URL_FILE", "only one of"}},
		{map[string]string{"DATABASE_URL_FILE": missing}, []string{"DATABASE_URL_FILE", "readable file"}},
		{map[string]string{"LOCKMIGRATE_DIR": missing}, []string{"LOCKMIGRATE_DIR", "directory"}},
		{map[string]string{"DATABASE_URL": "postgres://u:hunter2secret@localhost:notaport/db"}, []string{"DATABASE_URL", "accepted"}},
		{map[string]string{"DATABASE_URL": "host=h port=5432 password=hunter2secret sslmode=bogus"}, []string{"DATABASE_URL", "sslmode"}},
	}
	bintest.AddSecret("hunter2secret")
	for _, tt := range tests {
		if tt.want == nil {
			continue
		}
		name := strings.Join(tt.want[:1], "") + "=" + fmt.Sprint(tt.env)
		t.Run(name, func(t *testing.T) {
			r := runIn(t, context.Background(), tt.env)
			if r.Code != exitUsage {
				t.Fatalf("exit %d, want 2\n%s", r.Code, r.Stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(r.Stderr, w) {
					t.Errorf("message lacks %q:\n%s", w, r.Stderr)
				}
			}
		})
	}
	t.Run("unknown command", func(t *testing.T) {
		r := runIn(t, context.Background(), nil, "migrat")
		if r.Code != exitUsage || !strings.Contains(r.Stderr, `unknown command "migrat"`) {
			t.Fatalf("exit %d: %s", r.Code, r.Stderr)
		}
	})
}
