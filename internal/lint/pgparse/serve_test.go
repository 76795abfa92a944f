//go:build cgo

package pgparse

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

// TestClientAgreesInProcess: the helper's results are the linked-in
// parser's, statement by statement, token by token, error by error.
func TestClientAgreesInProcess(t *testing.T) {
	c := newClient(t)
	n := 0
	for name, sql := range corpus(t) {
		s1, e1 := Parse(sql)
		s2, e2 := c.Parse(sql)
		if !reflect.DeepEqual(s1, s2) || !sameError(e1, e2) {
			t.Errorf("%s: Parse in process %d statements, %v; through the helper %d, %v", name, len(s1), e1, len(s2), e2)
		}
		t1, e1 := Scan(sql)
		t2, e2 := c.Scan(sql)
		if !reflect.DeepEqual(t1, t2) || !sameError(e1, e2) {
			t.Errorf("%s: Scan in process %d tokens, %v; through the helper %d, %v", name, len(t1), e1, len(t2), e2)
		}
		n += len(s1)
	}
	if n < 50 {
		t.Fatalf("only %d statements parsed: the corpus compares too little", n)
	}
}

func sameError(a, b error) bool {
	var sa, sb *SyntaxError
	if errors.As(a, &sa) || errors.As(b, &sb) {
		return errors.As(a, &sa) && errors.As(b, &sb) && *sa == *sb
	}
	return (a == nil) == (b == nil) && (a == nil || a.Error() == b.Error())
}

// TestServe runs the helper's loop in process: answers to each op, an
// unknown op and a version mismatch answered with an error, and nothing
// but frames written.
func TestServe(t *testing.T) {
	var in bytes.Buffer
	w := bufio.NewWriter(&in)
	for _, f := range []struct {
		op      byte
		payload string
	}{{opHello, string(rune(protocolVersion))}, {opParse, "SELECT 1"}, {opScan, "SELECT 1"}, {opParse, "SELEC 1"}, {'?', ""},
		{opHello, string(rune(protocolVersion - 1))}, {opParse, "SELECT\x00"}} {
		if err := writeFrame(w, f.op, []byte(f.payload)); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	if err := Serve(&in, &out); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(&out)
	want := []byte{statusOK, statusOK, statusOK, statusSyntax, statusError, statusError, statusError}
	tree, _ := inProcess{}.parseJSON("SELECT 1")
	scanned, _ := inProcess{}.scanProtobuf("SELECT 1")
	for i, st := range want {
		got, payload, err := readFrame(r)
		if err != nil || got != st {
			t.Fatalf("response %d: status %q (%v), want %q; %q", i, got, err, st, payload)
		}
		if i == 1 {
			if gt, gs, err := splitParseScan(payload); err != nil || gt != tree || !bytes.Equal(gs, scanned) {
				t.Fatalf("parse and scan: %q %q %v, want %q %q", gt, gs, err, tree, scanned)
			}
		}
		if i == 3 {
			if se, err := decodeSyntax(payload); err != nil || se.Offset != 0 || !strings.Contains(se.Msg, "SELEC") {
				t.Fatalf("syntax error: %+v, %v", se, err)
			}
		}
	}
	if _, _, err := readFrame(r); err != io.EOF {
		t.Fatalf("after the responses: %v, want EOF", err)
	}
	if err := Serve(strings.NewReader("P\x00\x00"), io.Discard); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("a truncated request: %v", err)
	}
}

// TestSplitParseScan: the combined result's framing, and the lengths that
// break it.
func TestSplitParseScan(t *testing.T) {
	tree, scanned, err := splitParseScan(joinParseScan(`{"stmts":[]}`, []byte{8, 1}))
	if err != nil || tree != `{"stmts":[]}` || !bytes.Equal(scanned, []byte{8, 1}) {
		t.Fatalf("round trip: %q %v %v", tree, scanned, err)
	}
	for _, b := range [][]byte{nil, {0, 0, 0}, {0, 0, 0, 5, 'a'}, {0xff, 0xff, 0xff, 0xff}} {
		if _, _, err := splitParseScan(b); !errors.Is(err, errFrame) {
			t.Errorf("%v: %v, want errFrame", b, err)
		}
	}
}
