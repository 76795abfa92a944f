// Package rollout waits, before a contract migration runs, until the
// application's rollout is complete: every Deployment and StatefulSet
// named has all its replicas on the current revision and available, and no
// pod of an older revision is left, not even a terminating one still
// serving its last requests.
//
// It talks to the Kubernetes API with a minimal in-cluster client (the
// service account token and CA, KUBERNETES_SERVICE_HOST/PORT, two GET
// requests per workload and poll) instead of k8s.io/client-go: the same
// binary is every replica's init container, and client-go's package
// initialisation (its API type registrations) would cost every one of those
// starts, which never talk to Kubernetes. Nothing here runs until a
// contract run with workloads to wait for calls Waiter.Wait.
package rollout

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DefaultServiceAccountDir is where Kubernetes mounts a pod's service
// account token, CA bundle and namespace.
const DefaultServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// requestTimeout bounds one API request; a slow one is retried at the next
// poll.
const requestTimeout = 10 * time.Second

// Client reads workloads and pods of one namespace from the API server.
type Client struct {
	// BaseURL is the API server, https://host:port.
	BaseURL string
	// HTTP carries the requests; its transport trusts the cluster's CA.
	HTTP *http.Client
	// TokenFile is read for every request: bound service account tokens
	// are rotated by the kubelet while the pod runs.
	TokenFile string
	Namespace string
}

// ConfigError says the run cannot reach the API as configured: not in a
// pod, no token mounted, no namespace. Retrying cannot help.
type ConfigError struct{ Msg string }

func (e *ConfigError) Error() string { return "rollout wait: " + e.Msg }

// InCluster builds the client a pod uses: the service account files in dir
// (token, ca.crt, and namespace unless namespace is given), the API server
// at host:port (KUBERNETES_SERVICE_HOST and _PORT, set by the kubelet).
func InCluster(dir, host, port, namespace string) (*Client, error) {
	if host == "" {
		return nil, &ConfigError{Msg: "KUBERNETES_SERVICE_HOST is not set: the contract run's rollout wait " +
			"(LOCKMIGRATE_CONTRACT_WAIT_FOR) needs to run in a Kubernetes pod"}
	}
	if port == "" {
		port = "443"
	}
	tokenFile := filepath.Join(dir, "token")
	if _, err := os.Stat(tokenFile); err != nil {
		return nil, &ConfigError{Msg: fmt.Sprintf("no service account token (%v): the pod must mount its ServiceAccount's "+
			"token (automountServiceAccountToken: true) to read the workloads of LOCKMIGRATE_CONTRACT_WAIT_FOR", err)}
	}
	pem, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	pool := x509.NewCertPool()
	if err != nil || !pool.AppendCertsFromPEM(pem) {
		return nil, &ConfigError{Msg: fmt.Sprintf("no usable cluster CA in %s (%v)", filepath.Join(dir, "ca.crt"), err)}
	}
	if namespace == "" {
		b, err := os.ReadFile(filepath.Join(dir, "namespace"))
		if err != nil || strings.TrimSpace(string(b)) == "" {
			return nil, &ConfigError{Msg: fmt.Sprintf("namespace unknown: set POD_NAMESPACE or mount %s (%v)", filepath.Join(dir, "namespace"), err)}
		}
		namespace = strings.TrimSpace(string(b))
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		Proxy: nil, ForceAttemptHTTP2: true, MaxIdleConns: 2, IdleConnTimeout: 90 * time.Second}
	return &Client{BaseURL: "https://" + net.JoinHostPort(host, port), HTTP: &http.Client{Transport: tr},
		TokenFile: tokenFile, Namespace: namespace}, nil
}

// APIError is an answer of the API server other than 200.
type APIError struct {
	Status int
	// What names the request: "get deployments/web", "list pods".
	What      string
	Namespace string
	// Message is the Status object's message, or the body's start.
	Message string
}

func (e *APIError) Error() string {
	msg := fmt.Sprintf("kubernetes API: %s in namespace %s: HTTP %d: %s", e.What, e.Namespace, e.Status, e.Message)
	switch {
	case e.Denied():
		msg += "; the contract Job's ServiceAccount needs a Role allowing get on the workloads of " +
			"LOCKMIGRATE_CONTRACT_WAIT_FOR (resourceNames) and list on pods, bound to it (the chart renders both)"
	case e.Status == http.StatusNotFound:
		msg += "; check the kind and name in LOCKMIGRATE_CONTRACT_WAIT_FOR"
	}
	return msg
}

// Denied reports an authentication or authorization failure (401, 403):
// like a refused database login, final for this configuration.
func (e *APIError) Denied() bool {
	return e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden
}

// NotFound reports a workload that does not exist.
func (e *APIError) NotFound() bool { return e.Status == http.StatusNotFound }

// get decodes the JSON answer to GET path?query into v.
func (c *Client) get(ctx context.Context, what, path string, query url.Values, v any) error {
	token, err := os.ReadFile(c.TokenFile)
	if err != nil {
		return &ConfigError{Msg: fmt.Sprintf("read the service account token: %v", err)}
	}
	u := c.BaseURL + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("kubernetes API: %s: %w", what, err)
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "lockmigrate")
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("kubernetes API: %s: %w", what, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("kubernetes API: %s: read the answer: %w", what, err)
	}
	if resp.StatusCode != http.StatusOK {
		return &APIError{Status: resp.StatusCode, What: what, Namespace: c.Namespace, Message: statusMessage(body)}
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("kubernetes API: %s: decode the answer: %w", what, err)
	}
	return nil
}

// statusMessage is the message of a metav1.Status body, else its start.
func statusMessage(body []byte) string {
	var st struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &st) == nil && st.Message != "" {
		return st.Message
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// final reports an error that waiting cannot cure: a denial, a workload
// that does not exist, a configuration problem. Anything else (the API
// server restarting, a network hiccup) is retried at the next poll.
func final(err error) bool {
	var (
		api *APIError
		cfg *ConfigError
	)
	return errors.As(err, &cfg) || errors.As(err, &api) && (api.Denied() || api.NotFound())
}
