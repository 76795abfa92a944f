#!/usr/bin/env bash
# Cluster tests: lockmigrate's chart on a real single-node Kubernetes
# cluster (the nested module test/cluster, see its doc.go and
# docs/kubernetes.md, "The cluster suite"):
#   1. install: helm install --wait with the example Deployment (5 replicas,
#      init containers) in a namespace enforcing the restricted Pod Security
#      Standard; the hook Job applies, the init containers find the schema
#      current, each migration once;
#   2. upgrade: a new migration in a new image; the hook Job applies it
#      before any new pod exists, the new pods' init containers exit 0, no
#      old pod restarts;
#   3. failures through the real Job controller: exit 5 (a file edited after
#      it was applied) and exit 1 (a failing migration) fail the Job at once
#      by podFailurePolicy; exit 3 (database unreachable) is retried and then
#      succeeds; activeDeadlineSeconds ends a Job waiting for the lock;
#   4. SIGTERM: the hook Job's pod deleted during a slow migration exits 143,
#      rolled back, and a waiting Job takes the lock over;
#   5. multi-tenant: the Indexed Job with tenants.shards=4;
#   6. contract phase: the post-upgrade Job waits for the Deployment's
#      rollout through the API (on the bridge gateway, Node,RBAC) and applies
#      its contract file right after it completes;
#   7. contract denied: a ServiceAccount without the Role exits 3 (HTTP 403).
#
#   bash scripts/cluster-test.sh [go test arguments]    e.g. -run TestSIGTERM
#
# Starts a cluster with scripts/k8s-cluster.sh up (its binaries are built
# once and cached; missing Debian packages are installed with apt), installs
# helm when missing (ensure_helm, as scripts/k8s-test.sh), runs gofmt, go vet
# and go test -race -v in test/cluster, prints each test's result and the
# summary block, and tears the cluster down (scripts/k8s-cluster.sh down)
# whatever happens. On failure the whole test log and the tails of the
# cluster's logs are printed.
#
# Environment:
#   CLUSTER_TEST_KEEP=1  leave the cluster running afterwards (prints how to
#                        use it and how to remove it)
#   HELM, HELM_VERSION, LOCKMIGRATE_BIN  as for scripts/k8s-test.sh
#   LOCKMIGRATE_K8S_CACHE, LOCKMIGRATE_CLUSTER_TRACE  as for scripts/k8s-cluster.sh
#   PG_BIN               PostgreSQL 15 server binaries
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

command -v go >/dev/null 2>&1 || die "go not found in PATH"
[ "$(id -u)" -eq 0 ] ||
	die "the cluster tests need root (a bridge, network namespaces, mounts); make test skips them with CLUSTER_TEST=0"

missing=()
if [ -n "${PG_BIN:-}" ]; then
	[ -x "$PG_BIN/postgres" ] || die "PG_BIN=$PG_BIN does not hold the PostgreSQL server binaries"
elif [ ! -x "$PG_DEFAULT_BIN/postgres" ]; then
	missing+=(postgresql-15)
fi
[ -f /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
export CGO_ENABLED=1 # -race
cc=$(go env CC)
command -v "${cc%% *}" >/dev/null 2>&1 || missing+=(gcc libc6-dev)
if [ "${#missing[@]}" -gt 0 ]; then
	step "Installing test dependencies"
	apt_install "${missing[@]}"
fi

ensure_helm

step "Kubernetes binaries (scripts/k8s-cluster.sh build; built once, then cached)"
t0=$SECONDS
bash scripts/k8s-cluster.sh build 2>&1 | indent
info "$((SECONDS - t0)) s"

step "gofmt -l / go vet ./... (test/cluster)"
unformatted=$(cd test/cluster && gofmt -l .)
if [ -n "$unformatted" ]; then
	printf 'not gofmt-formatted:\n%s\n' "$unformatted" >&2
	exit 1
fi
(cd test/cluster && go vet ./...)

step "Cluster up (scripts/k8s-cluster.sh up)"
t0=$SECONDS
log=$(mktemp)
cluster_env=$(bash scripts/k8s-cluster.sh up 2>"$log") || { indent <"$log"; rm -f "$log"; die "the cluster did not start"; }
indent <"$log"
eval "$cluster_env"
keep=${CLUSTER_TEST_KEEP:-0}
cleanup() {
	local rc=$?
	set +e
	if [ "$keep" = 1 ]; then
		step "Cluster left running (CLUSTER_TEST_KEEP=1)"
		info "use it:       eval \"\$(bash scripts/k8s-cluster.sh env $LOCKMIGRATE_CLUSTER_DIR)\"; \$KUBECTL get pods -A"
		info "remove it:    bash scripts/k8s-cluster.sh down $LOCKMIGRATE_CLUSTER_DIR"
	else
		step "Cluster down"
		bash scripts/k8s-cluster.sh down "$LOCKMIGRATE_CLUSTER_DIR" 2>&1 | indent
	fi
	rm -f "$log"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
info "$((SECONDS - t0)) s"

# The scenarios mostly wait on the cluster: all at once, not GOMAXPROCS (2).
cmd=(go test -race -count=1 -timeout 20m -parallel 8 -v "$@" ./...)
step "${cmd[*]} (test/cluster; summary below, full log on failure)"
t0=$SECONDS
if ! (cd test/cluster && "${cmd[@]}") >"$log" 2>&1; then
	cat "$log"
	step "Cluster logs (tails; all in $LOCKMIGRATE_CLUSTER_DIR/logs)"
	for f in "$LOCKMIGRATE_CLUSTER_DIR"/logs/{kubelet,containerd,kube-controller-manager}.log; do
		info "== $f"
		tail -n 25 "$f" | indent
	done
	exit 1
fi
grep -E '^(cluster: |--- |ok |PASS|FAIL)' "$log" | indent
sed -n '/==== cluster summary ====/,$p' "$log" | grep -vE '^(PASS|ok )' | indent
info "cluster tests: $((SECONDS - t0)) s"
