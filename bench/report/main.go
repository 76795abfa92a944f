// Command report turns the raw measurements bench/run.sh collects into
// bench/RESULTS.md: one table per scenario, ratios to the floor and to the
// fastest peer, the targets met or missed, and the machine facts.
//
//	report -in DIR -out RESULTS.md
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

var (
	tools = []string{"floor", "lockmigrate", "goose", "migrate", "tern"}
	peers = []string{"goose", "migrate", "tern"}
	// label is how a tool is named in the tables.
	label = map[string]string{
		"floor": "floor", "lockmigrate": "**lockmigrate**", "goose": "goose",
		"migrate": "golang-migrate", "tern": "tern",
	}
)

// Decimal units, so the size and memory targets are read strictly.
const mb = 1e6

func main() {
	in := flag.String("in", "", "directory of raw measurements")
	out := flag.String("out", "", "Markdown file to write")
	flag.Parse()
	if *in == "" || *out == "" {
		log.Fatal("report: -in and -out are required")
	}
	r := &report{dir: *in, meta: readMeta(filepath.Join(*in, "meta.tsv"))}
	var b strings.Builder
	r.write(&b)
	if err := appendScaling(&b, filepath.Join(filepath.Dir(*out), "SCALING.md")); err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(*out, []byte(b.String()), 0o644); err != nil {
		log.Fatal(err)
	}
}

// appendScaling embeds the scaling curves bench/scale.sh wrote next to
// RESULTS.md (their own heading says when and on which commit): the curves
// take longer than this run, so they are measured apart and shown here.
func appendScaling(b *strings.Builder, path string) error {
	md, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	b.WriteString("\n")
	b.Write(md)
	return nil
}

type report struct {
	dir     string
	meta    map[string]string
	targets []target
}

type target struct{ name, measured, verdict string }

func (r *report) target(name, measured string, met bool, known bool) {
	v := "**missed**"
	switch {
	case !known:
		v = "not measured"
	case met:
		v = "met"
	}
	r.targets = append(r.targets, target{name, measured, v})
}

// reported lists a figure the issue asks to report, without a bound.
func (r *report) reported(name, measured string) {
	r.targets = append(r.targets, target{name, measured, "reported"})
}

func readMeta(path string) map[string]string {
	m := map[string]string{}
	f, err := os.Open(path)
	if err != nil {
		return m
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "\t")
		m[k] = v
	}
	return m
}

// rows reads a tab-separated file.
func rows(path string) [][]string {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out [][]string
	for _, l := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
		if l != "" {
			out = append(out, strings.Split(l, "\t"))
		}
	}
	return out
}

type hfResult struct {
	Command string    `json:"command"`
	Mean    float64   `json:"mean"`
	Stddev  float64   `json:"stddev"`
	Median  float64   `json:"median"`
	Min     float64   `json:"min"`
	Max     float64   `json:"max"`
	Times   []float64 `json:"times"`
}

// hyperfineList reads a hyperfine --export-json file, in command order.
func hyperfineList(path string) []hfResult {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var v struct {
		Results []hfResult `json:"results"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		log.Printf("report: %s: %v", path, err)
		return nil
	}
	return v.Results
}

// hyperfine reads a hyperfine --export-json file, keyed by command name.
func hyperfine(path string) map[string]hfResult {
	list := hyperfineList(path)
	if list == nil {
		return nil
	}
	m := map[string]hfResult{}
	for _, res := range list {
		m[res.Command] = res
	}
	return m
}

// pooled gathers the run times (s) of command name from every
// DIR/PREFIX*.json hyperfine export.
func pooled(dir, prefix, name string) []float64 {
	files, _ := filepath.Glob(filepath.Join(dir, prefix+"*.json"))
	slices.Sort(files)
	var xs []float64
	for _, f := range files {
		if res, has := hyperfine(f)[name]; has {
			xs = append(xs, res.Times...)
		}
	}
	return xs
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func num(s string) float64 {
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil {
		return math.NaN()
	}
	return f
}

func ok(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

func fmtRatio(a, b float64) string {
	if !ok(a) || !ok(b) || b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func fmtF(f float64, prec int) string {
	if !ok(f) {
		return "–"
	}
	return strconv.FormatFloat(f, 'f', prec, 64)
}

// fastestPeer returns the peer with the lowest value (NaN values ignored).
func fastestPeer(v map[string]float64) (string, float64) {
	best, bv := "", math.NaN()
	for _, p := range peers {
		if x, has := v[p]; has && ok(x) && (!ok(bv) || x < bv) {
			best, bv = p, x
		}
	}
	return best, bv
}

func (r *report) write(b *strings.Builder) {
	m := r.meta
	fmt.Fprintf(b, "# lockmigrate benchmark results\n\n")
	if m["quick"] == "1" {
		fmt.Fprintf(b, "> **Quick run** (`BENCH_QUICK=1`): few runs, for iterating on the bench; do not quote these figures.\n\n")
	}
	fmt.Fprintf(b, "Generated by `bench/run.sh` (see [README.md](README.md) for the method and caveats) on %s.\n\n", m["date"])
	fmt.Fprintf(b, "Command: `%s` — %s; took %s.\n\n", m["command"], m["runs"], m["elapsed"])

	var sections strings.Builder
	r.noop(&sections)
	r.apply(&sections)
	r.replicas(&sections)
	r.sizes(&sections)

	fmt.Fprintf(b, "## Targets\n\n| target | measured | verdict |\n|---|---|---|\n")
	for _, t := range r.targets {
		fmt.Fprintf(b, "| %s | %s | %s |\n", t.name, t.measured, t.verdict)
	}
	b.WriteString("\n")
	b.WriteString(sections.String())

	fmt.Fprintf(b, "## Machine and versions\n\n| | |\n|---|---|\n")
	for _, k := range []string{"nproc", "cpu", "memory", "kernel", "postgres", "go", "hyperfine",
		"lockmigrate_version", "pgx_lockmigrate", "goose_version", "goose_tags", "migrate_version", "tern_version", "image"} {
		if v, has := m[k]; has {
			fmt.Fprintf(b, "| %s | %s |\n", strings.ReplaceAll(k, "_", " "), strings.ReplaceAll(v, "|", "\\|"))
		}
	}
	b.WriteString("\n")
	r.quiet(b)
}

// --- 1. no-op --------------------------------------------------------------

func (r *report) noop(b *strings.Builder) {
	files, _ := filepath.Glob(filepath.Join(r.dir, "noop", "round-*.json"))
	if len(files) == 0 {
		return
	}
	slices.Sort(files)
	meds := map[string][]float64{}
	sds := map[string][]float64{}
	for _, f := range files {
		for t, res := range hyperfine(f) {
			meds[t] = append(meds[t], res.Median*1000)
			sds[t] = append(sds[t], res.Stddev*1000)
		}
	}
	wall := map[string]float64{}
	rss := map[string]float64{}
	for _, t := range tools {
		wall[t] = median(meds[t])
		var kib []float64
		for _, row := range rows(filepath.Join(r.dir, "noop", "rss-"+t+".txt")) {
			kib = append(kib, num(row[0]))
		}
		rss[t] = median(kib) * 1024 / mb
	}
	fp, fpv := fastestPeer(wall)
	fmt.Fprintf(b, "## 1. No-op start (200 migrations already applied)\n\n")
	fmt.Fprintf(b, "One whole process against a database where every migration is applied: start, connect, decide there is nothing to do, exit. "+
		"Wall time: hyperfine `-N` (no shell), median of each round's median over %d round(s); ± is the mean of the rounds' standard deviations. "+
		"Max RSS: GNU `/usr/bin/time -f %%M`, median of the runs. The floor connects and runs `SELECT pg_try_advisory_lock(1)`.\n\n", len(files))
	fmt.Fprintf(b, "| tool | median wall (ms) | ± (ms) | rounds' medians (ms) | × floor | × fastest peer (%s) | max RSS (MB) | RSS × floor |\n|---|---:|---:|---|---:|---:|---:|---:|\n", label[fp])
	for _, t := range tools {
		var rs []string
		for _, x := range meds[t] {
			rs = append(rs, fmtF(x, 1))
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", label[t], fmtF(wall[t], 2), fmtF(median(sds[t]), 2),
			strings.Join(rs, ", "), fmtRatio(wall[t], wall["floor"]), fmtRatio(wall[t], fpv), fmtF(rss[t], 1), fmtRatio(rss[t], rss["floor"]))
	}
	b.WriteString("\n")

	var parts []string
	for _, row := range rows(filepath.Join(r.dir, "rt.tsv")) {
		if len(row) >= 3 && row[1] == "noop" {
			parts = append(parts, fmt.Sprintf("%s %s", label[row[0]], row[2]))
		}
	}
	if len(parts) > 0 {
		fmt.Fprintf(b, "Round trips of one no-op start (through rtproxy, connection set-up included; traces in `bench/out/rt/*-noop/`): %s.\n\n", strings.Join(parts, ", "))
	}
	r.decomposition(b)
	r.icount(b)

	lw, fw := wall["lockmigrate"], wall["floor"]
	// Issue 18's no-op targets (the instruction target is icount's).
	r.target("no-op wall ≤ 1.25× floor", fmtRatio(lw, fw)+fmt.Sprintf(" (%s vs %s ms)", fmtF(lw, 2), fmtF(fw, 2)), lw <= 1.25*fw, ok(lw) && ok(fw))
	r.target("no-op wall ≤ 0.9× the fastest peer", fmt.Sprintf("%s (%s ms vs %s %s ms)", fmtRatio(lw, fpv), fmtF(lw, 2), label[fp], fmtF(fpv, 2)), lw <= 0.9*fpv, ok(lw) && ok(fpv))
	r.target("no-op max RSS ≤ 12 MB", fmtF(rss["lockmigrate"], 1)+" MB", rss["lockmigrate"] <= 12, ok(rss["lockmigrate"]))
}

// decomposition lists the variants that show where lockmigrate's no-op
// time goes, each with the floor measured in the same hyperfine run.
func (r *report) decomposition(b *strings.Builder) {
	files := []string{"offline", "embedded", "quiet", "lint"}
	notes := map[string]string{
		"lockmigrate version":                      "process start and package initialisation only (no configuration, no files, no database)",
		"lockmigrate validate (offline)":           "+ configuration and loading the 200 files from LOCKMIGRATE_DIR (no database)",
		"lockmigrate, set embedded":                "the whole no-op with the 200 files embedded (go:embed; built from a copy of the tree with the set in migrations/), LOCKMIGRATE_DIR unset",
		"lockmigrate, LOCKMIGRATE_LOG_LEVEL=error": "the whole no-op without its two log lines",
		"lockmigrate, LOCKMIGRATE_LINT=off":        "the whole no-op with the lint gate off (through env(1), as the next line)",
		"lockmigrate, LOCKMIGRATE_LINT=error":      "the whole no-op with the strictest gate: the same cost, the parser is neither started nor called",
	}
	var lines []string
	for _, f := range files {
		list := hyperfineList(filepath.Join(r.dir, "noop", "decomp-"+f+".json"))
		var fl hfResult
		hasFloor := false
		for _, x := range list {
			if x.Command == "floor" {
				fl, hasFloor = x, true
			}
		}
		for _, x := range list {
			n := x.Command
			if n == "floor" {
				continue
			}
			vsFloor := "–"
			if hasFloor {
				vsFloor = fmt.Sprintf("%s (floor %s ms in the same run)", fmtRatio(x.Median, fl.Median), fmtF(fl.Median*1000, 2))
			}
			lines = append(lines, fmt.Sprintf("| %s | %s | %s | %s | %s |", n, fmtF(x.Median*1000, 2), fmtF(x.Min*1000, 2), vsFloor, notes[n]))
		}
	}
	if len(lines) == 0 {
		return
	}
	fmt.Fprintf(b, "Where lockmigrate's no-op time goes (same hyperfine settings, one run each):\n\n| variant | median (ms) | min (ms) | × floor | what it isolates |\n|---|---:|---:|---:|---|\n%s\n\n", strings.Join(lines, "\n"))
	if rs := rows(filepath.Join(r.dir, "noop", "syscalls.tsv")); len(rs) > 0 {
		var parts []string
		for _, row := range rs {
			if len(row) == 2 {
				parts = append(parts, fmt.Sprintf("%s %s", row[0], row[1]))
			}
		}
		fmt.Fprintf(b, "System calls of one no-op run (`strace -f -c`, all threads): %s.\n\n", strings.Join(parts, "; "))
	}
	if n, err := os.ReadFile(filepath.Join(r.dir, "noop", "execve-lint.txt")); err == nil {
		verdict := "its own: the parser helper (`lockmigrate-pgparse`) is not started"
		if c := strings.TrimSpace(string(n)); c != "1" {
			verdict = "**more than its own: something else was started**"
		}
		fmt.Fprintf(b, "Processes a no-op with `LOCKMIGRATE_LINT=error` starts (`strace -f -e trace=execve`): %s execve, %s.\n\n", strings.TrimSpace(string(n)), verdict)
	}
}

// icountRow is one command's instruction counts (counts.tsv).
type icountRow struct {
	tool, what string
	counts     []float64
}

// median and spread: (max − min) / median.
func (x icountRow) median() float64 { return median(x.counts) }
func (x icountRow) spread() float64 {
	if len(x.counts) == 0 {
		return math.NaN()
	}
	return (slices.Max(x.counts) - slices.Min(x.counts)) / x.median()
}

// icount prints the instruction counts of each command (bench/run.sh, 1b)
// and the breakdown of lockmigrate's no-op, and sets the instructions
// target.
func (r *report) icount(b *strings.Builder) {
	var list []icountRow
	by := map[string]icountRow{} // "tool/command"
	for _, row := range rows(filepath.Join(r.dir, "icount", "counts.tsv")) {
		if len(row) < 3 {
			continue
		}
		x := icountRow{tool: row[0], what: row[1]}
		for _, c := range strings.Split(row[2], ",") {
			x.counts = append(x.counts, num(c))
		}
		list = append(list, x)
		by[x.tool+"/"+x.what] = x
	}
	if len(list) == 0 {
		return
	}
	fmt.Fprintf(b, "Instructions per command (%s; user space, every thread of the process; the apply rows count the client's instructions only, not the server's). "+
		"× floor and × goose compare with their run of the same command; spread = (max − min) / median of the runs.\n\n", r.meta["icount_counter"])
	fmt.Fprintf(b, "| tool | command | instructions (M) | × floor | × goose | runs (M) | spread |\n|---|---|---:|---:|---:|---|---:|\n")
	ratio := func(x icountRow, tool string) string {
		what := x.what
		for _, variant := range []string{", set embedded", ", with symbols", ", lint gate off"} {
			what = strings.TrimSuffix(what, variant)
		}
		if other, has := by[tool+"/"+what]; has && other.tool != x.tool {
			return fmtRatio(x.median(), other.median())
		}
		return "–"
	}
	for _, x := range list {
		var rs []string
		for _, c := range x.counts {
			rs = append(rs, fmtF(c/1e6, 2))
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s %% |\n", label[x.tool], x.what, fmtF(x.median()/1e6, 2),
			ratio(x, "floor"), ratio(x, "goose"), strings.Join(rs, ", "), fmtF(100*x.spread(), 1))
	}
	b.WriteString("\n")
	if bd, err := os.ReadFile(filepath.Join(r.dir, "icount", "breakdown.md")); err == nil {
		fmt.Fprintf(b, "Where lockmigrate's no-op instructions go (`bench/icount`: callgrind runs of the same build with symbols, `LOCKMIGRATE_DIR`, the median of each row; "+
			"a phase is the instructions of every thread between two function entries, see README):\n\n%s\n", bd)
	}
	l, g := by["lockmigrate/noop"], by["goose/noop"]
	lm, gm := l.median(), g.median()
	r.target("no-op with 200 applied: instructions ≤ 0.85× goose's", fmt.Sprintf("%s (%s M vs %s M)", fmtRatio(lm, gm), fmtF(lm/1e6, 2), fmtF(gm/1e6, 2)),
		lm <= 0.85*gm, ok(lm) && ok(gm) && len(l.counts) > 0 && len(g.counts) > 0)
}

// --- 2. apply ----------------------------------------------------------------

type rtRow struct{ turns, conns, stmts float64 }

func (r *report) apply(b *strings.Builder) {
	wall := map[string]float64{}
	runs := map[string]string{}
	for _, t := range tools {
		times := pooled(filepath.Join(r.dir, "apply"), t+"-round-", t)
		wall[t] = median(times)
		var xs []string
		for _, x := range times {
			xs = append(xs, fmtF(x, 2))
		}
		runs[t] = strings.Join(xs, ", ")
	}
	rt := map[string]map[int]rtRow{}
	sizes := []int{}
	for _, row := range rows(filepath.Join(r.dir, "rt.tsv")) {
		if len(row) < 5 {
			continue
		}
		if row[1] == "noop" {
			continue
		}
		n, _ := strconv.Atoi(row[1])
		if rt[row[0]] == nil {
			rt[row[0]] = map[int]rtRow{}
		}
		rt[row[0]][n] = rtRow{num(row[2]), num(row[3]), num(row[4])}
		if !slices.Contains(sizes, n) {
			sizes = append(sizes, n)
		}
	}
	slices.Sort(sizes)
	haveWall := false
	for _, t := range tools {
		haveWall = haveWall || ok(wall[t])
	}
	if !haveWall && len(rt) == 0 {
		return
	}
	n := r.meta["apply_set"]
	if n == "" {
		n = "1000"
	}
	fmt.Fprintf(b, "## 2. Apply %s fresh migrations\n\n", n)
	fmt.Fprintf(b, "Each migration: `CREATE TABLE tN (id bigint primary key, v text); CREATE INDEX ON tN (v);`, applied by one process to a fresh database "+
		"(hyperfine `--prepare` drops and re-creates it before every run); runs are pooled over rounds that go through every tool in turn, median of all. The floor applies each file and its history row as one "+
		"simple-protocol query (one implicit transaction, one round trip).\n\n")
	perMig := map[string]float64{}
	if len(sizes) == 2 {
		for _, t := range tools {
			a, c := rt[t][sizes[1]], rt[t][sizes[0]]
			perMig[t] = (a.turns - c.turns) / float64(sizes[1]-sizes[0])
		}
	}
	fp, fpv := fastestPeer(wall)
	fmt.Fprintf(b, "| tool | median wall (s) | runs (s) | × floor | × fastest peer (%s) | ms per migration | round trips per migration | statements per migration | connections |\n|---|---:|---|---:|---:|---:|---:|---:|---:|\n", label[fp])
	for _, t := range tools {
		rtp, stp, conns := "–", "–", "–"
		if len(sizes) == 2 {
			a, c := rt[t][sizes[1]], rt[t][sizes[0]]
			rtp = fmtF(perMig[t], 2)
			stp = fmtF((a.stmts-c.stmts)/float64(sizes[1]-sizes[0]), 2)
			conns = fmtF(a.conns, 0)
		}
		nn := num(n)
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", label[t], fmtF(wall[t], 2), runs[t],
			fmtRatio(wall[t], wall["floor"]), fmtRatio(wall[t], fpv), fmtF(wall[t]*1000/nn, 2), rtp, stp, conns)
	}
	b.WriteString("\n")
	if len(sizes) == 2 {
		fmt.Fprintf(b, "Round trips and statements per migration are marginal: (count applying %d − count applying %d) / %d, "+
			"so connection set-up and start-up queries cancel out. Round trips are counted by `bench/rtproxy` "+
			"(a TCP proxy between tool and server: a round trip is a burst the client sends after the server last spoke); "+
			"statements by the server, `log_statement = all` on those databases (lines `statement:` and `execute`; a Parse "+
			"or Bind round trip logs nothing, a multi-statement simple query logs once). Totals at %d:",
			sizes[1], sizes[0], sizes[1]-sizes[0], sizes[1])
		for _, t := range tools {
			a := rt[t][sizes[1]]
			fmt.Fprintf(b, " %s %s round trips / %s statements;", label[t], fmtF(a.turns, 0), fmtF(a.stmts, 0))
		}
		b.WriteString("\n\n")
		fmt.Fprintf(b, "<details><summary>One migration's traffic per tool (from the first round trip naming t500 to the last before t501)</summary>\n\n")
		for _, t := range tools {
			data, err := os.ReadFile(filepath.Join(r.dir, "rt", t+"-period.txt"))
			if err != nil {
				continue
			}
			fmt.Fprintf(b, "%s, round trips (number on the connection, then the client's messages: Q = simple query, P/B/D/E/S = parse/bind/describe/execute/sync):\n\n```\n%s```\n\n", label[t], clip(string(data), 30))
			if st, err := os.ReadFile(filepath.Join(r.dir, "rt", t+"-statements.txt")); err == nil {
				fmt.Fprintf(b, "%s, statements logged by the server (first line of each):\n\n```\n%s```\n\n", label[t], clip(string(st), 30))
			}
		}
		b.WriteString("</details>\n\n")
	}

	lw := wall["lockmigrate"]
	r.target("apply "+n+" ≤ fastest peer", fmt.Sprintf("%s s vs %s %s s (%s)", fmtF(lw, 2), label[fp], fmtF(fpv, 2), fmtRatio(lw, fpv)), lw <= fpv, ok(lw) && ok(fpv))
	p := perMig["lockmigrate"]
	r.target("≤ 2 round trips per transactional migration", fmtF(p, 2), p <= 2.0001, len(sizes) == 2 && ok(p))
}

func clip(s string, lines int) string {
	ls := strings.SplitAfter(s, "\n")
	if len(ls) > lines {
		return strings.Join(ls[:lines], "") + fmt.Sprintf("… (%d more lines)\n", len(ls)-lines)
	}
	return s
}

// --- 3. replicas ---------------------------------------------------------------

func (r *report) replicas(b *strings.Builder) {
	type rep struct {
		wall              float64
		nonzero, cnt, dst int
		outcomes          string
		errors            string
	}
	byKey := map[string][]rep{}
	var counts []int
	for _, row := range rows(filepath.Join(r.dir, "replicas.tsv")) {
		if len(row) < 8 {
			continue
		}
		n, _ := strconv.Atoi(row[1])
		if !slices.Contains(counts, n) {
			counts = append(counts, n)
		}
		nz, _ := strconv.Atoi(row[4])
		c, _ := strconv.Atoi(row[5])
		d, _ := strconv.Atoi(row[6])
		errs, _ := os.ReadFile(filepath.Join(r.dir, "replicas", row[0]+"-"+row[1]+"-"+row[2]+".errors"))
		byKey[row[0]+"/"+row[1]] = append(byKey[row[0]+"/"+row[1]], rep{num(row[3]), nz, c, d, row[7], strings.TrimSpace(string(errs))})
	}
	single := map[string]float64{}
	for _, t := range tools {
		single[t] = median(pooled(filepath.Join(r.dir, "single"), t+"-round-", t)) * 1000
	}
	if len(counts) == 0 {
		return
	}
	slices.Sort(counts)
	const set = 200
	fmt.Fprintf(b, "## 3. Replicas started at one barrier on an empty database (%d migrations)\n\n", set)
	fmt.Fprintf(b, "Each migration also inserts its version into `applied_log` (no unique constraint), so a migration applied twice shows. "+
		"The replicas are forked first and parked on a FIFO; one write releases them all; wall time runs from the release to the last exit. "+
		"A watchdog stops replicas still running after %s. lockmigrate and the floor run in skip mode (lock lost: exit 0 at once); the peers run their "+
		"normal `up`/`migrate` command and block or poll on their own locking, if any. Exactly-once: `count(*) = count(DISTINCT version) = %d` "+
		"in `applied_log`. Single-process: the same set applied by one process to a fresh database (hyperfine, runs pooled over rounds, median).\n\n", "60 s", set)
	fmt.Fprintf(b, "| tool | single-process (ms) |")
	for _, n := range counts {
		fmt.Fprintf(b, " ×%d wall (ms) | ×%d / single | ×%d non-zero exits | ×%d exactly-once |", n, n, n, n)
	}
	b.WriteString("\n|---|---:|")
	for range counts {
		b.WriteString("---:|---:|---:|---|")
	}
	b.WriteString("\n")
	var notes strings.Builder
	for _, t := range tools {
		fmt.Fprintf(b, "| %s | %s |", label[t], fmtF(single[t], 0))
		for _, n := range counts {
			rs := byKey[fmt.Sprintf("%s/%d", t, n)]
			var walls []float64
			var nzs, once []string
			allOnce, anyFail := true, false
			var outcomes []string
			for _, x := range rs {
				walls = append(walls, x.wall)
				nzs = append(nzs, strconv.Itoa(x.nonzero))
				o := x.cnt == set && x.dst == set
				allOnce = allOnce && o
				anyFail = anyFail || x.nonzero > 0
				once = append(once, fmt.Sprintf("%d/%d", x.cnt, x.dst))
				if x.outcomes != "-" && x.outcomes != "" {
					outcomes = append(outcomes, x.outcomes)
				}
			}
			if len(outcomes) > 0 {
				fmt.Fprintf(&notes, "- %s ×%d, outcomes per round: %s\n", label[t], n, strings.Join(outcomes, "; "))
			}
			if anyFail {
				for k, x := range rs {
					if x.errors == "" {
						continue
					}
					var ls []string
					for _, l := range strings.Split(x.errors, "\n") {
						ls = append(ls, strings.TrimSpace(l))
					}
					fmt.Fprintf(&notes, "- %s ×%d: %s non-zero exits per round; the failed replicas' last stderr line in round %d (count, exit code, message, table numbers replaced by N):\n\n  ```\n  %s\n  ```\n",
						label[t], n, strings.Join(nzs, ", "), k+1, strings.Join(ls, "\n  "))
					break
				}
			}
			w := median(walls)
			mark := "✓"
			if !allOnce {
				mark = "✗"
			}
			fmt.Fprintf(b, " %s | %s | %s | %s %s |", fmtF(w, 0), fmtRatio(w, single[t]), strings.Join(nzs, ", "), mark, strings.Join(once, ", "))
			if t == "lockmigrate" && n == counts[len(counts)-1] {
				nonzero := 0
				for _, x := range rs {
					nonzero += x.nonzero
				}
				r.target(fmt.Sprintf("%d replicas: 0 failures", n), fmt.Sprintf("%d non-zero exits in %d round(s)", nonzero, len(rs)), nonzero == 0, len(rs) > 0)
				r.target(fmt.Sprintf("%d replicas: exactly-once", n), strings.Join(once, ", ")+" (count/distinct)", allOnce, len(rs) > 0)
				r.target(fmt.Sprintf("%d replicas: wall ≤ 1.3× single-process apply", n),
					fmt.Sprintf("%s ms vs %s ms single (%s)", fmtF(w, 0), fmtF(single[t], 0), fmtRatio(w, single[t])), w <= 1.3*single[t], ok(w) && ok(single[t]))
			}
		}
		b.WriteString("\n")
	}
	b.WriteString("\nWhere a cell holds several values, they are the rounds in order; wall is their median. Exactly-once shows count/distinct per round.\n\n")
	if fw, fs := r.replicaWall("floor", counts[len(counts)-1]), single["floor"]; ok(fw) && ok(fs) {
		fmt.Fprintf(b, "The floor's own ratio (%s at ×%d) is what this harness allows on %s cores: every losing replica still costs a process start, a backend fork and its queries on the same CPUs as the winner (see README, caveats).\n\n",
			fmtRatio(fw, fs), counts[len(counts)-1], r.meta["nproc"])
	}
	if notes.Len() > 0 {
		b.WriteString(notes.String())
		b.WriteString("\n")
	}
}

// replicaWall is the median wall (ms) of tool's rounds with n replicas.
func (r *report) replicaWall(tool string, n int) float64 {
	var ws []float64
	for _, row := range rows(filepath.Join(r.dir, "replicas.tsv")) {
		if len(row) >= 4 && row[0] == tool && row[1] == strconv.Itoa(n) {
			ws = append(ws, num(row[3]))
		}
	}
	return median(ws)
}

// --- 4. sizes ----------------------------------------------------------------------

func (r *report) sizes(b *strings.Builder) {
	rs := rows(filepath.Join(r.dir, "sizes.tsv"))
	if len(rs) == 0 {
		return
	}
	size := map[string]float64{}
	for _, row := range rs {
		size[row[0]] = num(row[1])
	}
	fp, fpv := fastestPeer(size)
	fmt.Fprintf(b, "## 4. Binary sizes\n\nAs built here, all static (CGO_ENABLED=0, as the image ships lockmigrate): lockmigrate and the floor with `go build -trimpath -ldflags \"-s -w\"`, the peers with `go install -trimpath -ldflags \"-s -w\"` (goose with the driver-exclusion tags, golang-migrate with `-tags postgres`). 1 MB = 10⁶ bytes.\n\n")
	fmt.Fprintf(b, "| tool | bytes | MB | × floor | × smallest peer (%s) |\n|---|---:|---:|---:|---:|\n", label[fp])
	for _, t := range tools {
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s |\n", label[t], fmtF(size[t], 0), fmtF(size[t]/mb, 2), fmtRatio(size[t], size["floor"]), fmtRatio(size[t], fpv))
	}
	helper := num(r.meta["helper_size"])
	fmt.Fprintf(b, "\nlockmigrate's parser helper (`lockmigrate-pgparse`, static cgo, started only to lint, shipped next to it in the image): %s bytes.\n", fmtF(helper, 0))
	fmt.Fprintf(b, "\nContainer image: %s\n\n", r.meta["image"])
	l := size["lockmigrate"]
	r.reported("binary size (lockmigrate; + its parser helper)", fmtF(l/mb, 2)+" MB (+ "+fmtF(helper/mb, 2)+" MB)")
	// run.sh writes "<tag> <bytes> bytes (...)" when it measured the image.
	img := math.NaN()
	if f := strings.Fields(r.meta["image"]); len(f) > 2 && f[2] == "bytes" {
		img = num(f[1])
	}
	r.reported("image size (both binaries and the CA bundle)", fmtF(img/mb, 2)+" MB")
}

// --- quiet machine ------------------------------------------------------------------

func (r *report) quiet(b *strings.Builder) {
	rs := rows(filepath.Join(r.dir, "quiet.tsv"))
	if len(rs) == 0 {
		return
	}
	maxBusy, waited := 0.0, 0.0
	var busy []string
	for _, row := range rs {
		if len(row) < 4 {
			continue
		}
		x := num(row[1])
		maxBusy = max(maxBusy, x)
		waited += num(row[3])
		if x > 20 {
			busy = append(busy, fmt.Sprintf("%s (%s%%, load %s)", row[0], row[1], row[2]))
		}
	}
	fmt.Fprintf(b, "## Machine load during the run\n\nBefore each of %d measurements the bench waited (%.0f s in all) for the CPU to be at most 20%% busy with other work, sampled over 1 s. Highest busy share seen at a start: %.0f%%.", len(rs), waited, maxBusy)
	if len(busy) > 0 {
		fmt.Fprintf(b, " Measured while busy (treat with care): %s.", strings.Join(busy, "; "))
	}
	b.WriteString("\n")
}
