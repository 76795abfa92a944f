#!/usr/bin/env bash
# Kubernetes packaging tests: the Helm chart (helm/lockmigrate) and the plain
# manifests (deploy/), checked by the nested Go module test/k8s:
#   - helm lint --strict and helm template for every helm/lockmigrate/ci/*-values.yaml,
#     every rendered document and every deploy/*.yaml decoded strictly into
#     its k8s.io/api type (a misspelled field fails);
#   - the hook Job, the init container and deploy/ checked field by field;
#   - end to end: the rendered container's environment (Secrets resolved from
#     fake ones, downward API filled in) given to 10 real lockmigrate
#     processes released together against a throwaway PostgreSQL and a real
#     Pushgateway.
#
# Installs helm (from the Go module proxy, with `go install`, ~2-3 minutes
# and ~1 GB of memory the first time) into a cache directory when it is
# missing, then runs go vet and go test -race in test/k8s. Arguments go to
# `go test` (scripts/k8s-test.sh -run TestRender -v).
#
# Environment:
#   HELM             a helm binary to use instead of the cached one
#   HELM_VERSION     helm version to install (default v3.22.0)
#   LOCKMIGRATE_BIN  cache directory for helm (default ~/.cache/lockmigrate/bin)
#   PG_BIN, PUSHGATEWAY_BIN  as for scripts/test.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

command -v go >/dev/null 2>&1 ||
	die "go not found in PATH: install Go (see go.mod for the version) and put its bin directory in PATH"

HELM_VERSION=${HELM_VERSION:-v3.22.0}
cache_root=${XDG_CACHE_HOME:-${HOME:+$HOME/.cache}}
LOCKMIGRATE_BIN=${LOCKMIGRATE_BIN:-${cache_root:-/tmp}/lockmigrate/bin}

# helm: $HELM, else the cached build of HELM_VERSION, installed when missing.
if [ -z "${HELM:-}" ]; then
	HELM=$LOCKMIGRATE_BIN/helm
	if [ ! -x "$HELM" ] || ! "$HELM" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION"; then
		step "Installing helm $HELM_VERSION into $LOCKMIGRATE_BIN (go install; a few minutes the first time)"
		mkdir -p "$LOCKMIGRATE_BIN"
		# What helm's own Makefile sets: its version, and the Kubernetes
		# version of its client-go (v0.37 for helm v3.22 = Kubernetes 1.37)
		# as the default for Capabilities.KubeVersion and the deprecation
		# checks (a plain `go install` would claim Kubernetes 1.20).
		k8s_minor=37
		ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
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

missing=()
if [ -n "${PG_BIN:-}" ]; then
	[ -x "$PG_BIN/postgres" ] && [ -x "$PG_BIN/initdb" ] ||
		die "PG_BIN=$PG_BIN does not hold the PostgreSQL server binaries (postgres, initdb)"
elif [ ! -x "$PG_DEFAULT_BIN/postgres" ]; then
	missing+=(postgresql-15)
fi
command -v prometheus-pushgateway >/dev/null 2>&1 || command -v pushgateway >/dev/null 2>&1 ||
	[ -n "${PUSHGATEWAY_BIN:-}" ] || missing+=(prometheus-pushgateway)
export CGO_ENABLED=1 # -race
cc=$(go env CC)
command -v "${cc%% *}" >/dev/null 2>&1 || missing+=(gcc libc6-dev)
if [ "${#missing[@]}" -gt 0 ]; then
	step "Installing test dependencies"
	apt_install "${missing[@]}"
fi

cd test/k8s

step "gofmt -l test/k8s"
unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
	printf 'not gofmt-formatted:\n%s\n' "$unformatted" >&2
	exit 1
fi

step "go vet ./... (test/k8s)"
go vet ./...

cmd=(go test -race -count=1 "$@" ./...)
step "${cmd[*]} (test/k8s)"
"${cmd[@]}"
