package cli

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
)

// newLogger returns the run's one logger. Every record is one line on w.
func newLogger(format, level string, w io.Writer) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level)) // validated by config; info otherwise
	opts := &slog.HandlerOptions{Level: lv}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// redactor replaces secrets in everything written through it. Errors from
// drivers and libraries are logged as they come, and one of them quoting a
// connection string must not leak its password; filtering the output stream
// covers every path at once, whatever wrote the text.
type redactor struct {
	mu  sync.Mutex
	w   io.Writer
	old [][]byte
}

const redacted = "xxxxx"

func newRedactor(w io.Writer, secrets ...string) *redactor {
	r := &redactor{w: w}
	r.add(secrets...)
	return r
}

// add registers more secrets, in every form they may be printed in: as is,
// URL-escaped (query, path, userinfo) and JSON-escaped.
func (r *redactor) add(secrets ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range secrets {
		if s == "" {
			continue
		}
		jsonForm := s // as is when json.Marshal would not escape it (no encoding/json at every start)
		if !plainJSON(s) {
			b, _ := json.Marshal(s)
			jsonForm = strings.Trim(string(b), `"`)
		}
		for _, form := range []string{s, url.QueryEscape(s), url.PathEscape(s),
			(&url.URL{User: url.UserPassword("", s)}).User.String()[1:], // userinfo escaping
			jsonForm} {
			if form != "" && !slices.ContainsFunc(r.old, func(b []byte) bool { return string(b) == form }) {
				r.old = append(r.old, []byte(form))
			}
		}
	}
}

// redact returns p with every secret replaced. A form p does not contain
// is skipped: bytes.ReplaceAll copies p even when it replaces nothing, and
// a run writes one line per migration through here with up to five forms
// of each secret.
func (r *redactor) redact(p []byte) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.old {
		if bytes.Contains(p, s) {
			p = bytes.ReplaceAll(p, s, []byte(redacted))
		}
	}
	return p
}

func (r *redactor) Write(p []byte) (int, error) {
	out := r.redact(p)
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := r.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}
