package format

import (
	"strings"
)

// dbmate's block directives (pkg/dbmate/migration.go): "--" at the very start
// of a line, optional white space, then migrate:up or migrate:down in lower
// case, followed by white space or the end of the line. They are found
// anywhere in the file, as dbmate finds them.
var (
	dbmateUp        = lazyRegexp(`(?m)^--\s*migrate:up(\s*$|\s+\S+)`)
	dbmateDown      = lazyRegexp(`(?m)^--\s*migrate:down(\s*$|\s+\S+)`)
	dbmateDirective = lazyRegexp(`^--\s*migrate:(up|down)`)
)

// parseDbmate reads a dbmate migration: everything before "-- migrate:up"
// must be blank or comments, the up block runs to "-- migrate:down" (or the
// end of the file), and the options on the up line are dbmate's:
// transaction:false runs the block outside a transaction, env:NAME renders
// it as a template of environment variables (refused).
func parseDbmate(text string, sec *Section) (int, error) {
	ups := dbmateUp().FindAllStringIndex(text, -1)
	downs := dbmateDown().FindAllStringIndex(text, -1)
	if len(ups) == 0 {
		line := 0
		if len(downs) > 0 {
			line = lineAt(text, downs[0][0])
		}
		return 0, errorf(line, "no \"-- migrate:up\" directive: dbmate refuses such a file")
	}
	if len(ups) > 1 || len(downs) > 1 {
		second := ups[len(ups)-1][0]
		if len(downs) > 1 {
			second = downs[1][0]
		}
		return 0, errorf(lineAt(text, second), "more than one \"-- migrate:up\" or \"-- migrate:down\" directive: "+
			"dbmate records such a file once per section and fails; put each section in a file of its own")
	}
	upStart, upEnd := ups[0][0], len(text)
	if len(downs) == 1 {
		upEnd = downs[0][0]
		if upEnd < upStart {
			return 0, errorf(lineAt(text, upEnd), "\"-- migrate:down\" before \"-- migrate:up\" (dbmate refuses the file)")
		}
	}
	if err := dbmatePreamble(text[:upStart]); err != nil {
		return 0, err
	}
	noTx, err := dbmateOptions(lineText(text, upStart), lineAt(text, upStart))
	if err != nil {
		return 0, err
	}
	sec.NoTransaction = noTx
	return upEnd, nil
}

// dbmatePreamble refuses statements before the up directive, as dbmate does.
func dbmatePreamble(pre string) error {
	var err error
	lines(pre, func(line string, no, _ int) bool {
		if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "--") {
			err = errorf(no, "SQL before \"-- migrate:up\" (dbmate refuses the file; only comments may come first)")
			return false
		}
		return true
	})
	return err
}

// dbmateOptions reads the options of the up directive line as dbmate does:
// white-space separated key:value pairs; a pair that is not exactly one
// key and one value is ignored, and so are keys dbmate does not use.
func dbmateOptions(directive string, no int) (noTx bool, err error) {
	rest := strings.TrimSpace(dbmateDirective().ReplaceAllString(strings.TrimSuffix(directive, "\r"), ""))
	for _, pair := range strings.Fields(rest) {
		kv := strings.Split(pair, ":")
		if len(kv) != 2 {
			continue
		}
		switch kv[0] {
		case "transaction":
			noTx = kv[1] == "false"
		case "env":
			return false, errorf(no, "option %q: dbmate renders the block as a template of environment variables, "+
				"lockmigrate does not; write the values into the file", pair)
		}
	}
	return noTx, nil
}
