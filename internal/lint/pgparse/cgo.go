//go:build cgo

package pgparse

import (
	"errors"

	"github.com/pganalyze/pg_query_go/v6/parser"
)

const available = true

func parseJSON(sql string) (string, error) {
	out, err := parser.ParseToJSON(sql)
	return out, syntaxError(err)
}

func scanProtobuf(sql string) ([]byte, error) {
	out, err := parser.ScanToProtobuf(sql)
	return out, syntaxError(err)
}

func syntaxError(err error) error {
	var pe *parser.Error
	if errors.As(err, &pe) {
		return &SyntaxError{Msg: pe.Message, Offset: pe.Cursorpos - 1}
	}
	return err
}
