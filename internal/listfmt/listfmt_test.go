package listfmt_test

import (
	"testing"

	"github.com/lockmigrate/lockmigrate/internal/listfmt"
)

func TestVersions(t *testing.T) {
	seq := func(n int) []int64 {
		out := make([]int64, n)
		for i := range out {
			out[i] = int64(i + 1)
		}
		return out
	}
	tests := []struct {
		in   []int64
		want string
	}{
		{nil, ""},
		{[]int64{7}, "7"},
		{[]int64{3, 1, -2}, "3, 1, -2"},
		{seq(10), "1, 2, 3, 4, 5, 6, 7, 8, 9, 10"},
		{seq(11), "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, and 1 more"},
		{seq(1000), "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, and 990 more"},
	}
	for _, tt := range tests {
		if got := listfmt.Versions(tt.in); got != tt.want {
			t.Errorf("Versions(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
