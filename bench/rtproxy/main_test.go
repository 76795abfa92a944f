package main

import (
	"encoding/binary"
	"io"
	"net"
	"os"
	"path/filepath"
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

// TestServerBytes runs one connection through the proxy to a stand-in server
// that answers an SSLRequest with "N" and a notice of 9 more bytes: the
// summary line must count the 10 bytes the server sent.
func TestServerBytes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if _, err := io.ReadFull(c, make([]byte, 8)); err != nil {
			return
		}
		c.Write([]byte("N123456789"))
		io.Copy(io.Discard, c)
	}()
	p := &proxy{target: ln.Addr().String(), out: t.TempDir()}
	client, proxied := net.Pipe()
	p.wg.Add(1)
	go p.serve(7, proxied)
	if _, err := client.Write(untyped(80877103, "")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(client, make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	client.Close()
	p.wg.Wait()
	b, err := os.ReadFile(filepath.Join(p.out, "summary.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), "7\t1\t10\n"; got != want {
		t.Errorf("summary.tsv: got %q, want %q", got, want)
	}
}
