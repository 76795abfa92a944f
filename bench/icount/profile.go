package main

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// Profile is one part (dump) of a callgrind run: the instructions each
// function executed itself, and its total. Only self costs are read:
// callgrind's inclusive costs are wrong for Go. Its shadow call stack
// follows CALL and RET and loses track whenever a goroutine's stack is
// copied (morestack restarts the function on the new stack) or the
// scheduler switches goroutines, so functions appear to run long after
// they returned, or to call functions they never call, and inclusive
// costs come out at several times the truth or near zero. Self costs and a
// dump's total come from the executed instructions alone.
type Profile struct {
	Part    int               // the "part:" header (1 for a single dump)
	Trigger string            // the "desc: Trigger:" header
	Total   int64             // the "summary:" (or "totals:") header
	Self    map[string]int64  // function → instructions executed in it
	File    map[string]string // function → its source file (fl=), as callgrind names it
}

// recursion matches callgrind's recursion-level marks ('2, '3 …): one Go
// function is one row, whatever depth callgrind's stack thought it was at.
var recursion = regexp.MustCompile(`'[0-9]+('|$)`)

func clean(name string) string {
	for recursion.MatchString(name) {
		name = recursion.ReplaceAllString(name, "$1")
	}
	return name
}

// Parse reads one callgrind.out file (format version 1, with or without
// name and position compression); only the first event column (Ir) is
// used. The cost lines after a calls= line are a call's inclusive cost and
// are skipped.
func Parse(r io.Reader) (*Profile, error) {
	p := &Profile{Part: 1, Self: map[string]int64{}, File: map[string]string{}}
	names := map[string]string{} // kind and "(id)" → name, per file
	npos := 1
	fn, fl := "", ""
	inCall := false
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for line := 1; sc.Scan(); line++ {
		s := sc.Text()
		if s == "" || s[0] == '#' {
			continue
		}
		if c := s[0]; c >= '0' && c <= '9' || c == '+' || c == '-' || c == '*' {
			if inCall {
				inCall = false
				continue
			}
			f := strings.Fields(s)
			if len(f) <= npos {
				continue // a position without costs
			}
			cost, err := strconv.ParseInt(f[npos], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("line %d: cost %q: %w", line, f[npos], err)
			}
			p.Self[fn] += cost
			continue
		}
		if v, ok := strings.CutPrefix(s, "fl="); ok {
			fl = name(names, "fl", v)
			continue
		}
		if v, ok := strings.CutPrefix(s, "fn="); ok {
			fn = clean(name(names, "fn", v))
			if _, seen := p.File[fn]; !seen {
				p.File[fn] = fl
			}
			continue
		}
		if err := p.header(s, names, &npos, &inCall); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return p, nil
}

// header handles a non-cost line: a key=value specification or a
// "key: value" header.
func (p *Profile) header(s string, names map[string]string, npos *int, inCall *bool) error {
	if key, val, ok := strings.Cut(s, "="); ok && !strings.Contains(key, ":") {
		switch key {
		case "cfn":
			name(names, "fn", val) // may define a name fn= uses later
		case "cfi", "cfl", "fi", "fe":
			name(names, "fl", val)
		case "calls":
			*inCall = true // the next cost line is the call's inclusive cost
		}
		return nil
	}
	key, val, ok := strings.Cut(s, ":")
	if !ok {
		return nil
	}
	val = strings.TrimSpace(val)
	switch key {
	case "positions":
		*npos = len(strings.Fields(val))
	case "part":
		n, err := strconv.Atoi(val)
		if err != nil {
			return fmt.Errorf("part: %w", err)
		}
		p.Part = n
	case "desc":
		if t, ok := strings.CutPrefix(val, "Trigger:"); ok {
			p.Trigger = strings.TrimSpace(t)
		}
	case "summary", "totals":
		if p.Total == 0 && val != "" {
			t, err := strconv.ParseInt(strings.Fields(val)[0], 10, 64)
			if err != nil {
				return fmt.Errorf("%s: %w", key, err)
			}
			p.Total = t
		}
	}
	return nil
}

// name resolves callgrind's name compression: "(12) pkg.F" defines id 12
// of its kind (functions; files and objects number theirs apart), a later
// "(12)" refers to it.
func name(names map[string]string, kind, v string) string {
	if !strings.HasPrefix(v, "(") {
		return v
	}
	id, rest, _ := strings.Cut(v, ")")
	id = kind + id
	rest = strings.TrimSpace(rest)
	if rest != "" {
		names[id] = rest
		return rest
	}
	return names[id]
}

// SelfSum is the sum of the self costs: the part's total, checked against
// Total by the caller.
func (p *Profile) SelfSum() int64 {
	var s int64
	for _, c := range p.Self {
		s += c
	}
	return s
}
