// Package lint checks migration files for the statements that block a live
// database: an index built without CONCURRENTLY, a constraint validated
// under an exclusive lock, a table rewrite, a statement that cannot run in
// the transaction lockmigrate wraps a file in. It reads every statement
// with PostgreSQL's own parser (package pgparse) and knows what no generic
// linter knows: which files run in a transaction, which tables the pending
// set creates (new and empty: indexing them is free), and, online, how
// large each table is and which server version runs.
//
// Nothing here runs before Lint is called: a run that finds nothing
// pending never parses.
package lint

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/lockmigrate/lockmigrate/internal/lint/pgparse"
)

// DefaultPGVersion is the server major version assumed offline: the
// oldest one lockmigrate supports fully (14: client_connection_check_interval
// frees the lock of a dead client). The version-dependent rules differ only
// below 12, so any supported server gives the same findings.
const DefaultPGVersion = 14

// DefaultSmallTableRows is the estimated row count (pg_class.reltuples)
// under which an online finding of a size-dependent rule is only a
// warning: building an index on, or rewriting, 10,000 narrow rows takes
// about 10 ms, shorter than the lock_timeout that bounds the wait in front
// of it (docs/lint.md has the measurement).
const DefaultSmallTableRows = 10000

// File is one migration file as the linter sees it.
type File struct {
	// Name is how findings name the file.
	Name string
	SQL  string
	// NoTransaction: the file runs outside any transaction, one statement
	// at a time ("-- lockmigrate:no-transaction").
	NoTransaction bool
	// Applied files are read for what they create and prove (tables,
	// columns, validated checks), never reported on.
	Applied bool
}

// Options configure a lint.
type Options struct {
	// PGVersion is the server major version (0: DefaultPGVersion offline,
	// the server's own online).
	PGVersion int
	// SharedTransaction: every pending transactional file runs in one
	// transaction (LOCKMIGRATE_TRANSACTION=all).
	SharedTransaction bool
	// SmallTableRows: online, size-dependent findings on tables estimated
	// under this many rows are warnings (0: DefaultSmallTableRows).
	SmallTableRows float64
	// Enable turns on rules that are off by default ("style" for every
	// style rule); Disable turns rules off.
	Enable, Disable []string
	// DB, when set, is the database the files will run against: its
	// catalog decides table sizes and its version the version-dependent
	// rules.
	DB Querier
	// Cache, when set, keeps each file text's parse for later calls with
	// the same cache (see ParseCache).
	Cache *ParseCache
}

// ParseCache keeps the parse of each file text across Lint calls: a
// multi-tenant run lints the same files once per tenant, and only the
// catalog differs between tenants, so each text goes to the parser once
// per process. Safe for concurrent use; it holds what it was given to
// parse, a migration set's files.
type ParseCache struct {
	mu sync.Mutex
	m  map[string]parse
}

// parse is what parseFile keeps of a text: read-only once made.
type parse struct {
	stmts  []pgparse.Stmt
	syntax *pgparse.SyntaxError
	lines  []int
}

func (c *ParseCache) get(sql string) (parse, bool) {
	if c == nil {
		return parse{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.m[sql]
	return p, ok
}

func (c *ParseCache) put(sql string, p parse) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]parse{}
	}
	c.m[sql] = p
}

// Finding is one problem found in a file.
type Finding struct {
	File     string   `json:"file"`
	Line     int      `json:"line"`
	Column   int      `json:"column"`
	Rule     string   `json:"rule"`
	Severity Severity `json:"severity"`
	Message  string   `json:"message"`
	// Fix is the safe alternative; Example the file showing it.
	Fix     string `json:"fix"`
	Example string `json:"example,omitempty"`
}

// String is the finding as one line of text output.
func (f Finding) String() string {
	return fmt.Sprintf("%s:%d:%d: %s [%s] %s", f.File, f.Line, f.Column, f.Severity, f.Rule, f.Message)
}

// Report is the result of a lint.
type Report struct {
	Findings []Finding
	// Files and Statements count what was linted (applied files excluded).
	Files, Statements int
	PGVersion         int
	// Online is set when the catalog was consulted.
	Online bool
}

// Count returns the number of findings at severity s.
func (r *Report) Count(s Severity) int {
	n := 0
	for _, f := range r.Findings {
		if f.Severity == s {
			n++
		}
	}
	return n
}

// PrestartParser starts the parser Lint will use, in the background, when
// it is a helper process (pgparse.Prestart): for a caller that knows it is
// about to lint and has round trips to make first.
func PrestartParser() { pgparse.Prestart() }

// Lint checks files, in the order given (version order), and returns the
// findings. An error means the linter could not run (no parser in this
// build, the catalog query failed); problems in the files are findings.
func Lint(ctx context.Context, files []File, opts Options) (*Report, error) {
	if err := pgparse.Unavailable(); err != nil {
		return nil, err
	}
	if opts.SmallTableRows <= 0 {
		opts.SmallTableRows = DefaultSmallTableRows
	}
	parsed, err := parseFiles(files, opts.Cache)
	if err != nil {
		return nil, err
	}
	rep := &Report{PGVersion: opts.PGVersion}
	for i, f := range files {
		if !f.Applied {
			rep.Files++
			rep.Statements += len(parsed[i].stmts)
		}
	}
	cat := &catalog{}
	if opts.DB != nil {
		var err error
		if cat, err = readCatalog(ctx, opts.DB, parsed); err != nil {
			return nil, fmt.Errorf("lint: read the catalog: %w", err)
		}
		rep.Online = true
		if opts.PGVersion == 0 {
			rep.PGVersion = cat.version
		}
	}
	if rep.PGVersion == 0 {
		rep.PGVersion = DefaultPGVersion
	}
	l := newLinter(opts, rep.PGVersion, cat)
	for i := range parsed {
		rep.Findings = append(rep.Findings, l.file(&parsed[i])...)
	}
	return rep, nil
}

// parsedFile is a file with its statements and suppressions.
type parsedFile struct {
	File
	stmts  []pgparse.Stmt
	syntax *pgparse.SyntaxError
	lines  []int // byte offset of each line's start
}

// parseFiles parses the files (or takes their texts' parses from cache);
// a file's syntax error is its finding, the error a parser that could not
// run (a helper that failed), named by the first file it did not parse.
func parseFiles(files []File, cache *ParseCache) ([]parsedFile, error) {
	parsed := make([]parsedFile, len(files))
	// Each text not in the cache goes to the parser once, all in one
	// pgparse.ParseAll: through the helper, one round trip per file was
	// most of a lint's time.
	var texts []string
	at := map[string][]int{} // the files of each text to parse
	for i, f := range files {
		if c, ok := cache.get(f.SQL); ok {
			parsed[i] = c.of(f)
			continue
		}
		if _, ok := at[f.SQL]; !ok {
			texts = append(texts, f.SQL)
		}
		at[f.SQL] = append(at[f.SQL], i)
	}
	if len(texts) == 0 {
		return parsed, nil // nothing to start the helper for
	}
	done := 0
	err := pgparse.ParseAll(texts, func(j int, stmts []pgparse.Stmt, err error) {
		p := parse{stmts: stmts, lines: lineStarts(texts[j])}
		if err != nil {
			se, ok := err.(*pgparse.SyntaxError)
			if !ok {
				se = &pgparse.SyntaxError{Msg: err.Error(), Offset: 0}
			}
			p.stmts, p.syntax = nil, se
		}
		cache.put(texts[j], p)
		for _, i := range at[texts[j]] {
			parsed[i] = p.of(files[i])
		}
		done = j + 1
	})
	if err != nil {
		return nil, fmt.Errorf("lint: parse %s: %w", files[at[texts[done]][0]].Name, err)
	}
	return parsed, nil
}

// of is f with this parse of its text.
func (p parse) of(f File) parsedFile {
	return parsedFile{File: f, stmts: p.stmts, syntax: p.syntax, lines: p.lines}
}

// lineStarts is the byte offset of each line of sql.
func lineStarts(sql string) []int {
	lines := []int{0}
	for i := 0; i < len(sql); i++ {
		if sql[i] == '\n' {
			lines = append(lines, i+1)
		}
	}
	return lines
}

// position converts a byte offset into a 1-based line and column (in
// characters).
func (p *parsedFile) position(off int) (line, col int) {
	off = max(0, min(off, len(p.SQL)))
	i, found := slices.BinarySearch(p.lines, off)
	if !found {
		i--
	}
	return i + 1, utf8.RuneCountInString(p.SQL[p.lines[i]:off]) + 1
}

// lineText is line n (1-based) without its newline.
func (p *parsedFile) lineText(n int) string {
	if n < 1 || n > len(p.lines) {
		return ""
	}
	end := len(p.SQL)
	if n < len(p.lines) {
		end = p.lines[n] - 1
	}
	return strings.TrimRight(p.SQL[p.lines[n-1]:end], "\r")
}
