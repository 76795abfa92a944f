// Package listfmt formats lists of migration versions for messages, so
// that runner and adopt say "1, 2, 3, and 7 more" alike. It is a package of
// its own because adopt need not depend on runner (it only reads another
// tool's table), and runner's exported API is no place for a formatter.
package listfmt

import (
	"fmt"
	"strings"
)

// Listed is how many versions Versions names before it counts the rest.
const Listed = 10

// Versions lists up to Listed versions, comma-separated, then how many
// more: a message about thousands of files must stay one readable line.
func Versions(vs []int64) string {
	var parts []string
	for i, v := range vs {
		if i == Listed {
			parts = append(parts, fmt.Sprintf("and %d more", len(vs)-Listed))
			break
		}
		parts = append(parts, fmt.Sprint(v))
	}
	return strings.Join(parts, ", ")
}
