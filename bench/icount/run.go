package main

import (
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
)

// The phases before main.main.
const (
	phaseStart = "runtime start (before the first package initialisation)"
	phaseInit  = "package initialisation (up to main.main)"
)

// pkgInit matches a package initialisation function as callgrind names it
// (pkg.init, pkg.init.0, pkg.map.init.0 for a large map literal), not a
// method named init, nor a closure (pkg.init.func1 is a package-level
// func literal, called whenever the program calls it).
var pkgInit = regexp.MustCompile(`^([^()*\[\] ']+?)(\.map)?\.init(\.[0-9]+)?$`)

// Run is a whole callgrind run split by phase.
type Run struct {
	Total  int64            // every part's summary, added
	Phases map[string]int64 // phase name → instructions
	Order  []string         // phase names in the order they started
	Inits  map[string]int64 // package → instructions of its initialisation
	Main   map[string]int64 // from main.main on: "FILE FUNCTION" → self cost
}

// Load reads the parts of one run (every callgrind.out file that the
// options of DumpArgs made), in any order.
func Load(paths []string) (*Run, error) {
	var parts []*Profile
	for _, path := range paths {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		p, err := Parse(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if s := p.SelfSum(); s != p.Total {
			return nil, fmt.Errorf("%s: self costs add up to %d, the summary says %d", path, s, p.Total)
		}
		parts = append(parts, p)
	}
	slices.SortFunc(parts, func(a, b *Profile) int { return a.Part - b.Part })
	return split(parts), nil
}

// split charges each part to the phase (and package) the run was in
// before the part's trigger, then moves on according to the trigger: a
// part's costs are those since the previous dump, up to the entry of the
// function that triggered it. A milestone moves the run on at its first
// entry only (morestack restarts a function from its entry, and callgrind
// sees that as another one).
//
// runtime.main cannot mark the end of the runtime's start: the scheduler
// jumps into it, and callgrind sees it entered only when a stack growth
// restarts it, in the middle of the package initialisation. The first
// package initialisation function marks it instead.
func split(parts []*Profile) *Run {
	r := &Run{Phases: map[string]int64{}, Inits: map[string]int64{}, Main: map[string]int64{}}
	phase, pkg, inMain := phaseStart, "", false
	r.Order = []string{phaseStart}
	seen := map[string]bool{}
	for _, p := range parts {
		r.Total += p.Total
		r.Phases[phase] += p.Total
		if phase == phaseInit {
			r.Inits[pkg] += p.Total
		}
		if inMain {
			for f, c := range p.Self {
				r.Main[p.File[f]+" "+f] += c
			}
		}
		fn, _ := strings.CutPrefix(p.Trigger, "--dump-before=")
		if i := slices.IndexFunc(milestones, func(m Milestone) bool { return m.Enter == fn }); i >= 0 && !seen[fn] {
			seen[fn] = true
			phase, inMain = milestones[i].Name, true
			r.Order = append(r.Order, phase)
			continue
		}
		if !inMain && pkgInit.MatchString(fn) {
			if phase == phaseStart {
				phase = phaseInit
				r.Order = append(r.Order, phase)
			}
			pkg = pkgInit.FindStringSubmatch(fn)[1]
		}
	}
	return r
}

// Write prints the breakdown of one or more runs of the same command as
// Markdown: each row's median over the runs, its share of the median
// total, and the runs' range.
func Write(w io.Writer, runs []*Run, top int) error {
	total := median(runs, func(r *Run) int64 { return r.Total })
	cell := func(get func(*Run) int64) string {
		m := median(runs, get)
		lo, hi := m, m
		for _, r := range runs {
			lo, hi = min(lo, get(r)), max(hi, get(r))
		}
		rng := "–"
		if len(runs) > 1 {
			rng = fmt.Sprintf("%s–%s", thousands(lo), thousands(hi))
		}
		return fmt.Sprintf("%s | %.1f %% | %s", thousands(m), 100*float64(m)/float64(max(total, 1)), rng)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "| phase (in the order they started; all threads) | instructions | share | runs' range |\n|---|---:|---:|---:|\n")
	rows := slices.Clone(runs[0].Order)
	for _, name := range append([]string{phaseStart, phaseInit}, names(milestones)...) {
		if !slices.Contains(rows, name) {
			rows = append(rows, name)
		}
	}
	for _, name := range rows {
		if !slices.ContainsFunc(runs, func(r *Run) bool { return slices.Contains(r.Order, name) }) {
			fmt.Fprintf(&b, "| %s | phase not found | – | – |\n", name)
			continue
		}
		fmt.Fprintf(&b, "| %s | %s |\n", name, cell(func(r *Run) int64 { return r.Phases[name] }))
		if name != phaseInit {
			continue
		}
		pkgs := map[string]int64{}
		for _, r := range runs {
			for pkg := range r.Inits {
				pkgs[pkg] = median(runs, func(r *Run) int64 { return r.Inits[pkg] })
			}
		}
		for _, kv := range sorted(pkgs)[:min(top, len(pkgs))] {
			fmt.Fprintf(&b, "| &nbsp;&nbsp;%s | %s |\n", kv.k, cell(func(r *Run) int64 { return r.Inits[kv.k] }))
		}
	}
	fmt.Fprintf(&b, "| **total** | %s |\n\n", cell(func(r *Run) int64 { return r.Total }))
	mainTotal := func(r *Run) int64 { return sum(r.groups()) }
	fmt.Fprintf(&b, "From main.main on (%s instructions), by the code that executed them (self cost):\n\n", thousands(median(runs, mainTotal)))
	fmt.Fprintf(&b, "| code | instructions | share of the total | runs' range |\n|---|---:|---:|---:|\n")
	for _, g := range groups {
		fmt.Fprintf(&b, "| %s | %s |\n", g.Name, cell(func(r *Run) int64 { return r.groups()[g.Name] }))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// groups is the self cost from main.main on by group.
func (r *Run) groups() map[string]int64 {
	by := map[string]int64{}
	for f, c := range r.Main {
		for _, g := range groups {
			if g.Pattern.MatchString(f) {
				by[g.Name] += c
				break
			}
		}
	}
	return by
}

func sum(m map[string]int64) int64 {
	var s int64
	for _, v := range m {
		s += v
	}
	return s
}

// median of get over the runs (the lower middle one of an even number).
func median(runs []*Run, get func(*Run) int64) int64 {
	var xs []int64
	for _, r := range runs {
		xs = append(xs, get(r))
	}
	slices.Sort(xs)
	return xs[(len(xs)-1)/2]
}

func names(ms []Milestone) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Name)
	}
	return out
}

type kv struct {
	k string
	v int64
}

// sorted lists m by value, largest first (ties by key).
func sorted(m map[string]int64) []kv {
	var l []kv
	for k, v := range m {
		l = append(l, kv{k, v})
	}
	slices.SortFunc(l, func(a, b kv) int {
		if a.v != b.v {
			return int(b.v - a.v)
		}
		return strings.Compare(a.k, b.k)
	})
	return l
}

// thousands formats 1234567 as "1,234,567".
func thousands(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
