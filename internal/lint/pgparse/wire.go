package pgparse

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// The protocol between a binary built without cgo and its parser helper
// (cmd/lockmigrate-pgparse), over the helper's stdin and stdout. Both ends
// live in this package (Serve in the cgo build, Client in every build), so
// the framing exists once.
//
// A request is one byte op, a uint32 big-endian payload length and the
// payload; a response is one byte status, a uint32 length and the payload.
// The first request is opHello, whose payload is the client's
// protocolVersion; the helper answers helloMagic followed by its own, and
// either side refuses a mismatch. The helper exits 0 at EOF on stdin.
const (
	// protocolVersion changes with any change to the framing or to the
	// meaning of an op.
	protocolVersion = 2
	helloMagic      = "lockmigrate-pgparse"

	opHello byte = 'H'
	// opParse's payload is SQL text; its result libpg_query's JSON parse
	// tree and the lexer's tokens (parseAndScan): the tree's uint32
	// big-endian length, the tree, the protobuf ScanResult. Parsing needs
	// both, so they come in one round trip.
	opParse byte = 'P'
	// opScan's payload is SQL text; its result the lexer's protobuf
	// ScanResult (scanProtobuf).
	opScan byte = 'S'

	statusOK byte = 'o'
	// statusSyntax's payload is the SyntaxError: its int32 big-endian
	// Offset (the parser's character position, -1 unknown), then Msg.
	statusSyntax byte = 's'
	// statusError's payload is the message of any other error.
	statusError byte = 'e'

	// maxFrame bounds a payload: a migration file, or its parse tree.
	maxFrame = 1 << 30
)

// errFrame is a frame that breaks the protocol.
var errFrame = errors.New("malformed frame")

// writeFrame writes one frame and flushes it.
func writeFrame(w *bufio.Writer, kind byte, payload []byte) error {
	if err := bufferFrame(w, kind, payload); err != nil {
		return err
	}
	return w.Flush()
}

// bufferFrame writes one frame to w's buffer, which sends it only once
// full: the caller flushes.
func bufferFrame(w *bufio.Writer, kind byte, payload []byte) error {
	if len(payload) > maxFrame {
		return fmt.Errorf("payload of %d bytes is over the protocol's %d", len(payload), maxFrame)
	}
	var hdr [5]byte
	hdr[0] = kind
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(payload)))
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	_, err := w.Write(payload)
	return err
}

// readFrame reads one frame. EOF before its first byte is io.EOF; in the
// middle of one, io.ErrUnexpectedEOF. The payload buffer grows with the
// bytes that arrive, so a length read from garbage allocates nothing
// beyond them.
func readFrame(r *bufio.Reader) (kind byte, payload []byte, err error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > maxFrame {
		return 0, nil, fmt.Errorf("%w: length %d over %d", errFrame, n, maxFrame)
	}
	var buf bytes.Buffer
	buf.Grow(int(min(n, 1<<20)))
	if _, err := io.CopyN(&buf, r, int64(n)); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return hdr[0], buf.Bytes(), nil
}

// hello is the helper's answer to opHello.
func hello() []byte { return append([]byte(helloMagic), protocolVersion) }

// checkHello reads the version out of a helper's answer to opHello.
func checkHello(p []byte) error {
	if !bytes.HasPrefix(p, []byte(helloMagic)) || len(p) != len(helloMagic)+1 {
		return fmt.Errorf("%w: the answer to the handshake is not lockmigrate-pgparse's (%q)", errFrame, p[:min(len(p), 40)])
	}
	if v := p[len(helloMagic)]; v != protocolVersion {
		return fmt.Errorf("it speaks protocol version %d, this lockmigrate %d: install the lockmigrate-pgparse of the same build", v, protocolVersion)
	}
	return nil
}

// encodeSyntax is a syntax error's payload.
func encodeSyntax(se *SyntaxError) []byte {
	off := int32(-1)
	if se.Offset >= 0 && se.Offset <= math.MaxInt32 {
		off = int32(se.Offset)
	}
	return append(binary.BigEndian.AppendUint32(nil, uint32(off)), se.Msg...)
}

// decodeSyntax reads a statusSyntax payload.
func decodeSyntax(p []byte) (*SyntaxError, error) {
	if len(p) < 4 {
		return nil, fmt.Errorf("%w: syntax error of %d bytes", errFrame, len(p))
	}
	return &SyntaxError{Offset: int(int32(binary.BigEndian.Uint32(p))), Msg: string(p[4:])}, nil
}

// joinParseScan is the result of opParse.
func joinParseScan(tree string, scanned []byte) []byte {
	out := make([]byte, 4, 4+len(tree)+len(scanned))
	binary.BigEndian.PutUint32(out, uint32(len(tree)))
	return append(append(out, tree...), scanned...)
}

// splitParseScan reads the result of opParse.
func splitParseScan(b []byte) (tree string, scanned []byte, err error) {
	if len(b) < 4 || uint64(binary.BigEndian.Uint32(b)) > uint64(len(b)-4) {
		return "", nil, fmt.Errorf("%w: parse-and-scan result of %d bytes", errFrame, len(b))
	}
	n := 4 + int(binary.BigEndian.Uint32(b))
	return string(b[4:n]), b[n:], nil
}
