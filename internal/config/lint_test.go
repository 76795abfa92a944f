package config

import (
	"strings"
	"testing"
)

// TestLintVariables: the lint variables are validated like every other,
// and their library defaults show in --help.
func TestLintVariables(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"LOCKMIGRATE_LINT": "strict"}, "LOCKMIGRATE_LINT \"strict\": accepted: off, warn, error"},
		{map[string]string{"LOCKMIGRATE_LINT_SMALL_TABLE_ROWS": "-1"}, "LOCKMIGRATE_LINT_SMALL_TABLE_ROWS"},
		{map[string]string{"LOCKMIGRATE_LINT_PG_VERSION": "9"}, "LOCKMIGRATE_LINT_PG_VERSION \"9\""},
		{map[string]string{"LOCKMIGRATE_LINT_ENABLE": "style,prefer-jsnob"}, "prefer-jsnob is none"},
		{map[string]string{"LOCKMIGRATE_LINT_DISABLE": "style"}, "LOCKMIGRATE_LINT_DISABLE"},
	} {
		_, err := Load(func(k string) string { return tc.env[k] })
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one containing %q", tc.env, err, tc.want)
		}
	}
	cfg, err := Load(func(k string) string {
		return map[string]string{"LOCKMIGRATE_LINT_ENABLE": " style, prefer-jsonb ", "LOCKMIGRATE_LINT_DISABLE": "drop-table"}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(LintRules(cfg.LintEnable), "|"); got != "style|prefer-jsonb" {
		t.Errorf("LintRules = %q", got)
	}
	var b strings.Builder
	WriteHelp(&b)
	for _, want := range []string{"LOCKMIGRATE_LINT_SMALL_TABLE_ROWS      10000 ", "LOCKMIGRATE_LINT_PG_VERSION            14 ", "LOCKMIGRATE_LINT                       warn "} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("help lacks %q", want)
		}
	}
}
