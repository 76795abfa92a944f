package format

import (
	"regexp"
	"strings"
)

// looseDown matches the down markers of every tool more loosely than the
// tools do (any case, indentation, spacing), so that a marker a tool would
// not recognise — and so a format would not cut at — is still caught in the
// part that runs.
var looseDown = []struct {
	tool      Name
	canonical string
	re        *regexp.Regexp
}{
	{Goose, "-- +goose Down", regexp.MustCompile(`(?im)^[ \t]*--[ \t]*\+[ \t]*goose[ \t]+down\b`)},
	{Dbmate, "-- migrate:down", regexp.MustCompile(`(?im)^[ \t]*--[ \t]*migrate[ \t]*:[ \t]*down\b`)},
	{Tern, ternSeparator, regexp.MustCompile(`(?i)--[ \t]*create[ \t]+above[ \t]*/[ \t]*drop[ \t]+below`)},
}

// checkNoDown refuses a down marker of any tool in sql, the part of a file
// of format f that would run: whatever it was meant to start, it would run.
func checkNoDown(sql string, f Name) error {
	for _, d := range looseDown {
		loc := d.re.FindStringIndex(sql)
		if loc == nil {
			continue
		}
		return &Error{Line: lineAt(sql, loc[0]), Down: true,
			Msg: "a " + string(d.tool) + " down marker " + quote(strings.TrimSpace(lineText(sql, lineStart(sql, loc[0])))) +
				" in the part of the file that would run (read as " + string(f) + "): lockmigrate never runs a down section; " +
				"if the file is written for " + string(d.tool) + ", spell the marker as " + string(d.tool) + " does (" +
				quote(d.canonical) + ") and read the file as " + string(d.tool) + " (LOCKMIGRATE_FORMAT=auto or " + string(d.tool) + ")"}
	}
	return nil
}

// lineStart is the offset of the start of the line holding offset.
func lineStart(s string, offset int) int {
	for offset > 0 && s[offset-1] != '\n' {
		offset--
	}
	return offset
}
