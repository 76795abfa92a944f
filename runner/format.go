package runner

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"

	"github.com/lockmigrate/lockmigrate/runner/internal/format"
)

// Format says how Load reads a migration file: as lockmigrate's own, or as
// a file written for another migrator, whose down section must never run.
type Format string

// The formats. FormatAuto, the default, reads each file as the format its
// markers show (lockmigrate's when it has none); the others force it.
const (
	FormatAuto          Format = Format(format.Auto)
	FormatLockmigrate   Format = Format(format.Lockmigrate)
	FormatGoose         Format = Format(format.Goose)
	FormatDbmate        Format = Format(format.Dbmate)
	FormatTern          Format = Format(format.Tern)
	FormatGolangMigrate Format = Format(format.GolangMigrate)
)

// Formats lists the accepted formats, FormatAuto first (LOCKMIGRATE_FORMAT's
// values).
var Formats = []Format{FormatAuto, FormatLockmigrate, FormatGoose, FormatDbmate, FormatTern, FormatGolangMigrate}

// Load reads the migration set from the top level of fsys, each file in the
// format its markers show (LoadFormat with FormatAuto).
func Load(fsys fs.FS) ([]*Migration, error) { return LoadFormat(fsys, FormatAuto) }

// readSection finds the part of m's file that runs, and refuses a file that
// its format would read differently or that keeps a down marker in that part.
func readSection(m *Migration, data []byte, f Format) (format.Section, error) {
	sec, err := format.Parse(m.File, data, format.Name(f))
	if err != nil {
		kind := KindFormat
		var fe *format.Error
		if errors.As(err, &fe) && fe.Down {
			kind = KindDownSection
		}
		return format.Section{}, &ValidationError{Kind: kind, Version: m.Version, File: m.File, Detail: err.Error()}
	}
	m.Format = Format(sec.Format)
	return sec, nil
}

// checkMixed refuses, in auto mode, a set whose files are written for more
// than one of the tools that keep a down section in the file: a marker of
// one tool in a file of another would be taken for SQL. It names a file of
// each tool, and is reported on the first file of the second one found.
func checkMixed(f Format, migs []*Migration) error {
	if f != FormatAuto {
		return nil
	}
	first := map[Format]string{}
	var tools []Format
	for _, m := range migs {
		if format.Name(m.Format).HasDown() && first[m.Format] == "" {
			first[m.Format] = m.File
			tools = append(tools, m.Format)
		}
	}
	if len(tools) < 2 {
		return nil
	}
	mixedAt := first[tools[1]] // the first file of the second format met
	slices.Sort(tools)
	var parts []string
	for _, t := range tools {
		parts = append(parts, fmt.Sprintf("%s (%s)", t, first[t]))
	}
	return &ValidationError{Kind: KindFormat, File: mixedAt,
		Detail: "the set mixes the formats " + strings.Join(parts, ", ") +
			"; set LOCKMIGRATE_FORMAT to the one the files are written in"}
}
