//go:build cgo

package pgparse

import (
	"errors"

	"github.com/pganalyze/pg_query_go/v6/parser"
)

// inProcess is libpg_query linked into this binary.
type inProcess struct{}

// builtin is the parser a process uses unless Use installs a Client: the
// one linked in.
func builtin() backend { return inProcess{} }

func (inProcess) parseJSON(sql string) (string, error) {
	out, err := parser.ParseToJSON(sql)
	return out, syntaxError(err)
}

func (inProcess) scanProtobuf(sql string) ([]byte, error) {
	out, err := parser.ScanToProtobuf(sql)
	return out, syntaxError(err)
}

func (p inProcess) parseAndScan(sql string) (string, []byte, error) {
	tree, err := p.parseJSON(sql)
	if err != nil {
		return "", nil, err
	}
	scanned, err := p.scanProtobuf(sql)
	return tree, scanned, err
}

func (inProcess) unavailable() error { return nil }

func syntaxError(err error) error {
	var pe *parser.Error
	if errors.As(err, &pe) {
		return &SyntaxError{Msg: pe.Message, Offset: pe.Cursorpos - 1}
	}
	return err
}
