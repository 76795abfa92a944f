#!/usr/bin/env bash
# Container image test: builds the Dockerfile with podman (no Docker engine
# needed) and runs the image against a throwaway PostgreSQL 15.
#
#   bash scripts/image-test.sh
#
# Where the builder image (golang:1.26-bookworm) cannot be pulled, the build
# stage runs on a local stand-in: an image made of the host's Go toolchain
# ($(go env GOROOT), at /usr/local/go as in the golang image), the host's C
# toolchain for the static cgo build (every file of the installed Debian
# packages in the dependency closure of gcc and libc6-dev: gcc-12 with cc1
# and collect2, binutils, glibc's headers, crt*.o and libc.a, the shared
# libraries and the dynamic loader, at their paths under bookworm's merged
# /usr), busybox-static for /bin/sh and the other shell tools and the host's
# CA bundle, passed as --build-arg GO_IMAGE. Every
# instruction of the Dockerfile then runs as written: the module download and
# build with their cache mounts, the MIGRATIONS override, the offline
# validation, the passwd/group/CA preparation and the whole scratch stage. Set
# IMAGE_TEST_GO_IMAGE=golang:1.26-bookworm to use the real builder where
# registries are reachable.
#
# Steps:
#   1. install podman, buildah, runc, busybox-static, gcc, libc6-dev and
#      PostgreSQL 15 with apt when missing (one apt-get update);
#   2. snapshot the build context exactly as podman sends it (.dockerignore
#      applied) and check that it holds every .go and .sql file and no .git;
#      every build below uses that snapshot, so concurrent edits cannot mix;
#   3. build the two binaries on the host from the snapshot with the
#      Dockerfile's commands (lockmigrate pure Go, its parser helper
#      lockmigrate-pgparse static cgo; -trimpath, same tags and ldflags) and,
#      with the stand-in builder (same Go), check each is byte-identical to
#      the image's;
#   4. build the image; check its labels, user, entrypoint, that it holds
#      only /lockmigrate, /lockmigrate-pgparse, /etc/passwd, /etc/group and
#      the CA bundle (no shell), and that its size is the two binaries' and
#      little more;
#   5. run it read-only as 65532 against an empty database (applied), again
#      (up_to_date), `status`, `version`, `lint` of the embedded set (clean)
#      and of a mounted file with a finding (exit 5: the helper parses in the
#      image), --entrypoint /bin/sh (must fail), then 3 containers at once
#      on another empty database (one applies, each migration exactly once);
#   6. build with --build-arg MIGRATIONS=scripts/image/testdata/custom and run
#      it: only that set is applied; builds with a directory holding no *.sql
#      and with an invalid set (duplicate version) must fail.
#
# A step that cannot run on this machine is reported with the reason and
# skipped; the exit status is 0 when every step that ran passed
# (IMAGE_TEST_STRICT=1: 1 when a step was skipped).
#
# Environment:
#   IMAGE_TEST_GO_IMAGE  builder image instead of the local stand-in
#   IMAGE_TEST_KEEP=1    keep the images built (they are removed otherwise) and
#                        tag the default one localhost/lockmigrate:<version>
#   IMAGE_TEST_STRICT=1  a skipped step fails the run
#   PG_BIN               PostgreSQL 15 server binaries (/usr/lib/postgresql/15/bin)
#
# Podman runs with --runtime runc --cgroup-manager cgroupfs (no systemd, no
# crun needed) and host networking. When the machine denies raising resource
# limits (no CAP_SYS_RESOURCE, as in some sandboxes), podman's default
# ulimits cannot be applied and explicit ones, no higher than the current
# limits, are passed instead; the script says so when it happens.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$REPO/scripts/lib.sh"

# Nothing from the caller's shell may leak into the checks.
while read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(LOCKMIGRATE_[A-Z_]*|DATABASE_URL[A-Z_]*|PG[A-Z]+)$' || true)

PGBIN=${PG_BIN:-$PG_DEFAULT_BIN}
GO_IMAGE_OVERRIDE=${IMAGE_TEST_GO_IMAGE:-}
KEEP=${IMAGE_TEST_KEEP:-0}
STRICT=${IMAGE_TEST_STRICT:-0}
CUSTOM_DIR=scripts/image/testdata/custom   # relative to the build context
INVALID_DIR=scripts/image/testdata/invalid
NOSQL_DIR=scripts/image/testdata

NAME=lockmigrate-image-test-$$
IMAGE=localhost/$NAME:default
IMAGE_CUSTOM=localhost/$NAME:custom
BUILDER_IMAGE=localhost/$NAME-go:stand-in
CONTEXT_IMAGE=localhost/$NAME-context:latest

PODMAN=(podman --runtime runc --cgroup-manager cgroupfs)
pm() { "${PODMAN[@]}" "$@"; }
LIMITS=()            # --ulimit options, when the defaults cannot be applied
RUN_BASE=()          # options of every `podman run`

WORK=""              # temp dir: context snapshot, stand-in rootfs, logs
PGWORK=""            # temp dir owned by postgres: the cluster
PG_STARTED=false
CONTAINERS=()        # names of containers started, removed by cleanup
IMAGES=()            # images built, removed by cleanup unless IMAGE_TEST_KEEP=1
PASSED=() FAILED=() SKIPPED=()

pass() { PASSED+=("$1"); info "PASS  $1"; }
fail() { FAILED+=("$1"); info "FAIL  $1"; }
skip() { SKIPPED+=("$1: $2"); info "SKIP  $1: $2"; }

cleanup() {
	local rc=$? c i pid
	set +e
	for c in "${CONTAINERS[@]}"; do pm rm -f -i "$c" >/dev/null 2>&1; done
	if [ "$KEEP" = 1 ]; then
		for i in "${IMAGES[@]}"; do pm image exists "$i" && info "kept image: $i"; done
	else
		for i in "${IMAGES[@]}"; do pm rmi -f "$i" >/dev/null 2>&1; done
	fi
	if $PG_STARTED; then
		if ! as_pg "$PGBIN/pg_ctl" -D "$PGWORK/data" -m fast -w -t 30 stop >/dev/null 2>&1; then
			pid=$(head -n1 "$PGWORK/data/postmaster.pid" 2>/dev/null)
			[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
		fi
	fi
	[ -n "$PGWORK" ] && rm -rf "$PGWORK"
	[ -n "$WORK" ] && rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# json_field NAME LINE: the value of a string or number field of a JSON line.
json_field() { sed -n -E 's/.*"'"$1"'":("([^"]*)"|(-?[0-9]+)).*/\2\3/p' <<<"$2"; }

# finished_line FILE: the "run finished" log event of a captured stderr.
finished_line() { grep '"msg":"run finished"' "$1" | tail -n1 || true; }

# show FILE [N]: the last N lines of FILE, indented (diagnostics on failure).
show() { tail -n "${2:-15}" "$1" | indent; }

# run_image NAME OUT ERR IMAGE ARGS...: `podman run` the image read-only as
# 65532 with POD_NAME=NAME; stdout to OUT, stderr to ERR; sets RC.
run_image() {
	local name=$1 out=$2 err=$3
	shift 3
	CONTAINERS+=("$NAME-$name")
	RC=0
	timeout 180 "${PODMAN[@]}" run --rm --name "$NAME-$name" "${RUN_BASE[@]}" \
		-e POD_NAME="$name" "$@" >"$out" 2>"$err" || RC=$?
}

# build_image LOG ARGS...: podman build of the snapshot's Dockerfile; sets RC.
build_image() {
	local log=$1
	shift
	RC=0
	"${PODMAN[@]}" build --layers=false --network host "${LIMITS[@]}" \
		--build-arg GO_IMAGE="$GO_IMAGE" --build-arg VERSION="$VERSION" \
		--build-arg REVISION="$REVISION" -f "$CTX/Dockerfile" "$@" "$CTX" >"$log" 2>&1 || RC=$?
}

# host_build OUT [MIGRATIONS]: the Dockerfile's build commands on the host, in
# the context snapshot (or a copy of it whose embedded set is replaced by the
# *.sql files of MIGRATIONS, as the Dockerfile does): lockmigrate to OUT, its
# parser helper to OUT-pgparse.
host_build() {
	local out=$1 migdir=${2:-} dir=$CTX
	if [ -n "$migdir" ]; then
		dir="$WORK/ctx-$(basename "$migdir")"
		rm -rf "$dir"
		cp -a "$CTX" "$dir"
		rm -f "$dir"/migrations/*.sql
		cp "$CTX/$migdir"/*.sql "$dir/migrations/"
	fi
	(cd "$dir" && env -u GOFLAGS -u GOOS -u GOARCH -u GOAMD64 -u GOEXPERIMENT GOTOOLCHAIN=local \
		CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o "$out" . &&
		env -u GOFLAGS -u GOOS -u GOARCH -u GOAMD64 -u GOEXPERIMENT GOTOOLCHAIN=local \
			CGO_ENABLED=1 go build -trimpath -tags netgo,osusergo \
			-ldflags "-s -w -linkmode external -extldflags -static" -o "$out-pgparse" ./cmd/lockmigrate-pgparse)
}

# extract_binary IMAGE OUT [PATH]: copy PATH (/lockmigrate) out of IMAGE.
extract_binary() {
	local rc=0
	CONTAINERS+=("$NAME-extract")
	pm create --name "$NAME-extract" "$1" >/dev/null || return 1
	pm cp "$NAME-extract:${3:-/lockmigrate}" "$2" || rc=$?
	pm rm -f "$NAME-extract" >/dev/null
	return "$rc"
}

psql_db() {
	"$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres -d "$1" -c "$2"
}

# Packages whose installed files make the stand-in builder's C toolchain:
# golang:1.26-bookworm installs gcc and libc6-dev (binutils comes with gcc).
BUILDER_PACKAGES=(gcc libc6-dev)

# builder_files MERGED...: the files and symlinks (no directories) of the
# installed packages in the dependency closure of BUILDER_PACKAGES, one path
# a line relative to /, with the top-level directories MERGED (symlinks into
# /usr on the host) replaced by their target, so that nothing extracted
# replaces the rootfs's own symlinks. Documentation is left out. A summary
# of the packages goes to stderr.
builder_files() {
	local d p f sed_expr="" pkgs=() installed=() skipped=()
	for d in "$@"; do sed_expr+="\\#^/$d\$#d;s#^/$d/#/$(readlink "/$d")/#;"; done
	mapfile -t pkgs < <(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
		--no-breaks --no-replaces --no-enhances "${BUILDER_PACKAGES[@]}" | grep -E '^[a-z0-9]' | LC_ALL=C sort -u)
	for p in "${pkgs[@]}"; do
		if [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null)" = "ii " ]; then
			installed+=("$p")
		else
			skipped+=("$p")
		fi
	done
	dpkg -L "${installed[@]}" | while IFS= read -r f; do
		case $f in /usr/share/doc/* | /usr/share/man/* | /usr/share/info/* | /usr/share/lintian/*) continue ;; esac
		if [ -L "$f" ] || { [ -e "$f" ] && [ ! -d "$f" ]; }; then printf '%s\n' "$f"; fi
	done | sed -E "${sed_expr}s#^/##" | LC_ALL=C sort -u
	printf '%s' "${#installed[@]} packages, the closure of ${BUILDER_PACKAGES[*]} ($(dpkg-query -W -f='${Package} ${Version}' gcc-12), $(dpkg-query -W -f='${Package} ${Version}' binutils), $(dpkg-query -W -f='${Package} ${Version}' libc6-dev))" >&2
	[ "${#skipped[@]}" -eq 0 ] || printf '; not installed, left out: %s' "${skipped[*]}" >&2
}

# ---------------------------------------------------------------------------
step "Tools"
command -v go >/dev/null 2>&1 || die "go not found in PATH: the host build needs Go (see go.mod)"
missing=()
for t in podman buildah runc; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
if [ -z "$GO_IMAGE_OVERRIDE" ]; then
	# The stand-in builder needs a static busybox: Debian's plain busybox
	# package also installs /bin/busybox, dynamically linked.
	[ "$(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null || true)" = "install ok installed" ] ||
		missing+=(busybox-static)
fi
# The host build is the Dockerfile's static cgo build: it needs gcc and
# libc6-dev too, and the stand-in builder is made of their files.
for p in "${BUILDER_PACKAGES[@]}"; do
	[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" = "install ok installed" ] || missing+=("$p")
done
[ -x "$PGBIN/postgres" ] || missing+=(postgresql-15)
if [ "${#missing[@]}" -gt 0 ]; then
	apt_install "${missing[@]}"
fi
[ -x "$PGBIN/postgres" ] || die "PostgreSQL 15 server binaries missing in $PGBIN"
info "$(podman --version); $(buildah --version | cut -d' ' -f1-3); $(runc --version | head -n1); $(go version)"
info "$("$PGBIN/postgres" --version)"

WORK=$(mktemp -d /tmp/lmimage.XXXXXX)
CTX=$WORK/context
VERSION="image-test-$(git -C "$REPO" describe --tags --always --dirty 2>/dev/null || echo dev)"
REVISION=$(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)
info "VERSION=$VERSION REVISION=$REVISION"

# ---------------------------------------------------------------------------
step "Build context (.dockerignore applied), snapshot in $CTX"
# A COPY-only build needs no container runtime: it sends the context through
# .dockerignore exactly as every build below does, and its filesystem is the
# context.
printf 'FROM scratch\nCOPY . /\n' >"$WORK/context.Containerfile"
mkdir -p "$CTX"
IMAGES+=("$CONTEXT_IMAGE")
pm build --layers=false -q -f "$WORK/context.Containerfile" -t "$CONTEXT_IMAGE" "$REPO" >"$WORK/context.log" 2>&1 ||
	{ show "$WORK/context.log"; die "podman could not build a COPY-only image of the context"; }
CONTAINERS+=("$NAME-context")
pm create --name "$NAME-context" "$CONTEXT_IMAGE" /none >/dev/null
pm export "$NAME-context" | tar -x -C "$CTX"
pm rm -f "$NAME-context" >/dev/null
pm rmi -f "$CONTEXT_IMAGE" >/dev/null 2>&1 || true

# sources DIR: every .go and .sql file under DIR (but .git), sorted.
sources() { (cd "$1" && find . -name .git -prune -o -type f \( -name '*.go' -o -name '*.sql' \) -print | sort); }
ctx_files=$(find "$CTX" -type f | wc -l)
ctx_kib=$(du -sk "$CTX" | cut -f1)
info "context: $ctx_files files, $ctx_kib KiB; top level: $(find "$CTX" -mindepth 1 -maxdepth 1 -printf '%f\n' | LC_ALL=C sort | tr '\n' ' ')"
problems=()
for f in go.mod go.sum main.go migrations/embed.go; do [ -f "$CTX/$f" ] || problems+=("$f missing"); done
for f in .git Dockerfile .dockerignore bin; do [ -e "$CTX/$f" ] && problems+=("$f not excluded"); done
if ! diff <(sources "$REPO") <(sources "$CTX") >"$WORK/sources.diff"; then
	problems+=(".go/.sql files of the working tree missing from the context: $(grep -c '^<' "$WORK/sources.diff" || true)")
	show "$WORK/sources.diff"
fi
if [ "${#problems[@]}" -eq 0 ]; then
	pass "build context: every .go and .sql file sent, .git/Dockerfile/.dockerignore/bin excluded"
else
	fail "build context: ${problems[*]}"
fi
# The builds below use the snapshot, with the build files added back.
cp "$REPO/Dockerfile" "$REPO/.dockerignore" "$CTX/"

# ---------------------------------------------------------------------------
step "Host build from the snapshot (the Dockerfile's build command)"
HOST_BIN=$WORK/lockmigrate.host
HOST_BIN_CUSTOM=$WORK/lockmigrate.custom.host
host_build "$HOST_BIN" || die "go build failed on the host"
host_build "$HOST_BIN_CUSTOM" "$CUSTOM_DIR" || die "go build with MIGRATIONS=$CUSTOM_DIR failed on the host"
BINARY_SIZE=$(stat -c %s "$HOST_BIN")
HELPER_SIZE=$(stat -c %s "$HOST_BIN-pgparse")
info "lockmigrate, CGO_ENABLED=0 go build -trimpath (the Dockerfile's command): $BINARY_SIZE bytes"
info "lockmigrate-pgparse, static cgo go build -trimpath (the Dockerfile's command): $HELPER_SIZE bytes"
if go version -m "$HOST_BIN" | grep -q 'CGO_ENABLED=0' && go version -m "$HOST_BIN-pgparse" | grep -q 'CGO_ENABLED=1'; then
	pass "host build: lockmigrate without cgo, lockmigrate-pgparse with"
else
	fail "host build: $(go version -m "$HOST_BIN" | grep CGO_ENABLED); $(go version -m "$HOST_BIN-pgparse" | grep CGO_ENABLED)"
fi
if out=$("$HOST_BIN" version) && [ "$out" = "lockmigrate $VERSION" ]; then
	pass "host binary: prints '$out'"
else
	fail "host binary: version printed '$out', want 'lockmigrate $VERSION'"
fi

# ---------------------------------------------------------------------------
step "Builder image"
if [ -n "$GO_IMAGE_OVERRIDE" ]; then
	GO_IMAGE=$GO_IMAGE_OVERRIDE
	info "GO_IMAGE=$GO_IMAGE (IMAGE_TEST_GO_IMAGE); pulled by the build"
else
	GOROOT_HOST=$(go env GOROOT)
	stage=$WORK/builder
	root=$stage/rootfs
	t0=$SECONDS
	mkdir -p "$root/usr/bin" "$root/usr/sbin" "$root/usr/lib" "$root/usr/local" \
		"$root/etc/ssl/certs" "$root/tmp" "$root/root" "$root/go"
	chmod 1777 "$root/tmp"
	# Bookworm's merged /usr, as on the host: /bin, /lib, /lib64 and /sbin
	# are symlinks into /usr (directories where the host has directories).
	merged=()
	for d in bin lib lib64 sbin; do
		if [ -L "/$d" ]; then
			ln -s "$(readlink "/$d")" "$root/$d"
			merged+=("$d")
		else
			mkdir -p "$root/$d"
		fi
	done
	# The C toolchain of the golang image (gcc and libc6-dev, for the
	# Dockerfile's static cgo build): every file of the host's installed
	# packages in their dependency closure, at the same paths, so that host
	# and stand-in compile and link with the very same gcc, binutils and libc.
	builder_files "${merged[@]}" >"$stage/files" 2>"$stage/packages"
	tar -C / --no-recursion -cf - -T "$stage/files" | tar -C "$root" --keep-directory-symlink -xpf -
	# cc, as update-alternatives sets it in the golang image.
	[ -e "$root/usr/bin/cc" ] || ln -s gcc "$root/usr/bin/cc"
	# busybox-static for /bin/sh and the rest of the shell tools, where no
	# package file of the toolchain has the name (binutils' ar, strings...).
	cp /bin/busybox "$root/usr/bin/busybox"
	for applet in $(/bin/busybox --list-full); do
		[ -e "$root/$applet" ] || [ -L "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
	done
	cp -al "$GOROOT_HOST" "$root/usr/local/go" 2>/dev/null || cp -a "$GOROOT_HOST" "$root/usr/local/go"
	cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
	printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
	printf 'root:x:0:\n' >"$root/etc/group"
	# The golang image's environment.
	cat >"$stage/Containerfile" <<-'EOF'
		FROM scratch
		COPY rootfs/ /
		ENV PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		    GOPATH=/go GOTOOLCHAIN=local
		WORKDIR /go
	EOF
	IMAGES+=("$BUILDER_IMAGE")
	pm build --layers=false -q -t "$BUILDER_IMAGE" "$stage" >"$WORK/builder.log" 2>&1 ||
		{ show "$WORK/builder.log"; die "could not build the stand-in builder image"; }
	BUILDER_SIZE=$(pm image inspect --format '{{.Size}}' "$BUILDER_IMAGE")
	GO_IMAGE=$BUILDER_IMAGE
	info "GO_IMAGE=$GO_IMAGE: $(go env GOVERSION) from $GOROOT_HOST, busybox-static sh, host CA bundle"
	info "C toolchain: $(wc -l <"$stage/files") files of $(cat "$stage/packages")"
	info "stand-in built in $((SECONDS - t0)) s: $BUILDER_SIZE bytes ($((BUILDER_SIZE / 1048576)) MiB)"
	info "(stands in for golang:1.26-bookworm, which cannot be pulled here)"
	rm -rf "$stage"
fi

# ---------------------------------------------------------------------------
step "Container runtime"
CAN_RUN=true
RUNTIME_WHY=""
probe() { timeout 120 "${PODMAN[@]}" run --rm --network host "${LIMITS[@]}" "$GO_IMAGE" true >"$WORK/probe.log" 2>&1; }
if probe; then
	info "podman runs containers with its default ulimits"
elif grep -q 'rlimit' "$WORK/probe.log"; then
	info "podman's default ulimits are refused here: $(grep -o 'error setting rlimit type [0-9]*: [a-z ]*' "$WORK/probe.log" | head -n1)"
	info "(raising a limit needs CAP_SYS_RESOURCE, which this machine does not grant)"
	nofile=$(ulimit -Hn)
	nproc=$(ulimit -Hu)
	[ "$nofile" = unlimited ] && nofile=1048576
	{ [ "$nproc" = unlimited ] || [ "$nproc" -gt 4096 ]; } && nproc=4096
	LIMITS=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")
	if probe; then
		info "using ${LIMITS[*]} for builds and runs"
	else
		CAN_RUN=false
		RUNTIME_WHY="podman cannot run a container here, even with ${LIMITS[*]}: $(tail -n1 "$WORK/probe.log" 2>/dev/null || true)"
	fi
else
	CAN_RUN=false
	RUNTIME_WHY="podman cannot run a container here: $(tail -n1 "$WORK/probe.log" 2>/dev/null || true)"
fi
RUN_BASE=(--network host "${LIMITS[@]}" --read-only --user 65532:65532)
if $CAN_RUN; then
	pass "container runtime: podman run works (runc, cgroupfs, host network)"
else
	info "$RUNTIME_WHY"
fi

# ---------------------------------------------------------------------------
step "Image build: podman build -f Dockerfile (default migrations)"
BUILT=false
if $CAN_RUN; then
	IMAGES+=("$IMAGE")
	t0=$SECONDS
	build_image "$WORK/build-default.log" -t "$IMAGE"
	if [ "$RC" -eq 0 ]; then
		BUILT=true
		grep -E '^ok: ' "$WORK/build-default.log" | indent || true
		pass "image build ($((SECONDS - t0)) s): $IMAGE"
		if [ "$KEEP" = 1 ]; then
			pm tag "$IMAGE" "localhost/lockmigrate:$VERSION"
			info "tagged localhost/lockmigrate:$VERSION (IMAGE_TEST_KEEP=1)"
		fi
	else
		show "$WORK/build-default.log" 25
		fail "image build: podman build exited $RC"
	fi
else
	skip "image build (Dockerfile RUN steps)" "$RUNTIME_WHY"
fi

# ---------------------------------------------------------------------------
step "Image contents and metadata"
IMAGE_SIZE=""
IMAGE_BINARY_SIZE=""
if $BUILT; then
	IMAGE_SIZE=$(pm image inspect --format '{{.Size}}' "$IMAGE")
	info "image size: $IMAGE_SIZE bytes"
	meta=$(pm image inspect --format '{{.Config.User}}|{{json .Config.Entrypoint}}|{{json .Config.Cmd}}' "$IMAGE")
	if [ "$meta" = '65532:65532|["/lockmigrate"]|null' ]; then
		pass "config: USER 65532:65532, ENTRYPOINT [\"/lockmigrate\"], no CMD"
	else
		fail "config: got $meta"
	fi
	labels_ok=true
	label() { pm image inspect --format "{{index .Config.Labels \"org.opencontainers.image.$1\"}}" "$IMAGE"; }
	for l in title description source licenses version revision; do
		v=$(label "$l")
		info "org.opencontainers.image.$l=$v"
		[ -n "$v" ] || labels_ok=false
	done
	[ "$(label version)" = "$VERSION" ] && [ "$(label revision)" = "$REVISION" ] || labels_ok=false
	if $labels_ok; then pass "OCI labels set, version/revision from the build args"; else fail "OCI labels"; fi

	CONTAINERS+=("$NAME-files")
	pm create --name "$NAME-files" "$IMAGE" >/dev/null
	pm export "$NAME-files" | tar -t | sed 's#/$##' | sort >"$WORK/image-files"
	pm rm -f "$NAME-files" >/dev/null
	want=$(printf '%s\n' etc etc/group etc/passwd etc/ssl etc/ssl/certs etc/ssl/certs/ca-certificates.crt \
		lockmigrate lockmigrate-pgparse | sort)
	if [ "$(cat "$WORK/image-files")" = "$want" ]; then
		pass "filesystem: only /lockmigrate, /lockmigrate-pgparse, /etc/passwd, /etc/group, the CA bundle (no shell)"
	else
		fail "filesystem: $(tr '\n' ' ' <"$WORK/image-files")"
	fi
	# Nothing but the two binaries of any size: at most 1 MiB over them
	# (the CA bundle is about 220 KB).
	if [ "$IMAGE_SIZE" -le $((BINARY_SIZE + HELPER_SIZE + 1048576)) ]; then
		pass "image size $IMAGE_SIZE bytes: the two binaries ($BINARY_SIZE + $HELPER_SIZE) and $((IMAGE_SIZE - BINARY_SIZE - HELPER_SIZE)) bytes more"
	else
		fail "image size $IMAGE_SIZE bytes, over the two binaries ($BINARY_SIZE + $HELPER_SIZE) + 1 MiB"
	fi

	extract_binary "$IMAGE" "$WORK/lockmigrate.image"
	extract_binary "$IMAGE" "$WORK/lockmigrate-pgparse.image" /lockmigrate-pgparse
	IMAGE_BINARY_SIZE=$(stat -c %s "$WORK/lockmigrate.image")
	if [ -n "$GO_IMAGE_OVERRIDE" ]; then
		skip "image binaries == host binaries" "builder $GO_IMAGE_OVERRIDE may have another Go than the host"
	elif cmp -s "$WORK/lockmigrate.image" "$HOST_BIN" && cmp -s "$WORK/lockmigrate-pgparse.image" "$HOST_BIN-pgparse"; then
		pass "image binaries == host builds, byte for byte (sha256 $(sha256sum "$HOST_BIN" | cut -c1-16)…, $(sha256sum "$HOST_BIN-pgparse" | cut -c1-16)…)"
	else
		fail "image binaries ($IMAGE_BINARY_SIZE, $(stat -c %s "$WORK/lockmigrate-pgparse.image") bytes) differ from the host builds ($BINARY_SIZE, $HELPER_SIZE bytes)"
	fi
else
	skip "image contents and metadata" "no image"
fi

# ---------------------------------------------------------------------------
step "Throwaway PostgreSQL"
if $BUILT; then
	PGWORK=$(mktemp -d /tmp/lmimage-pg.XXXXXX)
	chown postgres:postgres "$PGWORK" 2>/dev/null || true
	as_pg "$PGBIN/initdb" -D "$PGWORK/data" -U postgres -A trust -E UTF8 --no-locale --no-sync \
		>"$PGWORK/initdb.log" 2>&1 || { show "$PGWORK/initdb.log"; die "initdb failed"; }
	PORT=$(free_port)
	cat >>"$PGWORK/data/postgresql.conf" <<-EOF
		listen_addresses = '127.0.0.1'
		port = $PORT
		unix_socket_directories = '$PGWORK'
		fsync = off
	EOF
	PG_STARTED=true
	as_pg "$PGBIN/pg_ctl" -D "$PGWORK/data" -l "$PGWORK/postgres.log" -w -t 60 start >/dev/null ||
		{ show "$PGWORK/postgres.log"; die "PostgreSQL did not start"; }
	for db in img_default img_race img_custom; do psql_db postgres "CREATE DATABASE $db"; done
	info "PostgreSQL on 127.0.0.1:$PORT, databases img_default, img_race, img_custom"
else
	info "not started: no image to run"
fi
url() { echo "postgres://postgres@127.0.0.1:$PORT/$1?sslmode=disable"; }

# ---------------------------------------------------------------------------
step "Runs: podman run --network host --read-only --user 65532:65532 $IMAGE"
if $BUILT; then
	# 1. Empty database: applied; the termination message is written too.
	termlog=$WORK/termination-log
	: >"$termlog"
	chmod 666 "$termlog"
	run_image container-test "$WORK/run1.out" "$WORK/run1.err" \
		-v "$termlog:/dev/termination-log" -e DATABASE_URL="$(url img_default)" "$IMAGE"
	line=$(finished_line "$WORK/run1.err")
	info "stderr: $line"
	if [ "$RC" -eq 0 ] && [ "$(json_field outcome "$line")" = applied ] && [ "$(json_field exit_code "$line")" = 0 ]; then
		pass "run 1 on an empty database: exit 0, outcome applied"
	else
		show "$WORK/run1.err"
		fail "run 1: exit $RC, outcome '$(json_field outcome "$line")'"
	fi
	if grep -q '"outcome":"applied"' "$termlog"; then
		pass "termination message written to /dev/termination-log by the read-only, non-root container"
	else
		fail "termination message: '$(cat "$termlog")'"
	fi

	# 2. Again: up to date.
	run_image container-test "$WORK/run2.out" "$WORK/run2.err" -e DATABASE_URL="$(url img_default)" "$IMAGE"
	line=$(finished_line "$WORK/run2.err")
	info "stderr: $line"
	if [ "$RC" -eq 0 ] && [ "$(json_field outcome "$line")" = up_to_date ]; then
		pass "run 2: exit 0, outcome up_to_date"
	else
		show "$WORK/run2.err"
		fail "run 2: exit $RC, outcome '$(json_field outcome "$line")'"
	fi

	# 3. status.
	run_image container-status "$WORK/status.out" "$WORK/status.err" -e DATABASE_URL="$(url img_default)" "$IMAGE" status
	if [ "$RC" -eq 0 ] && grep -q 'pending: 0' "$WORK/status.out"; then
		pass "status: $(grep 'schema version' "$WORK/status.out")"
	else
		show "$WORK/status.out"
		show "$WORK/status.err"
		fail "status: exit $RC"
	fi

	# 4. version.
	run_image container-version "$WORK/version.out" "$WORK/version.err" "$IMAGE" version
	if [ "$RC" -eq 0 ] && [ "$(cat "$WORK/version.out")" = "lockmigrate $VERSION" ]; then
		pass "version: $(cat "$WORK/version.out")"
	else
		fail "version: exit $RC, printed '$(cat "$WORK/version.out")'"
	fi

	# 5. lint: the embedded set is clean (the build linted it too); a
	# mounted file with a finding is exit 5 with the finding, which only a
	# parse can give: the pure-Go binary ran its helper.
	run_image container-lint "$WORK/lint.out" "$WORK/lint.err" "$IMAGE" lint
	if [ "$RC" -eq 0 ] && grep -q '^0 error(s)' "$WORK/lint.out"; then
		pass "lint of the embedded set: $(grep '^0 error(s)' "$WORK/lint.out")"
	else
		show "$WORK/lint.out"
		show "$WORK/lint.err"
		fail "lint of the embedded set: exit $RC"
	fi
	mkdir -p "$WORK/lintset"
	printf 'CREATE INDEX orders_state_idx ON orders (state);\n' >"$WORK/lintset/2_index.sql"
	chmod -R a+rX "$WORK/lintset"
	run_image container-lint-bad "$WORK/lint-bad.out" "$WORK/lint-bad.err" -v "$WORK/lintset:/set:ro" \
		-e LOCKMIGRATE_DIR=/set "$IMAGE" lint /set/2_index.sql
	if [ "$RC" -eq 5 ] && grep -q '2_index.sql:1:1: error \[index-concurrently\]' "$WORK/lint-bad.out"; then
		pass "lint of a mounted file: exit 5, $(grep -o 'error \[index-concurrently\].*' "$WORK/lint-bad.out" | cut -c1-60)…"
	else
		show "$WORK/lint-bad.out"
		show "$WORK/lint-bad.err"
		fail "lint of a mounted file: exit $RC, want 5 with an index-concurrently finding"
	fi

	# 6. No shell.
	run_image container-sh "$WORK/sh.out" "$WORK/sh.err" --entrypoint /bin/sh "$IMAGE" -c true
	if [ "$RC" -ne 0 ] && grep -qi 'no such file' "$WORK/sh.err"; then
		pass "--entrypoint /bin/sh fails (exit $RC): $(grep -oi 'stat /bin/sh: no such file or directory' "$WORK/sh.err" | head -n1)"
	else
		show "$WORK/sh.err"
		fail "--entrypoint /bin/sh: exit $RC"
	fi
else
	skip "container runs (applied, up_to_date, status, version, no shell)" "no image"
fi

# ---------------------------------------------------------------------------
step "3 containers at once on an empty database"
if $BUILT; then
	# Create and initialise the three first (the slow part: the runtime sets
	# each one up and leaves its process waiting), then start them together.
	pids=()
	for i in 1 2 3; do
		CONTAINERS+=("$NAME-container-$i")
		pm create --name "$NAME-container-$i" "${RUN_BASE[@]}" -e POD_NAME="container-$i" \
			-e DATABASE_URL="$(url img_race)" "$IMAGE" >/dev/null
		pm init "$NAME-container-$i" >/dev/null
	done
	for i in 1 2 3; do
		timeout 180 "${PODMAN[@]}" start --attach "$NAME-container-$i" >"$WORK/race$i.out" 2>"$WORK/race$i.err" &
		pids+=("$!")
	done
	race_ok=true
	applied=0
	outcomes=()
	for i in 1 2 3; do
		rc=0
		wait "${pids[$((i - 1))]}" || rc=$?
		line=$(finished_line "$WORK/race$i.err")
		o=$(json_field outcome "$line")
		c=$(json_field exit_code "$line")
		outcomes+=("container-$i=${o:-none}/exit $rc")
		[ "$o" = applied ] && applied=$((applied + 1))
		case $o in applied | skipped | up_to_date) ;; *) race_ok=false ;; esac
		[ "$rc" = 0 ] && [ "$c" = 0 ] || race_ok=false
		if [ "$o" = skipped ]; then
			h=$(json_field application_name "$line")
			info "container-$i skipped: lock held by ${h:-a run that had released it by the time it looked}"
		fi
	done
	info "outcomes: ${outcomes[*]}"
	# How close together they ran: each run's "run started" and "run finished"
	# instants, in ms after the earliest start.
	spans=()
	first=""
	for i in 1 2 3; do
		t_start=$(grep -m1 '"msg":"run started"' "$WORK/race$i.err" | sed -n -E 's/^\{"time":"([^"]*)".*/\1/p')
		t_end=$(finished_line "$WORK/race$i.err" | sed -n -E 's/^\{"time":"([^"]*)".*/\1/p')
		if [ -z "$t_start" ] || [ -z "$t_end" ]; then continue; fi
		s_ms=$(($(date -d "$t_start" +%s%N) / 1000000))
		e_ms=$(($(date -d "$t_end" +%s%N) / 1000000))
		spans+=("$i $s_ms $e_ms")
		{ [ -z "$first" ] || [ "$s_ms" -lt "$first" ]; } && first=$s_ms
	done
	timeline=()
	for sp in "${spans[@]}"; do
		read -r i s_ms e_ms <<<"$sp"
		timeline+=("container-$i $((s_ms - first))..$((e_ms - first)) ms")
	done
	info "timeline (run started..run finished, from the first start): ${timeline[*]}"
	audit=$(psql_db img_race "SELECT count(*) || ' ' || count(DISTINCT version) FROM schema_audit")
	hist=$(psql_db img_race "SELECT count(*) || ' ' || count(DISTINCT applied_by) || ' ' || min(applied_by) FROM lockmigrate_history")
	expected=$(find "$CTX/migrations" -maxdepth 1 -name '*.sql' | wc -l)
	info "schema_audit rows/versions: $audit; history rows/appliers: $hist"
	if $race_ok && [ "$applied" -eq 1 ] && [ "$audit" = "$expected $expected" ] && [ "${hist% *}" = "$expected 1" ]; then
		pass "3 concurrent containers: all exit 0, exactly one applied, each of the $expected migrations applied once (by ${hist##* })"
	else
		for i in 1 2 3; do show "$WORK/race$i.err" 5; done
		fail "3 concurrent containers: $applied applied (want 1); ${outcomes[*]}"
	fi
else
	skip "3 concurrent containers" "no image"
fi

# ---------------------------------------------------------------------------
step "MIGRATIONS build argument"
if $CAN_RUN; then
	IMAGES+=("$IMAGE_CUSTOM")
	t0=$SECONDS
	build_image "$WORK/build-custom.log" -t "$IMAGE_CUSTOM" --build-arg MIGRATIONS="$CUSTOM_DIR"
	if [ "$RC" -eq 0 ]; then
		grep -E '^ok: ' "$WORK/build-custom.log" | indent || true
		pass "build with --build-arg MIGRATIONS=$CUSTOM_DIR ($((SECONDS - t0)) s)"
		extract_binary "$IMAGE_CUSTOM" "$WORK/lockmigrate.custom.image"
		if [ -n "$GO_IMAGE_OVERRIDE" ]; then
			skip "custom image binary == host build" "builder $GO_IMAGE_OVERRIDE may have another Go than the host"
		elif cmp -s "$WORK/lockmigrate.custom.image" "$HOST_BIN_CUSTOM"; then
			pass "custom image binary == host build of a copy with $CUSTOM_DIR/*.sql in migrations/"
		else
			fail "custom image binary differs from the host build with $CUSTOM_DIR"
		fi
		if $BUILT; then
			run_image container-custom "$WORK/custom.out" "$WORK/custom.err" -e DATABASE_URL="$(url img_custom)" "$IMAGE_CUSTOM"
			line=$(finished_line "$WORK/custom.err")
			info "stderr: $line"
			versions=$(psql_db img_custom "SELECT string_agg(version || '_' || name, ',' ORDER BY version) FROM lockmigrate_history")
			widgets=$(psql_db img_custom "SELECT count(*) FROM image_test_widgets" 2>/dev/null || echo none)
			example=$(psql_db img_custom "SELECT coalesce(to_regclass('schema_audit')::text, 'absent')")
			info "history: $versions; image_test_widgets rows: $widgets; schema_audit: $example"
			if [ "$RC" -eq 0 ] && [ "$(json_field outcome "$line")" = applied ] &&
				[ "$versions" = "1_create_image_test_widgets,2_seed_image_test_widgets" ] &&
				[ "$widgets" = 1 ] && [ "$example" = absent ]; then
				pass "custom image applies exactly its own set, none of migrations/"
			else
				show "$WORK/custom.err"
				fail "custom image run: exit $RC"
			fi
		else
			skip "custom image run" "no PostgreSQL (default image build failed)"
		fi
	else
		show "$WORK/build-custom.log" 25
		fail "build with --build-arg MIGRATIONS=$CUSTOM_DIR: exit $RC"
	fi

	build_image "$WORK/build-nosql.log" --build-arg MIGRATIONS="$NOSQL_DIR"
	if [ "$RC" -ne 0 ] && grep -q "MIGRATIONS=$NOSQL_DIR: no \*.sql file" "$WORK/build-nosql.log"; then
		pass "MIGRATIONS=$NOSQL_DIR (no *.sql at its top level) fails the build: $(grep -o "MIGRATIONS=$NOSQL_DIR: no \*.sql file.*" "$WORK/build-nosql.log" | head -n1)"
	else
		show "$WORK/build-nosql.log"
		fail "MIGRATIONS=$NOSQL_DIR: build exited $RC, want a failure naming the directory"
	fi

	build_image "$WORK/build-invalid.log" --build-arg MIGRATIONS="$INVALID_DIR"
	if [ "$RC" -ne 0 ] && grep -q 'duplicate_version' "$WORK/build-invalid.log"; then
		pass "MIGRATIONS=$INVALID_DIR (duplicate version) fails the build at lockmigrate validate"
	else
		show "$WORK/build-invalid.log"
		fail "MIGRATIONS=$INVALID_DIR: build exited $RC, want a validation failure"
	fi
else
	skip "MIGRATIONS build argument" "$RUNTIME_WHY"
fi

# ---------------------------------------------------------------------------
step "Summary"
info "binary size: lockmigrate $BINARY_SIZE bytes ($((BINARY_SIZE / 1024)) KiB)${IMAGE_BINARY_SIZE:+; in the image: $IMAGE_BINARY_SIZE bytes}"
info "             lockmigrate-pgparse $HELPER_SIZE bytes ($((HELPER_SIZE / 1024)) KiB)"
if [ -n "$IMAGE_SIZE" ]; then
	info "image size:  $IMAGE_SIZE bytes ($((IMAGE_SIZE / 1024)) KiB), podman image inspect --format '{{.Size}}'"
else
	info "image size:  not measured (no image)"
fi
info "builder:     $GO_IMAGE"
info "steps: ${#PASSED[@]} passed, ${#FAILED[@]} failed, ${#SKIPPED[@]} skipped"
for s in "${FAILED[@]}"; do info "  failed:  $s"; done
for s in "${SKIPPED[@]}"; do info "  skipped: $s"; done
if [ -z "$GO_IMAGE_OVERRIDE" ] && $BUILT; then
	info "not verified here: the golang:1.26-bookworm builder itself (its Go, its /bin/sh, its CA"
	info "bundle) and BuildKit (the # syntax line, BuildKit's own cache mounts): the build stage ran"
	info "on the stand-in image with podman/buildah"
fi
if [ "${#FAILED[@]}" -gt 0 ]; then
	step "Image test FAILED"
	exit 1
fi
if [ "${#SKIPPED[@]}" -gt 0 ] && [ "$STRICT" = 1 ]; then
	step "Image test INCOMPLETE (IMAGE_TEST_STRICT=1)"
	exit 1
fi
if [ "${#SKIPPED[@]}" -gt 0 ]; then
	step "Image test passed, but ${#SKIPPED[@]} steps could not run here (see skipped above)"
else
	step "Image test OK"
fi
