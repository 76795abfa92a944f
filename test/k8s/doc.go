// Package k8s tests lockmigrate's Kubernetes packaging: the Helm chart in
// helm/lockmigrate and the plain manifests in deploy/.
//
// It is a module of its own (so the repository's root module does not
// depend on k8s.io/api) that imports the root module's test harnesses
// through a replace directive. Run it with scripts/k8s-test.sh, which
// installs helm when it is missing; the tests find helm through $HELM or
// PATH.
package k8s
