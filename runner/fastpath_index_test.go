package runner

import (
	"slices"
	"testing"
)

// TestMigIndexAndVersionSet looks up every version around a set, sorted
// (binary search) and shuffled (the map), against a linear search.
func TestMigIndexAndVersionSet(t *testing.T) {
	var sorted []*Migration
	for _, v := range []int64{1, 2, 5, 10, 11, 100, 1 << 40} {
		sorted = append(sorted, &Migration{Version: v})
	}
	shuffled := []*Migration{sorted[3], sorted[0], sorted[6], sorted[2], sorted[1], sorted[5], sorted[4]}
	for _, migs := range [][]*Migration{sorted, shuffled, nil} {
		x := newMigIndex(migs)
		var set versionSet
		for _, m := range migs {
			set = append(set, m.Version)
		}
		slices.Sort(set)
		// The walks, asked in ascending order (and, for has, once out of it).
		var rows []HistoryRow
		for v := int64(-1); v <= 101; v++ {
			rows = append(rows, HistoryRow{Version: v})
		}
		rows = append(rows, HistoryRow{Version: 1 << 40}, HistoryRow{Version: 1<<40 + 1})
		find, has := x.walk(rows), set.walk()
		for _, r := range append(rows, HistoryRow{Version: 5}) {
			if got, want := has(r.Version), set.has(r.Version); got != want {
				t.Fatalf("walk: has(%d) = %v, want %v", r.Version, got, want)
			}
		}
		for _, r := range rows {
			if got, want := find(r.Version), x.get(r.Version); got != want {
				t.Fatalf("walk: get(%d) = %v, want %v", r.Version, got, want)
			}
		}
		for v := int64(-1); v <= 101; v++ {
			for _, v := range []int64{v, v + 1<<40 - 50} {
				var want *Migration
				for _, m := range migs {
					if m.Version == v {
						want = m
					}
				}
				if got := x.get(v); got != want {
					t.Fatalf("get(%d) = %v, want %v", v, got, want)
				}
				if got := set.has(v); got != (want != nil) {
					t.Fatalf("has(%d) = %v, want %v", v, got, want != nil)
				}
			}
		}
	}
}
