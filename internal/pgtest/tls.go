package pgtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeTLSCert makes the server's self-signed certificate for host and
// writes it and its key where ssl = on looks for them (server.crt and
// server.key in the data directory, the key readable by its owner only).
func (s *Server) writeTLSCert() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("pgtest: TLS key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "pgtest"},
		IPAddresses:  []net.IP{net.ParseIP(host)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("pgtest: TLS certificate: %w", err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return fmt.Errorf("pgtest: TLS key: %w", err)
	}
	s.caCert = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	files := map[string][]byte{
		"server.crt": s.caCert,
		"server.key": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}),
	}
	for name, b := range files {
		path := filepath.Join(s.dataDir, name)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return fmt.Errorf("pgtest: write %s: %w", name, err)
		}
		if s.cred != nil {
			if err := os.Chown(path, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
				return fmt.Errorf("pgtest: chown %s to postgres: %w", name, err)
			}
		}
	}
	return nil
}

// CACert is the PEM of the certificate a server started with Options.TLS
// presents (self-signed, for its loopback address), or nil.
func (s *Server) CACert() []byte { return s.caCert }

// StartTLS starts a server with Options.TLS for t, stopped when t ends.
func StartTLS(t testing.TB) *Server {
	t.Helper()
	s, err := Start(Options{TLS: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop() })
	return s
}

// NewVerifiedDB is NewDB for a server started with Options.TLS, whose URL
// makes the client check the server's certificate (sslmode=verify-full,
// with the CA written to a file under t.TempDir()).
func (s *Server) NewVerifiedDB(t testing.TB) string {
	t.Helper()
	if s.caCert == nil {
		t.Fatal("pgtest: NewVerifiedDB on a server started without Options.TLS")
	}
	root := filepath.Join(t.TempDir(), "root.crt")
	if err := os.WriteFile(root, s.caCert, 0o600); err != nil {
		t.Fatal(err)
	}
	return strings.Replace(s.NewDB(t), "sslmode=disable", "sslmode=verify-full&sslrootcert="+root, 1)
}
