package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// data is everything bench/scale.sh measured; a scenario that did not run
// leaves its part empty.
type data struct {
	meta  map[string]string
	quiet [][]string // label, busy %, load
	// noop[tool][size] and apply[tool][size]: every timed run, seconds,
	// pooled over rounds.
	noop, apply map[string]map[int][]float64
	// applyCPU[tool][size]: user + system CPU of the process (hyperfine's
	// means, seconds), one value per hyperfine file.
	applyCPU  map[string]map[int][]float64
	noopIr    map[string]map[int]float64
	allFailed [][]string // size, round, the run's error with the server's defaults
	storm     []stormRun
	tenApply  []tenantApply
	tenFast   []tenantFast
}

type stormRun struct {
	tool                     string
	maxConn, n, round        int
	wallMs, nonzero          int
	count, distinct, retried int
	err                      string
	cpuMs                    int // user + system CPU of all replicas
}

type tenantApply struct {
	size, conc, wallMs, rc, applied, failed, conns, tables int
}

type tenantFast struct {
	size, queries, fastMs, stmts, turns, bytes, conns int
	wall                                              []float64 // seconds
	// pg_stat_statements of one run: all statements, then the UNION ALL
	// batches alone (calls, planning ms, execution ms).
	calls, unionCalls                    int
	planMs, execMs, unionPlan, unionExec float64
}

func load(dir string) (*data, error) {
	d := &data{
		meta: map[string]string{}, noop: map[string]map[int][]float64{},
		apply: map[string]map[int][]float64{}, noopIr: map[string]map[int]float64{},
		applyCPU: map[string]map[int][]float64{},
	}
	meta, err := readTSV(filepath.Join(dir, "meta.tsv"))
	if err != nil {
		return nil, err
	}
	for _, r := range meta {
		if len(r) >= 2 {
			d.meta[r[0]] = r[1]
		}
	}
	if d.quiet, err = readTSV(filepath.Join(dir, "quiet.tsv")); err != nil {
		return nil, err
	}
	// noop/{dir,emb,read}-SIZE-ROUND.json, apply/SIZE-TOOL-ROUND.json
	if err := loadRuns(filepath.Join(dir, "noop"), regexp.MustCompile(`^(?:dir|emb|read)-(\d+)-\d+\.json$`), d.noop, nil); err != nil {
		return nil, err
	}
	if err := loadRuns(filepath.Join(dir, "apply"), regexp.MustCompile(`^(\d+)-[a-z]+-\d+\.json$`), d.apply, d.applyCPU); err != nil {
		return nil, err
	}
	if d.allFailed, err = readTSV(filepath.Join(dir, "apply", "all-failed.tsv")); err != nil {
		return nil, err
	}
	ir, err := readTSV(filepath.Join(dir, "noop", "ir.tsv"))
	if err != nil {
		return nil, err
	}
	for _, r := range ir {
		if len(r) < 3 {
			continue
		}
		size, _ := strconv.Atoi(r[1])
		v, _ := strconv.ParseFloat(r[2], 64)
		put(d.noopIr, r[0], size, v)
	}
	if err := d.loadStorm(dir); err != nil {
		return nil, err
	}
	return d, d.loadTenants(dir)
}

func (d *data) loadStorm(dir string) error {
	rows, err := readTSV(filepath.Join(dir, "storm.tsv"))
	if err != nil {
		return err
	}
	for _, r := range rows {
		if len(r) < 10 {
			continue
		}
		v := ints(r[1:9])
		run := stormRun{r[0], v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], r[9], 0}
		if len(r) > 10 {
			run.cpuMs = atoi(r[10])
		}
		d.storm = append(d.storm, run)
	}
	return nil
}

func (d *data) loadTenants(dir string) error {
	rows, err := readTSV(filepath.Join(dir, "tenants", "apply.tsv"))
	if err != nil {
		return err
	}
	for _, r := range rows {
		if len(r) >= 8 {
			v := ints(r[:8])
			d.tenApply = append(d.tenApply, tenantApply{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]})
		}
	}
	if rows, err = readTSV(filepath.Join(dir, "tenants", "fast.tsv")); err != nil {
		return err
	}
	for _, r := range rows {
		if len(r) < 7 {
			continue
		}
		v := ints(r[:7])
		f := tenantFast{size: v[0], queries: v[1], fastMs: v[2], stmts: v[3], turns: v[4], bytes: v[5], conns: v[6]}
		res, err := readHyperfine(filepath.Join(dir, "tenants", fmt.Sprintf("fast-%d.json", f.size)))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		for _, x := range res {
			f.wall = append(f.wall, x.Times...)
		}
		d.tenFast = append(d.tenFast, f)
	}
	if rows, err = readTSV(filepath.Join(dir, "tenants", "pgss.tsv")); err != nil {
		return err
	}
	for _, r := range rows {
		if len(r) < 7 {
			continue
		}
		for i := range d.tenFast {
			if f := &d.tenFast[i]; fmt.Sprint(f.size) == r[0] {
				f.calls, f.unionCalls = atoi(r[1]), atoi(r[4])
				f.planMs, f.execMs, f.unionPlan, f.unionExec = num(r[2]), num(r[3]), num(r[5]), num(r[6])
			}
		}
	}
	return nil
}

func num(s string) float64 {
	v, _ := strconv.ParseFloat(strings.TrimSpace(s), 64)
	return v
}

// hfResult is the part of one hyperfine --export-json result used here.
type hfResult struct {
	Command string    `json:"command"`
	Times   []float64 `json:"times"`
	User    float64   `json:"user"`
	System  float64   `json:"system"`
}

func readHyperfine(path string) ([]hfResult, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var v struct {
		Results []hfResult `json:"results"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return v.Results, nil
}

// loadRuns pools the runs of every hyperfine file in dir whose name matches
// re (first group: the size) into into[command][size], and each file's mean
// CPU (user + system) into cpu when it is not nil.
func loadRuns(dir string, re *regexp.Regexp, into, cpu map[string]map[int][]float64) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		m := re.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		size, _ := strconv.Atoi(m[1])
		res, err := readHyperfine(filepath.Join(dir, e.Name()))
		if err != nil {
			return err
		}
		for _, r := range res {
			if into[r.Command] == nil {
				into[r.Command] = map[int][]float64{}
			}
			into[r.Command][size] = append(into[r.Command][size], r.Times...)
			if cpu != nil {
				if cpu[r.Command] == nil {
					cpu[r.Command] = map[int][]float64{}
				}
				cpu[r.Command][size] = append(cpu[r.Command][size], r.User+r.System)
			}
		}
	}
	return nil
}

func put(m map[string]map[int]float64, k string, size int, v float64) {
	if m[k] == nil {
		m[k] = map[int]float64{}
	}
	m[k][size] = v
}

// readTSV reads a tab-separated file; a missing file is no rows.
func readTSV(path string) ([][]string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var rows [][]string
	for line := range strings.Lines(string(b)) {
		line = strings.TrimRight(line, "\n")
		if line != "" {
			rows = append(rows, strings.Split(line, "\t"))
		}
	}
	return rows, nil
}

// ints parses each field as an integer; anything else is 0.
func ints(fields []string) []int {
	out := make([]int, len(fields))
	for i, f := range fields {
		out[i], _ = strconv.Atoi(strings.TrimSpace(f))
	}
	return out
}

// sizes returns the sorted keys of m.
func sizes[V any](m map[int]V) []int {
	var out []int
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// median of xs (0 when empty).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if n := len(s); n%2 == 1 {
		return s[n/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// intercept is the least-squares line's value at x = 0: the fixed cost.
func intercept(x, y []float64) float64 {
	if len(x) == 0 {
		return 0
	}
	var sx, sy float64
	for i := range x {
		sx += x[i]
		sy += y[i]
	}
	n := float64(len(x))
	return sy/n - slope(x, y)*sx/n
}

// slope is the least-squares slope of y over x.
func slope(x, y []float64) float64 {
	n := float64(len(x))
	if len(x) < 2 {
		return 0
	}
	var sx, sy, sxx, sxy float64
	for i := range x {
		sx += x[i]
		sy += y[i]
		sxx += x[i] * x[i]
		sxy += x[i] * y[i]
	}
	den := n*sxx - sx*sx
	if den == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / den
}
