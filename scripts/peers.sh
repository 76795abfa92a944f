#!/usr/bin/env bash
# The peer migrators (goose, golang-migrate, tern, dbmate) that the benchmark
# and the adopt and drop-in tests run, at pinned versions, installed into a
# cache directory and reused from there: the Go ones built with `go install`,
# dbmate from the npm package `dbmate`, which ships dbmate's own static
# binary.
#
#   bash scripts/peers.sh DIR
#
# installs what is missing into DIR as NAME-VERSION-static and prints one line per
# tool, "NAME PATH" (goose, migrate, tern, dbmate); progress and the
# installers' errors go to stderr. Exit status: 0 ok, 1 an install failed, 75
# (EX_TEMPFAIL) an install failed because the module proxy or the npm
# registry could not be reached (no network), 69 (EX_UNAVAILABLE) npm is not
# installed, so a caller can tell an offline machine from a broken build.
#
# Sourced (bench/run.sh), it only defines the pins, peers_install DIR (the Go
# peers the benchmark runs) and peers_install_dbmate DIR.
#
# Built with CGO_ENABLED=0, as lockmigrate ships and as migrators are built
# for scratch or distroless images: a static binary starts without the
# dynamic loader, about 1 ms sooner, and the benchmark compares like with
# like.

# --- pinned peers (go install ...@version) ----------------------------------
GOOSE_VERSION=v3.30.0
MIGRATE_VERSION=v4.20.1
TERN_VERSION=v2.3.4
# npm install dbmate@version (its binary comes in @dbmate/<os>-<arch>).
DBMATE_VERSION=2.36.0
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

# peers_install_dbmate DIR: dbmate from npm, installed outside any package
# (no package.json or lock file is written into the repository).
peers_install_dbmate() {
	local dir=$1 out="$1/dbmate-v$DBMATE_VERSION-static" tmp bin rc
	if [ ! -x "$out" ]; then
		command -v npm >/dev/null 2>&1 || {
			printf 'peers: npm not found; install Node.js and npm (apt-get install npm) to get dbmate\n' >&2
			return 69
		}
		printf '    npm install dbmate@%s\n' "$DBMATE_VERSION" >&2
		mkdir -p "$dir" || return 1
		tmp=$(mktemp -d) || return 1
		if ! npm install --prefix "$tmp" --no-audit --no-fund --no-save --loglevel=error "dbmate@$DBMATE_VERSION" >/dev/null 2>"$tmp/err"; then
			cat "$tmp/err" >&2
			rc=1
			if grep -qE 'ENOTFOUND|ECONNREFUSED|ECONNRESET|ETIMEDOUT|EAI_AGAIN|ENETUNREACH|network|proxy' "$tmp/err"; then
				rc=75
			fi
			rm -rf "$tmp"
			printf 'peers: npm install dbmate@%s failed%s\n' "$DBMATE_VERSION" "$([ "$rc" = 75 ] && echo ' (npm registry unreachable)')" >&2
			return "$rc"
		fi
		bin=$(find "$tmp/node_modules/@dbmate" -path '*/bin/dbmate' -type f 2>/dev/null | head -n 1)
		if [ -z "$bin" ] || ! "$bin" --version >/dev/null 2>&1; then
			rm -rf "$tmp"
			printf 'peers: npm package dbmate@%s has no dbmate binary for this platform\n' "$DBMATE_VERSION" >&2
			return 1
		fi
		# Atomic, so a concurrent caller never runs a half-written binary.
		cp "$bin" "$out.tmp.$$" && chmod 755 "$out.tmp.$$" && mv "$out.tmp.$$" "$out"
		rm -rf "$tmp"
	fi
	printf '%s %s\n' dbmate "$out"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
	set -uo pipefail
	if [ $# -ne 1 ]; then
		echo "usage: bash scripts/peers.sh DIR" >&2
		exit 2
	fi
	peers_install "$1" || exit
	peers_install_dbmate "$1"
fi
