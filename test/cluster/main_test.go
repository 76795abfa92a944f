package cluster

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/lockmigrate/lockmigrate/internal/bintest"
	"github.com/lockmigrate/lockmigrate/internal/pgtest"
)

// Paths relative to this package's directory (go test runs in it).
const (
	chartDir      = "../../helm/lockmigrate"
	clusterScript = "../../scripts/k8s-cluster.sh"
)

// clusterEnv is the cluster under test, as `scripts/k8s-cluster.sh env`
// describes it.
type clusterEnv struct {
	dir        string // LOCKMIGRATE_CLUSTER_DIR
	kubeconfig string // KUBECONFIG
	gateway    string // LOCKMIGRATE_CLUSTER_GATEWAY: this machine on the pod network
	apiPort    string // LOCKMIGRATE_CLUSTER_API_PORT: the API server's port on the gateway
	subnet     string // LOCKMIGRATE_CLUSTER_SUBNET
	podLogs    string // LOCKMIGRATE_CLUSTER_POD_LOGS
	pauseImage string // LOCKMIGRATE_CLUSTER_PAUSE_IMAGE
	helm       string // HELM
}

var (
	env     clusterEnv
	kc      *kubernetes.Clientset
	workDir string
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	var err error
	if env, err = loadEnv(); err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		fmt.Fprintln(os.Stderr, "cluster: run scripts/cluster-test.sh, or start a cluster with "+
			"eval \"$(scripts/k8s-cluster.sh up)\" and set HELM")
		return 1
	}
	if kc, err = newClient(env.kubeconfig); err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		return 1
	}
	// World-readable: PostgreSQL (user postgres) reads the pg_hba.conf
	// written here.
	if workDir, err = os.MkdirTemp("", "lmcluster"); err == nil {
		err = os.Chmod(workDir, 0o755)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		return 1
	}
	defer os.RemoveAll(workDir)
	t0 := time.Now()
	if err := buildImages(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "cluster: images:", err)
		return 1
	}
	fmt.Printf("cluster: %d images built and imported in %s\n", len(variants), time.Since(t0).Round(time.Millisecond))
	opts, err := serverOptions()
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		return 1
	}
	code := pgtest.Main(m, opts)
	summaries.Print(os.Stdout)
	return code
}

// loadEnv reads the cluster's variables; all are required.
func loadEnv() (clusterEnv, error) {
	e := clusterEnv{
		dir:        os.Getenv("LOCKMIGRATE_CLUSTER_DIR"),
		kubeconfig: os.Getenv("KUBECONFIG"),
		gateway:    os.Getenv("LOCKMIGRATE_CLUSTER_GATEWAY"),
		apiPort:    os.Getenv("LOCKMIGRATE_CLUSTER_API_PORT"),
		subnet:     os.Getenv("LOCKMIGRATE_CLUSTER_SUBNET"),
		podLogs:    os.Getenv("LOCKMIGRATE_CLUSTER_POD_LOGS"),
		pauseImage: os.Getenv("LOCKMIGRATE_CLUSTER_PAUSE_IMAGE"),
		helm:       os.Getenv("HELM"),
	}
	var missing []string
	for name, v := range map[string]string{
		"LOCKMIGRATE_CLUSTER_DIR": e.dir, "KUBECONFIG": e.kubeconfig,
		"LOCKMIGRATE_CLUSTER_GATEWAY": e.gateway, "LOCKMIGRATE_CLUSTER_SUBNET": e.subnet,
		"LOCKMIGRATE_CLUSTER_API_PORT": e.apiPort,
		"LOCKMIGRATE_CLUSTER_POD_LOGS": e.podLogs, "LOCKMIGRATE_CLUSTER_PAUSE_IMAGE": e.pauseImage,
		"HELM": e.helm,
	} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return e, fmt.Errorf("no cluster: %s unset", strings.Join(missing, ", "))
	}
	if net.ParseIP(e.gateway) == nil {
		return e, fmt.Errorf("LOCKMIGRATE_CLUSTER_GATEWAY=%q is not an IP address", e.gateway)
	}
	if _, _, err := net.ParseCIDR(e.subnet); err != nil {
		return e, fmt.Errorf("LOCKMIGRATE_CLUSTER_SUBNET: %w", err)
	}
	return e, nil
}

func newClient(kubeconfig string) (*kubernetes.Clientset, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cs.Discovery().ServerVersion(); err != nil {
		return nil, fmt.Errorf("API server: %w", err)
	}
	if _, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{Limit: 1}); err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	return cs, nil
}

// serverOptions makes the shared PostgreSQL listen on the pod network's
// gateway too, and trust the superuser from the pod network (a /24 that
// exists only on this machine) as it does from loopback.
func serverOptions() (pgtest.Options, error) {
	hba := filepath.Join(workDir, "pg_hba.conf")
	rules := "local all all trust\n" +
		"host all postgres 127.0.0.1/32 trust\n" +
		"host all all 127.0.0.1/32 scram-sha-256\n" +
		"host all postgres " + env.subnet + " trust\n"
	if err := os.WriteFile(hba, []byte(rules), 0o644); err != nil {
		return pgtest.Options{}, err
	}
	return pgtest.Options{ExtraConf: []string{
		"listen_addresses = '127.0.0.1," + env.gateway + "'",
		"hba_file = '" + hba + "'",
	}}, nil
}

// podURL is the URL of database url as pods reach it: on the gateway.
func podURL(t testing.TB, dbURL string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = net.JoinHostPort(env.gateway, u.Port())
	return u.String()
}

// ---- summaries ----

// summaries are the suite's one-line results, printed by TestMain at the end.
var summaries = bintest.Summaries{Title: "cluster"}

// summary logs the test's one-line summary and keeps it for the block
// TestMain prints after all tests.
func summary(t testing.TB, format string, args ...any) {
	t.Helper()
	summaries.Add(t, format, args...)
}
