package metrics

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/push"
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

// Push sends reg with add semantics (POST): families not in reg keep the
// values earlier runs pushed. It gives up at the timeout, whatever the
// gateway does; the caller logs the error and carries on.
func (p Pusher) Push(ctx context.Context, reg *prometheus.Registry) error {
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// The client's own timeout also bounds a gateway that accepts the
	// connection and never answers; the default transport uses the system
	// roots for https:// URLs.
	client := &http.Client{Timeout: timeout}
	pu := push.New(p.URL, p.Job).Gatherer(reg).Client(client)
	for k, v := range p.Grouping {
		pu = pu.Grouping(k, v)
	}
	if p.Username != "" || p.Password != "" {
		pu = pu.BasicAuth(p.Username, p.Password)
	}
	if err := pu.AddContext(ctx); err != nil {
		return fmt.Errorf("push metrics to %s: %w", redactURL(p.URL), err)
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
