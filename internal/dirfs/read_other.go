//go:build !unix

package dirfs

import (
	"io/fs"
	"os"
)

func readFile(dir, name string, _ *scratch) ([]byte, error) {
	return fs.ReadFile(os.DirFS(dir), name)
}
