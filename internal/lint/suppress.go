package lint

import (
	"fmt"
	"strings"
)

// SuppressionPrefix starts a suppression comment: on the line right before
// a statement, "-- lockmigrate:lint-ignore <rule> <reason>" silences that
// rule for that statement.
const SuppressionPrefix = "-- lockmigrate:lint-ignore"

// suppression is one lint-ignore comment.
type suppression struct {
	line         int // 1-based
	col          int
	rule, reason string
	used         bool
}

// suppressionSet holds a file's suppressions by the line of the statement
// they precede.
type suppressionSet struct {
	all []*suppression
	// byLine maps a line to the suppressions in the block of lint-ignore
	// lines right above it.
	byLine map[int][]*suppression
}

func suppressions(p *parsedFile) *suppressionSet {
	s := &suppressionSet{byLine: map[int][]*suppression{}}
	var block []*suppression
	for n := 1; n <= len(p.lines); n++ {
		text := p.lineText(n)
		trimmed := strings.TrimSpace(text)
		if rest, ok := strings.CutPrefix(trimmed, SuppressionPrefix); ok && (rest == "" || rest[0] == ' ' || rest[0] == '\t') {
			f := strings.Fields(rest)
			sp := &suppression{line: n, col: len(text) - len(strings.TrimLeft(text, " \t")) + 1}
			if len(f) > 0 {
				sp.rule = f[0]
				sp.reason = strings.Join(f[1:], " ")
			}
			s.all = append(s.all, sp)
			block = append(block, sp)
			continue
		}
		if len(block) > 0 {
			s.byLine[n] = block
			block = nil
		}
	}
	return s
}

// covers reports whether a valid suppression right above the statement
// starting on line names rule, and marks it used.
func (s *suppressionSet) covers(line int, rule string) bool {
	hit := false
	for _, sp := range s.byLine[line] {
		if sp.rule == rule && sp.reason != "" {
			sp.used = true
			hit = true
		}
	}
	return hit
}

// leftovers are the findings about the suppressions themselves: no rule,
// no reason or an unknown rule (errors: a suppression must say why), or
// matching no finding (a warning: online and offline runs see different
// findings, and a stale suppression must not fail the image build).
func (s *suppressionSet) leftovers(l *linter, p *parsedFile) []Finding {
	var out []Finding
	for _, sp := range s.all {
		var msg string
		sev := SeverityError
		_, known := LookupRule(sp.rule)
		switch {
		case sp.rule == "":
			msg = "lint-ignore names no rule and gives no reason"
		case !known:
			msg = fmt.Sprintf("lint-ignore names the unknown rule %q", sp.rule)
		case sp.reason == "":
			msg = fmt.Sprintf("lint-ignore %s gives no reason: say why the statement is safe", sp.rule)
		case !sp.used:
			msg, sev = fmt.Sprintf("lint-ignore %s matches no finding of the statement that follows it", sp.rule), SeverityWarning
		default:
			continue
		}
		out = append(out, l.finding(p, RuleSuppression, sev, sp.line, sp.col, msg))
	}
	return out
}
