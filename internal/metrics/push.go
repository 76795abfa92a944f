package metrics

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Pusher sends a run's families to a Pushgateway.
type Pusher struct {
	URL      string
	Job      string
	Grouping map[string]string
	Username string
	Password string
	Timeout  time.Duration
}

// contentType is the text exposition format, which the Pushgateway accepts
// as well as the protobuf one.
const contentType = "text/plain; version=0.0.4; charset=utf-8"

// Push sends fams with add semantics (POST): families not in fams keep the
// values earlier runs pushed. It gives up at the timeout, whatever the
// gateway does; the caller logs the error and carries on.
func (p Pusher) Push(ctx context.Context, fams []Family) error {
	target, err := p.groupURL()
	if err != nil {
		return err
	}
	for _, f := range fams {
		for _, l := range f.Labels {
			if _, ok := p.Grouping[l]; ok {
				// The gateway would refuse the push with a less helpful 400.
				return fmt.Errorf("push metrics: grouping label %q is also a label of %s", l, f.Name)
			}
		}
	}
	var body bytes.Buffer
	if err := WriteText(&body, fams); err != nil {
		return fmt.Errorf("push metrics: %w", err)
	}
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, &body)
	if err != nil {
		return fmt.Errorf("push metrics to %s: %w", redactURL(p.URL), err)
	}
	req.Header.Set("Content-Type", contentType)
	if p.Username != "" || p.Password != "" {
		req.SetBasicAuth(p.Username, p.Password)
	}
	// The client's own timeout also bounds a gateway that accepts the
	// connection and never answers; the default transport uses the system
	// roots for https:// URLs.
	resp, err := (&http.Client{Timeout: timeout}).Do(req)
	if err != nil {
		// net/http strips a password from the URL in its errors.
		return fmt.Errorf("push metrics to %s: %w", redactURL(p.URL), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("push metrics to %s: unexpected status %s: %s", redactURL(p.URL), resp.Status, strings.TrimSpace(string(msg)))
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	return nil
}

// groupURL is the URL of the group: /metrics/job/<job>{/<label>/<value>},
// each value path-escaped, or base64url-encoded with the @base64 suffix when
// it holds a "/" or is empty, as the Pushgateway's API defines.
func (p Pusher) groupURL() (string, error) {
	if p.Job == "" {
		return "", fmt.Errorf("push metrics: empty job name")
	}
	u, err := url.Parse(p.URL)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return "", fmt.Errorf("push metrics: invalid Pushgateway URL %s", redactURL(p.URL))
	}
	var b strings.Builder
	b.WriteString(strings.TrimSuffix(p.URL, "/"))
	b.WriteString("/metrics")
	component := func(name, value string) {
		b.WriteByte('/')
		b.WriteString(name)
		switch {
		case value == "":
			b.WriteString("@base64/=")
		case strings.Contains(value, "/"):
			b.WriteString("@base64/")
			b.WriteString(base64.RawURLEncoding.EncodeToString([]byte(value)))
		default:
			b.WriteByte('/')
			b.WriteString(url.PathEscape(value))
		}
	}
	component("job", p.Job)
	names := make([]string, 0, len(p.Grouping))
	for k := range p.Grouping {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		component(k, p.Grouping[k])
	}
	return b.String(), nil
}

func redactURL(u string) string {
	if i := strings.Index(u, "@"); i >= 0 {
		if j := strings.Index(u, "://"); j >= 0 && j < i {
			return u[:j+3] + "xxxxx" + u[i:]
		}
	}
	return u
}
