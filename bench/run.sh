#!/usr/bin/env bash
# Benchmark lockmigrate against a floor program and three peers (goose,
# golang-migrate, tern) on a throwaway PostgreSQL 15, and write
# bench/RESULTS.md. See bench/README.md for what is measured and how.
#
#   bash bench/run.sh                  full run (about 5 minutes on 2 cores, + ~1 min the first time)
#   BENCH_QUICK=1 bash bench/run.sh    fewer runs, for iterating (about 3 minutes)
#
# Other knobs (environment):
#   BENCH_SCENARIOS  subset of "noop apply rt replicas sizes" (default: all)
#   BENCH_RESULTS    output file (default bench/RESULTS.md)
#   BENCH_RAW        where the raw measurements are copied (default bench/out)
#   BENCH_KEEP=1     keep the temp dir (cluster, logs) for inspection
#   BENCH_IMAGE=0    do not build the container image to measure its size
#   BENCH_PGDATA_DISK=1  keep the cluster in the temp dir on disk instead of
#                    /dev/shm
#   BENCH_BUDGET     seconds (default 840): replica rounds after the first are
#                    skipped once less than 90 s of it is left
#   BENCH_QUIET_BUSY / BENCH_QUIET_WAIT / BENCH_QUIET_TOTAL
#                    before each measurement, wait up to BENCH_QUIET_WAIT s
#                    (default 60; BENCH_QUIET_TOTAL caps all waits, default
#                    180) until the machine is at most BENCH_QUIET_BUSY %
#                    busy (default 20) with other people's work
#
# Needs Go, bash and apt-get (root or sudo) for what is missing: hyperfine,
# GNU time, PostgreSQL 15. The peers are built with `go install` at pinned
# versions into ${XDG_CACHE_HOME:-$HOME/.cache}/lockmigrate-bench/bin and
# reused from there.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$REPO/bench

# --- pinned peers (go install ...@version) ----------------------------------
# GOOSE_VERSION, MIGRATE_VERSION, TERN_VERSION, GOOSE_TAGS and peers_install,
# shared with the adopt tests.
# shellcheck source=SCRIPTDIR/../scripts/peers.sh
source "$REPO/scripts/peers.sh"
# step, info, die, as_root, apt_install, as_pg, free_port, PG_DEFAULT_BIN.
# shellcheck source=SCRIPTDIR/../scripts/lib.sh
source "$REPO/scripts/lib.sh"
# barrier_run: N replicas released at once (run.sh's scenario 3, scale.sh's storm).
# shellcheck source=SCRIPTDIR/barrier.sh
source "$REPO/bench/barrier.sh"

# --- sizes of the work --------------------------------------------------------
NOOP_SET=200     # migrations applied before the no-op start
APPLY_SET=1000   # fresh migrations applied in the apply scenario
RT_SMALL=100     # second set size for the marginal round-trip count
REPLICA_SET=200  # migrations in the replica scenario
REPLICA_COUNTS=${BENCH_REPLICA_COUNTS:-"20 100"}
REPLICA_TIMEOUT=60 # seconds, per replica process
TOOLS="floor lockmigrate goose migrate tern"

QUICK=${BENCH_QUICK:-0}
if [ "$QUICK" = 1 ]; then
	NOOP_WARMUP=3 NOOP_RUNS=15 NOOP_ROUNDS=1 RSS_RUNS=5
	APPLY_WARMUP=0 APPLY_RUNS=1 APPLY_ROUNDS=1
	SINGLE_WARMUP=0 SINGLE_RUNS=2 SINGLE_ROUNDS=1 REPLICA_ROUNDS=1
else
	NOOP_WARMUP=5 NOOP_RUNS=40 NOOP_ROUNDS=3 RSS_RUNS=15
	APPLY_WARMUP=1 APPLY_RUNS=3 APPLY_ROUNDS=2
	SINGLE_WARMUP=1 SINGLE_RUNS=4 SINGLE_ROUNDS=2 REPLICA_ROUNDS=3
fi
SCENARIOS=${BENCH_SCENARIOS:-"noop apply rt replicas sizes"}
RESULTS=${BENCH_RESULTS:-$BENCH/RESULTS.md}
RAW=${BENCH_RAW:-$BENCH/out}
QUIET_BUSY=${BENCH_QUIET_BUSY:-20}
QUIET_WAIT=${BENCH_QUIET_WAIT:-60}
QUIET_TOTAL=${BENCH_QUIET_TOTAL:-180}
# Whole-run budget (s): later replica rounds are skipped when less than
# 90 s of it is left, so a hanging peer cannot stretch the run past it.
BUDGET=${BENCH_BUDGET:-840}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/lockmigrate-bench
PGBIN=$PG_DEFAULT_BIN

# The bench configures every tool itself: drop what the caller's shell could
# slip in.
while read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(LOCKMIGRATE_[A-Z_]*|DATABASE_URL[A-Z_]*|PG[A-Z]+|GOOSE_[A-Z_]*|FLOOR_DIR|FLOOR_READ)$' || true)

has() { [[ " $SCENARIOS " == *" $1 "* ]]; }

START_EPOCH=$SECONDS
WORK=""
PG_DATADIR=""
RTPROXY_PID=""
PG_STARTED=false
BG_PIDS=()
cleanup() {
	local rc=$?
	set +e
	local pid
	[ -n "$RTPROXY_PID" ] && kill -TERM "$RTPROXY_PID" 2>/dev/null
	for pid in "${BG_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
	for pid in "${BG_PIDS[@]}"; do wait "$pid" 2>/dev/null; done
	if $PG_STARTED; then
		as_pg "$PGBIN/pg_ctl" -D "$PG_DATADIR" -m fast -w -t 30 stop >/dev/null 2>&1 ||
			as_pg "$PGBIN/pg_ctl" -D "$PG_DATADIR" -m immediate -w -t 30 stop >/dev/null 2>&1
	fi
	[ -n "$PG_DATADIR" ] && [ "$PG_DATADIR" != "$WORK/pgdata" ] && rm -rf "$PG_DATADIR"
	if [ -n "$WORK" ]; then
		if [ "${BENCH_KEEP:-0}" = 1 ]; then
			echo "bench: kept $WORK" >&2
		else
			rm -rf "$WORK"
		fi
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- tools -------------------------------------------------------------------
step "Tools"
missing=()
command -v hyperfine >/dev/null 2>&1 || missing+=(hyperfine)
[ -x /usr/bin/time ] || missing+=(time)
[ -x "$PGBIN/initdb" ] || missing+=(postgresql-15)
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client-15)
command -v go >/dev/null 2>&1 || die "Go is needed (go.mod says $(sed -n 's/^go //p' "$REPO/go.mod"))"
[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
info "$(hyperfine --version), $(go version | cut -d' ' -f3-), $("$PGBIN/postgres" --version)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/lockmigrate-bench.XXXXXX")
chmod 755 "$WORK"
BIN=$WORK/bin
OUT=$WORK/out # raw measurements, read by bench/report
mkdir -p "$BIN" "$OUT"
# Peers: one binary per pinned version, reused from the cache.
peers=$(peers_install "$CACHE/bin") || die "go install of the peers failed (see above)"
while read -r name path; do ln -sf "$path" "$BIN/$name"; done <<<"$peers"
info "building lockmigrate, floor, rtproxy, report"
(
	cd "$REPO"
	# As the image ships it: pure Go, with its lint parser helper (static
	# cgo) next to it.
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$BIN/lockmigrate" .
	CGO_ENABLED=1 go build -trimpath -tags netgo,osusergo -ldflags "-s -w -linkmode external -extldflags -static" -o "$BIN/lockmigrate-pgparse" ./cmd/lockmigrate-pgparse
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$BIN/floor" ./bench/floor
	go build -o "$BIN/rtproxy" ./bench/rtproxy
	go build -o "$BIN/report" ./bench/report
)
if has noop; then
	# The same lockmigrate with the no-op set embedded (go:embed, the
	# production layout) instead of read from LOCKMIGRATE_DIR: built from a
	# copy of the tree whose migrations/ holds the set's files.
	info "building lockmigrate-embedded (the no-op set in migrations/)"
	mkdir -p "$WORK/src"
	tar -C "$REPO" --exclude=./.git --exclude=./bench/out -cf - . | tar -C "$WORK/src" -xf -
	rm -f "$WORK/src/migrations/"*.sql
fi
LOCKMIGRATE_REV=$(cd "$REPO" && git describe --tags --always --dirty 2>/dev/null || echo unknown)

# --- machine facts -------------------------------------------------------------
meta() { printf '%s\t%s\n' "$1" "$2" >>"$OUT/meta.tsv"; }
meta date "$(date -u '+%Y-%m-%d %H:%M UTC')"
meta command "${BENCH_COMMAND:-$(if [ "$QUICK" = 1 ]; then echo "BENCH_QUICK=1 "; fi)bash bench/run.sh}"
meta quick "$QUICK"
meta scenarios "$SCENARIOS"
meta nproc "$(nproc)"
meta cpu "$(sed -n '/^model name/{s/^model name[[:space:]]*: //p;q}' /proc/cpuinfo)"
meta memory "$(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
meta kernel "$(uname -r)"
meta go "$(go version | cut -d' ' -f3-)"
meta hyperfine "$(hyperfine --version | cut -d' ' -f2)"
meta lockmigrate_version "$LOCKMIGRATE_REV (CGO_ENABLED=0 go build -trimpath -ldflags \"-s -w\")"
for t in goose migrate tern; do
	meta "${t}_version" "$(go version -m "$BIN/$t" | awk '$1 == "mod" {print $2 "@" $3; exit}')"
done
meta goose_tags "$GOOSE_TAGS"
meta apply_set "$APPLY_SET"
meta quiet_busy "$QUIET_BUSY"
meta pgx_lockmigrate "$(go version -m "$BIN/lockmigrate" | awk '$2 == "github.com/jackc/pgx/v5" {print $3}')"
meta runs "noop: warmup $NOOP_WARMUP, runs $NOOP_RUNS x $NOOP_ROUNDS rounds, RSS $RSS_RUNS runs; apply: warmup $APPLY_WARMUP, runs $APPLY_RUNS x $APPLY_ROUNDS rounds; single-process 200: warmup $SINGLE_WARMUP, runs $SINGLE_RUNS x $SINGLE_ROUNDS rounds; replicas: $REPLICA_ROUNDS round(s)"

# --- quiet machine --------------------------------------------------------------
# Other people's CPU-heavy work skews timings. Before each measurement, wait
# (bounded) until the CPU is mostly idle (ours is idle between measurements),
# and record how busy it was.
QUIET_SPENT=0
cpu_busy() { # percent busy over one second
	local a b
	read -r _ u1 n1 s1 i1 w1 q1 sq1 st1 _ </proc/stat
	sleep 1
	read -r _ u2 n2 s2 i2 w2 q2 sq2 st2 _ </proc/stat
	a=$(((u2 + n2 + s2 + q2 + sq2 + st2) - (u1 + n1 + s1 + q1 + sq1 + st1)))
	b=$((a + (i2 + w2) - (i1 + w1)))
	echo $((b > 0 ? 100 * a / b : 0))
}
quiet() { # LABEL
	local busy start=$SECONDS
	while :; do
		busy=$(cpu_busy)
		[ "$busy" -le "$QUIET_BUSY" ] && break
		if [ $((SECONDS - start)) -ge "$QUIET_WAIT" ] || [ $((QUIET_SPENT + SECONDS - start)) -ge "$QUIET_TOTAL" ]; then
			info "machine still ${busy}% busy (load $(cut -d' ' -f1-3 /proc/loadavg)); measuring anyway"
			break
		fi
		sleep 4
	done
	QUIET_SPENT=$((QUIET_SPENT + SECONDS - start))
	printf '%s\t%s\t%s\t%s\n' "$1" "$busy" "$(cut -d' ' -f1 /proc/loadavg)" "$((SECONDS - start))" >>"$OUT/quiet.tsv"
}

# --- PostgreSQL ----------------------------------------------------------------
step "PostgreSQL 15 (throwaway cluster)"
PORT=$(free_port)
SOCK=$WORK/sock
# The cluster lives in RAM (/dev/shm) when it can: with fsync=off the disk
# only adds noise (other people's I/O, writeback of dropped databases).
PG_DATADIR=$WORK/pgdata
if [ -z "${BENCH_PGDATA_DISK:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ] &&
	[ "$(df -Pk /dev/shm | awk 'NR == 2 {print $4}')" -gt 4000000 ]; then
	PG_DATADIR=$(mktemp -d /dev/shm/lockmigrate-bench-pgdata.XXXXXX)
fi
mkdir -p "$SOCK" "$PG_DATADIR"
[ "$(id -u)" -eq 0 ] && chown postgres: "$SOCK" "$PG_DATADIR"
as_pg "$PGBIN/initdb" -D "$PG_DATADIR" -A trust -U postgres -E UTF8 --locale=C --no-sync >"$WORK/initdb.log" 2>&1 ||
	die "initdb failed: $(tail -n 5 "$WORK/initdb.log")"
cat >>"$PG_DATADIR/postgresql.conf" <<EOF
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$SOCK'
fsync = off
max_connections = 300
log_line_prefix = '%d|%p|'
log_min_messages = warning
EOF
touch "$WORK/pg.log"
[ "$(id -u)" -eq 0 ] && chown postgres: "$WORK/pg.log"
as_pg "$PGBIN/pg_ctl" -D "$PG_DATADIR" -l "$WORK/pg.log" -w -t 60 start >/dev/null ||
	die "PostgreSQL did not start: $(tail -n 5 "$WORK/pg.log")"
PG_STARTED=true
psqlc() { psql -X -q -At -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -U postgres "$@"; }
PGVERSION=$(psqlc -d postgres -c 'SHOW server_version')
meta postgres "$PGVERSION (fsync=off, max_connections=300, TCP on 127.0.0.1, trust; data directory $(case $PG_DATADIR in /dev/shm/*) echo "in RAM (/dev/shm)" ;; *) echo "on disk" ;; esac))"
info "PostgreSQL $PGVERSION on 127.0.0.1:$PORT"

# fresh DB [log]: (re)create database DB; with "log", also the applied_log
# table the replica scenario's migrations insert into.
cat >"$WORK/fresh.sh" <<EOF
#!/usr/bin/env bash
set -euo pipefail
export PGOPTIONS='-c client_min_messages=warning'
psql -X -q -At -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -U postgres -d postgres \\
	-c "DROP DATABASE IF EXISTS \$1 WITH (FORCE)" -c "CREATE DATABASE \$1"
if [ "\${2:-}" = log ]; then
	psql -X -q -At -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -U postgres -d "\$1" \\
		-c "CREATE TABLE applied_log (version int NOT NULL, pid int NOT NULL DEFAULT pg_backend_pid(), at timestamptz NOT NULL DEFAULT clock_timestamp())"
fi
EOF
chmod +x "$WORK/fresh.sh"
fresh() { "$WORK/fresh.sh" "$@"; }

# --- migration sets --------------------------------------------------------------
# One set, four layouts: lockmigrate and floor <v>_<name>.sql; goose the same
# names with "-- +goose Up"; golang-migrate <v>_<name>.up.sql; tern
# <v>_<name>.sql numbered from 1 without gaps (tern's config is per database).
SETS=$WORK/sets
gen_set() { # NAME N [log]
	local name=$1 n=$2 log=${3:-} i f body
	mkdir -p "$SETS/$name"/{lockmigrate,goose,migrate,tern}
	for ((i = 1; i <= n; i++)); do
		f=$(printf '%04d_t%d' "$i" "$i")
		body="CREATE TABLE t$i (id bigint primary key, v text);
CREATE INDEX ON t$i (v);
"
		[ "$log" = log ] && body+="INSERT INTO applied_log (version) VALUES ($i);
"
		printf '%s' "$body" >"$SETS/$name/lockmigrate/$f.sql"
		printf -- '-- +goose Up\n%s' "$body" >"$SETS/$name/goose/$f.sql"
		printf '%s' "$body" >"$SETS/$name/migrate/$f.up.sql"
		printf '%s' "$body" >"$SETS/$name/tern/$f.sql"
	done
}
step "Generating migration sets"
if has noop; then
	gen_set noop "$NOOP_SET"
	cp "$SETS/noop/lockmigrate/"*.sql "$WORK/src/migrations/"
	(cd "$WORK/src" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$BIN/lockmigrate-embedded" .)
fi
if has apply || has rt; then gen_set apply "$APPLY_SET"; fi
has rt && gen_set small "$RT_SMALL"
has replicas && gen_set replicas "$REPLICA_SET" log
info "$(find "$SETS" -type f | wc -l) files"

# cmd TOOL DB SET [PORT]: the command line (no spaces inside arguments) that
# brings DB up to date with SET using TOOL. floor and lockmigrate read their
# environment, given with env(1) here.
url() { echo "postgres://postgres@127.0.0.1:${2:-$PORT}/$1?sslmode=disable"; }
cmd() {
	local tool=$1 db=$2 set=$3 port=${4:-$PORT}
	local u
	u=$(url "$db" "$port")
	case $tool in
	floor)
		if [ "$set" = none ]; then
			echo "env DATABASE_URL=$u $BIN/floor"
		else
			echo "env DATABASE_URL=$u FLOOR_DIR=$SETS/$set/lockmigrate $BIN/floor"
		fi
		;;
	lockmigrate) echo "env DATABASE_URL=$u LOCKMIGRATE_DIR=$SETS/$set/lockmigrate $BIN/lockmigrate" ;;
	goose) echo "$BIN/goose -dir $SETS/$set/goose postgres $u up" ;;
	migrate) echo "$BIN/migrate -path $SETS/$set/migrate -database $u up" ;;
	tern)
		mkdir -p "$WORK/tern"
		printf '[database]\nhost = 127.0.0.1\nport = %s\ndatabase = %s\nuser = postgres\nsslmode = disable\nversion_table = public.schema_version\n' \
			"$port" "$db" >"$WORK/tern/$db-$port.conf"
		echo "$BIN/tern migrate --config $WORK/tern/$db-$port.conf --migrations $SETS/$set/tern"
		;;
	esac
}
run_cmd() { # COMMAND-LINE (split on spaces), output to $WORK/last.{out,err}
	local -a argv
	read -ra argv <<<"$1"
	(cd "$WORK" && "${argv[@]}") >"$WORK/last.out" 2>"$WORK/last.err"
}
# applied DB TOOL: how many of the set's migrations the tool's history says
# are applied (floor: floor_history).
applied() {
	local q
	case $2 in
	floor) q="SELECT count(*) FROM floor_history" ;;
	lockmigrate) q="SELECT count(*) FROM lockmigrate_history WHERE state = 'applied'" ;;
	goose) q="SELECT count(DISTINCT version_id) FROM goose_db_version WHERE version_id > 0 AND is_applied" ;;
	migrate) q="SELECT version FROM schema_migrations WHERE NOT dirty" ;;
	tern) q="SELECT version FROM schema_version" ;;
	esac
	psqlc -d "$1" -c "$q" 2>/dev/null || echo "?"
}

# --- 1. no-op start ------------------------------------------------------------------
if has noop; then
	step "1. No-op start: $NOOP_SET migrations already applied"
	mkdir -p "$OUT/noop"
	for t in $TOOLS; do
		db=noop_$t
		[ "$t" = floor ] && continue # floor runs against lockmigrate's database
		fresh "$db"
		run_cmd "$(cmd "$t" "$db" noop)" || die "$t could not apply the no-op set: $(tail -n 3 "$WORK/last.err")"
		n=$(applied "$db" "$t")
		[ "$n" = "$NOOP_SET" ] || die "$t applied $n of $NOOP_SET"
	done
	# lockmigrate's no-op must be the fast path.
	run_cmd "$(cmd lockmigrate noop_lockmigrate noop)"
	grep -q '"msg":"run finished".*"outcome":"up_to_date"' "$WORK/last.err" || die "lockmigrate no-op is not up_to_date: $(tail -n1 "$WORK/last.err")"
	run_cmd "env DATABASE_URL=$(url noop_lockmigrate) $BIN/lockmigrate-embedded"
	grep -q '"msg":"run finished".*"outcome":"up_to_date"' "$WORK/last.err" || die "lockmigrate-embedded no-op is not up_to_date: $(tail -n1 "$WORK/last.err")"
	# floor and lockmigrate read their environment; giving it to hyperfine
	# (not env(1) in the command) keeps their timing free of an extra exec.
	# Both use noop_lockmigrate; the peers take their database as arguments.
	export DATABASE_URL LOCKMIGRATE_DIR
	DATABASE_URL=$(url noop_lockmigrate) LOCKMIGRATE_DIR=$SETS/noop/lockmigrate
	hf_args=()
	for t in $TOOLS; do
		case $t in
		floor | lockmigrate) c="$BIN/$t" ;;
		*) c=$(cmd "$t" "noop_$t" noop) ;;
		esac
		hf_args+=(-n "$t" "$c")
	done
	for r in $(seq 1 "$NOOP_ROUNDS"); do
		quiet "noop round $r"
		(cd "$WORK" && hyperfine -N --style basic --warmup "$NOOP_WARMUP" --runs "$NOOP_RUNS" \
			--export-json "$OUT/noop/round-$r.json" "${hf_args[@]}") | grep -E '^(Benchmark|  Time)' | sed 's/^/    /'
	done
	# Where lockmigrate's no-op time goes: the same code doing less, each
	# next to the floor where the environment allows.
	quiet "noop decomposition"
	hf_decomp() { # NAME, then hyperfine's command arguments
		local name=$1
		shift
		(cd "$WORK" && hyperfine -N --style basic --warmup "$NOOP_WARMUP" --runs "$NOOP_RUNS" \
			--export-json "$OUT/noop/decomp-$name.json" "$@") | grep -E '^(Benchmark|  Time)' | sed 's/^/    /'
	}
	(
		unset DATABASE_URL
		hf_decomp offline -n "lockmigrate version" "$BIN/lockmigrate version" \
			-n "lockmigrate validate (offline)" "$BIN/lockmigrate validate"
	)
	(
		unset LOCKMIGRATE_DIR
		hf_decomp embedded -n floor "$BIN/floor" -n "lockmigrate, set embedded" "$BIN/lockmigrate-embedded"
	)
	(
		export LOCKMIGRATE_LOG_LEVEL=error
		hf_decomp quiet -n floor "$BIN/floor" -n "lockmigrate, LOCKMIGRATE_LOG_LEVEL=error" "$BIN/lockmigrate"
	)
	# Lint costs the no-op nothing: the gate runs only for the lock holder
	# with something pending, so the strictest setting and none must match,
	# and the parser helper is never started (one execve).
	hf_decomp lint -n "lockmigrate, LOCKMIGRATE_LINT=off" "env LOCKMIGRATE_LINT=off $BIN/lockmigrate" \
		-n "lockmigrate, LOCKMIGRATE_LINT=error" "env LOCKMIGRATE_LINT=error $BIN/lockmigrate"
	if command -v strace >/dev/null 2>&1; then
		LOCKMIGRATE_LINT=error strace -f -e trace=execve -o "$WORK/execve.txt" "$BIN/lockmigrate" >/dev/null 2>&1 || true
		grep -c 'execve(' "$WORK/execve.txt" >"$OUT/noop/execve-lint.txt" || true
		: >"$OUT/noop/syscalls.tsv"
		for t in floor lockmigrate; do
			strace -f -c -o "$WORK/strace.txt" "$BIN/$t" >/dev/null 2>&1 || true
			printf '%s\t%s\n' "$t" "$(awk '$NF == "total" {print $(NF-2)}' "$WORK/strace.txt")" >>"$OUT/noop/syscalls.tsv"
		done
		(
			unset LOCKMIGRATE_DIR
			strace -f -c -o "$WORK/strace.txt" "$BIN/lockmigrate-embedded" >/dev/null 2>&1 || true
			printf '%s\t%s\n' "lockmigrate, set embedded" "$(awk '$NF == "total" {print $(NF-2)}' "$WORK/strace.txt")" >>"$OUT/noop/syscalls.tsv"
		)
	fi
	quiet "noop rss"
	for t in $TOOLS; do
		case $t in
		floor | lockmigrate) c="$BIN/$t" ;;
		*) c=$(cmd "$t" "noop_$t" noop) ;;
		esac
		read -ra argv <<<"$c"
		: >"$OUT/noop/rss-$t.txt"
		for _ in $(seq 1 "$RSS_RUNS"); do
			(cd "$WORK" && /usr/bin/time -f '%M' -o "$WORK/rss" "${argv[@]}" >/dev/null 2>&1) || die "$t failed under /usr/bin/time"
			tail -n1 "$WORK/rss" >>"$OUT/noop/rss-$t.txt"
		done
		info "$t max RSS (KiB, median of $RSS_RUNS): $(sort -n "$OUT/noop/rss-$t.txt" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
	done
	unset DATABASE_URL LOCKMIGRATE_DIR
fi

# --- 1b. instruction counts ---------------------------------------------------------------
# Instructions (user space, all threads) of one run of each command: perf
# stat -e instructions:u where the machine has a PMU, else callgrind. A
# callgrind count moves by ~0.5-5 % between runs (Go's scheduler spreads
# the work over threads as timing decides: spinning Ms, sysmon, GC
# workers), so each command runs ICOUNT_RUNS times and the report takes
# the median. Then the breakdown of
# lockmigrate's no-op (bench/icount) from as many callgrind runs of a build
# with symbols (callgrind only). BENCH_ICOUNT=0 skips this block.
ICOUNT_RUNS=3
if has noop && [ "${BENCH_ICOUNT:-1}" = 1 ]; then
	step "1b. Instruction counts per command ($ICOUNT_RUNS runs each)"
	mkdir -p "$OUT/icount"
	if perf stat -x, -e instructions:u -o "$WORK/perf.txt" true >/dev/null 2>&1 &&
		awk -F, '$3 ~ /^instructions/ && $1 ~ /^[0-9]+$/ {ok = 1} END {exit !ok}' "$WORK/perf.txt"; then
		ICOUNTER=perf
	else
		command -v valgrind >/dev/null 2>&1 || apt_install valgrind
		ICOUNTER=callgrind
	fi
	meta icount_counter "$ICOUNTER ($(if [ "$ICOUNTER" = perf ]; then perf --version; else valgrind --version; fi)), GODEBUG=asyncpreemptoff=1, median of $ICOUNT_RUNS runs"
	# The breakdown needs function names: the same build without -s -w
	# (symbols add no instructions; the counts table checks it).
	(cd "$REPO" && CGO_ENABLED=0 go build -trimpath -o "$BIN/lockmigrate-sym" . && go build -o "$BIN/icount" ./bench/icount)
	# icount_once [VAR=VALUE…] PROGRAM ARGS…: prints the instructions of one run.
	icount_once() {
		local -a vars=()
		while [[ $1 == *=* ]]; do
			vars+=("$1")
			shift
		done
		if [ "$ICOUNTER" = perf ]; then
			(cd "$WORK" && env "${vars[@]}" GODEBUG=asyncpreemptoff=1 perf stat -x, -e instructions:u -o "$WORK/perf.txt" -- "$@") >/dev/null 2>&1 || return 1
			awk -F, '$3 ~ /^instructions/ {print $1; exit}' "$WORK/perf.txt"
		else
			(cd "$WORK" && env "${vars[@]}" GODEBUG=asyncpreemptoff=1 valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out" "$@") >/dev/null 2>"$WORK/callgrind.err" || return 1
			# The counted process's own total: a child it forks runs under
			# valgrind until its exec and could print a line of its own.
			local pid
			pid=$(sed -n '1s/^==\([0-9]*\)==.*/\1/p' "$WORK/callgrind.err")
			sed -n "s/^==$pid== Collected : //p" "$WORK/callgrind.err"
		fi
	}
	# icount TOOL COMMAND PREPARE COMMAND-LINE: ICOUNT_RUNS counts into
	# counts.tsv (tool, command, counts comma-separated); PREPARE (a shell
	# word, or -) runs before each. env(1) assignments at the start of the
	# command line go to the counted process.
	: >"$OUT/icount/counts.tsv"
	icount() {
		local tool=$1 what=$2 prep=$3 n counts=""
		local -a argv
		read -ra argv <<<"$4"
		[ "${argv[0]}" = env ] && argv=("${argv[@]:1}")
		for _ in $(seq 1 "$ICOUNT_RUNS"); do
			[ "$prep" = - ] || $prep
			n=$(icount_once "${argv[@]}") || die "$tool $what failed under $ICOUNTER: $(tail -n 3 "$WORK/callgrind.err" 2>/dev/null)"
			counts+=${counts:+,}$n
		done
		printf '%s\t%s\t%s\n' "$tool" "$what" "$counts" >>"$OUT/icount/counts.tsv"
		info "$tool $what: $counts"
	}
	[ -d "$SETS/small" ] || gen_set small "$RT_SMALL"
	icount_fresh() { fresh icount_apply; }
	noopdb=$(url noop_lockmigrate)
	quiet "icount"
	icount floor noop - "env DATABASE_URL=$noopdb $BIN/floor"
	icount lockmigrate noop - "env DATABASE_URL=$noopdb LOCKMIGRATE_DIR=$SETS/noop/lockmigrate $BIN/lockmigrate"
	icount lockmigrate "noop, set embedded" - "env DATABASE_URL=$noopdb $BIN/lockmigrate-embedded"
	icount lockmigrate "noop, with symbols" - "env DATABASE_URL=$noopdb LOCKMIGRATE_DIR=$SETS/noop/lockmigrate $BIN/lockmigrate-sym"
	for t in goose migrate tern; do icount "$t" noop - "$(cmd "$t" "noop_$t" noop)"; done
	icount lockmigrate version - "$BIN/lockmigrate version"
	icount goose version - "$BIN/goose --version"
	icount migrate version - "$BIN/migrate -version"
	icount tern version - "$BIN/tern version"
	icount lockmigrate "validate (offline)" - "env LOCKMIGRATE_DIR=$SETS/noop/lockmigrate $BIN/lockmigrate validate"
	icount floor "apply $RT_SMALL" icount_fresh "$(cmd floor icount_apply small)"
	# The lint gate off: its parsing runs in the helper process, which
	# callgrind does not count, and one full run here counted 0.56 G and
	# 47 G instead of ~40 M with the helper started during the apply (not
	# reproduced in 6 runs by hand; see README).
	icount lockmigrate "apply $RT_SMALL, lint gate off" icount_fresh "$(cmd lockmigrate icount_apply small | sed 's/^env /env LOCKMIGRATE_LINT=off /')"
	psqlc -d postgres -c "DROP DATABASE icount_apply WITH (FORCE)"
	if [ "$ICOUNTER" = callgrind ]; then
		# The breakdown: ICOUNT_RUNS callgrind runs, each with a dump at
		# every phase's start; icount prints each row's median.
		mapfile -t dumps < <("$BIN/icount" -dump-args)
		for i in $(seq 1 "$ICOUNT_RUNS"); do
			mkdir -p "$WORK/breakdown/$i"
			(cd "$WORK" && DATABASE_URL=$noopdb LOCKMIGRATE_DIR=$SETS/noop/lockmigrate GODEBUG=asyncpreemptoff=1 \
				valgrind --tool=callgrind --callgrind-out-file="$WORK/breakdown/$i/callgrind.out" "${dumps[@]}" "$BIN/lockmigrate-sym") >/dev/null 2>"$WORK/breakdown.err" ||
				die "the breakdown run failed: $(tail -n 3 "$WORK/breakdown.err")"
		done
		"$BIN/icount" "$WORK/breakdown/"* >"$OUT/icount/breakdown.md"
		rm -rf "$WORK/breakdown"
	fi
fi

# --- 2. apply 1000 fresh migrations ------------------------------------------------------
if has apply; then
	step "2. Apply $APPLY_SET fresh migrations (fresh database per run)"
	mkdir -p "$OUT/apply"
	# Rounds go through every tool in turn, so a slow spell of the machine
	# does not land on one tool only; the report pools the runs.
	for r in $(seq 1 "$APPLY_ROUNDS"); do
		for t in $TOOLS; do
			db=apply_$t
			quiet "apply $t round $r"
			(cd "$WORK" && hyperfine -N --style basic --warmup "$APPLY_WARMUP" --runs "$APPLY_RUNS" \
				--prepare "$WORK/fresh.sh $db" --export-json "$OUT/apply/$t-round-$r.json" \
				-n "$t" "$(cmd "$t" "$db" apply)") | grep -E '^(Benchmark|  Time)' | sed 's/^/    /'
			n=$(applied "$db" "$t")
			[ "$n" = "$APPLY_SET" ] || die "$t applied $n of $APPLY_SET"
		done
	done
fi

# --- 2b. round trips per migration --------------------------------------------------------
# Each tool applies the $APPLY_SET set and the $RT_SMALL set to fresh databases
# through bench/rtproxy, which counts client round trips on every connection,
# with log_statement=all on those databases, which counts the statements the
# server executed. Per migration = (count at $APPLY_SET - count at $RT_SMALL) /
# ($APPLY_SET - $RT_SMALL), so connection set-up and start-up queries cancel out.
# proxied PDIR TOOL DB SET: run TOOL on DB through a fresh rtproxy recording
# into PDIR; sets TURNS (round trips, all connections) and CONNS.
proxied() {
	local pdir=$1 t=$2 db=$3 set=$4
	"$BIN/rtproxy" -target "127.0.0.1:$PORT" -out "$pdir" 2>"$WORK/rtproxy.err" &
	RTPROXY_PID=$!
	for _ in $(seq 1 100); do
		[ -s "$pdir/port" ] && break
		sleep 0.05
	done
	[ -s "$pdir/port" ] || die "rtproxy did not start: $(cat "$WORK/rtproxy.err")"
	run_cmd "$(cmd "$t" "$db" "$set" "$(cat "$pdir/port")")" || die "$t failed through rtproxy: $(tail -n 3 "$WORK/last.err")"
	kill -TERM "$RTPROXY_PID"
	wait "$RTPROXY_PID" || true
	RTPROXY_PID=""
	TURNS=$(awk '{s += $2} END {print s + 0}' "$pdir/summary.tsv")
	CONNS=$(wc -l <"$pdir/summary.tsv")
}
if has rt; then
	step "2b. Round trips and statements per migration (rtproxy + log_statement=all)"
	mkdir -p "$OUT/rt"
	: >"$OUT/rt.tsv"
	for t in $TOOLS; do
		for set in apply small; do
			n=$APPLY_SET
			[ "$set" = small ] && n=$RT_SMALL
			db=rt_${t}_$n
			fresh "$db"
			psqlc -d postgres -c "ALTER DATABASE $db SET log_statement = 'all'"
			proxied "$OUT/rt/$t-$n" "$t" "$db" "$set"
			m=$(applied "$db" "$t")
			[ "$m" = "$n" ] || die "$t applied $m of $n through rtproxy"
			stmts=$(grep -cE "^$db\|[0-9]+\|LOG:  (statement|execute)" "$WORK/pg.log" || true)
			printf '%s\t%s\t%s\t%s\t%s\n' "$t" "$n" "$TURNS" "$CONNS" "$stmts" >>"$OUT/rt.tsv"
			info "$t, $n migrations: $TURNS round trips on $CONNS connection(s), $stmts statements"
		done
		# One period of the per-migration traffic, from the first round trip
		# that names table t500 up to the one before the first that names t501.
		awk -F'\t' '/[^0-9a-z_]t501[^0-9]/ {exit} p || /[^0-9a-z_]t500[^0-9]/ {p = 1; print}' \
			"$OUT/rt/$t-$APPLY_SET"/conn-*.txt >"$OUT/rt/$t-period.txt"
		# Statements the server logged for the same period (a statement's
		# text may go on over continuation lines: BEGIN; then the file).
		awk -v db="rt_${t}_$APPLY_SET" -F'|' '
			function flush() {
				if (rec == "") return
				if (rec ~ /[^0-9a-z_]t501[^0-9]/) done = 1
				else if (p || rec ~ /[^0-9a-z_]t500[^0-9]/) { p = 1; gsub(/[\t ]+/, " ", rec); print substr(rec, 1, 140) }
				rec = ""
			}
			/^[^|]*\|[0-9]+\|/ {
				flush(); if (done) exit
				if ($1 == db && $3 ~ /^LOG:  (statement|execute)/) {
					rec = $0; sub(/^[^|]*\|[^|]*\|LOG:  /, "", rec)
				}
				next
			}
			rec != "" { rec = rec " " $0 }
			END { if (!done) flush() }' "$WORK/pg.log" >"$OUT/rt/$t-statements.txt"
		# The no-op start's round trips (databases of scenario 1).
		if has noop; then
			db=noop_$t set=noop
			[ "$t" = floor ] && db=noop_lockmigrate set=none # the floor's no-op: no FLOOR_DIR
			proxied "$OUT/rt/$t-noop" "$t" "$db" "$set"
			printf '%s\t%s\t%s\t%s\t%s\n' "$t" noop "$TURNS" "$CONNS" - >>"$OUT/rt.tsv"
			info "$t, no-op: $TURNS round trips on $CONNS connection(s)"
		fi
	done
	psqlc -d postgres -At -c "SELECT datname FROM pg_database WHERE datname LIKE 'rt\_%'" |
		while read -r db; do psqlc -d postgres -c "DROP DATABASE $db WITH (FORCE)"; done
fi

# --- 3. replicas at one barrier --------------------------------------------------------------
# run_replicas TOOL N ROUND: N replicas released at one barrier
# (barrier.sh), each stopped after REPLICA_TIMEOUT. Wall time runs from the
# release to the last exit.
run_replicas() {
	local t=$1 n=$2 round=$3 db="rep_${1}_${2}_$3" dir i c rc
	local -a argv
	dir=$WORK/rep/$t-$n-$round
	mkdir -p "$dir"
	fresh "$db" log
	c=$(cmd "$t" "$db" replicas)
	read -ra argv <<<"$c"
	barrier_run "$dir" "$n" "$REPLICA_TIMEOUT" "${argv[@]}"
	local -a rcs=("${BARRIER_RCS[@]}")
	local t0=$BARRIER_T0 t1=$BARRIER_T1
	for i in $(seq 1 "$n"); do echo "${rcs[$((i - 1))]}" >"$dir/$i.res"; done
	local wall_ms nonzero counts outcomes
	wall_ms=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", (b - a) * 1000}')
	nonzero=0
	for i in $(seq 1 "$n"); do
		read -r rc _ <"$dir/$i.res" 2>/dev/null || rc=missing
		[ "$rc" = 0 ] || nonzero=$((nonzero + 1))
	done
	counts=$(psqlc -d "$db" -F ' ' -c "SELECT count(*), count(DISTINCT version) FROM applied_log")
	outcomes=-
	if [ "$t" = lockmigrate ]; then
		outcomes=$(cat "$dir"/*.err | sed -n -E 's/.*"msg":"run finished".*"outcome":"([a-z_]+)".*/\1/p' | sort | uniq -c |
			awk '{printf "%s%s=%s", (NR > 1 ? " " : ""), $2, $1}')
	fi
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$n" "$round" "$wall_ms" "$nonzero" \
		"${counts%% *}" "${counts##* }" "${outcomes:--}" >>"$OUT/replicas.tsv"
	# The failed replicas' last stderr line, most frequent first.
	for i in $(seq 1 "$n"); do
		read -r rc _ <"$dir/$i.res" 2>/dev/null || rc=missing
		[ "$rc" = 0 ] && continue
		printf 'exit %s: %s\n' "$rc" "$(grep -v '^[[:space:]]*$' "$dir/$i.err" | tail -n1)"
	done | sed -E 's/[0-9]{4}\/[0-9]{2}\/[0-9]{2} [0-9:.]+ //; s/pid=[0-9]+/pid=N/g; s/[0-9]{4}_t[0-9]+/NNNN_tN/g; s/([^0-9a-z_])t[0-9]+([^0-9]|$)/\1tN\2/g' |
		awk '{ if (length($0) > 250) print substr($0, 1, 70) " … " substr($0, length($0) - 170); else print }' |
		sort | uniq -c | sort -rn | awk 'NR <= 4' \
		>"$OUT/replicas/$t-$n-$round.errors"
	info "$t x$n (round $round): ${wall_ms} ms, $nonzero non-zero exit(s), applied_log count=${counts%% *} distinct=${counts##* }${outcomes:+, $outcomes}"
	psqlc -d postgres -c "DROP DATABASE $db WITH (FORCE)"
}
if has replicas; then
	step "3. Replicas at one barrier, $REPLICA_SET migrations (each also inserts into applied_log)"
	mkdir -p "$OUT/replicas" "$OUT/single"
	: >"$OUT/replicas.tsv"
	for r in $(seq 1 "$SINGLE_ROUNDS"); do
		for t in $TOOLS; do
			quiet "single $t round $r"
			(cd "$WORK" && hyperfine -N --style basic --warmup "$SINGLE_WARMUP" --runs "$SINGLE_RUNS" \
				--prepare "$WORK/fresh.sh single_$t log" --export-json "$OUT/single/$t-round-$r.json" \
				-n "$t" "$(cmd "$t" "single_$t" replicas)") | grep -E '^(Benchmark|  Time)' | sed 's/^/    /'
		done
	done
	for n in $REPLICA_COUNTS; do
		for round in $(seq 1 "$REPLICA_ROUNDS"); do
			for t in $TOOLS; do
				if [ "$round" -gt 1 ] && [ $((SECONDS - START_EPOCH)) -gt $((BUDGET - 90)) ]; then
					info "skipping $t x$n round $round: less than 90 s of the ${BUDGET} s budget left"
					meta "skipped_${t}_${n}_$round" "time budget"
					continue
				fi
				quiet "replicas $t x$n round $round"
				run_replicas "$t" "$n" "$round"
			done
		done
	done
fi

# --- 4. sizes ----------------------------------------------------------------------------
if has sizes; then
	step "4. Binary sizes"
	: >"$OUT/sizes.tsv"
	for t in $TOOLS; do
		printf '%s\t%s\n' "$t" "$(stat -L -c %s "$BIN/$t")" >>"$OUT/sizes.tsv"
		info "$t: $(stat -L -c %s "$BIN/$t") bytes"
	done
	meta helper_size "$(stat -L -c %s "$BIN/lockmigrate-pgparse")"
	# The image of this very tree: scripts/image-test.sh builds it (from a
	# local builder stand-in, nothing is pulled), checks it runs and, with
	# IMAGE_TEST_KEEP=1, keeps it tagged localhost/lockmigrate:image-test-<describe>.
	image="not measured: podman is not installed"
	if command -v podman >/dev/null 2>&1; then
		tag="localhost/lockmigrate:image-test-$(git -C "$REPO" describe --tags --always --dirty 2>/dev/null || echo dev)"
		if [ "${BENCH_IMAGE:-1}" = 1 ] && ! podman image exists "$tag" 2>/dev/null; then
			info "building $tag with scripts/image-test.sh (BENCH_IMAGE=0 skips)"
			IMAGE_TEST_KEEP=1 bash "$REPO/scripts/image-test.sh" >"$OUT/image-test.log" 2>&1 ||
				info "image test failed, see $OUT/image-test.log"
		fi
		if bytes=$(podman image inspect --format '{{.Size}}' "$tag" 2>/dev/null); then
			image="$tag $bytes bytes ($(awk -v b="$bytes" 'BEGIN { printf "%.2f", b / 1e6 }') MB, podman image inspect .Size)"
		else
			image="not measured: no image $tag (BENCH_IMAGE=0, or the build failed: $OUT/image-test.log)"
		fi
	fi
	meta image "$image"
	info "image: $image"
fi

# --- report ------------------------------------------------------------------------------
meta elapsed "$((SECONDS - START_EPOCH)) s (of which $QUIET_SPENT s waiting for a quiet machine)"
step "Report"
"$BIN/report" -in "$OUT" -out "$RESULTS"
rm -rf "$RAW"
cp -r "$OUT" "$RAW"
info "wrote $RESULTS (raw data in $RAW)"
