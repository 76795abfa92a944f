#!/usr/bin/env bash
# The peer migrators (goose, golang-migrate, tern) that the benchmark and the
# adopt tests run, at pinned versions, built with `go install` into a cache
# directory and reused from there.
#
#   bash scripts/peers.sh DIR
#
# installs what is missing into DIR as NAME-VERSION-static and prints one line per
# tool, "NAME PATH" (goose, migrate, tern); progress and go's errors go to
# stderr. Exit status: 0 ok, 1 go install failed, 75 (EX_TEMPFAIL) go install
# failed because the module proxy could not be reached (no network), so a
# caller can tell an offline machine from a broken build.
#
# Sourced (bench/run.sh), it only defines the pins and peers_install DIR.
#
# Built with CGO_ENABLED=0, as lockmigrate ships and as migrators are built
# for scratch or distroless images: a static binary starts without the
# dynamic loader, about 1 ms sooner, and the benchmark compares like with
# like.

# --- pinned peers (go install ...@version) ----------------------------------
GOOSE_VERSION=v3.30.0
MIGRATE_VERSION=v4.20.1
TERN_VERSION=v2.3.4
# goose's README lists the driver exclusion tags; keep only postgres.
GOOSE_TAGS='no_clickhouse no_libsql no_mssql no_mysql no_sqlite3 no_vertica no_ydb'

# peers_install DIR: see the top of this file.
peers_install() {
	local dir=$1
	mkdir -p "$dir" || return 1
	_peer_install "$dir" goose github.com/pressly/goose/v3/cmd/goose "$GOOSE_VERSION" "$GOOSE_TAGS" || return
	_peer_install "$dir" migrate github.com/golang-migrate/migrate/v4/cmd/migrate "$MIGRATE_VERSION" postgres || return
	_peer_install "$dir" tern github.com/jackc/tern/v2 "$TERN_VERSION" || return
}

# _peer_install DIR NAME PKG VERSION [TAGS]
_peer_install() {
	local dir=$1 name=$2 pkg=$3 ver=$4 tags=${5:-}
	local out="$dir/$name-$ver-static" tmp rc
	if [ ! -x "$out" ]; then
		printf '    go install %s\n' "$pkg@$ver${tags:+ (tags: $tags)}" >&2
		tmp=$(mktemp -d) || return 1
		mkdir -p "$tmp/bin"
		# Outside any module, so the repository's go.mod plays no part.
		if ! (cd "$tmp" && CGO_ENABLED=0 GOBIN="$tmp/bin" go install -trimpath -ldflags "-s -w" ${tags:+-tags="$tags"} "$pkg@$ver") 2>"$tmp/err"; then
			cat "$tmp/err" >&2
			rc=1
			if grep -qE 'dial tcp|no such host|i/o timeout|connection refused|network is unreachable|TLS handshake timeout|Temporary failure in name resolution|server misbehaving|proxyconnect|GOPROXY=off' "$tmp/err"; then
				rc=75
			fi
			rm -rf "$tmp"
			printf 'peers: go install %s@%s failed%s\n' "$pkg" "$ver" "$([ "$rc" = 75 ] && echo ' (module proxy unreachable)')" >&2
			return "$rc"
		fi
		# Atomic, so a concurrent caller never runs a half-written binary.
		mv "$tmp"/bin/* "$out.tmp.$$" && mv "$out.tmp.$$" "$out"
		rm -rf "$tmp"
	fi
	printf '%s %s\n' "$name" "$out"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
	set -uo pipefail
	if [ $# -ne 1 ]; then
		echo "usage: bash scripts/peers.sh DIR" >&2
		exit 2
	fi
	peers_install "$1"
fi
