package cli

import (
	"encoding/json"
	"os"
	"strconv"
	"unicode/utf8"

	"github.com/lockmigrate/lockmigrate/internal/config"
)

// maxTermination is Kubernetes' limit for one container's message.
const maxTermination = 4096

// termination is the one-line JSON summary of a run, written where
// Kubernetes reads a container's termination message: `kubectl describe
// pod` shows it, so a failed init container says why without anyone
// fetching its logs.
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

// tenantsTermination is the termination message's summary of a
// multi-tenant run. Failed is cut to fit the 4 KiB limit; FailedOmitted
// counts what was cut.
type tenantsTermination struct {
	Total         int               `json:"total"`
	Applied       int               `json:"applied"`
	UpToDate      int               `json:"up_to_date"`
	Skipped       int               `json:"skipped"`
	Failed        []failedTenant    `json:"failed,omitempty"`
	FailedCount   int               `json:"failed_count"`
	FailedOmitted int               `json:"failed_omitted,omitempty"`
	NotAttempted  int               `json:"not_attempted"`
	Shard         *shardTermination `json:"shard,omitempty"`
}

type failedTenant struct {
	Tenant string `json:"tenant"`
	Kind   string `json:"kind"`
}

type shardTermination struct {
	Index int `json:"index"`
	Count int `json:"count"`
}

// encode renders t in at most maxTermination bytes, shortening the list of
// applied versions and then the error message as needed.
func (t termination) encode() []byte {
	for {
		b, ok := t.appendPlain(nil)
		if !ok {
			b, _ = json.Marshal(t)
		}
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

// appendPlain appends t as json.Marshal writes it, for the summary of a
// single-target run whose strings need no escaping: every pod start of a
// Kubernetes deployment writes one, and building encoding/json's encoder
// for the type by reflection cost more than the rest of the report. ok is
// false (and nothing is appended) for anything else, which is left to
// json.Marshal.
func (t termination) appendPlain(b []byte) (out []byte, ok bool) {
	if t.Tenants != nil || !plainJSON(t.Outcome) || !plainJSON(t.ErrorKind) || !plainJSON(t.Error) ||
		!plainJSON(t.RunID) || !plainJSON(t.Version) {
		return b, false
	}
	str := func(key, v string) {
		b = append(append(append(append(b, `,"`...), key...), `":"`...), v...)
		b = append(b, '"')
	}
	num := func(key string, v int64) {
		b = strconv.AppendInt(append(append(append(b, `,"`...), key...), `":`...), v, 10)
	}
	b = append(append(append(b, `{"outcome":"`...), t.Outcome...), '"')
	num("exit_code", int64(t.ExitCode))
	if t.ErrorKind != "" {
		str("error_kind", t.ErrorKind)
	}
	if t.Error != "" {
		str("error", t.Error)
	}
	if len(t.Applied) > 0 {
		b = append(b, `,"applied":[`...)
		for i, v := range t.Applied {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, v, 10)
		}
		b = append(b, ']')
	}
	num("applied_count", int64(t.AppliedCount))
	num("schema_version", t.SchemaVersion)
	num("pending", int64(t.Pending))
	num("duration_ms", t.DurationMS)
	num("lock_wait_ms", t.LockWaitMS)
	str("run_id", t.RunID)
	str("version", t.Version)
	return append(b, '}'), true
}

// plainJSON reports whether json.Marshal writes s as is between quotes:
// printable ASCII without '"', '\\' or the characters it escapes for HTML.
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
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
func writeTermination(path string, red *redactor, t termination) {
	flags := os.O_WRONLY | os.O_TRUNC
	if path == "" {
		path = config.DefaultTerminationLog
	}
	if path != config.DefaultTerminationLog {
		flags |= os.O_CREATE
	}
	f, err := os.OpenFile(path, flags, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = f.Write(red.redact(t.encode()))
}
