package format

import (
	"strings"
	"unicode"
)

// The down markers of every tool are looked for more loosely than the tools
// do (any ASCII case, indentation and spacing), so that a marker a tool would
// not recognise — and so a format would not cut at — is still caught in the
// part that runs: a "--" comment line starting with "+goose down" or
// "migrate:down", and "-- create above / drop below" anywhere.
var looseTern = lazyRegexp(`(?i)--[ \t]*create[ \t]+above[ \t]*/[ \t]*drop[ \t]+below`)

var canonical = map[Name]string{Goose: "-- +goose Down", Dbmate: "-- migrate:down", Tern: ternSeparator}

// checkNoDown refuses a down marker of any tool in sql, the part of a file
// of format f that would run: whatever it was meant to start, it would run.
func checkNoDown(sql string, f Name) error {
	tool, at := Name(""), 0
	lines(sql, func(line string, _, start int) bool {
		if tool = lineDown(line); tool != "" {
			at = start
		}
		return tool == ""
	})
	// The tern marker may be anywhere in a line; the regexp runs only on
	// files that hold its "/" and its last word.
	if tool == "" && strings.IndexByte(sql, '/') >= 0 && containsFold(sql, "below") {
		if loc := looseTern().FindStringIndex(sql); loc != nil {
			tool, at = Tern, loc[0]
		}
	}
	if tool == "" {
		return nil
	}
	return &Error{Line: lineAt(sql, at), Down: true,
		Msg: "a " + string(tool) + " down marker " + quote(strings.TrimSpace(lineText(sql, lineStart(sql, at)))) +
			" in the part of the file that would run (read as " + string(f) + "): lockmigrate never runs a down section; " +
			"if the file is written for " + string(tool) + ", spell the marker as " + string(tool) + " does (" +
			quote(canonical[tool]) + ") and read the file as " + string(tool) + " (LOCKMIGRATE_FORMAT=auto or " + string(tool) + ")"}
}

// containsFold reports whether s holds p (ASCII, lower case) in any ASCII
// case, without the lower-cased copy of s that strings.ToLower makes. For
// the words it is asked about no non-ASCII letter folds to theirs, so it
// finds whatever the (?i) expression that follows it could match.
func containsFold(s, p string) bool {
	for _, first := range [2]byte{p[0], p[0] - ('a' - 'A')} {
		for i := 0; ; i++ {
			j := strings.IndexByte(s[i:], first)
			if j < 0 {
				break
			}
			i += j
			if _, ok := cutFold(s[i:], p); ok {
				return true
			}
		}
	}
	return false
}

// lineDown returns the tool whose down marker the line is, loosely: a "--"
// comment whose text starts with "+ goose down" or "migrate : down" (any ASCII
// case, blanks where shown, "down" ending a word).
func lineDown(line string) Name {
	rest, ok := cutFold(blank(line), "--")
	if !ok {
		return ""
	}
	rest = blank(rest)
	if r, ok := cutFold(rest, "+"); ok {
		if r, ok = cutFold(blank(r), "goose"); ok && blank(r) != r {
			if r, ok = cutFold(blank(r), "down"); ok && wordEnd(r) {
				return Goose
			}
		}
	}
	if r, ok := cutFold(rest, "migrate"); ok {
		if r, ok = cutFold(blank(r), ":"); ok {
			if r, ok = cutFold(blank(r), "down"); ok && wordEnd(r) {
				return Dbmate
			}
		}
	}
	return ""
}

// blank drops leading white space: spaces and tabs, and any other character
// strings.TrimSpace would drop (\v, \f, \r, Unicode spaces), so that no
// indentation can hide a marker (found by FuzzParse: "\v-- migrate:down").
func blank(s string) string { return strings.TrimLeftFunc(s, unicode.IsSpace) }

// cutFold cuts prefix p (ASCII, lower case) from s, comparing ASCII letters
// without regard to case.
func cutFold(s, p string) (string, bool) {
	if len(s) < len(p) {
		return s, false
	}
	for i := 0; i < len(p); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != p[i] {
			return s, false
		}
	}
	return s[len(p):], true
}

// wordEnd reports whether a word ends where s starts, as \b does.
func wordEnd(s string) bool {
	if s == "" {
		return true
	}
	c := s[0]
	return !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_')
}

// lineStart is the offset of the start of the line holding offset.
func lineStart(s string, offset int) int {
	for offset > 0 && s[offset-1] != '\n' {
		offset--
	}
	return offset
}
