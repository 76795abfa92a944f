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

# helm: $HELM, else the cached build of HELM_VERSION, installed when missing.
ensure_helm

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
