package main

import (
	"math"
	"testing"
)

func TestFit(t *testing.T) {
	tests := []struct {
		name           string
		v              map[int]float64
		slope, fixed   float64
		superlin       bool
		superlinFactor float64
	}{
		{"linear", map[int]float64{10: 20, 100: 110, 1000: 1010, 10000: 10010}, 1, 10, false, 1},
		{"flat", map[int]float64{10: 5, 100: 5, 1000: 5}, 0, 5, false, 0},
		// marginal 1 up to 1000, then 3 per unit: 3x the one before (slope
		// and intercept computed by hand: least squares over the 4 points).
		{"superlinear", map[int]float64{10: 10, 100: 100, 1000: 1000, 10000: 28000}, 2.853, -647.2, true, 3},
		{"two sizes", map[int]float64{10: 10, 100: 100}, 1, 0, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := curve{name: tt.name, v: tt.v}
			if got := c.fit(); math.Abs(got-tt.slope) > 0.01 {
				t.Errorf("slope: got %.3f, want %.3f", got, tt.slope)
			}
			if got := c.fixed(); math.Abs(got-tt.fixed) > 1 {
				t.Errorf("intercept: got %.2f, want %.2f", got, tt.fixed)
			}
			ok, k := c.superlinear()
			if ok != tt.superlin || (ok && math.Abs(k-tt.superlinFactor) > 0.01) {
				t.Errorf("superlinear: got %v (%.2f), want %v (%.2f)", ok, k, tt.superlin, tt.superlinFactor)
			}
		})
	}
}

func TestMarginals(t *testing.T) {
	c := curve{v: map[int]float64{10: 1, 100: 10, 1000: 1000}}
	got := c.marginals(1e3, 1)
	want := []string{"10→100: 100.0", "100→1000: 1100.0"}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestMedian(t *testing.T) {
	tests := []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	}
	for _, tt := range tests {
		if got := median(tt.in); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}
