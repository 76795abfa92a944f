package config

import (
	"fmt"
	"reflect"
	"testing"
)

// TestParseValues holds the parsing of each kind of field to what
// caarlos0/env, which Load used before, did with the same environment (the
// expectations were checked against it): an int field takes 32 bits, an
// invalid value keeps the default (so the checks that depend on it do not
// fire), an empty variable takes the default.
func TestParseValues(t *testing.T) {
	tests := []struct {
		env  map[string]string
		want string // the error, or the fields' values
	}{
		{map[string]string{"LOCKMIGRATE_LOCK_RETRIES": "2147483647", "LOCKMIGRATE_BASELINE_VERSION": "9223372036854775807",
			"LOCKMIGRATE_ALLOW_OUT_OF_ORDER": "T", "LOCKMIGRATE_LOCK_TIMEOUT": "1h2m3.5s", "LOCKMIGRATE_SCHEMA": " spaced ",
			"LOCKMIGRATE_TABLE": ""},
			`2147483647 9223372036854775807 true 1h2m3.5s " spaced " "lockmigrate_history"`},
		{map[string]string{"LOCKMIGRATE_LOCK_RETRIES": "2147483648"},
			`invalid LOCKMIGRATE_LOCK_RETRIES "2147483648": accepted: a whole number`},
		{map[string]string{"LOCKMIGRATE_LOCK_RETRIES": "+7", "LOCKMIGRATE_BASELINE_VERSION": "0x10"},
			`invalid LOCKMIGRATE_BASELINE_VERSION "0x10": accepted: a whole number`},
		{map[string]string{"LOCKMIGRATE_ALLOW_OUT_OF_ORDER": "yes"},
			`invalid LOCKMIGRATE_ALLOW_OUT_OF_ORDER "yes": accepted: true or false`},
		{map[string]string{"LOCKMIGRATE_LOCK_TIMEOUT": "5"},
			`invalid LOCKMIGRATE_LOCK_TIMEOUT "5": accepted: a Go duration such as 90s, 5m or 1h30m`},
		{map[string]string{"LOCKMIGRATE_TCP_KEEPALIVES_IDLE": "x", "LOCKMIGRATE_TCP_KEEPALIVES_COUNT": "0"},
			`invalid LOCKMIGRATE_TCP_KEEPALIVES_IDLE "x": accepted: a Go duration such as 90s, 5m or 1h30m`},
	}
	for _, tt := range tests {
		cfg, err := Load(func(k string) string { return tt.env[k] })
		got := ""
		if err != nil {
			got = err.Error()
		} else {
			got = fmt.Sprintf("%d %d %v %v %q %q", cfg.LockRetries, cfg.BaselineVersion, cfg.AllowOutOfOrder, cfg.LockTimeout, cfg.Schema, cfg.Table)
		}
		if got != tt.want {
			t.Errorf("%v:\ngot  %s\nwant %s", tt.env, got, tt.want)
		}
	}
}

// TestReadTags holds readTags to reflect.StructTag.Get on every field of
// Config and on tags with escapes, odd spacing, repeated keys and broken
// syntax.
func TestReadTags(t *testing.T) {
	var all []reflect.StructTag
	for f := range reflect.TypeFor[Config]().Fields() {
		all = append(all, f.Tag)
	}
	all = append(all, `env:"A" envDefault:"a \"quoted\" \\ value" oneof:"x,y"`, `  env:"B"   oneof:"p"`, `help:"env:\"C\"" env:"D"`,
		`env:"E`, `env`, ``, `envDefault:"" env:"F"`, `oneof:"1" env:"G" oneof:"2"`, `env:"H" broken envDefault:"h"`,
		`env:"I\\" envDefault:"i"`, `env:"J\\\"j" oneof:"k"`, `env:"\"" oneof:"\\\\"`)
	for _, tag := range all {
		got := readTags(tag)
		want := tags{env: tag.Get("env"), def: tag.Get("envDefault"), oneof: tag.Get("oneof")}
		if got != want {
			t.Errorf("readTags(%q) = %+v, Get gives %+v", tag, got, want)
		}
	}
}
