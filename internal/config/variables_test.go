package config

import (
	"slices"
	"testing"

	"github.com/caarlos0/env/v11"
)

// TestVariablesAreTheFields fails when a field of Config is added, renamed
// or removed without the same change to variables: Load would not read
// the new variable (its default would silently win) or would read a
// stale one.
func TestVariablesAreTheFields(t *testing.T) {
	params, err := env.GetFieldParams(&Config{})
	if err != nil {
		t.Fatal(err)
	}
	var fields []string
	for _, p := range params {
		fields = append(fields, p.Key)
	}
	if !slices.Equal(fields, variables[:]) {
		t.Errorf("variables differ from Config's fields:\nfields:    %q\nvariables: %q", fields, variables)
	}
}
