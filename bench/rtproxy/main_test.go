package main

import (
	"encoding/binary"
	"slices"
	"testing"
)

// msg builds a typed protocol message.
func msg(typ byte, body string) []byte {
	b := []byte{typ, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(4+len(body)))
	return append(b, body...)
}

// untyped builds a start-up phase message with the given code.
func untyped(code uint32, body string) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint32(b, uint32(8+len(body)))
	binary.BigEndian.PutUint32(b[4:], code)
	return append(b, body...)
}

func TestTurns(t *testing.T) {
	s := &session{untyped: true}
	server := func() { s.serverSpoke = true }

	s.clientBytes(untyped(80877103, ""))            // SSLRequest
	server()                                        // 'N'
	s.clientBytes(untyped(196608, "user\x00x\x00")) // StartupMessage
	server()
	s.clientBytes(msg('Q', "SELECT  1\n ;\x00"))
	server()
	// A pipelined extended query, split across two writes: one turn.
	pipe := append(append(append(msg('P', "\x00INSERT INTO t VALUES ($1)\x00\x00\x00"), msg('B', "xx")...), msg('E', "\x00\x00\x00\x00\x00")...), msg('S', "")...)
	s.clientBytes(pipe[:7])
	s.clientBytes(pipe[7:])
	server()
	s.clientBytes(msg('X', ""))

	want := [][]string{
		{"SSLRequest"},
		{"Startup"},
		{"Q SELECT 1 ;"},
		{"P INSERT INTO t VALUES ($1)", "B", "E", "S"},
		{"X"},
	}
	if len(s.turns) != len(want) {
		t.Fatalf("got %d turns %q, want %d", len(s.turns), s.turns, len(want))
	}
	for i := range want {
		if !slices.Equal(s.turns[i], want[i]) {
			t.Errorf("turn %d: got %q, want %q", i+1, s.turns[i], want[i])
		}
	}
}
