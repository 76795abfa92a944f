package pgparse

import (
	"errors"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// decodeTree decodes a JSON text into the values encoding/json gives an
// `any` (map[string]any, []any, string, float64, bool, nil), which is what
// Node reads. It exists for speed: the parse tree of every pending file is
// decoded once per run, and encoding/json, which scans the text twice
// (validation, then decoding) through a byte-at-a-time state machine,
// spent about half of an apply's client instructions there (15.4 of
// 32.7 M for 99 files under callgrind). One pass here; strings and keys
// without escapes are substrings of the text, not copies. Its results and
// its verdict on invalid input are those of encoding/json
// (TestDecodeTreeAgrees, FuzzDecodeTree).
func decodeTree(s string) (any, error) {
	d := treeDecoder{s: s}
	d.space()
	v, err := d.value(0)
	if err != nil {
		return nil, err
	}
	d.space()
	if d.i != len(d.s) {
		return nil, d.fail("after the top-level value")
	}
	return v, nil
}

// maxTreeDepth bounds the nesting, as encoding/json does (10,000): deeper
// input is an error, not a stack overflow.
const maxTreeDepth = 10000

type treeDecoder struct {
	s string
	i int
}

var errTreeDepth = errors.New("exceeded max depth")

func (d *treeDecoder) fail(where string) error {
	if d.i >= len(d.s) {
		return fmt.Errorf("json: unexpected end of input %s", where)
	}
	return fmt.Errorf("json: invalid character %q at offset %d %s", d.s[d.i], d.i, where)
}

func (d *treeDecoder) space() {
	for d.i < len(d.s) {
		switch d.s[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

func (d *treeDecoder) value(depth int) (any, error) {
	if d.i >= len(d.s) {
		return nil, d.fail("looking for a value")
	}
	switch c := d.s[d.i]; {
	case c == '{':
		return d.object(depth + 1)
	case c == '[':
		return d.array(depth + 1)
	case c == '"':
		return d.str()
	case c == '-' || c >= '0' && c <= '9':
		return d.number()
	case c == 't':
		return true, d.literal("true")
	case c == 'f':
		return false, d.literal("false")
	case c == 'n':
		return nil, d.literal("null")
	default:
		return nil, d.fail("looking for a value")
	}
}

func (d *treeDecoder) literal(word string) error {
	if len(d.s)-d.i < len(word) || d.s[d.i:d.i+len(word)] != word {
		return d.fail("in a literal")
	}
	d.i += len(word)
	return nil
}

func (d *treeDecoder) object(depth int) (any, error) {
	if depth > maxTreeDepth {
		return nil, errTreeDepth
	}
	m := map[string]any{}
	if d.open('}') {
		return m, nil
	}
	for {
		if d.i >= len(d.s) || d.s[d.i] != '"' {
			return nil, d.fail("looking for an object key")
		}
		k, err := d.str()
		if err != nil {
			return nil, err
		}
		d.space()
		if d.i >= len(d.s) || d.s[d.i] != ':' {
			return nil, d.fail("after an object key")
		}
		d.i++
		d.space()
		v, err := d.value(depth)
		if err != nil {
			return nil, err
		}
		m[k] = v
		done, err := d.next('}', "after an object value")
		if err != nil {
			return nil, err
		}
		if done {
			return m, nil
		}
	}
}

func (d *treeDecoder) array(depth int) (any, error) {
	if depth > maxTreeDepth {
		return nil, errTreeDepth
	}
	l := []any{}
	if d.open(']') {
		return l, nil
	}
	for {
		v, err := d.value(depth)
		if err != nil {
			return nil, err
		}
		l = append(l, v)
		done, err := d.next(']', "after an array element")
		if err != nil {
			return nil, err
		}
		if done {
			return l, nil
		}
	}
}

// open steps over the opening byte of an object or array at d.i and the
// space after it, and reports whether the container is empty (closing
// comes next, and is stepped over too).
func (d *treeDecoder) open(closing byte) (empty bool) {
	d.i++
	d.space()
	if d.i < len(d.s) && d.s[d.i] == closing {
		d.i++
		return true
	}
	return false
}

// next reads what follows an element of an object or array: a comma and
// the space after it (more elements), or the closing byte (done).
func (d *treeDecoder) next(closing byte, where string) (done bool, err error) {
	d.space()
	if d.i < len(d.s) {
		switch d.s[d.i] {
		case ',':
			d.i++
			d.space()
			return false, nil
		case closing:
			d.i++
			return true, nil
		}
	}
	return false, d.fail(where)
}

// str reads a string at d.i (its opening quote). The common case, plain
// ASCII or valid UTF-8 without escapes, is a substring of the text.
func (d *treeDecoder) str() (string, error) {
	start := d.i + 1
	for j := start; j < len(d.s); {
		c := d.s[j]
		switch {
		case c == '"':
			d.i = j + 1
			return d.s[start:j], nil
		case c == '\\' || c < 0x20:
			return d.slowStr(start, j)
		case c < utf8.RuneSelf:
			j++
		default:
			r, size := utf8.DecodeRuneInString(d.s[j:])
			if r == utf8.RuneError && size == 1 {
				return d.slowStr(start, j)
			}
			j += size
		}
	}
	d.i = len(d.s)
	return "", d.fail("in a string")
}

// slowStr finishes a string whose first byte needing work (an escape, a
// control character, invalid UTF-8, which encoding/json replaces with
// U+FFFD) is at j.
func (d *treeDecoder) slowStr(start, j int) (string, error) {
	b := make([]byte, 0, j-start+16)
	b = append(b, d.s[start:j]...)
	for j < len(d.s) {
		c := d.s[j]
		switch {
		case c == '"':
			d.i = j + 1
			return string(b), nil
		case c < 0x20:
			d.i = j
			return "", d.fail("in a string")
		case c == '\\':
			n, err := d.escape(&b, j)
			if err != nil {
				return "", err
			}
			j = n
		case c < utf8.RuneSelf:
			b = append(b, c)
			j++
		default:
			r, size := utf8.DecodeRuneInString(d.s[j:])
			b = utf8.AppendRune(b, r) // RuneError for an invalid byte
			j += size
		}
	}
	d.i = len(d.s)
	return "", d.fail("in a string")
}

// escape appends the character of the escape at j (its backslash) and
// returns the offset after it.
func (d *treeDecoder) escape(b *[]byte, j int) (int, error) {
	if j+1 >= len(d.s) {
		d.i = len(d.s)
		return 0, d.fail("in a string escape")
	}
	switch c := d.s[j+1]; c {
	case '"', '\\', '/':
		*b = append(*b, c)
		return j + 2, nil
	case 'b':
		*b = append(*b, '\b')
		return j + 2, nil
	case 'f':
		*b = append(*b, '\f')
		return j + 2, nil
	case 'n':
		*b = append(*b, '\n')
		return j + 2, nil
	case 'r':
		*b = append(*b, '\r')
		return j + 2, nil
	case 't':
		*b = append(*b, '\t')
		return j + 2, nil
	case 'u':
	default:
		d.i = j + 1
		return 0, d.fail("in a string escape")
	}
	r, ok := hex4(d.s, j+2)
	if !ok {
		d.i = j + 2
		return 0, d.fail("in a \\u escape")
	}
	j += 6
	if utf16.IsSurrogate(r) {
		// A pair makes one character; a lone half is U+FFFD, as in
		// encoding/json.
		if r2, ok := hex4(d.s, j+2); ok && j+1 < len(d.s) && d.s[j] == '\\' && d.s[j+1] == 'u' {
			if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
				*b = utf8.AppendRune(*b, dec)
				return j + 6, nil
			}
		}
		r = utf8.RuneError
	}
	*b = utf8.AppendRune(*b, r)
	return j, nil
}

// hex4 reads the four hex digits at s[i:].
func hex4(s string, i int) (rune, bool) {
	if i+4 > len(s) {
		return 0, false
	}
	var r rune
	for _, c := range []byte(s[i : i+4]) {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// number reads a JSON number (the grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?)
// as a float64.
func (d *treeDecoder) number() (any, error) {
	start := d.i
	j := d.i
	if d.s[j] == '-' {
		j++
	}
	digits := func() int {
		k := j
		for j < len(d.s) && d.s[j] >= '0' && d.s[j] <= '9' {
			j++
		}
		return j - k
	}
	switch {
	case j < len(d.s) && d.s[j] == '0':
		j++
	case digits() == 0:
		d.i = j
		return nil, d.fail("in a number")
	}
	if j < len(d.s) && d.s[j] == '.' {
		j++
		if digits() == 0 {
			d.i = j
			return nil, d.fail("in a number")
		}
	}
	if j < len(d.s) && (d.s[j] == 'e' || d.s[j] == 'E') {
		j++
		if j < len(d.s) && (d.s[j] == '+' || d.s[j] == '-') {
			j++
		}
		if digits() == 0 {
			d.i = j
			return nil, d.fail("in a number")
		}
	}
	d.i = j
	f, err := strconv.ParseFloat(d.s[start:j], 64)
	if err != nil {
		return nil, fmt.Errorf("json: cannot decode number %s: %w", d.s[start:j], err)
	}
	return f, nil
}
