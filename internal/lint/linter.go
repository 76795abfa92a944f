package lint

import (
	"fmt"
	"slices"
	"strings"

	"github.com/lockmigrate/lockmigrate/internal/lint/pgparse"
)

// linter carries what the files seen so far created and proved.
type linter struct {
	opts    Options
	version int
	cat     *catalog
	enabled map[string]bool

	// created: tables created by pending files so far (new, empty).
	created map[string]bool
	// newIndex: indexes created by pending files so far; indexTable maps
	// every index created by any file to its table.
	newIndex   map[string]bool
	indexTable map[string]string
	// columns: column types declared by any file so far.
	columns map[string]map[string]colType
	// notValid: constraints added NOT VALID and not yet validated, by
	// table and name.
	notValid map[string]notValidAdd
	// proven: columns a validated CHECK (col IS NOT NULL) proves.
	proven map[string]map[string]bool

	tx       int // the current transaction's number
	sharedTx int // the number of the shared transaction (SharedTransaction), 0 before it starts
}

type colType struct {
	name string
	mods []int
}

type notValidAdd struct {
	tx      int
	notNull string // the column of a CHECK (col IS NOT NULL), else ""
}

func newLinter(opts Options, version int, cat *catalog) *linter {
	l := &linter{opts: opts, version: version, cat: cat, enabled: map[string]bool{},
		created: map[string]bool{}, newIndex: map[string]bool{}, indexTable: map[string]string{},
		columns: map[string]map[string]colType{}, notValid: map[string]notValidAdd{}, proven: map[string]map[string]bool{}}
	for _, r := range Rules {
		l.enabled[r.ID] = !r.Style
	}
	for _, id := range opts.Enable {
		if id == "style" {
			for _, r := range Rules {
				if r.Style {
					l.enabled[r.ID] = true
				}
			}
		}
		l.enabled[id] = true
	}
	for _, id := range opts.Disable {
		l.enabled[id] = false
	}
	return l
}

// raw is a finding before severity, suppression and position: the rule,
// the byte offset it points at and the message.
type raw struct {
	rule string
	at   int
	msg  string
	// table is the table a size-dependent finding concerns ("" if none).
	table string
}

// file lints one file, or only records what an applied one creates.
func (l *linter) file(p *parsedFile) []Finding {
	if p.syntax != nil {
		if p.Applied {
			return nil
		}
		line, col := p.position(p.syntax.Offset)
		return []Finding{l.finding(p, RuleSyntax, SeverityError, line, col, "does not parse: "+p.syntax.Msg)}
	}
	l.tx++
	if !p.Applied && !p.NoTransaction && l.opts.SharedTransaction {
		if l.sharedTx == 0 {
			l.sharedTx = l.tx
		}
		l.tx = l.sharedTx
	}
	sup := suppressions(p)
	var out []Finding
	for i, st := range p.stmts {
		if p.NoTransaction && i > 0 {
			l.tx++ // each statement of a no-transaction file commits on its own
		}
		found := l.statement(p, st)
		if p.Applied {
			continue
		}
		out = append(out, l.resolve(p, st, found, sup)...)
	}
	if !p.Applied {
		out = append(out, sup.leftovers(l, p)...)
	}
	return out
}

// resolve turns a statement's raw findings into findings: rules turned
// off are dropped, size decides the severity online, suppressions apply.
func (l *linter) resolve(p *parsedFile, st pgparse.Stmt, found []raw, sup *suppressionSet) []Finding {
	startLine, _ := p.position(st.Start)
	var out []Finding
	for _, r := range found {
		if !l.enabled[r.rule] {
			continue
		}
		rule, _ := LookupRule(r.rule)
		sev, msg := rule.Severity, r.msg
		if rule.SizeDependent && r.table != "" {
			if t, ok := l.cat.tables[r.table]; ok && t.rows >= 0 {
				msg += fmt.Sprintf(" (%s has about %.0f rows)", r.table, t.rows)
				if t.rows < l.opts.SmallTableRows {
					sev = SeverityWarning
				}
			}
		}
		if sup.covers(startLine, r.rule) {
			continue
		}
		line, col := p.position(r.at)
		out = append(out, l.finding(p, r.rule, sev, line, col, msg))
	}
	return out
}

func (l *linter) finding(p *parsedFile, rule string, sev Severity, line, col int, msg string) Finding {
	r, _ := LookupRule(rule)
	return Finding{File: p.Name, Line: line, Column: col, Rule: rule, Severity: sev, Message: msg, Fix: r.Fix, Example: r.Example}
}

// tableKey names a table the way the linter tracks it: unqualified for
// public (the default search_path) and unqualified names, schema.table
// otherwise.
func tableKey(rv pgparse.Node) string {
	s, n := rv.Str("schemaname"), rv.Str("relname")
	if s == "" || s == "public" {
		return n
	}
	return s + "." + n
}

// nameKey is tableKey for a qualified name given as a list of strings.
func nameKey(parts []string) string {
	if len(parts) == 2 && parts[0] == "public" {
		return parts[1]
	}
	return strings.Join(parts, ".")
}

// existing reports whether a table exists with data that a lock would
// hold up: not created by the pending set, and (online) in the catalog.
func (l *linter) existing(key string) bool {
	if l.created[key] {
		return false
	}
	if l.cat.online {
		t, ok := l.cat.tables[key]
		return ok && t.exists
	}
	return true
}

// create records a table created by a file.
func (l *linter) create(p *parsedFile, key string) {
	if !p.Applied {
		l.created[key] = true
	}
	if l.columns[key] == nil {
		l.columns[key] = map[string]colType{}
	}
}

func (l *linter) prove(table, col string) {
	if l.proven[table] == nil {
		l.proven[table] = map[string]bool{}
	}
	l.proven[table][col] = true
}

// inTx reports whether the statement runs inside a transaction block.
func inTx(p *parsedFile) bool { return !p.NoTransaction }

// txHint is the hint of every no-transaction-required finding.
const txHint = `; mark the file "-- lockmigrate:no-transaction" (its first line) to run it outside a transaction`

func contains(list []string, s string) bool { return slices.Contains(list, s) }
