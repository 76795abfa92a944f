# shellcheck shell=bash
# Shared helpers for scripts/demo.sh and scripts/test.sh. Source it; it sets
# no shell options of its own.

# Where Debian's postgresql-15 package puts the server binaries.
PG_DEFAULT_BIN=/usr/lib/postgresql/15/bin

# step prints a one-line header for a step; info an indented detail line.
step() { printf '\n==> %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }
die() {
	printf 'error: %s\n' "$*" >&2
	exit 1
}

# as_root CMD...: run CMD as root, through sudo only when we are not root.
# Without a terminal (CI) sudo must not prompt for a password: -n.
as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		if [ -t 0 ]; then sudo "$@"; else sudo -n "$@"; fi
	else
		die "root is needed to run '$*' and sudo is not installed"
	fi
}

# apt_install PKG...: apt-get update once, then install PKG... without
# questions. Call it once with everything that is missing.
apt_install() {
	command -v apt-get >/dev/null 2>&1 ||
		die "missing $*, and apt-get is not available to install it; install it by hand"
	info "installing with apt-get: $*"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
		--no-install-recommends -o Dpkg::Use-Pty=0 "$@"
}

# as_pg CMD...: run CMD as the postgres OS user when we are root (initdb and
# postgres refuse to run as root), as ourselves otherwise.
as_pg() {
	if [ "$(id -u)" -eq 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

# free_port prints a TCP port on 127.0.0.1 that is free right now.
free_port() {
	if command -v python3 >/dev/null 2>&1; then
		python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
		return
	fi
	# No python3: probe random high ports until one refuses connections.
	local port i
	for i in $(seq 1 100); do
		port=$((20000 + RANDOM % 40000))
		if ! (exec 9<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			echo "$port"
			return
		fi
	done
	die "could not find a free TCP port"
}

# indent prefixes the non-empty lines of its input with four spaces.
indent() { sed -E 's/^(.)/    \1/'; }

# ensure_helm: set and export HELM: $HELM, else the cached build of
# HELM_VERSION (default v3.22.0) in $LOCKMIGRATE_BIN (default
# ~/.cache/lockmigrate/bin), installed with `go install` from the Go module
# proxy when missing (~2-3 minutes and ~1 GB of memory the first time).
ensure_helm() {
	HELM_VERSION=${HELM_VERSION:-v3.22.0}
	local cache_root=${XDG_CACHE_HOME:-${HOME:+$HOME/.cache}}
	LOCKMIGRATE_BIN=${LOCKMIGRATE_BIN:-${cache_root:-/tmp}/lockmigrate/bin}
	if [ -z "${HELM:-}" ]; then
		HELM=$LOCKMIGRATE_BIN/helm
		if [ ! -x "$HELM" ] || ! "$HELM" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION"; then
			step "Installing helm $HELM_VERSION into $LOCKMIGRATE_BIN (go install; a few minutes the first time)"
			mkdir -p "$LOCKMIGRATE_BIN"
			# What helm's own Makefile sets: its version, and the Kubernetes
			# version of its client-go (v0.37 for helm v3.22 = Kubernetes 1.37)
			# as the default for Capabilities.KubeVersion and the deprecation
			# checks (a plain `go install` would claim Kubernetes 1.20).
			local k8s_minor=37 pkg
			local ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
			for pkg in pkg/chartutil pkg/lint/rules; do
				ldflags+=" -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$k8s_minor"
			done
			# Outside the repository, so no go.mod is consulted or changed.
			(cd / && GOBIN=$LOCKMIGRATE_BIN CGO_ENABLED=0 GOFLAGS=-trimpath \
				go install -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION")
		fi
	fi
	[ -x "$HELM" ] || die "HELM=$HELM is not an executable"
	export HELM
	info "helm: $HELM ($("$HELM" version --short))"
}
