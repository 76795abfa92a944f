#!/usr/bin/env bash
# A throwaway single-node Kubernetes cluster made of plain processes, for the
# cluster tests (test/cluster, run by scripts/cluster-test.sh):
#
#   scripts/k8s-cluster.sh build               build the binaries, or reuse the cached ones
#   eval "$(scripts/k8s-cluster.sh up)"        start a cluster; prints what `env` prints
#   scripts/k8s-cluster.sh env                 the cluster's variables, as export lines
#   scripts/k8s-cluster.sh image CTX REF       build CTX/Containerfile (FROM scratch, no RUN)
#                                              with buildah and import it as REF
#   scripts/k8s-cluster.sh down                stop the cluster and remove all it made
#
# env, image and down act on the cluster in $LOCKMIGRATE_CLUSTER_DIR, or in
# the directory given as their last argument. Progress goes to stderr; only
# up and env write to stdout.
#
# What runs, on loopback and the pod network's gateway address only, from a
# fresh directory /tmp/lmk8s.XXXXXX:
#   - etcd (Debian's etcd-server), kube-apiserver, kube-controller-manager,
#     kube-scheduler and the kubelet (built from the k8s.io/kubernetes module
#     pinned by test/cluster/kube, cached), containerd with
#     runc (Debian's), each a process of its own whose PID is recorded;
#   - the API server listens on the gateway address (below), the one
#     address both this machine and the pods reach; its serving certificate
#     is signed by a CA of the cluster's own (pki/ca.crt, the kubeconfigs'
#     CA and every pod's ca.crt); static bearer tokens for the clients;
#     Node,RBAC authorisation (admin and controller manager in
#     system:masters, the scheduler's and the kubelet's built-in
#     identities); service CIDR 127.200.0.0/16 (no Service IP is used:
#     there is no kube-proxy), so a pod that talks to the API must be given
#     KUBERNETES_SERVICE_HOST/_PORT = gateway and LOCKMIGRATE_CLUSTER_API_PORT;
#   - pod network: a bridge this script creates (lmk8s-XXXXXX) holding the
#     gateway address of a private /24 picked from 10.233.0.0/16 that no
#     interface or route of this machine uses; Debian's CNI bridge and
#     host-local plugins put each pod on it, with no default route, no
#     masquerading and IP forwarding left as it was. Pods reach only that
#     /24, whose one other host is this machine at the gateway address (the
#     tests' PostgreSQL listens there);
#   - images cannot be pulled: the pause image is built here from the pause.c
#     of the k8s.io/kubernetes module (gcc -static) and imported with ctr;
#     test images come through `image`, with imagePullPolicy: Never;
#   - kubelet for cgroup v1 and the cgroupfs driver without QoS cgroups,
#     node IP 127.0.0.1. The API server refuses to proxy to a loopback node,
#     so `kubectl logs/exec` do not work: container logs are files under
#     $LOCKMIGRATE_CLUSTER_POD_LOGS, results are in pod status.
#
# down (also run when up fails half way) stops the kubelet's pods through
# the API, then every process by its recorded PID (SIGTERM, then SIGKILL),
# the containerd shims serving this cluster's socket, leftover pod network
# namespaces, the bridge, every mount under the directory, and removes the
# directory; then what the kubelet, containerd and runc create outside it
# whatever they are told (/var/lib/kubelet, /run/containerd,
# /var/log/containers, /var/lib/cni, the k8s.io cgroups) when a cluster of
# this script created them (listed in /tmp/lmk8s-host-dirs) and no other one
# runs. up first tears down the clusters of runs that were killed before
# their down (none of their processes runs). Two clusters may run at once.
#
# env prints:
#   LOCKMIGRATE_CLUSTER_DIR       the cluster's directory (logs/ holds each process's log)
#   KUBECONFIG                    admin kubeconfig (for kubectl and helm)
#   KUBECTL                       the kubectl built with the cluster
#   LOCKMIGRATE_CLUSTER_NODE      the node's name
#   LOCKMIGRATE_CLUSTER_GATEWAY   this machine's address on the pod network
#   LOCKMIGRATE_CLUSTER_API_PORT  the API server's port (on the gateway address)
#   LOCKMIGRATE_CLUSTER_SUBNET    the pod network (a /24)
#   LOCKMIGRATE_CLUSTER_POD_LOGS  the kubelet's pod log directory (podLogsDir)
#   LOCKMIGRATE_CLUSTER_PAUSE_IMAGE  the pause image (usable as a placeholder container)
#   CONTAINERD_ADDRESS, CONTAINERD_NAMESPACE  for ctr
#
# The Kubernetes version is the one test/cluster/kube/go.mod requires
# (v1.34.4); the binaries are cached per version and rebuilt when that
# module, the build command or Go changes.
#
# Environment:
#   LOCKMIGRATE_K8S_CACHE      binary cache (default ${XDG_CACHE_HOME:-$HOME/.cache}/lockmigrate-k8s)
#   LOCKMIGRATE_CLUSTER_TRACE=1  timestamped progress of up and down
#
# Needs root (network namespaces, mounts, a bridge). Missing Debian packages
# are installed with apt.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$REPO/scripts/lib.sh"

KUBE_MOD=$REPO/test/cluster/kube
# The version test/cluster/kube/go.mod requires.
K8S_VERSION=$(sed -n 's|^[[:space:]]*k8s.io/kubernetes \(v[0-9][^ ]*\).*|\1|p' "$KUBE_MOD/go.mod")
[ -n "$K8S_VERSION" ] || die "no k8s.io/kubernetes requirement in $KUBE_MOD/go.mod"
cache_root=${XDG_CACHE_HOME:-${HOME:+$HOME/.cache}}
K8S_CACHE=${LOCKMIGRATE_K8S_CACHE:-${cache_root:-/tmp}/lockmigrate-k8s}
BIN=$K8S_CACHE/$K8S_VERSION/bin
KUBE_BINS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)
PAUSE_TAG=3.10.1
PAUSE_IMAGE=localhost/lockmigrate-pause:$PAUSE_TAG
NODE=lmk8s
NETNS_DIR=/var/run/netns

log() { printf '%s\n' "$*" >&2; }
# trace WHAT: a timestamped progress line (LOCKMIGRATE_CLUSTER_TRACE=1).
trace() { [ "${LOCKMIGRATE_CLUSTER_TRACE:-0}" = 1 ] && printf '%s %s\n' "$(date +%T.%3N)" "$*" >&2 || true; }

# ---------------------------------------------------------------------------
# Tools and binaries

# need_packages: install what is missing with apt (one apt-get update).
need_packages() {
	local missing=() t
	for t in etcd:etcd-server containerd:containerd ctr:containerd runc:runc \
		buildah:buildah ip:iproute2 openssl:openssl gcc:gcc; do
		command -v "${t%%:*}" >/dev/null 2>&1 || missing+=("${t#*:}")
	done
	[ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] && [ -x /usr/lib/cni/loopback ] ||
		missing+=(containernetworking-plugins)
	# pause is linked statically: libc.a.
	[ "$(dpkg-query -W -f='${Status}' libc6-dev 2>/dev/null || true)" = "install ok installed" ] ||
		missing+=(libc6-dev)
	if [ "${#missing[@]}" -gt 0 ]; then
		mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
		apt_install "${missing[@]}" >&2
	fi
}

# build_stamp: what the cached binaries were built from; a change rebuilds.
build_stamp() {
	{
		echo "$K8S_VERSION $(go env GOVERSION)"
		cat "$KUBE_MOD/go.mod" "$KUBE_MOD/go.sum"
		declare -f build_binaries
	} | sha256sum | cut -d' ' -f1
}

# build_binaries: the Kubernetes binaries with the version stamped as the
# release build does (hack/lib/version.sh), so the API server reports
# $K8S_VERSION and Helm accepts a chart's kubeVersion; and pause.
build_binaries() {
	local ld="-s -w" minor p pkgs=() b tmp
	minor=${K8S_VERSION#v1.}
	minor=${minor%%.*}
	for p in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
		ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
		ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
	done
	for b in "${KUBE_BINS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
	tmp=$BIN.tmp
	rm -rf "$tmp"
	mkdir -p "$tmp"
	# As the release build: static, -trimpath, the "notest" tag.
	(cd "$KUBE_MOD" && env -u GOOS -u GOARCH CGO_ENABLED=0 GOFLAGS="-trimpath -mod=readonly -buildvcs=false" \
		go build -tags notest -ldflags "$ld" -o "$tmp/" "${pkgs[@]}") >&2
	local src
	src=$(cd "$KUBE_MOD" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c
	gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_TAG-lockmigrate" -o "$tmp/pause" "$src" >&2
	rm -rf "$BIN"
	mv "$tmp" "$BIN"
}

# ensure_binaries: reuse $BIN when its stamp matches, else build (once).
ensure_binaries() {
	command -v go >/dev/null 2>&1 || die "go not found in PATH (the Kubernetes binaries are built with it)"
	local stamp b ok=true
	stamp=$(build_stamp)
	for b in "${KUBE_BINS[@]}" pause; do [ -x "$BIN/$b" ] || ok=false; done
	if $ok && [ "$(cat "$BIN/.stamp" 2>/dev/null)" = "$stamp" ]; then
		log "Kubernetes $K8S_VERSION binaries: $BIN (cached)"
		return
	fi
	log "Building Kubernetes $K8S_VERSION (kube-apiserver, kube-controller-manager, kube-scheduler,"
	log "kubelet, kubectl) and pause into $BIN: several minutes, once"
	local t0=$SECONDS
	build_binaries
	echo "$stamp" >"$BIN/.stamp"
	log "built in $((SECONDS - t0)) s"
}

# ---------------------------------------------------------------------------
# State of one cluster: $D holds everything; $D/state the variables below.

D=""

# cluster_dir [DIR]: the cluster directory from the argument or the
# environment; it must hold a state file.
cluster_dir() {
	D=${1:-${LOCKMIGRATE_CLUSTER_DIR:-}}
	[ -n "$D" ] || die "no cluster: give its directory or set LOCKMIGRATE_CLUSTER_DIR (eval \"\$(scripts/k8s-cluster.sh up)\")"
	[ -f "$D/state" ] || die "$D is not a cluster directory (no state file)"
	# shellcheck disable=SC1091
	. "$D/state"
}

# record NAME=VALUE: add a variable to the state file (read by down).
record() { printf '%s=%q\n' "${1%%=*}" "${1#*=}" >>"$D/state"; }

# start NAME CMD...: start CMD in its own session, logging to logs/NAME.log,
# and record its PID.
start() {
	local name=$1
	shift
	setsid "$@" </dev/null >"$D/logs/$name.log" 2>&1 &
	echo "$!" >"$D/pids/$name"
}

# alive NAME: the recorded process runs.
alive() {
	local pid
	pid=$(cat "$D/pids/$1" 2>/dev/null) || return 1
	kill -0 "$pid" 2>/dev/null
}

# wait_for WHAT SECONDS CMD...: poll CMD until it succeeds; on timeout die
# with the tail of the logs of the processes that died.
wait_for() {
	local what=$1 limit=$2 t0=$SECONDS name
	shift 2
	until "$@" >/dev/null 2>&1; do
		for name in $(ls "$D/pids"); do
			if ! alive "$name"; then
				tail -n 20 "$D/logs/$name.log" >&2 || true
				die "$name exited while waiting for $what (log: $D/logs/$name.log)"
			fi
		done
		[ $((SECONDS - t0)) -lt "$limit" ] || die "timed out after $limit s waiting for $what (logs: $D/logs/)"
		sleep 0.2
	done
}

kubectl_() { "$BIN/kubectl" --kubeconfig "$D/admin.kubeconfig" "$@"; }
ctr_() { ctr --address "$D/containerd/containerd.sock" --namespace k8s.io "$@"; }

# kubeconfig FILE TOKEN: a kubeconfig for the API server with a bearer token.
kubeconfig() {
	cat >"$1" <<-EOF
		apiVersion: v1
		kind: Config
		clusters:
		  - name: lmk8s
		    cluster:
		      server: https://$GATEWAY:$API_PORT
		      certificate-authority: $D/pki/ca.crt
		users:
		  - name: lmk8s
		    user:
		      token: $2
		contexts:
		  - name: lmk8s
		    context: {cluster: lmk8s, user: lmk8s}
		current-context: lmk8s
	EOF
	chmod 600 "$1"
}

# pick_subnet: a 10.233.N.0/24 no address or route of this machine is in.
pick_subnet() {
	local n i
	for i in $(seq 1 50); do
		n=$((RANDOM % 256))
		if ! ip -4 -o addr show | grep -q " 10\.233\.$n\." &&
			[ -z "$(ip -4 route show table all to "10.233.$n.0/24")" ] &&
			[ -z "$(ip -4 route show table all match "10.233.$n.1" | grep -v '^default')" ]; then
			echo "$n"
			return
		fi
	done
	die "no free 10.233.N.0/24 for the pod network"
}

# ---------------------------------------------------------------------------
# up

write_configs() {
	mkdir -p "$D/containerd" "$D/cni/net.d" "$D/kubelet" "$D/apiserver" "$D/pod-logs" "$D/volume-plugins"
	openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$D/sa.key" 2>/dev/null
	openssl pkey -in "$D/sa.key" -pubout -out "$D/sa.pub" 2>/dev/null
	write_pki
	local admin kcm sched kubelet
	admin=$(openssl rand -hex 16) kcm=$(openssl rand -hex 16)
	sched=$(openssl rand -hex 16) kubelet=$(openssl rand -hex 16)
	# RBAC: the admin (the tests, helm, kubectl) and the controller manager
	# (which runs every controller under its own identity,
	# --use-service-account-credentials=false) are in system:masters; the
	# scheduler is the identity the bootstrap policy binds; the kubelet is
	# the one the Node authoriser knows.
	cat >"$D/tokens.csv" <<-EOF
		$admin,lmk8s-admin,lmk8s-admin,"system:masters"
		$kcm,system:kube-controller-manager,system:kube-controller-manager,"system:masters"
		$sched,system:kube-scheduler,system:kube-scheduler
		$kubelet,system:node:$NODE,system:node:$NODE,"system:nodes"
	EOF
	chmod 600 "$D/tokens.csv"
	kubeconfig "$D/admin.kubeconfig" "$admin"
	kubeconfig "$D/kcm.kubeconfig" "$kcm"
	kubeconfig "$D/scheduler.kubeconfig" "$sched"
	kubeconfig "$D/kubelet.kubeconfig" "$kubelet"

	cat >"$D/cni/net.d/10-lmk8s.conflist" <<-EOF
		{
		  "cniVersion": "1.0.0",
		  "name": "$CNI_NET",
		  "plugins": [{
		    "type": "bridge",
		    "bridge": "$BRIDGE",
		    "isGateway": false,
		    "isDefaultGateway": false,
		    "ipMasq": false,
		    "hairpinMode": false,
		    "ipam": {
		      "type": "host-local",
		      "dataDir": "$D/cni/ipam",
		      "ranges": [[{"subnet": "$SUBNET", "rangeStart": "${GATEWAY%.1}.10", "gateway": "$GATEWAY"}]],
		      "routes": []
		    }
		  }]
		}
	EOF

	cat >"$D/containerd/config.toml" <<-EOF
		version = 2
		root = "$D/containerd/root"
		state = "$D/containerd/state"
		disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
		  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
		  "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]
		[grpc]
		  address = "$D/containerd/containerd.sock"
		[ttrpc]
		  address = "$D/containerd/containerd.sock.ttrpc"
		[debug]
		  address = ""
		[metrics]
		  address = ""
		[plugins."io.containerd.grpc.v1.cri"]
		  sandbox_image = "$PAUSE_IMAGE"
		  stream_server_address = "127.0.0.1"
		  stream_server_port = "0"
		  enable_selinux = false
		  # This sandbox may not lower oom_score_adj; without it every sandbox
		  # fails with "can't get final child's PID from pipe".
		  restrict_oom_score_adj = true
		  [plugins."io.containerd.grpc.v1.cri".containerd]
		    default_runtime_name = "runc"
		    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
		      runtime_type = "io.containerd.runc.v2"
		      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
		        SystemdCgroup = false
		        Root = "$D/containerd/runc"
		  [plugins."io.containerd.grpc.v1.cri".cni]
		    bin_dir = "/usr/lib/cni"
		    conf_dir = "$D/cni/net.d"
		    max_conf_num = 1
	EOF

	cat >"$D/kubelet/config.yaml" <<-EOF
		apiVersion: kubelet.config.k8s.io/v1beta1
		kind: KubeletConfiguration
		address: 127.0.0.1
		port: $KUBELET_PORT
		readOnlyPort: 0
		healthzPort: 0
		authentication:
		  anonymous: {enabled: false}
		  webhook: {enabled: false}
		authorization:
		  mode: AlwaysAllow
		containerRuntimeEndpoint: unix://$D/containerd/containerd.sock
		cgroupDriver: cgroupfs
		cgroupsPerQOS: false
		enforceNodeAllocatable: []
		failCgroupV1: false
		failSwapOn: false
		resolvConf: ""
		podLogsDir: $D/pod-logs
		volumePluginDir: $D/volume-plugins
		# Nothing may be pulled, so nothing may be garbage-collected either.
		imageGCHighThresholdPercent: 100
		evictionHard:
		  memory.available: 50Mi
		  nodefs.available: 1%
		  imagefs.available: 1%
		  nodefs.inodesFree: 1%
		syncFrequency: 10s
		fileCheckFrequency: 10s
		serializeImagePulls: false
		maxPods: 60
	EOF
}

# write_pki: a CA of this cluster (pki/ca.crt: the kubeconfigs' CA and,
# through the controller manager's --root-ca-file, every pod's ca.crt) and
# the API server's serving certificate it signs, for the gateway address
# (where the API server listens, for this machine and the pods), loopback
# and the kubernetes Service's names and address.
write_pki() {
	local p=$D/pki
	mkdir -p "$p"
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=lmk8s-ca" \
		-keyout "$p/ca.key" -out "$p/ca.crt" \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
	openssl req -new -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
		-keyout "$p/apiserver.key" -out "$p/apiserver.csr" 2>/dev/null
	printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
		"extendedKeyUsage=serverAuth" \
		"subjectAltName=IP:$GATEWAY,IP:127.0.0.1,IP:127.200.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" \
		>"$p/apiserver.ext"
	openssl x509 -req -in "$p/apiserver.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial \
		-days 2 -extfile "$p/apiserver.ext" -out "$p/apiserver.crt" 2>/dev/null
	chmod 600 "$p"/*.key
}

start_control_plane() {
	start etcd etcd --name "$NODE" --data-dir "$D/etcd" \
		--listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
		--listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
		--initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
		--initial-cluster "$NODE=http://127.0.0.1:$ETCD_PEER_PORT" \
		--unsafe-no-fsync --log-level warn --logger zap
	wait_for "etcd" 30 bash -c "exec 3<>/dev/tcp/127.0.0.1/$ETCD_PORT"

	start kube-apiserver "$BIN/kube-apiserver" \
		--etcd-servers "http://127.0.0.1:$ETCD_PORT" \
		--bind-address "$GATEWAY" --advertise-address "$GATEWAY" --secure-port "$API_PORT" \
		--tls-cert-file "$D/pki/apiserver.crt" --tls-private-key-file "$D/pki/apiserver.key" \
		--cert-dir "$D/apiserver" --service-cluster-ip-range 127.200.0.0/16 \
		--token-auth-file "$D/tokens.csv" --anonymous-auth=false --authorization-mode Node,RBAC \
		--service-account-issuer https://kubernetes.default.svc \
		--service-account-key-file "$D/sa.pub" --service-account-signing-key-file "$D/sa.key" \
		--endpoint-reconciler-type none --enable-priority-and-fairness=false --profiling=false
	wait_for "the API server" 90 kubectl_ get --raw /readyz
	trace "API server ready"

	start kube-controller-manager "$BIN/kube-controller-manager" \
		--kubeconfig "$D/kcm.kubeconfig" --secure-port 0 --leader-elect=false \
		--service-account-private-key-file "$D/sa.key" --root-ca-file "$D/pki/ca.crt" \
		--use-service-account-credentials=false --profiling=false
	start kube-scheduler "$BIN/kube-scheduler" \
		--kubeconfig "$D/scheduler.kubeconfig" --secure-port 0 --leader-elect=false --profiling=false
}

# pause_archive: the pause image as an OCI archive, built once and cached
# next to the binaries.
pause_archive() {
	local archive=$BIN/pause-image.tar ctx
	if [ ! -s "$archive" ] || [ "$archive" -ot "$BIN/pause" ]; then
		ctx=$D/pause-image
		mkdir -p "$ctx"
		cp "$BIN/pause" "$ctx/pause"
		printf '%s\n' 'FROM scratch' 'COPY pause /pause' 'USER 65535:65535' 'ENTRYPOINT ["/pause"]' >"$ctx/Containerfile"
		build_archive "$ctx" "$PAUSE_IMAGE" "$archive.tmp"
		mv "$archive.tmp" "$archive"
	fi
	echo "$archive"
}

# build_archive CTX REF OUT: buildah build of CTX/Containerfile into an OCI
# archive OUT naming REF, with a storage of its own under $D (vfs: no
# overlay mounts, nothing shared with podman's storage).
build_archive() {
	local ctx=$1 ref=$2 out=$3
	local store=(--root "$D/buildah/root" --runroot "$D/buildah/run" --storage-driver vfs)
	buildah "${store[@]}" build --quiet --pull=never --layers=false -f "$ctx/Containerfile" \
		-t "$ref" "$ctx" >"$D/logs/buildah.log" 2>&1 ||
		{ tail -n 20 "$D/logs/buildah.log" >&2; die "buildah build of $ctx failed"; }
	buildah "${store[@]}" push --quiet "$ref" "oci-archive:$out:$ref" >>"$D/logs/buildah.log" 2>&1 ||
		{ tail -n 20 "$D/logs/buildah.log" >&2; die "buildah push of $ref failed"; }
	buildah "${store[@]}" rmi "$ref" >/dev/null 2>&1 || true
}

# import_archive FILE: import an OCI archive into the cluster's containerd.
import_archive() {
	ctr_ images import --no-unpack=false "$1" >>"$D/logs/ctr.log" 2>&1 ||
		{ tail -n 20 "$D/logs/ctr.log" >&2; die "ctr images import $1 failed"; }
}

# shared_netns_dir: make $NETNS_DIR a shared mount point, as `ip netns add`
# does, before containerd mounts the pods' network namespaces in it. Were
# another program (ip netns, a second containerd) to turn it into one
# while a pod's namespace is mounted on the directory below, that mount
# would be hidden and the namespace file could not be removed ("unlinkat
# ...: device or resource busy"), leaving the pod's status stuck.
shared_netns_dir() {
	mkdir -p "$NETNS_DIR"
	if ! mount --make-shared "$NETNS_DIR" 2>/dev/null; then
		mount --rbind "$NETNS_DIR" "$NETNS_DIR"
		mount --make-shared "$NETNS_DIR"
	fi
}

start_node() {
	shared_netns_dir
	start containerd containerd --config "$D/containerd/config.toml"
	wait_for "containerd" 30 ctr_ version
	import_archive "$(pause_archive)"
	trace "containerd ready, pause image imported"

	start kubelet "$BIN/kubelet" --config "$D/kubelet/config.yaml" \
		--kubeconfig "$D/kubelet.kubeconfig" --root-dir "$D/kubelet/root" \
		--cert-dir "$D/kubelet/pki" --hostname-override "$NODE" --node-ip 127.0.0.1
	wait_for "node $NODE Ready" 120 bash -c \
		"'$BIN/kubectl' --kubeconfig '$D/admin.kubeconfig' get node '$NODE' -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
	# The controller manager works once it has given a namespace its
	# ServiceAccount (pods are refused before that).
	wait_for "the default ServiceAccount" 60 kubectl_ get serviceaccount default
}

# sweep_stale: tear down the clusters left by a run that was killed before
# its down: a directory none of whose processes (nor the up that made it)
# runs any more.
sweep_stale() {
	local dir f pid alive
	for dir in /tmp/lmk8s.*; do
		[ -f "$dir/state" ] || continue
		alive=false
		pid=$(sed -n 's/^UP_PID=//p' "$dir/state")
		[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && alive=true
		for f in "$dir"/pids/*; do
			[ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && alive=true
		done
		$alive && continue
		log "removing the stale cluster in $dir (none of its processes runs)"
		(cmd_down "$dir") || true
	done
}

cmd_up() {
	[ "$(id -u)" -eq 0 ] || die "the cluster needs root (a bridge, network namespaces, mounts)"
	need_packages
	ensure_binaries
	sweep_stale
	D=$(mktemp -d /tmp/lmk8s.XXXXXX)
	chmod 755 "$D"
	mkdir -p "$D/logs" "$D/pids"
	: >"$D/state"
	record "UP_PID=$$"
	local ok=false
	# shellcheck disable=SC2064
	trap "\$ok || { log 'up failed: tearing down $D'; cmd_down '$D' || true; }" EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	local t0=$SECONDS n
	n=$(pick_subnet)
	BRIDGE=lmk8s-${D##*.}
	CNI_NET=lmk8s-${D##*.}
	SUBNET=10.233.$n.0/24
	GATEWAY=10.233.$n.1
	ETCD_PORT=$(free_port) ETCD_PEER_PORT=$(free_port) API_PORT=$(free_port) KUBELET_PORT=$(free_port)
	mark_host_dirs
	for v in BIN BRIDGE CNI_NET SUBNET GATEWAY ETCD_PORT ETCD_PEER_PORT API_PORT KUBELET_PORT; do
		record "$v=${!v}"
	done
	log "cluster directory $D; pod network $SUBNET on bridge $BRIDGE (gateway $GATEWAY)"
	# An address of its own (locally administered): a bridge without one
	# takes the lowest of its ports' addresses, so each pod that comes or
	# goes could change the gateway's MAC under the other pods' ARP caches,
	# and their packets would be lost for seconds.
	ip link add "$BRIDGE" address "$(printf '02:6c:6d:%02x:%02x:%02x' "$n" $((RANDOM % 256)) $((RANDOM % 256)))" type bridge
	ip addr add "$GATEWAY/24" dev "$BRIDGE"
	# IPv4 only: no IPv6 link-local chatter from the host on the bridge.
	[ -w "/proc/sys/net/ipv6/conf/$BRIDGE/disable_ipv6" ] && echo 1 >"/proc/sys/net/ipv6/conf/$BRIDGE/disable_ipv6"
	ip link set "$BRIDGE" up
	write_configs
	start_control_plane
	start_node
	ok=true
	trap - EXIT INT TERM
	log "cluster up in $((SECONDS - t0)) s: node $NODE Ready, Kubernetes $("$BIN/kubectl" --kubeconfig "$D/admin.kubeconfig" version -o json | sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p' | tail -n1)"
	print_env
}

print_env() {
	cat <<-EOF
		export LOCKMIGRATE_CLUSTER_DIR=$D
		export KUBECONFIG=$D/admin.kubeconfig
		export KUBECTL=$BIN/kubectl
		export LOCKMIGRATE_CLUSTER_NODE=$NODE
		export LOCKMIGRATE_CLUSTER_GATEWAY=$GATEWAY
		export LOCKMIGRATE_CLUSTER_API_PORT=$API_PORT
		export LOCKMIGRATE_CLUSTER_SUBNET=$SUBNET
		export LOCKMIGRATE_CLUSTER_POD_LOGS=$D/pod-logs
		export LOCKMIGRATE_CLUSTER_PAUSE_IMAGE=$PAUSE_IMAGE
		export CONTAINERD_ADDRESS=$D/containerd/containerd.sock
		export CONTAINERD_NAMESPACE=k8s.io
	EOF
}

# ---------------------------------------------------------------------------
# image

cmd_image() {
	[ "$#" -ge 2 ] || die "usage: scripts/k8s-cluster.sh image CONTEXT_DIR IMAGE_REF [CLUSTER_DIR]"
	local ctx=$1 ref=$2
	cluster_dir "${3:-}"
	[ -f "$ctx/Containerfile" ] || die "$ctx/Containerfile missing"
	local archive
	archive=$(mktemp "$D/image.XXXXXX.tar")
	build_archive "$ctx" "$ref" "$archive"
	import_archive "$archive"
	rm -f "$archive"
}

# ---------------------------------------------------------------------------
# down

# stop_pids NAME...: SIGTERM the recorded processes, SIGKILL those still
# running after 10 s.
stop_pids() {
	local name pid pids=() i live
	for name in "$@"; do
		pid=$(cat "$D/pids/$name" 2>/dev/null) || continue
		kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
		rm -f "$D/pids/$name"
	done
	for i in $(seq 1 50); do
		live=false
		for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && live=true; done
		$live || return 0
		sleep 0.2
	done
	for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}

# drain: with the controllers stopped (nothing recreates pods), delete every
# pod and let the kubelet stop them, so that containerd tears down their
# network (CNI DEL) and namespaces; bounded, the fallbacks below do the rest.
drain() {
	alive kube-apiserver || return 0
	kubectl_ delete pods --all-namespaces --all --grace-period=1 --wait=false >/dev/null 2>&1 || true
	local i
	for i in $(seq 1 150); do
		[ -z "$(ctr_ tasks ls -q 2>/dev/null)" ] && [ -z "$(ip link show master "$BRIDGE" 2>/dev/null)" ] && return 0
		sleep 0.2
	done
	log "down: pods still running after 30 s; killing them"
}

# kill_tasks: every container task of this containerd, killed and deleted.
kill_tasks() {
	alive containerd || return 0
	local id
	for id in $(ctr_ tasks ls -q 2>/dev/null); do
		ctr_ tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
	done
	for id in $(ctr_ tasks ls -q 2>/dev/null); do
		ctr_ tasks delete -f "$id" >/dev/null 2>&1 || true
	done
}

# sandbox_netns: the network namespace files of this containerd's pod
# sandboxes (from their OCI specs), recorded in $D/netns before containerd
# stops.
sandbox_netns() {
	alive containerd || return 0
	local id
	for id in $(ctr_ containers ls -q 2>/dev/null); do
		ctr_ containers info "$id" 2>/dev/null | grep -o '"/var/run/netns/cni-[0-9a-f-]*"' | tr -d '"' || true
	done | sort -u >>"$D/netns"
}

# netns_cleanup: the network namespaces of pods still on the bridge.
netns_cleanup() {
	local ids veth nsid name
	ip link show "$BRIDGE" >/dev/null 2>&1 || return 0
	for veth in $(ip -o link show master "$BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
		nsid=$(ip -d link show "$veth" 2>/dev/null | sed -n 's/.*link-netnsid \([0-9]*\).*/\1/p')
		ip link del "$veth" 2>/dev/null || true
		[ -n "$nsid" ] || continue
		ids=$(ip netns list 2>/dev/null | awk -v id="$nsid" '$3 == id")" {print $1}')
		for name in $ids; do
			case $name in cni-*) ip netns del "$name" 2>/dev/null || true ;; esac
		done
	done
}

# unmount_all: every mount under $D, deepest first.
unmount_all() {
	local m
	for m in $(awk -v d="$D/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r); do
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "down: cannot unmount $m"
	done
}

# HOST_DIRS: what the kubelet, containerd and libcni create outside the
# cluster directory whatever they are told (the device plugin socket, the
# shim sockets, container log links, the CNI result cache), and K8S_CGROUPS
# the cgroups runc makes the containers' parents (cgroupsPerQOS is off).
# HOST_MARK lists those that a cluster of this script found missing and so
# created; the last cluster to go removes them.
HOST_DIRS=(/var/lib/kubelet /run/containerd /var/log/containers /var/lib/cni)
K8S_CGROUPS=/sys/fs/cgroup/memory/k8s.io
HOST_MARK=/tmp/lmk8s-host-dirs

# mark_host_dirs: add the missing HOST_DIRS and K8S_CGROUPS to HOST_MARK.
mark_host_dirs() {
	local dir
	for dir in "${HOST_DIRS[@]}" "$K8S_CGROUPS"; do
		[ -e "$dir" ] || echo "$dir" >>"$HOST_MARK"
	done
}

# remove_host_dirs: what HOST_MARK lists, unless another cluster of this
# script is running. The cgroups go with rmdir, which removes only empty
# ones.
remove_host_dirs() {
	local other dir
	for other in /tmp/lmk8s.*/state; do
		[ -f "$other" ] && return 0
	done
	[ -f "$HOST_MARK" ] || return 0
	for dir in $(sort -u "$HOST_MARK"); do
		case $dir in
		"$K8S_CGROUPS") rmdir /sys/fs/cgroup/*/k8s.io 2>/dev/null || true ;;
		*) rm -rf "$dir" ;;
		esac
	done
	rm -f "$HOST_MARK"
}

cmd_down() {
	cluster_dir "${1:-}"
	log "tearing down the cluster in $D"
	stop_pids kube-controller-manager kube-scheduler
	trace "controllers stopped"
	drain
	trace "pods gone"
	stop_pids kubelet
	sandbox_netns
	kill_tasks
	trace "kubelet stopped"
	stop_pids kube-apiserver etcd containerd
	trace "API server, etcd, containerd stopped"
	# Shims outlive containerd; those of this cluster name its socket.
	local pid
	for pid in $(pgrep -f -- "-address $D/containerd/containerd.sock" 2>/dev/null || true); do
		kill -KILL "$pid" 2>/dev/null || true
	done
	if [ -n "${BRIDGE:-}" ]; then
		netns_cleanup
		ip link del "$BRIDGE" 2>/dev/null || true
	fi
	# Namespaces of sandboxes that were not stopped through the kubelet.
	local ns
	for ns in $(cat "$D/netns" 2>/dev/null); do
		[ -e "$ns" ] || continue
		umount "$ns" 2>/dev/null || umount -l "$ns" 2>/dev/null || true
		rm -f "$ns" 2>/dev/null || log "down: cannot remove $ns"
	done
	unmount_all
	# The kubelet links container logs into /var/log/containers; libcni
	# caches results in /var/lib/cni.
	find /var/log/containers -maxdepth 1 -type l -lname "$D/*" -delete 2>/dev/null || true
	[ -n "${CNI_NET:-}" ] && rm -f /var/lib/cni/results/"$CNI_NET"-* 2>/dev/null
	rm -rf "$D" || log "down: could not remove $D entirely"
	remove_host_dirs
	log "cluster in $D removed"
}

# ---------------------------------------------------------------------------

case ${1:-} in
build)
	need_packages
	ensure_binaries
	echo "$BIN"
	;;
up) cmd_up ;;
env)
	cluster_dir "${2:-}"
	print_env
	;;
image)
	shift
	cmd_image "$@"
	;;
down) cmd_down "${2:-}" ;;
*) die "usage: scripts/k8s-cluster.sh build|up|env|image CONTEXT REF|down [CLUSTER_DIR]" ;;
esac
