package sqlsplit

import "strings"

// Words returns the leading tokens of one statement (as Split returns
// it), at most max of them, skipping comments: words upper-cased, a
// quoted string or identifier as "'" or `"`, other tokens as their text
// ("(", ",", "1"). It stops at the first token it cannot scan. It lets the
// runner recognise statements by their keywords without being fooled by a
// comment between them ("CREATE /* x */ INDEX CONCURRENTLY").
func Words(stmt string, max int) []string {
	// Sized for the common case at once: a handful of words, most of a
	// statement's cost here being the allocations of a growing slice.
	out := make([]string, 0, min(max, 8))
	for i := 0; i < len(stmt) && len(out) < max; {
		c := stmt[i]
		switch {
		case isSpace(c):
			i++
			continue
		case c == '-' && i+1 < len(stmt) && stmt[i+1] == '-':
			i = skipLineComment(stmt, i)
			continue
		case c == '/' && i+1 < len(stmt) && stmt[i+1] == '*':
			end, ok := skipBlockComment(stmt, i)
			if !ok {
				return out
			}
			i = end
			continue
		}
		tok, err := scanToken(stmt, i)
		if err != nil {
			return out
		}
		text := stmt[tok.start:tok.end]
		switch tok.kind {
		case tokWord:
			text = strings.ToUpper(text)
		case tokQuoted:
			text = text[:1]
			if text != "'" && text != `"` {
				text = "'" // E'', U&'', $$...$$: a string
			}
		}
		out = append(out, text)
		i = tok.end
	}
	return out
}
