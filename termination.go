package main

import (
	"encoding/json"
	"os"
	"unicode/utf8"

	"github.com/lockmigrate/lockmigrate/runner"
)

// defaultTerminationLog is where Kubernetes reads a container's termination
// message; `kubectl describe pod` shows it, so a failed init container says
// why without anyone fetching its logs.
const defaultTerminationLog = "/dev/termination-log"

// maxTermination is Kubernetes' limit for one container's message.
const maxTermination = 4096

// termination is the one-line JSON summary of a run.
type termination struct {
	Outcome       string  `json:"outcome"`
	ExitCode      int     `json:"exit_code"`
	ErrorKind     string  `json:"error_kind,omitempty"`
	Error         string  `json:"error,omitempty"`
	Applied       []int64 `json:"applied,omitempty"`
	AppliedCount  int     `json:"applied_count"`
	SchemaVersion int64   `json:"schema_version"`
	Pending       int     `json:"pending"`
	DurationMS    int64   `json:"duration_ms"`
	LockWaitMS    int64   `json:"lock_wait_ms"`
	RunID         string  `json:"run_id"`
	Version       string  `json:"version"`
	// Tenants summarises a multi-tenant run.
	Tenants *tenantsTermination `json:"tenants,omitempty"`
}

func newTermination(e *env, res *runner.Result, code int, err error, durationMS int64) termination {
	t := termination{Outcome: "failed", ExitCode: code, ErrorKind: errorKind(code), DurationMS: durationMS,
		RunID: e.runID.String(), Version: version}
	if err != nil {
		t.Error = err.Error()
	}
	if res != nil {
		if err == nil {
			t.Outcome = string(res.Outcome)
		}
		for _, a := range res.Applied {
			t.Applied = append(t.Applied, a.Version)
		}
		t.AppliedCount = len(res.Applied)
		t.SchemaVersion, t.Pending, t.LockWaitMS = res.SchemaVersion, res.Pending, res.LockWait.Milliseconds()
	}
	return t
}

// encode renders t in at most maxTermination bytes, shortening the list of
// applied versions and then the error message as needed.
func (t termination) encode() []byte {
	for {
		b, _ := json.Marshal(t)
		if len(b) <= maxTermination {
			return b
		}
		over := len(b) - maxTermination
		switch {
		case len(t.Applied) > 10:
			t.Applied = t.Applied[len(t.Applied)-10:] // the latest ones; applied_count keeps the total
		case len(t.Error) > 210 && t.Tenants != nil && len(t.Tenants.Failed) > 0:
			// Keep room for the failed tenants' names: they matter more
			// than the rest of the message, which names the first ones.
			t.Error = cutUTF8(t.Error, max(len(t.Error)-over-len("…"), 200))
		case t.Tenants != nil && len(t.Tenants.Failed) > 0:
			// Dropping over/(longest entry) entries, at least one, never
			// drops more than needed and converges in a few rounds.
			longest := 0
			for _, f := range t.Tenants.Failed {
				longest = max(longest, len(f.Tenant)+len(f.Kind))
			}
			drop := min(len(t.Tenants.Failed), max(1, over/(longest+len(`{"tenant":"","kind":""},`)+8)))
			t.Tenants.Failed = t.Tenants.Failed[:len(t.Tenants.Failed)-drop]
			t.Tenants.FailedOmitted += drop
		case len(t.Error) > 100:
			t.Error = cutUTF8(t.Error, max(len(t.Error)-over-len("…")-16, 80))
		default:
			t.Applied = nil
			t.Error = ""
		}
	}
}

// cutUTF8 shortens s to at most n bytes on a rune boundary, marked "…".
func cutUTF8(s string, n int) string {
	if n >= len(s) {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// writeTermination writes the summary, with secrets redacted. Outside
// Kubernetes the default path does not exist and is not created; any
// failure is ignored, since the summary is a convenience.
func (e *env) writeTermination(t termination) {
	path, flags := e.termLog, os.O_WRONLY|os.O_TRUNC
	if path == "" {
		path = defaultTerminationLog
	}
	if path != defaultTerminationLog {
		flags |= os.O_CREATE
	}
	f, err := os.OpenFile(path, flags, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = f.Write(e.red.redact(t.encode()))
}
