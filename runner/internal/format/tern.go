package format

import (
	"strings"
)

// ternSeparator divides a tern migration: tern cuts the file at its first
// occurrence, wherever it is (migrate.go, LoadMigrations).
const ternSeparator = "---- create above / drop below ----"

// ternDisableTx, on a line of its own in the up part, makes tern run that
// part outside a transaction, one statement at a time.
var ternDisableTx = lazyRegexp(`(?m)^---- tern: disable-tx ----$`)

// parseTern reads a tern migration: the part before the separator runs.
// tern renders that part as a Go text/template before running it, so a part
// that uses template syntax is refused (run raw, it would not be what tern
// runs); tern also refuses a part without SQL.
func parseTern(text string, sec *Section) (int, error) {
	upEnd := len(text)
	if i := strings.Index(text, ternSeparator); i >= 0 {
		upEnd = i
	}
	up := text[:upEnd]
	if i := strings.Index(up, "{{"); i >= 0 {
		return 0, errorf(lineAt(text, i), "template syntax \"{{\": tern renders the file as a Go template before running it, "+
			"lockmigrate runs it as written; write the rendered SQL into the file")
	}
	hasSQL := false
	lines(up, func(line string, _, _ int) bool {
		t := strings.TrimSpace(line)
		hasSQL = t != "" && !strings.HasPrefix(t, "--")
		return !hasSQL
	})
	if !hasSQL {
		return 0, errorf(0, "no SQL before %q: tern refuses such a file", ternSeparator)
	}
	sec.NoTransaction = ternDisableTx().MatchString(strings.TrimSpace(up))
	return upEnd, nil
}
