// Package sqlsplit splits the text of a PostgreSQL migration file into
// single statements.
//
// Migrations marked "-- lockmigrate:no-transaction" have to be executed one
// statement at a time: PostgreSQL runs a multi-statement simple-protocol
// query in an implicit transaction, and commands such as
// CREATE INDEX CONCURRENTLY refuse to run inside one. Splitting on every ';'
// is not enough, because semicolons also appear inside string literals,
// quoted identifiers, dollar-quoted function bodies, comments, parenthesised
// rule actions and SQL-standard function bodies (BEGIN ATOMIC ... END).
//
// The scanner follows the lexical rules of the PostgreSQL 15+ server and
// psql closely enough to find statement boundaries; it is not a parser and
// does not validate SQL. Where psql and the server disagree (the server
// continues the escape string E'a' into a '\'...' on the next line, psql
// 15 does not), Split follows the server, which is what executes the
// statements. BEGIN ATOMIC bodies are tracked with psql's heuristic, made
// stricter: see Split. It assumes standard_conforming_strings = on (the
// default since PostgreSQL 9.1), so a backslash is an ordinary character in
// '...' literals and only escapes the next character in E'...' literals.
// psql meta-commands (\set, \connect, ...), psql variables and COPY ... FROM
// STDIN data blocks are not supported: migration files are plain SQL.
package sqlsplit

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Statement is one statement of a migration file.
//
// SQL starts at the statement's first token and ends at its last token, so
// that SQL == input[Offset:Offset+len(SQL)] always holds and the position
// reported for a failing statement points at real SQL rather than at a
// comment. Comments (and whitespace) before the first token and after the
// last token are therefore not part of SQL; comments between tokens are kept
// verbatim. Dropping a trailing line comment also means SQL can be followed
// by ";" safely, e.g. when it is logged or re-joined.
type Statement struct {
	// SQL is the statement text without surrounding whitespace and
	// comments and without the terminating semicolon.
	SQL string
	// Line is the 1-based line of the input on which SQL starts. Only
	// '\n' counts as a line break (so CRLF files number correctly).
	Line int
	// Offset is the byte offset in the input at which SQL starts.
	Offset int
}

// SyntaxError reports input that cannot be split safely. Split refuses such
// input instead of guessing, because running a statement truncated at an
// unterminated quote or comment would be worse than not running it.
type SyntaxError struct {
	// Line is the 1-based line on which the offending construct starts.
	Line int
	// Offset is the byte offset at which the offending construct starts.
	Offset int
	// Msg describes the problem, e.g. "unterminated quoted string".
	Msg string
}

// Error returns the message prefixed with the line number; callers are
// expected to add the file name.
func (e *SyntaxError) Error() string {
	return fmt.Sprintf("line %d: %s", e.Line, e.Msg)
}

func newSyntaxError(src string, offset int, msg string) *SyntaxError {
	return &SyntaxError{
		Line:   1 + strings.Count(src[:offset], "\n"),
		Offset: offset,
		Msg:    msg,
	}
}

// Split splits sql into statements at every semicolon that is not inside a
// quoted string or identifier, a dollar-quoted string, a comment, a pair of
// parentheses or the body of a CREATE FUNCTION/PROCEDURE ... BEGIN ATOMIC
// ... END.
//
// A body starts at BEGIN ATOMIC in a statement whose first tokens are
// CREATE [OR REPLACE] {FUNCTION|PROCEDURE}, and ends at the END that
// balances it, counting CASE ... END (and nested BEGIN ATOMIC ... END)
// outside parentheses, as psql does. Unlike psql, a BEGIN not followed by
// ATOMIC is not counted, so a column named begin cannot swallow the rest of
// the file; a reserved word END used as a column label (SELECT 1 AS end)
// inside a body still ends it early, as it does in psql.
//
// Statements that contain nothing but whitespace and comments are dropped;
// a final statement without a terminating semicolon is returned like any
// other. Split returns a *SyntaxError if the input ends inside a quoted
// string or identifier, a dollar-quoted string, a block comment, a
// parenthesis or a BEGIN ATOMIC body, because the last statement would then
// be a fragment (or would swallow the rest of the file).
func Split(sql string) ([]Statement, error) {
	var (
		stmts []Statement
		st    stmtState
		lines = lineCounter{src: sql, line: 1}
	)
	st.reset()
	emit := func() {
		if st.start >= 0 {
			stmts = append(stmts, Statement{
				SQL:    sql[st.start:st.end],
				Line:   lines.at(st.start),
				Offset: st.start,
			})
		}
		st.reset()
	}
	for i := 0; i < len(sql); {
		c := sql[i]
		switch {
		case isSpace(c):
			i++
			continue
		case c == '-' && i+1 < len(sql) && sql[i+1] == '-':
			i = skipLineComment(sql, i)
			continue
		case c == '/' && i+1 < len(sql) && sql[i+1] == '*':
			end, ok := skipBlockComment(sql, i)
			if !ok {
				return nil, newSyntaxError(sql, i, "unterminated block comment")
			}
			i = end
			continue
		case c == ';' && st.parenDepth == 0 && st.beginDepth == 0:
			emit()
			i++
			continue
		}
		tok, err := scanToken(sql, i)
		if err != nil {
			return nil, err
		}
		st.add(sql, tok)
		i = tok.end
	}
	if err := st.unclosed(sql); err != nil {
		return nil, err
	}
	emit()
	return stmts, nil
}

// maxFirstLine is the maximum length in runes of FirstLine's result.
const maxFirstLine = 80

// FirstLine returns the first line of s that is neither blank nor part of a
// leading comment, trimmed and shortened to at most 80 runes (ending in "…"
// when shortened). It is meant for error messages and logs, where a whole
// statement would be too long but its beginning identifies it. It returns ""
// if s holds no SQL.
func FirstLine(s string) string {
	i := 0
	for i < len(s) {
		c := s[i]
		if isSpace(c) {
			i++
		} else if c == '-' && i+1 < len(s) && s[i+1] == '-' {
			i = skipLineComment(s, i)
		} else if c == '/' && i+1 < len(s) && s[i+1] == '*' {
			end, ok := skipBlockComment(s, i)
			if !ok {
				return ""
			}
			i = end
		} else {
			break
		}
	}
	line := s[i:]
	if k := strings.IndexAny(line, "\r\n"); k >= 0 {
		line = line[:k]
	}
	line = strings.TrimSpace(line)
	if utf8.RuneCountInString(line) <= maxFirstLine {
		return line
	}
	n := 0
	for k := range line {
		if n == maxFirstLine-1 {
			line = line[:k]
			break
		}
		n++
	}
	return strings.TrimRightFunc(line, unicode.IsSpace) + "…"
}

// stmtState is what Split tracks about the statement being scanned.
type stmtState struct {
	start, end int // byte range from first to last token; start < 0: no token yet

	// head classifies the first tokens, enough to recognise
	// CREATE [OR REPLACE] {FUNCTION|PROCEDURE}. psql looks at the first
	// identifiers instead, skipping any other token before CREATE; no
	// real statement has one there.
	head   [4]byte
	ntoken int

	parenDepth int
	parenPos   int // offset of the outermost open '('

	// beginDepth counts open BEGIN ATOMIC bodies and the CASE ... END
	// expressions inside them; semicolons do not end the statement while
	// it is positive.
	beginDepth   int
	beginPos     int  // offset of the outermost open BEGIN
	pendingBegin bool // the previous token was BEGIN, which ATOMIC would open
	pendingPos   int  // offset of that BEGIN
}

func (st *stmtState) reset() { *st = stmtState{start: -1} }

// isRoutine reports whether the statement starts with
// CREATE [OR REPLACE] {FUNCTION|PROCEDURE}. Only those can have a
// BEGIN ATOMIC body, and restricting the body tracking to them keeps
// keywords elsewhere (a BEGIN transaction statement, a column named
// "begin", CASE expressions) from affecting splitting.
func (st *stmtState) isRoutine() bool {
	h := st.head
	return h[0] == 'c' && (h[1] == 'f' || h[1] == 'p' ||
		h[1] == 'o' && h[2] == 'r' && (h[3] == 'f' || h[3] == 'p'))
}

// headClass is the class of one of a statement's first tokens: the
// initial of the keyword of CREATE [OR REPLACE] {FUNCTION|PROCEDURE} it is,
// else 0. The length test comes first: none of these words has a letter
// with a multi-byte case variant (k, s, å), so a word of another length
// cannot fold to it, and most first tokens are other words.
func headClass(word string) byte {
	for _, w := range [...]string{"create", "or", "replace", "function", "procedure"} {
		if len(word) == len(w) && strings.EqualFold(word, w) {
			return w[0]
		}
	}
	return 0
}

// add records a token (anything but whitespace, a comment or a
// statement-ending semicolon) as part of the current statement.
func (st *stmtState) add(src string, tok token) {
	if st.start < 0 {
		st.start = tok.start
	}
	st.end = tok.end
	var word string
	if tok.kind == tokWord {
		word = src[tok.start:tok.end]
	}
	if st.ntoken < len(st.head) {
		st.head[st.ntoken] = headClass(word)
	}
	st.ntoken++

	switch tok.kind {
	case tokLParen:
		if st.parenDepth == 0 {
			st.parenPos = tok.start
		}
		st.parenDepth++
	case tokRParen:
		if st.parenDepth > 0 {
			st.parenDepth--
		}
	}

	// Like psql, only keywords outside parentheses count; unlike psql, a
	// BEGIN opens a body only when followed by ATOMIC, so that an
	// identifier named "begin" inside a body does not unbalance the count.
	pending := st.pendingBegin
	st.pendingBegin = false
	if tok.kind != tokWord || st.parenDepth != 0 || !st.isRoutine() {
		return
	}
	switch {
	case pending && strings.EqualFold(word, "atomic"):
		if st.beginDepth == 0 {
			st.beginPos = st.pendingPos
		}
		st.beginDepth++
	case strings.EqualFold(word, "begin"):
		st.pendingBegin = true
		st.pendingPos = tok.start
	case strings.EqualFold(word, "case"):
		// CASE ... END only needs counting inside a body, where its END
		// must not be taken for the body's END.
		if st.beginDepth > 0 {
			st.beginDepth++
		}
	case strings.EqualFold(word, "end"):
		if st.beginDepth > 0 {
			st.beginDepth--
		}
	}
}

// unclosed reports a parenthesis or BEGIN ATOMIC body still open at the end
// of the input, whichever was opened first.
func (st *stmtState) unclosed(src string) error {
	paren, begin := st.parenDepth > 0, st.beginDepth > 0
	if paren && (!begin || st.parenPos < st.beginPos) {
		return newSyntaxError(src, st.parenPos, "unclosed parenthesis")
	}
	if begin {
		return newSyntaxError(src, st.beginPos, "BEGIN ATOMIC body is not closed by END")
	}
	return nil
}

type tokKind int

const (
	tokOther  tokKind = iota // operator character, number, parameter, ';' inside a body or parentheses
	tokWord                  // identifier or keyword
	tokQuoted                // string, quoted identifier or dollar-quoted string
	tokLParen
	tokRParen
)

type token struct {
	kind       tokKind
	start, end int
}

// scanToken scans the token starting at src[i], which is neither
// whitespace nor the start of a comment.
func scanToken(src string, i int) (token, error) {
	c := src[i]
	quoted := func(q int, backslash bool, what string) (token, error) {
		end, ok := scanQuoted(src, q, backslash)
		if !ok {
			return token{}, newSyntaxError(src, i, what)
		}
		return token{tokQuoted, i, end}, nil
	}
	switch {
	case c == '\'':
		return quoted(i, false, "unterminated quoted string")
	case c == '"':
		return quoted(i, false, "unterminated quoted identifier")
	case c == '$':
		if i+1 < len(src) && isDigit(src[i+1]) { // $1: a parameter
			j := i + 1
			for j < len(src) && isDigit(src[j]) {
				j++
			}
			return token{tokOther, i, skipJunk(src, j)}, nil
		}
		if tagEnd, ok := scanDollarTag(src, i); ok {
			delim := src[i:tagEnd]
			k := strings.Index(src[tagEnd:], delim)
			if k < 0 {
				return token{}, newSyntaxError(src, i, "unterminated dollar-quoted string "+delim)
			}
			return token{tokQuoted, i, tagEnd + k + len(delim)}, nil
		}
		return token{tokOther, i, i + 1}, nil
	case isIdentStart(c):
		// An identifier swallows any '$' it contains, so "a$b$" never
		// starts a dollar quote, and "typE'x'" is not an E'...' string.
		j := i + 1
		for j < len(src) && isIdentCont(src[j]) {
			j++
		}
		if j == i+1 && j < len(src) {
			switch {
			case (c == 'e' || c == 'E') && src[j] == '\'':
				// A continuation segment of an E'...' string is an
				// E'...' string too: E'a'<newline>'\'' is one literal.
				end, ok := scanQuoted(src, j, true)
				for ok {
					q, cont := quoteContinue(src, end)
					if !cont {
						return token{tokQuoted, i, end}, nil
					}
					end, ok = scanQuoted(src, q, true)
				}
				return token{}, newSyntaxError(src, i, "unterminated quoted string")
			case (c == 'u' || c == 'U') && src[j] == '&' && j+1 < len(src) && src[j+1] == '\'':
				return quoted(j+1, false, "unterminated quoted string")
			case (c == 'u' || c == 'U') && src[j] == '&' && j+1 < len(src) && src[j+1] == '"':
				return quoted(j+1, false, "unterminated quoted identifier")
			}
		}
		return token{tokWord, i, j}, nil
	case isDigit(c) || c == '.' && i+1 < len(src) && isDigit(src[i+1]):
		return token{tokOther, i, scanNumber(src, i)}, nil
	case c == '(':
		return token{tokLParen, i, i + 1}, nil
	case c == ')':
		return token{tokRParen, i, i + 1}, nil
	}
	return token{tokOther, i, i + 1}, nil
}

// scanNumber returns the offset just past the numeric literal starting at
// src[i] (1, 1.5, .5, 1., 1e-5), including any identifier characters stuck
// to it. Since PostgreSQL 15 the lexer takes such "trailing junk" as part
// of the number (and then rejects it), so in 1E'\' the E does not start an
// escape string; psql splits the same way.
func scanNumber(src string, i int) int {
	j := i
	for j < len(src) && isDigit(src[j]) {
		j++
	}
	// A '.' belongs to the number unless it starts "..", as in 1..10.
	if j < len(src) && src[j] == '.' && !(j+1 < len(src) && src[j+1] == '.') {
		j++
		for j < len(src) && isDigit(src[j]) {
			j++
		}
	}
	if j < len(src) && (src[j] == 'e' || src[j] == 'E') {
		k := j + 1
		if k < len(src) && (src[k] == '+' || src[k] == '-') {
			k++
		}
		if k < len(src) && isDigit(src[k]) {
			for j = k; j < len(src) && isDigit(src[j]); j++ {
			}
		}
	}
	return skipJunk(src, j)
}

// skipJunk returns the offset past the identifier characters, if any, that
// directly follow a number or parameter at src[j].
func skipJunk(src string, j int) int {
	if j < len(src) && isIdentStart(src[j]) {
		for j++; j < len(src) && isIdentCont(src[j]); j++ {
		}
	}
	return j
}

// scanQuoted scans a literal or identifier whose opening quote is src[q]
// and returns the offset just past its closing quote. A doubled quote
// stands for itself; if backslash is set (E'...' strings), a backslash escapes
// the next byte.
func scanQuoted(src string, q int, backslash bool) (int, bool) {
	quote := src[q]
	for j := q + 1; j < len(src); j++ {
		switch src[j] {
		case '\\':
			if backslash {
				j++
			}
		case quote:
			if j+1 < len(src) && src[j+1] == quote {
				j++
				continue
			}
			return j + 1, true
		}
	}
	return 0, false
}

// quoteContinue reports whether a string literal ending at src[i] is
// continued, and returns the offset of the continuation's opening quote.
// PostgreSQL joins 'a' 'b' into one literal when only whitespace and "--"
// comments, including at least one line break, separate them. This only
// matters for E'...' strings, whose continuation segments also treat backslash
// as an escape.
func quoteContinue(src string, i int) (int, bool) {
	newline := false
	for i < len(src) {
		switch c := src[i]; {
		case c == '\n' || c == '\r':
			newline = true
			i++
		case isSpace(c):
			i++
		case c == '-' && i+1 < len(src) && src[i+1] == '-':
			i = skipLineComment(src, i)
		case c == '\'' && newline:
			return i, true
		default:
			return 0, false
		}
	}
	return 0, false
}

// scanDollarTag reports whether src[i:] starts with a dollar-quote
// delimiter ($$ or $tag$) and returns the offset just past it.
func scanDollarTag(src string, i int) (int, bool) {
	j := i + 1
	if j < len(src) && isIdentStart(src[j]) {
		for j++; j < len(src) && isIdentCont(src[j]) && src[j] != '$'; j++ {
		}
	}
	if j < len(src) && src[j] == '$' {
		return j + 1, true
	}
	return 0, false
}

// skipLineComment returns the offset of the line break ending the "--"
// comment at src[i], or len(src). Like PostgreSQL, it treats '\r' as a line
// break too.
func skipLineComment(src string, i int) int {
	if k := strings.IndexAny(src[i:], "\r\n"); k >= 0 {
		return i + k
	}
	return len(src)
}

// skipBlockComment returns the offset just past the block comment starting
// at src[i]. Block comments nest in PostgreSQL.
func skipBlockComment(src string, i int) (int, bool) {
	depth := 1
	for j := i + 2; j+1 < len(src); {
		switch {
		case src[j] == '/' && src[j+1] == '*':
			depth++
			j += 2
		case src[j] == '*' && src[j+1] == '/':
			depth--
			j += 2
			if depth == 0 {
				return j, true
			}
		default:
			j++
		}
	}
	return 0, false
}

// lineCounter converts increasing byte offsets into line numbers in time
// linear in the input as a whole.
type lineCounter struct {
	src  string
	pos  int
	line int
}

func (lc *lineCounter) at(offset int) int {
	lc.line += strings.Count(lc.src[lc.pos:offset], "\n")
	lc.pos = offset
	return lc.line
}

// isSpace matches PostgreSQL's whitespace characters.
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// isIdentStart matches PostgreSQL's ident_start; every byte of a non-ASCII
// UTF-8 character is accepted, as the server does.
func isIdentStart(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_' || c >= 0x80
}

// isIdentCont matches PostgreSQL's ident_cont, which includes '$'.
func isIdentCont(c byte) bool {
	return isIdentStart(c) || isDigit(c) || c == '$'
}
