// Package sqlquote quotes values as SQL string literals, for the few
// statements that cannot take parameters: a history row that travels in the
// same simple-protocol query as its migration, a password in CREATE ROLE.
//
// It is its own package, not part of sqlsplit, because it must hold under
// either setting of standard_conforming_strings, which the splitter assumes
// on, and because test helpers (pgtest) need it without the splitter.
package sqlquote

import "strings"

// Literal quotes s as an SQL string literal that reads back as s whatever
// standard_conforming_strings is set to: '...' with quotes doubled, or,
// when s has a backslash, the escape form E'...' with backslashes doubled
// too (a plain '...' would read backslashes as escapes with the setting
// off). s must not contain a NUL byte, which no text value can hold.
func Literal(s string) string {
	if strings.ContainsRune(s, '\\') {
		return "E'" + strings.NewReplacer(`\`, `\\`, `'`, `''`).Replace(s) + "'"
	}
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
