// Command rtproxy is the benchmark's round-trip counter: a TCP proxy between
// a migrator and PostgreSQL that records, for every client connection, each
// round trip and the protocol messages the client sent in it.
//
// A round trip ("turn") is a burst of bytes the client sends after the server
// last sent something (or the first burst of the connection): the client must
// wait for an answer before it can go on, so latency is paid once per turn.
// Pipelined messages (Parse+Bind+Execute+Sync in one write, or a pgx batch)
// are one turn; a prepare-then-execute is two. A final burst made only of
// Terminate ('X') gets no answer and is not counted. The SSLRequest
// negotiation, the startup message and every authentication exchange count,
// so a connection's turns include its set-up.
//
// Usage:
//
//	rtproxy -target 127.0.0.1:5432 -out DIR
//
// It listens on a free loopback port and writes it to DIR/port, then writes
// DIR/conn-NNNN.txt for every connection when it closes (one line per turn:
// number, tab, the messages, e.g. "Q BEGIN" or "P INSERT ... | B | D | E | S")
// and appends "conn turns server-bytes" to DIR/summary.tsv (server-bytes:
// what the server sent on the connection, the client's read volume). It stops
// on SIGINT or SIGTERM after the open connections close (at most 5 s).
package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	target := flag.String("target", "", "PostgreSQL address, host:port")
	out := flag.String("out", "", "directory for the records")
	flag.Parse()
	if *target == "" || *out == "" {
		log.Fatal("rtproxy: -target and -out are required")
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	// Written atomically: the caller polls for this file.
	tmp := filepath.Join(*out, "port.tmp")
	if err := os.WriteFile(tmp, []byte(fmt.Sprintln(port)), 0o644); err != nil {
		log.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(*out, "port")); err != nil {
		log.Fatal(err)
	}

	p := &proxy{target: *target, out: *out}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		ln.Close()
	}()
	for id := 1; ; id++ {
		c, err := ln.Accept()
		if err != nil {
			break
		}
		p.wg.Add(1)
		go p.serve(id, c)
	}
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		log.Print("rtproxy: connections still open after 5 s; their records are lost")
	}
}

type proxy struct {
	target string
	out    string
	wg     sync.WaitGroup
	sumMu  sync.Mutex
}

// session is one proxied connection.
type session struct {
	mu          sync.Mutex
	serverSpoke bool  // the server sent bytes since the current turn began
	serverBytes int64 // bytes the server sent on this connection
	turns       [][]string
	// client-side protocol parser state
	buf     []byte
	untyped bool // expecting a startup-phase message (no type byte)
}

func (p *proxy) serve(id int, client net.Conn) {
	defer p.wg.Done()
	defer client.Close()
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		log.Printf("rtproxy: dial %s: %v", p.target, err)
		return
	}
	defer server.Close()
	s := &session{untyped: true}

	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // server -> client
		defer wg.Done()
		buf := make([]byte, 64<<10)
		for {
			n, err := server.Read(buf)
			if n > 0 {
				// Mark before forwarding, so the client's reaction to these
				// bytes is always seen as a new turn.
				s.mu.Lock()
				s.serverSpoke = true
				s.serverBytes += int64(n)
				s.mu.Unlock()
				if _, werr := client.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		client.Close()
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := client.Read(buf)
		if n > 0 {
			s.clientBytes(buf[:n])
			if _, werr := server.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil { // EOF or a reset: the record is written either way
			break
		}
	}
	server.Close()
	wg.Wait()
	p.write(id, s)
}

func (s *session) clientBytes(b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.turns) == 0 || s.serverSpoke {
		s.turns = append(s.turns, nil)
		s.serverSpoke = false
	}
	s.buf = append(s.buf, b...)
	for {
		msg, ok := s.next()
		if !ok {
			return
		}
		t := len(s.turns) - 1
		s.turns[t] = append(s.turns[t], msg)
	}
}

// next parses one complete client message off s.buf and describes it.
func (s *session) next() (string, bool) {
	if s.untyped {
		if len(s.buf) < 8 {
			return "", false
		}
		n := int(binary.BigEndian.Uint32(s.buf))
		if n < 8 || len(s.buf) < n {
			return "", false
		}
		code := binary.BigEndian.Uint32(s.buf[4:])
		s.buf = s.buf[n:]
		switch code {
		case 80877103:
			return "SSLRequest", true
		case 80877104:
			return "GSSENCRequest", true
		case 80877102:
			return "CancelRequest", true
		}
		s.untyped = false
		return "Startup", true
	}
	if len(s.buf) < 5 {
		return "", false
	}
	n := int(binary.BigEndian.Uint32(s.buf[1:]))
	if len(s.buf) < 1+n {
		return "", false
	}
	typ, body := s.buf[0], s.buf[5:1+n]
	s.buf = s.buf[1+n:]
	switch typ {
	case 'Q':
		return "Q " + abbrev(cstring(body)), true
	case 'P':
		name := cstring(body)
		query := cstring(body[min(len(name)+1, len(body)):])
		return "P " + abbrev(query), true
	}
	return string(typ), true
}

func cstring(b []byte) string {
	if i := strings.IndexByte(string(b), 0); i >= 0 {
		return string(b[:i])
	}
	return string(b)
}

// abbrev collapses whitespace and keeps the first 100 characters.
func abbrev(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > 100 {
		return string(r[:100]) + "…"
	}
	return s
}

func (p *proxy) write(id int, s *session) {
	s.mu.Lock()
	turns, fromServer := s.turns, s.serverBytes
	s.mu.Unlock()
	// A last burst made only of Terminate gets no answer.
	if k := len(turns); k > 0 && len(turns[k-1]) == 1 && turns[k-1][0] == "X" {
		turns = turns[:k-1]
	}
	var b strings.Builder
	for i, t := range turns {
		fmt.Fprintf(&b, "%d\t%s\n", i+1, strings.Join(t, " | "))
	}
	if err := os.WriteFile(filepath.Join(p.out, fmt.Sprintf("conn-%04d.txt", id)), []byte(b.String()), 0o644); err != nil {
		log.Print(err)
	}
	p.sumMu.Lock()
	defer p.sumMu.Unlock()
	f, err := os.OpenFile(filepath.Join(p.out, "summary.tsv"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		log.Print(err)
		return
	}
	fmt.Fprintf(f, "%d\t%d\t%d\n", id, len(turns), fromServer)
	f.Close()
}
