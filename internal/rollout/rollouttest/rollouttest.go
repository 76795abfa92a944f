// Package rollouttest is a fake Kubernetes API server for the rollout wait's
// tests: HTTPS with its own CA, bearer-token authentication, and the GET
// requests the wait sends (a Deployment or StatefulSet, the pods of a label
// selector), answered with JSON documents in the API server's format kept
// in testdata/ (objects as `kubectl get -o json` prints them, with their
// status mid-rollout, stuck or complete; a 403 and a 404 Status). The test
// switches the documents while a wait runs.
package rollouttest

import (
	"embed"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

//go:embed testdata/*.json
var data embed.FS

// Token is the service account token the server accepts.
const Token = "eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QifQ.test-token.sig"

// Server is the fake API server of one namespace.
type Server struct {
	srv *httptest.Server
	// Dir is a service account directory for it: token, ca.crt, namespace.
	Dir string
	// Host and Port are KUBERNETES_SERVICE_HOST and _PORT.
	Host, Port string
	Namespace  string

	mu sync.Mutex
	// answers maps a request (the path, or "pods?" + selector) to the
	// testdata file and status code it gets.
	answers  map[string]answer
	requests int
	served   chan string
}

type answer struct {
	file   string
	status int
}

// Start starts a server for namespace; it stops at the end of the test.
func Start(t testing.TB, namespace string) *Server {
	t.Helper()
	s := &Server{Namespace: namespace, answers: map[string]answer{}, served: make(chan string, 10000)}
	s.srv = httptest.NewTLSServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	host, port, _ := net.SplitHostPort(strings.TrimPrefix(s.srv.URL, "https://"))
	s.Host, s.Port = host, port
	s.Dir = t.TempDir()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw})
	for name, body := range map[string][]byte{"token": []byte(Token + "\n"), "ca.crt": ca, "namespace": []byte(namespace)} {
		if err := os.WriteFile(filepath.Join(s.Dir, name), body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// Workload makes GET of kind ("deployments" or "statefulsets") name answer
// with objectFile, and the pods of selector with podsFile.
func (s *Server) Workload(kind, name, objectFile, selector, podsFile string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.answers[s.objectPath(kind, name)] = answer{objectFile, http.StatusOK}
	s.answers["pods?"+selector] = answer{podsFile, http.StatusOK}
}

// Deny makes GET of kind name answer 403 Forbidden, as RBAC does for a name
// missing from the Role's resourceNames.
func (s *Server) Deny(kind, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.answers[s.objectPath(kind, name)] = answer{"forbidden.json", http.StatusForbidden}
}

// Missing makes GET of kind name answer 404 Not Found.
func (s *Server) Missing(kind, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.answers[s.objectPath(kind, name)] = answer{"notfound.json", http.StatusNotFound}
}

// Requests counts the requests served so far.
func (s *Server) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

// Served delivers, for each request served, its key ("pods?" + selector,
// or the path), a space and the file it was answered with, so a test can
// act after the wait has seen a given answer N times.
func (s *Server) Served() <-chan string { return s.served }

func (s *Server) objectPath(kind, name string) string {
	return "/apis/apps/v1/namespaces/" + s.Namespace + "/" + kind + "/" + name
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	key := r.URL.Path
	if key == "/api/v1/namespaces/"+s.Namespace+"/pods" {
		key = "pods?" + r.URL.Query().Get("labelSelector")
	}
	s.mu.Lock()
	s.requests++
	a, ok := s.answers[key]
	s.mu.Unlock()
	defer func() {
		select {
		case s.served <- key + " " + a.file:
		default:
		}
	}()
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.Header.Get("Authorization") != "Bearer "+Token:
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}`))
	case r.Method != http.MethodGet || !ok:
		w.WriteHeader(http.StatusBadRequest)
		w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","message":"rollouttest: no answer for ` + r.Method + " " + key + `","code":400}`))
	default:
		body, err := data.ReadFile("testdata/" + a.file)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(a.status)
		w.Write(body)
	}
}
