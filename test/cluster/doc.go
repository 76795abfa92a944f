// Package cluster tests lockmigrate on a real single-node Kubernetes
// cluster: the Helm chart (helm/lockmigrate) installed and upgraded with
// `helm install/upgrade --wait`, its hook Job run by the real Job controller
// (podFailurePolicy, backoff, activeDeadlineSeconds, Indexed completion),
// the init containers of the example Deployment run by the real kubelet
// through a rolling update, and the restricted Pod Security admission
// enforced on every pod. What test/k8s infers from the rendered manifests,
// this package observes: exit codes, termination messages and restarts in
// pod status, Job conditions, and the database the pods migrated.
//
// The cluster comes from scripts/k8s-cluster.sh (etcd, the control plane,
// containerd and the kubelet as plain processes on loopback; pods on a
// test-only bridge). Run the package with scripts/cluster-test.sh, which
// starts a cluster, runs these tests against it and tears it down; the
// tests read the cluster from the variables `scripts/k8s-cluster.sh env`
// prints and fail when they are missing.
//
// It is a module of its own, like test/k8s, so that the root module does not
// depend on client-go.
package cluster
