// Package migrations holds the migration set embedded in the lockmigrate
// binary. Replace the .sql files (or point LOCKMIGRATE_DIR elsewhere) to ship
// your own; a Go program can embed its own fs.FS and call package runner.
package migrations

import "embed"

// FS is the embedded migration set.
//
//go:embed *.sql
var FS embed.FS
