//go:build cgo

package pgparse

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Serve is the parser helper's loop (cmd/lockmigrate-pgparse): it answers
// the requests read from r, in order, with this process's own parser,
// and returns nil at EOF on r between requests. It writes nothing to w but
// frames. An error is a broken stream (the client then gets EOF).
func Serve(r io.Reader, w io.Writer) error {
	br, bw := bufio.NewReaderSize(r, 64<<10), bufio.NewWriterSize(w, 64<<10)
	for {
		op, payload, err := readFrame(br)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read request: %w", err)
		}
		status, out := answer(op, payload)
		err = bufferFrame(bw, status, out)
		// A client that sent many requests at once (Client.parseAndScanAll)
		// gets the answers in as few writes as there are reads of them;
		// one that waits for each answer gets it at once.
		if err == nil && br.Buffered() == 0 {
			err = bw.Flush()
		}
		if err != nil {
			return fmt.Errorf("write response: %w", err)
		}
	}
}

// answer runs one request.
func answer(op byte, payload []byte) (status byte, out []byte) {
	var (
		res []byte
		err error
	)
	switch op {
	case opHello:
		if len(payload) != 1 || payload[0] != protocolVersion {
			return statusError, fmt.Appendf(nil, "lockmigrate-pgparse speaks protocol version %d, the client %v: install the lockmigrate-pgparse of the same build", protocolVersion, payload)
		}
		return statusOK, hello()
	case opParse, opScan:
		sql := string(payload)
		if strings.IndexByte(sql, 0) >= 0 {
			// The client never sends one (Parse refuses it first): C
			// would read the text as ending there.
			return statusError, []byte("NUL byte in the text")
		}
		if op == opParse {
			var tree string
			var scanned []byte
			if tree, scanned, err = (inProcess{}).parseAndScan(sql); err == nil {
				res = joinParseScan(tree, scanned)
			}
		} else {
			res, err = inProcess{}.scanProtobuf(sql)
		}
	default:
		return statusError, fmt.Appendf(nil, "unknown op %q", op)
	}
	var se *SyntaxError
	switch {
	case errors.As(err, &se):
		return statusSyntax, encodeSyntax(se)
	case err != nil:
		return statusError, []byte(err.Error())
	}
	return statusOK, res
}
