package pgparse

import (
	"errors"
	"unicode/utf8"
)

// token is one lexical token of libpg_query's scanner.
type token struct {
	start, end int
	comment    bool
	// char is the character of a one-character token (';', '('), else 0.
	char byte
}

// Token is one lexical token of PostgreSQL's lexer: its byte range, whether
// it is a comment, and the character of a one-character token (';', '(',
// ')'; 0 for others).
type Token struct {
	Start, End int
	Comment    bool
	Char       byte
}

// Scan runs PostgreSQL's lexer alone over sql: it accepts any text the
// lexer can tokenize, valid statements or not.
func Scan(sql string) ([]Token, error) { return scanTokens(current(), sql) }

func scanTokens(b backend, sql string) ([]Token, error) {
	if err := b.unavailable(); err != nil {
		return nil, err
	}
	if se := nulError(sql); se != nil {
		return nil, se
	}
	parses.Add(1)
	toks, err := scan(b, sql)
	if err != nil {
		return nil, located(sql, err)
	}
	out := make([]Token, len(toks))
	for i, t := range toks {
		out[i] = Token{Start: t.start, End: t.end, Comment: t.comment, Char: t.char}
	}
	return out, nil
}

// The scanner's token numbers for comments (pg_query.proto, enum Token).
const (
	tokSQLComment = 275
	tokCComment   = 276
)

var errProtobuf = errors.New("pgparse: malformed scan result")

// scan runs PostgreSQL's lexer over sql. Its result is a protobuf
// ScanResult {1: version, 2: repeated ScanToken {1: start, 2: end, 4:
// token, 5: keyword_kind}}, decoded here by hand: four varint fields do not
// justify linking the generated types.
func scan(be backend, sql string) ([]token, error) {
	b, err := be.scanProtobuf(sql)
	if err != nil {
		return nil, err
	}
	return decodeScan(b)
}

// decodeScan decodes the lexer's protobuf ScanResult.
func decodeScan(b []byte) ([]token, error) {
	var (
		toks []token
		err  error
	)
	for len(b) > 0 {
		field, wire, n := tag(b)
		if n <= 0 {
			return nil, errProtobuf
		}
		b = b[n:]
		if field != 2 || wire != 2 {
			if b, err = skip(b, wire); err != nil {
				return nil, err
			}
			continue
		}
		l, n := uvarint(b)
		if n <= 0 || int(l) > len(b)-n {
			return nil, errProtobuf
		}
		t, err := scanToken(b[n : n+int(l)])
		if err != nil {
			return nil, err
		}
		toks = append(toks, t)
		b = b[n+int(l):]
	}
	return toks, nil
}

func scanToken(b []byte) (token, error) {
	var t token
	for len(b) > 0 {
		field, wire, n := tag(b)
		if n <= 0 {
			return t, errProtobuf
		}
		b = b[n:]
		if wire != 0 {
			var err error
			if b, err = skip(b, wire); err != nil {
				return t, err
			}
			continue
		}
		v, n := uvarint(b)
		if n <= 0 {
			return t, errProtobuf
		}
		b = b[n:]
		switch field {
		case 1:
			t.start = int(v)
		case 2:
			t.end = int(v)
		case 4:
			t.comment = v == tokSQLComment || v == tokCComment
			if v < 128 {
				t.char = byte(v)
			}
		}
	}
	return t, nil
}

func tag(b []byte) (field, wire uint64, n int) {
	v, n := uvarint(b)
	return v >> 3, v & 7, n
}

func uvarint(b []byte) (uint64, int) {
	var v uint64
	for i := 0; i < len(b) && i < 10; i++ {
		v |= uint64(b[i]&0x7f) << (7 * i)
		if b[i] < 0x80 {
			return v, i + 1
		}
	}
	return 0, 0
}

// skip drops a field of the given wire type other than the ones decoded.
func skip(b []byte, wire uint64) ([]byte, error) {
	switch wire {
	case 0:
		if _, n := uvarint(b); n > 0 {
			return b[n:], nil
		}
	case 1:
		if len(b) >= 8 {
			return b[8:], nil
		}
	case 2:
		if l, n := uvarint(b); n > 0 && int(l) <= len(b)-n {
			return b[n+int(l):], nil
		}
	case 5:
		if len(b) >= 4 {
			return b[4:], nil
		}
	}
	return nil, errProtobuf
}

// byteOffset converts the parser's 0-based character position to a byte
// offset of s.
func byteOffset(s string, chars int) int {
	off := 0
	for i := 0; i < chars && off < len(s); i++ {
		_, size := utf8.DecodeRuneInString(s[off:])
		off += size
	}
	return off
}
