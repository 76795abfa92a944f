//go:build !cgo

package pgparse

const available = false

func parseJSON(string) (string, error) { return "", ErrUnavailable }

func scanProtobuf(string) ([]byte, error) { return nil, ErrUnavailable }
