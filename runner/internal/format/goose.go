package format

import (
	"strings"
)

// goose annotations, as goose v3.30.0 spells them; it matches them without
// regard to case.
const (
	gooseUp             = "Up"
	gooseDown           = "Down"
	gooseStatementBegin = "StatementBegin"
	gooseStatementEnd   = "StatementEnd"
	gooseNoTransaction  = "NO TRANSACTION"
	gooseEnvsubOn       = "ENVSUB ON"
	gooseEnvsubOff      = "ENVSUB OFF"
)

var gooseAnnotations = []string{gooseUp, gooseDown, gooseStatementBegin, gooseStatementEnd,
	gooseNoTransaction, gooseEnvsubOn, gooseEnvsubOff}

// isGooseAnnotation is goose's own test for an annotation line: a "--"
// comment (after any indentation) that contains "+goose" (case-sensitive).
func isGooseAnnotation(line string) bool {
	return strings.HasPrefix(strings.TrimSpace(line), "--") && strings.Contains(line, "+goose")
}

func gooseMarked(text string) bool {
	marked := false
	lines(text, func(line string, _, _ int) bool {
		marked = isGooseAnnotation(line)
		return !marked
	})
	return marked
}

// gooseAnnotation is goose's extractAnnotation: indentation is an error;
// every "--" and the first "+goose" are removed, and what is left must be one
// of the annotations, compared without regard to case.
func gooseAnnotation(line string) (string, string) {
	if strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t") {
		return "", "goose refuses an indented annotation"
	}
	cmd := strings.Replace(strings.ReplaceAll(line, "--", ""), "+goose", "", 1)
	if strings.Contains(cmd, "+goose") {
		return "", `goose refuses a line with two "+goose" annotations`
	}
	cmd = strings.TrimSpace(cmd)
	for _, a := range gooseAnnotations {
		if strings.EqualFold(cmd, a) {
			return a, ""
		}
	}
	return "", "goose refuses the unknown annotation " + quote(cmd) +
		" (an annotation is a \"--\" comment containing \"+goose\"; goose knows Up, Down, StatementBegin, StatementEnd, NO TRANSACTION, ENVSUB ON/OFF)"
}

func quote(s string) string { return "\"" + s + "\"" }

type gooseState int

const (
	gStart gooseState = iota
	gUp
	gBlockUp // inside StatementBegin ... StatementEnd in the Up section
	gDown
	gBlockDown
)

// gooseParser is goose's state machine for the up direction
// (ParseSQLMigration): it finds where the Up section ends and refuses what
// goose refuses, or would run differently from lockmigrate.
type gooseParser struct {
	text   string
	sec    *Section
	state  gooseState
	upEnd  int
	buf    bool // goose's statement buffer holds SQL not yet ended by ';'
	bufSQL bool // ... and some of it is not a comment (for an empty block)
	block  int  // offset where the open StatementBegin block's body starts
	blockL int  // line of that StatementBegin
	err    *Error
}

// parseGoose reads a goose SQL migration and returns where its Up section
// ends.
func parseGoose(text string, sec *Section) (int, error) {
	p := &gooseParser{text: text, sec: sec, upEnd: len(text)}
	lines(text, p.line)
	if p.err != nil {
		return 0, p.err
	}
	switch p.state {
	case gStart:
		return 0, errorf(0, "no \"-- +goose Up\" annotation: goose refuses such a file")
	case gBlockUp, gBlockDown:
		return 0, errorf(p.blockL, "\"-- +goose StatementBegin\" is never closed by \"-- +goose StatementEnd\" (goose refuses the file)")
	}
	if p.buf {
		return 0, errorf(0, "the last statement of the Up section has no terminating semicolon (goose refuses the file)")
	}
	return p.upEnd, nil
}

func (p *gooseParser) fail(no int, format string, args ...any) bool {
	p.err = errorf(no, format, args...)
	return false
}

func (p *gooseParser) inUp() bool { return p.state == gStart || p.state == gUp || p.state == gBlockUp }

// line handles one line as goose does; it returns false to stop at an error.
func (p *gooseParser) line(line string, no, start int) bool {
	if p.state == gStart && strings.TrimSpace(line) == "" {
		return true
	}
	if isGooseAnnotation(line) {
		a, bad := gooseAnnotation(line)
		if bad != "" {
			return p.fail(no, "%s", bad)
		}
		return p.annotation(a, no, start)
	}
	return p.sql(line, no)
}

func (p *gooseParser) annotation(a string, no, start int) bool {
	switch a {
	case gooseUp:
		if p.state != gStart {
			return p.fail(no, "a second \"-- +goose Up\" annotation (goose refuses the file)")
		}
		p.state = gUp
	case gooseDown:
		if p.state != gUp {
			return p.fail(no, "\"-- +goose Down\" must follow \"-- +goose Up\" outside a StatementBegin block (goose refuses the file)")
		}
		if p.buf {
			return p.fail(no, "the statement before \"-- +goose Down\" has no terminating semicolon (goose refuses the file)")
		}
		p.state, p.upEnd = gDown, start
	case gooseStatementBegin:
		return p.begin(no, start)
	case gooseStatementEnd:
		return p.end(no, start)
	case gooseNoTransaction:
		if !p.inUp() {
			return p.fail(no, "\"-- +goose NO TRANSACTION\" in the Down section: goose applies it to the Up section too, "+
				"but lockmigrate runs and checksums only the Up section; move the line above \"-- +goose Down\"")
		}
		p.sec.NoTransaction = true
	case gooseEnvsubOn:
		if p.inUp() {
			return p.fail(no, "\"-- +goose ENVSUB ON\": goose substitutes environment variables into the SQL that follows, "+
				"lockmigrate does not; write the values into the file")
		}
	}
	return true
}

func (p *gooseParser) begin(no, start int) bool {
	switch p.state {
	case gUp:
		if p.buf {
			return p.fail(no, "the statement before \"-- +goose StatementBegin\" has no terminating semicolon: "+
				"goose would run it together with the block")
		}
		p.state = gBlockUp
	case gDown:
		p.state = gBlockDown
	default:
		return p.fail(no, "\"-- +goose StatementBegin\" must follow \"-- +goose Up\" or \"-- +goose Down\", outside another block (goose refuses the file)")
	}
	p.block, p.blockL, p.bufSQL = start+len(lineText(p.text, start))+1, no, false
	if p.block > len(p.text) {
		p.block = len(p.text)
	}
	return true
}

func (p *gooseParser) end(no, start int) bool {
	switch p.state {
	case gBlockUp:
		if !p.bufSQL {
			return p.fail(no, "an empty StatementBegin/StatementEnd block: goose would skip the line after it")
		}
		p.sec.whole = append(p.sec.whole, [2]int{p.block, start})
		p.state = gUp
	case gBlockDown:
		p.state = gDown
	default:
		return p.fail(no, "\"-- +goose StatementEnd\" without \"-- +goose StatementBegin\" (goose refuses the file)")
	}
	p.buf, p.bufSQL = false, false
	return true
}

// sql handles a line that is no annotation: goose skips comments and blank
// lines between statements, and ends a statement at a line whose last word
// before any "--" ends with ";".
func (p *gooseParser) sql(line string, no int) bool {
	comment := strings.HasPrefix(strings.TrimSpace(line), "--") || line == ""
	if !p.buf && comment {
		return true
	}
	switch p.state {
	case gStart:
		return p.fail(no, "SQL before \"-- +goose Up\" (goose refuses the file; only comments may come first)")
	case gDown, gBlockDown:
		return true
	case gBlockUp:
		p.buf = true
		p.bufSQL = p.bufSQL || !comment
	case gUp:
		p.buf = !gooseEndsStatement(line)
	}
	return true
}

// gooseEndsStatement is goose's endsWithSemicolon.
func gooseEndsStatement(line string) bool {
	prev := ""
	for _, w := range strings.Fields(line) {
		if strings.HasPrefix(w, "--") {
			break
		}
		prev = w
	}
	return strings.HasSuffix(prev, ";")
}

// lineText is the line of text starting at start, without its "\n".
func lineText(text string, start int) string {
	if i := strings.IndexByte(text[start:], '\n'); i >= 0 {
		return text[start : start+i]
	}
	return text[start:]
}
