package metrics

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/push"
)

// Pusher sends a run's families to a Pushgateway. client_golang escapes
// the job and grouping values for the URL path as for a query string, so a
// space reaches the gateway as "+" (the hand-written code sent %20).
type Pusher struct {
	URL      string
	Job      string
	Grouping map[string]string
	Username string
	Password string
	Timeout  time.Duration
}

// Push sends the run's families with add semantics (POST): families the run
// does not carry keep the values earlier runs pushed. It gives up at the
// timeout (5 s when unset), whatever the gateway does; the caller logs the
// error and carries on.
func (p Pusher) Push(ctx context.Context, run Run) error {
	base, auth, err := p.target()
	if err != nil {
		return err
	}
	// A registry of the push's own: the default one would add the Go and
	// process collectors, which describe this short-lived process rather
	// than the migration, to the group that every replica shares.
	reg := prometheus.NewRegistry()
	for _, c := range run.Families() {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("push metrics: %w", err)
		}
	}
	if err := p.checkGrouping(reg); err != nil {
		return err
	}
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// The client's own timeout also bounds a gateway that accepts the
	// connection and never answers; the default transport uses the system
	// roots for https:// URLs.
	pusher := push.New(base, p.Job).Gatherer(reg).Client(&http.Client{Timeout: timeout})
	for k, v := range p.Grouping {
		pusher.Grouping(k, v)
	}
	if auth != nil {
		pw, _ := auth.Password()
		pusher.BasicAuth(auth.Username(), pw)
	}
	if err := pusher.AddContext(ctx); err != nil {
		return fmt.Errorf("push metrics to %s: %w", redactURL(p.URL), err)
	}
	return nil
}

// target checks the URL and the job, and returns the URL without its user
// information, and the credentials to send: the Pusher's, else those of the
// URL, as net/http would. client_golang writes the URL into its errors, so
// it never gets the password.
func (p Pusher) target() (string, *url.Userinfo, error) {
	if p.Job == "" {
		return "", nil, fmt.Errorf("push metrics: empty job name")
	}
	u, err := url.Parse(p.URL)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return "", nil, fmt.Errorf("push metrics: invalid Pushgateway URL %s", redactURL(p.URL))
	}
	auth := u.User
	if p.Username != "" || p.Password != "" {
		auth = url.UserPassword(p.Username, p.Password)
	}
	u.User = nil
	return u.String(), auth, nil
}

// checkGrouping refuses a grouping label that is also a label of a family:
// client_golang and the gateway would refuse the push with a less helpful
// message.
func (p Pusher) checkGrouping(reg *prometheus.Registry) error {
	mfs, err := reg.Gather()
	if err != nil {
		return fmt.Errorf("push metrics: %w", err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if _, ok := p.Grouping[l.GetName()]; ok {
					return fmt.Errorf("push metrics: grouping label %q is also a label of %s", l.GetName(), mf.GetName())
				}
			}
		}
	}
	return nil
}

func redactURL(u string) string {
	if i := strings.Index(u, "@"); i >= 0 {
		if j := strings.Index(u, "://"); j >= 0 && j < i {
			return u[:j+3] + "xxxxx" + u[i:]
		}
	}
	return u
}
