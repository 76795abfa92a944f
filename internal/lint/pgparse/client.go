package pgparse

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// HelperName is the parser helper's file name, next to the executable.
const HelperName = "lockmigrate-pgparse"

// helloTimeout bounds the handshake: a file at the helper's path that is
// not the helper must not hang the run.
var helloTimeout = 10 * time.Second

// HelperPath is where a binary built without cgo looks for its parser:
// HelperName in the directory of the running executable, symlinks
// resolved (so a symlink to bin/lockmigrate finds bin/lockmigrate-pgparse).
func HelperPath() (string, error) {
	exe, err := os.Executable()
	if err == nil {
		exe, err = filepath.EvalSymlinks(exe)
	}
	if err != nil {
		return "", fmt.Errorf("find the running executable: %w", err)
	}
	return filepath.Join(filepath.Dir(exe), HelperName), nil
}

// Client is the parser run by a helper process (cmd/lockmigrate-pgparse)
// over pipes: started on the first Parse or Scan, kept until Close (or the
// exit of this process, which the helper sees as EOF), one request at a
// time. A helper that exits or breaks the protocol fails the call in
// flight with ErrHelper; the next call starts a new one.
type Client struct {
	path string

	mu   sync.Mutex
	proc *helperProc
	// startErr is the failure of a start by prestart, for the next call
	// to report instead of trying again (a helper that does not answer
	// would otherwise cost the handshake's timeout twice).
	startErr error
}

// NewClient is a Client of the helper binary at path. It starts nothing.
func NewClient(path string) *Client { return &Client{path: path} }

// Path is the helper binary's path.
func (c *Client) Path() string { return c.path }

// Parse is the package's Parse through the helper.
func (c *Client) Parse(sql string) ([]Stmt, error) { return parse(c, sql) }

// Scan is the package's Scan through the helper.
func (c *Client) Scan(sql string) ([]Token, error) { return scanTokens(c, sql) }

// PID is the running helper's process id, 0 when none runs (tests kill it
// to show a crash is an error, not a hang).
func (c *Client) PID() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil {
		return 0
	}
	return c.proc.cmd.Process.Pid
}

// Close stops the helper, if one runs: it closes its stdin, on which it
// exits, and waits for it (killing it after helloTimeout).
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil {
		return nil
	}
	p := c.proc
	c.proc = nil
	p.in.Close()
	t := time.AfterFunc(helloTimeout, func() { p.cmd.Process.Kill() })
	defer t.Stop()
	if err := p.cmd.Wait(); err != nil {
		return fmt.Errorf("%w: %s: %w%s", ErrHelper, c.path, err, p.stderr.tail())
	}
	return nil
}

func (c *Client) unavailable() error {
	c.mu.Lock()
	running := c.proc != nil
	c.mu.Unlock()
	if running {
		return nil
	}
	fi, err := os.Stat(c.path)
	if err == nil && (!fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0) {
		err = errors.New("not an executable file")
	}
	if err != nil {
		return c.missing(err)
	}
	return nil
}

// missing is the error of an absent helper: where it was looked for, and
// how to get one.
func (c *Client) missing(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		err = errors.New("no such file")
	}
	return fmt.Errorf("%w, which this lockmigrate (built without cgo) runs as %s next to its executable: %s: %w; "+
		"install the %s of the same build there (make build puts both in bin/, the image has /%s; "+
		"or build lockmigrate with cgo, which links the parser in)", ErrUnavailable, HelperName, c.path, err, HelperName, HelperName)
}

func (c *Client) scanProtobuf(sql string) ([]byte, error) { return c.call(opScan, sql) }

func (c *Client) parseAndScan(sql string) (string, []byte, error) {
	out, err := c.call(opParse, sql)
	if err != nil {
		return "", nil, err
	}
	tree, scanned, err := splitParseScan(out)
	if err != nil {
		return "", nil, fmt.Errorf("%w: %s: %w", ErrHelper, c.path, err)
	}
	return tree, scanned, nil
}

// prestart starts the helper in a goroutine if none runs (Prestart). It
// takes mu before it returns, and the goroutine releases it once started,
// so the next call waits for that start; a call in flight (mu held) starts
// the helper itself if it must, so there is nothing to do then.
//
// A helper that is not there is left to the call, which reports it
// (unavailable) without trying a start: forking a process that cannot
// exec would only cost the run time.
func (c *Client) prestart() {
	if c.unavailable() != nil || !c.mu.TryLock() {
		return
	}
	go func() {
		defer c.mu.Unlock()
		if c.proc != nil || c.startErr != nil {
			return
		}
		c.proc, c.startErr = c.start()
	}()
}

// call runs one request, starting the helper first if none runs.
func (c *Client) call(op byte, sql string) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.running(); err != nil {
		return nil, err
	}
	out, reqErr, err := c.proc.roundTrip(op, []byte(sql))
	if err != nil {
		return nil, c.broken(err)
	}
	return out, reqErr
}

// running starts the helper if none runs; c.mu is held.
func (c *Client) running() error {
	if c.proc != nil {
		return nil
	}
	if err := c.startErr; err != nil {
		c.startErr = nil
		return err
	}
	p, err := c.start()
	if err != nil {
		return err
	}
	c.proc = p
	return nil
}

// broken stops a helper that failed a request and describes how; c.mu is
// held. The next call starts a new one.
func (c *Client) broken(err error) error {
	tail := c.proc.stop()
	c.proc = nil
	return fmt.Errorf("%w: %s: %w%s", ErrHelper, c.path, err, tail)
}

// parseAndScanAll sends every text as one opParse request, all of them
// before the first answer is read (the helper answers in order), and hands
// each answer to each as it arrives. One request at a time cost a round
// trip through two pipes per file, in which both processes slept and
// woke: about half of a lint of 1,000 small files (docs/lint.md). Now the
// helper parses the next texts while this process decodes the trees of
// the ones before. A writer goroutine sends, so that neither pipe can fill
// up with nobody reading it.
func (c *Client) parseAndScanAll(sqls []string, each func(i int, tree string, scanned []byte, err error)) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.running(); err != nil {
		return err
	}
	p := c.proc
	sent := make(chan error, 1)
	go func() { sent <- p.sendAll(opParse, sqls) }()
	for i := range sqls {
		out, reqErr, err := p.receive()
		var tree string
		var scanned []byte
		if err == nil && reqErr == nil {
			tree, scanned, err = splitParseScan(out)
		}
		if err != nil {
			err = c.broken(err) // closes the pipes: the writer ends
			<-sent
			return err
		}
		each(i, tree, scanned, reqErr)
	}
	// Every answer came, so every request went out.
	return <-sent
}

// start starts the helper and shakes hands with it.
func (c *Client) start() (*helperProc, error) {
	cmd := exec.Command(c.path)
	// The helper needs no environment: DATABASE_URL and its password stay
	// in this process.
	cmd.Env = []string{}
	p := &helperProc{cmd: cmd, stderr: &tailBuffer{max: 2048}}
	cmd.Stderr = p.stderr
	var err error
	if p.in, err = cmd.StdinPipe(); err == nil {
		p.out, err = cmd.StdoutPipe()
	}
	if err == nil {
		err = cmd.Start()
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil, c.missing(err)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: start %s: %w", ErrHelper, c.path, err)
	}
	p.w, p.r = bufio.NewWriterSize(p.in, 64<<10), bufio.NewReaderSize(p.out, 64<<10)
	if err := p.hello(); err != nil {
		return nil, fmt.Errorf("%w: %s refused: %w%s", ErrHelper, c.path, err, p.stop())
	}
	return p, nil
}

// helperProc is one running helper.
type helperProc struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    io.ReadCloser
	w      *bufio.Writer
	r      *bufio.Reader
	stderr *tailBuffer
}

// hello is the handshake, bounded by helloTimeout.
func (p *helperProc) hello() error {
	if f, ok := p.out.(*os.File); ok {
		if f.SetReadDeadline(time.Now().Add(helloTimeout)) == nil {
			defer f.SetReadDeadline(time.Time{})
		}
	}
	out, reqErr, err := p.roundTrip(opHello, []byte{protocolVersion})
	if err == nil && reqErr != nil {
		err = reqErr
	}
	if err == nil {
		err = checkHello(out)
	}
	return err
}

// roundTrip sends one request and reads its response: reqErr is the
// request's own error (a syntax error), err a broken helper.
func (p *helperProc) roundTrip(op byte, payload []byte) (out []byte, reqErr, err error) {
	if err := writeFrame(p.w, op, payload); err != nil {
		return nil, nil, fmt.Errorf("send the request: %w", err)
	}
	return p.receive()
}

// sendAll sends one op request per text. The first is flushed at once, so
// that the helper starts on it; the rest go out as the buffer fills, and
// with the last.
func (p *helperProc) sendAll(op byte, sqls []string) error {
	for i, sql := range sqls {
		err := bufferFrame(p.w, op, []byte(sql))
		if err == nil && (i == 0 || i == len(sqls)-1) {
			err = p.w.Flush()
		}
		if err != nil {
			return fmt.Errorf("send the request: %w", err)
		}
	}
	return nil
}

// receive reads the response to the oldest request not yet answered.
func (p *helperProc) receive() (out []byte, reqErr, err error) {
	status, out, err := readFrame(p.r)
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, nil, fmt.Errorf("read the response: %w", err)
	}
	switch status {
	case statusOK:
		return out, nil, nil
	case statusSyntax:
		se, err := decodeSyntax(out)
		return nil, se, err
	case statusError:
		return nil, errors.New(string(out)), nil
	}
	return nil, nil, fmt.Errorf("%w: status %q", errFrame, status)
}

// stop kills the helper, reaps it and describes how it ended.
func (p *helperProc) stop() string {
	p.cmd.Process.Kill()
	p.in.Close()
	err := p.cmd.Wait()
	if err == nil {
		return " (the helper ended: exit status 0)" + p.stderr.tail()
	}
	return " (the helper ended: " + err.Error() + ")" + p.stderr.tail()
}

// tailBuffer keeps the last max bytes of the helper's stderr, for errors.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = t.b[len(t.b)-t.max:]
	}
	return len(p), nil
}

// tail is the kept stderr as the end of an error message, "" when empty.
func (t *tailBuffer) tail() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := strings.TrimSpace(string(t.b))
	if s == "" {
		return ""
	}
	return "; its stderr: " + s
}
