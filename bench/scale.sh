#!/usr/bin/env bash
# Scaling curves (issue 18, items 3 and 4): how lockmigrate's costs grow with
# the work, each curve measured at several sizes against the floor
# (bench/floor) in the same run, on a throwaway PostgreSQL 15 in RAM with
# fsync off. Writes bench/SCALING.md and bench/plots/*.png; raw data in
# bench/out/scale. See bench/README.md ("Scaling").
#
#   bash bench/scale.sh                          full run (about 9 minutes on 2 cores)
#   BENCH_SCALE_QUICK=1 bash bench/scale.sh      small sizes, for iterating
#
# Knobs (environment; lists are space-separated):
#   BENCH_SCALE_SCENARIOS   subset of "noop apply storm tenants" (default all)
#   BENCH_SCALE_NOOP_SIZES  applied migrations for the no-op curve (10 100 1000 10000)
#   BENCH_SCALE_NOOP_RUNS   hyperfine runs per command and round (20), BENCH_SCALE_NOOP_ROUNDS (2)
#   BENCH_SCALE_APPLY_SIZES fresh migrations for the apply curve (10 100 1000 10000)
#   BENCH_SCALE_APPLY_RUNS  runs per size, in the same order (10 5 3 1)
#   BENCH_SCALE_APPLY_ROUNDS rounds through floor/each/all (2)
#   BENCH_SCALE_STORM_COUNTS replicas released at once (10 50 100 200)
#   BENCH_SCALE_STORM_MAXCONN max_connections settings (100 20)
#   BENCH_SCALE_STORM_SET   migrations in the storm's set (100)
#   BENCH_SCALE_STORM_ROUNDS rounds per N and tool (2)
#   BENCH_SCALE_TENANT_SIZES tenant schemas (100 1000 10000)
#   BENCH_SCALE_TENANT_CONC  concurrencies of the full apply (4 8)
#   BENCH_SCALE_TENANT_RUNS  hyperfine runs of the all-current fast path (5)
#   BENCH_SCALE_BODY        per-migration statement: "table" (default:
#                           CREATE TABLE tN (id bigint, v text)) or "ddl"
#                           (bench/run.sh's table + primary key + index)
#   BENCH_SCALE_MD          markdown output (bench/SCALING.md)
#   BENCH_SCALE_PLOTS       PNG directory (bench/plots)
#   BENCH_SCALE_RAW         raw data directory (bench/out/scale)
#   BENCH_KEEP=1            keep the temp dir
#   BENCH_QUIET_BUSY / BENCH_QUIET_WAIT / BENCH_QUIET_TOTAL  as in run.sh
#                           (defaults 20 %, 20 s, 120 s)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$REPO/bench
# shellcheck source=SCRIPTDIR/../scripts/peers.sh
source "$REPO/scripts/peers.sh"
# shellcheck source=SCRIPTDIR/../scripts/lib.sh
source "$REPO/scripts/lib.sh"
# barrier_run: N replicas released at once (run.sh's scenario 3, scale.sh's storm).
# shellcheck source=SCRIPTDIR/barrier.sh
source "$REPO/bench/barrier.sh"

if [ "${BENCH_SCALE_QUICK:-0}" = 1 ]; then
	d_noop="10 100 1000" d_apply="10 100 1000" d_apply_runs="3 2 1" d_storm="10 50"
	d_tenants="100 1000" d_noop_runs=5 d_rounds=1 d_tenant_runs=2
else
	d_noop="10 100 1000 10000" d_apply="10 100 1000 10000" d_apply_runs="10 5 3 1" d_storm="10 50 100 200"
	d_tenants="100 1000 10000" d_noop_runs=20 d_rounds=2 d_tenant_runs=5
fi
SCENARIOS=${BENCH_SCALE_SCENARIOS:-"noop apply storm tenants"}
NOOP_SIZES=${BENCH_SCALE_NOOP_SIZES:-$d_noop}
NOOP_RUNS=${BENCH_SCALE_NOOP_RUNS:-$d_noop_runs}
NOOP_ROUNDS=${BENCH_SCALE_NOOP_ROUNDS:-$d_rounds}
APPLY_SIZES=${BENCH_SCALE_APPLY_SIZES:-$d_apply}
APPLY_RUNS=${BENCH_SCALE_APPLY_RUNS:-$d_apply_runs}
APPLY_ROUNDS=${BENCH_SCALE_APPLY_ROUNDS:-$d_rounds}
STORM_COUNTS=${BENCH_SCALE_STORM_COUNTS:-$d_storm}
STORM_MAXCONN=${BENCH_SCALE_STORM_MAXCONN:-"100 20"}
STORM_SET=${BENCH_SCALE_STORM_SET:-100}
STORM_ROUNDS=${BENCH_SCALE_STORM_ROUNDS:-$d_rounds}
STORM_TIMEOUT=90 # s per replica: above lockmigrate's 60 s connect budget
TENANT_SIZES=${BENCH_SCALE_TENANT_SIZES:-$d_tenants}
TENANT_CONC=${BENCH_SCALE_TENANT_CONC:-"4 8"}
TENANT_RUNS=${BENCH_SCALE_TENANT_RUNS:-$d_tenant_runs}
TENANT_SET=3
BODY=${BENCH_SCALE_BODY:-table}
MD=${BENCH_SCALE_MD:-$BENCH/SCALING.md}
PLOTS=${BENCH_SCALE_PLOTS:-$BENCH/plots}
RAW=${BENCH_SCALE_RAW:-$BENCH/out/scale}
QUIET_BUSY=${BENCH_QUIET_BUSY:-20}
QUIET_WAIT=${BENCH_QUIET_WAIT:-20}
QUIET_TOTAL=${BENCH_QUIET_TOTAL:-120}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/lockmigrate-bench
PGBIN=$PG_DEFAULT_BIN

while read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(LOCKMIGRATE_[A-Z_]*|DATABASE_URL[A-Z_]*|PG[A-Z]+|GOOSE_[A-Z_]*|FLOOR_DIR|FLOOR_READ)$' || true)
has() { [[ " $SCENARIOS " == *" $1 "* ]]; }
PHASE_T=$SECONDS PHASE=setup
# phase_done NEXT: record how long the phase that ends took, start NEXT.
phase_done() {
	meta "seconds_$PHASE" "$((SECONDS - PHASE_T))"
	PHASE=$1 PHASE_T=$SECONDS
}

START_EPOCH=$SECONDS
WORK="" PG_DATADIR="" PG_STARTED=false RTPROXY_PID=""
BG_PIDS=()
cleanup() {
	local rc=$? pid
	set +e
	[ -n "$RTPROXY_PID" ] && kill -TERM "$RTPROXY_PID" 2>/dev/null
	for pid in "${BG_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
	if $PG_STARTED; then
		as_pg "$PGBIN/pg_ctl" -D "$PG_DATADIR" -m fast -w -t 30 stop >/dev/null 2>&1 ||
			as_pg "$PGBIN/pg_ctl" -D "$PG_DATADIR" -m immediate -w -t 30 stop >/dev/null 2>&1
	fi
	[ -n "$PG_DATADIR" ] && rm -rf "$PG_DATADIR"
	if [ -n "$WORK" ]; then
		if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "scale: kept $WORK" >&2; else rm -rf "$WORK"; fi
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- tools ---------------------------------------------------------------------
step "Tools"
missing=()
command -v hyperfine >/dev/null 2>&1 || missing+=(hyperfine)
command -v valgrind >/dev/null 2>&1 || missing+=(valgrind)
command -v gnuplot >/dev/null 2>&1 || missing+=(gnuplot-nox)
[ -x "$PGBIN/initdb" ] || missing+=(postgresql-15)
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client-15)
command -v go >/dev/null 2>&1 || die "Go is needed"
[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
info "$(hyperfine --version), $(valgrind --version), $(gnuplot --version), $(go version | cut -d' ' -f3)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/lockmigrate-scale.XXXXXX")
chmod 755 "$WORK"
BIN=$WORK/bin OUT=$WORK/out SETS=$WORK/sets
mkdir -p "$BIN" "$OUT" "$SETS"
meta() { printf '%s\t%s\n' "$1" "$2" >>"$OUT/meta.tsv"; }
meta date "$(date -u '+%Y-%m-%d %H:%M UTC')"
meta command "${BENCH_SCALE_COMMAND:-bash bench/scale.sh}"
meta uptime_before "$(uptime)"
meta cpu "$(sed -n '/^model name/{s/^model name[[:space:]]*: //p;q}' /proc/cpuinfo) x $(nproc)"
meta body "$BODY"

peers=$(peers_install "$CACHE/bin") || die "go install of the peers failed"
while read -r name path; do ln -sf "$path" "$BIN/$name"; done <<<"$peers"
meta goose "$(go version -m "$BIN/goose" | awk '$1 == "mod" {print $2 "@" $3; exit}')"
STATIC_FLAGS=(-trimpath -tags netgo,osusergo -ldflags "-s -w -linkmode external -extldflags -static")
PURE_FLAGS=(-trimpath -ldflags "-s -w")
info "building lockmigrate as shipped (pure Go, its static cgo parser helper next to it), floor, rtproxy, scale"
(
	cd "$REPO"
	CGO_ENABLED=0 go build "${PURE_FLAGS[@]}" -o "$BIN/lockmigrate" .
	CGO_ENABLED=1 go build "${STATIC_FLAGS[@]}" -o "$BIN/lockmigrate-pgparse" ./cmd/lockmigrate-pgparse
	# valgrind counts the same binary.
	ln -sf lockmigrate "$BIN/lockmigrate-pure"
	CGO_ENABLED=0 go build "${PURE_FLAGS[@]}" -o "$BIN/floor" ./bench/floor
	go build -o "$BIN/rtproxy" ./bench/rtproxy
	go build -o "$BIN/scale" ./bench/scale
)
meta lockmigrate "$(cd "$REPO" && git describe --tags --always --dirty 2>/dev/null || echo unknown)"

# --- quiet machine (as in run.sh) ------------------------------------------------
QUIET_SPENT=0
cpu_busy() {
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
			break
		fi
		sleep 3
	done
	QUIET_SPENT=$((QUIET_SPENT + SECONDS - start))
	printf '%s\t%s\t%s\n' "$1" "$busy" "$(cut -d' ' -f1 /proc/loadavg)" >>"$OUT/quiet.tsv"
}

# --- PostgreSQL -------------------------------------------------------------------
step "PostgreSQL 15 (throwaway cluster in /dev/shm, fsync off)"
PORT=$(free_port)
SOCK=$WORK/sock
PG_DATADIR=$(mktemp -d /dev/shm/lockmigrate-scale-pgdata.XXXXXX)
mkdir -p "$SOCK"
[ "$(id -u)" -eq 0 ] && chown postgres: "$SOCK" "$PG_DATADIR"
as_pg "$PGBIN/initdb" -D "$PG_DATADIR" -A trust -U postgres -E UTF8 --locale=C --no-sync >"$WORK/initdb.log" 2>&1 ||
	die "initdb failed: $(tail -n 5 "$WORK/initdb.log")"
# max_connections stays at its default (100) but for the storm's second
# setting; a tenant full apply at 10,000 schemas needs more locks per
# transaction than the default only if a migration touches many tenants (none
# does).
cat >>"$PG_DATADIR/postgresql.conf" <<EOF
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$SOCK'
fsync = off
log_line_prefix = '%d|%p|'
log_min_messages = warning
EOF
touch "$WORK/pg.log"
[ "$(id -u)" -eq 0 ] && chown postgres: "$WORK/pg.log"
pg_start() { # [server options, e.g. "-c max_connections=20"]
	as_pg "$PGBIN/pg_ctl" -D "$PG_DATADIR" -l "$WORK/pg.log" -w -t 60 ${1:+-o "$1"} start >/dev/null ||
		die "PostgreSQL did not start: $(tail -n 5 "$WORK/pg.log")"
	PG_STARTED=true
}
pg_stop() {
	as_pg "$PGBIN/pg_ctl" -D "$PG_DATADIR" -m fast -w -t 60 stop >/dev/null
	PG_STARTED=false
}
pg_start
psqlc() { psql -X -q -At -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -U postgres "$@"; }
meta postgres "$(psqlc -d postgres -c 'SHOW server_version') (fsync=off, data in /dev/shm, TCP 127.0.0.1, max_connections $(psqlc -d postgres -c 'SHOW max_connections') unless said)"
cat >"$WORK/fresh.sh" <<EOF
#!/usr/bin/env bash
# fresh DB [log|TEMPLATE]: (re)create DB, with the applied_log table or from a template
set -euo pipefail
export PGOPTIONS='-c client_min_messages=warning'
q() { psql -X -q -At -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -U postgres "\$@"; }
q -d postgres -c "DROP DATABASE IF EXISTS \$1 WITH (FORCE)"
case \${2:-} in
"") q -d postgres -c "CREATE DATABASE \$1" ;;
log) q -d postgres -c "CREATE DATABASE \$1"
	q -d "\$1" -c "CREATE TABLE applied_log (version int NOT NULL, pid int NOT NULL DEFAULT pg_backend_pid(), at timestamptz NOT NULL DEFAULT clock_timestamp())" ;;
*) q -d postgres -c "CREATE DATABASE \$1 TEMPLATE \$2" ;;
esac
EOF
chmod +x "$WORK/fresh.sh"
fresh() { "$WORK/fresh.sh" "$@"; }
drop() { psqlc -d postgres -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)"; }
url() { echo "postgres://postgres@127.0.0.1:$PORT/$1?sslmode=disable"; }

# --- migration sets ------------------------------------------------------------------
# gen_set NAME N [log]: lockmigrate/floor layout in NAME/lm, goose's in NAME/goose.
gen_set() {
	local name=$1 n=$2 log=${3:-} i f b
	mkdir -p "$SETS/$name/lm" "$SETS/$name/goose"
	for ((i = 1; i <= n; i++)); do
		printf -v f '%05d_t%d.sql' "$i" "$i"
		case $BODY in
		ddl) printf -v b 'CREATE TABLE t%d (id bigint primary key, v text);\nCREATE INDEX ON t%d (v);' "$i" "$i" ;;
		*) printf -v b 'CREATE TABLE t%d (id bigint, v text);' "$i" ;;
		esac
		[ "$log" = log ] && b+=$'\n'"INSERT INTO applied_log (version) VALUES ($i);"
		printf '%s\n' "$b" >"$SETS/$name/lm/$f"
		printf -- '-- +goose Up\n%s\n' "$b" >"$SETS/$name/goose/$f"
	done
}
lm_applied() { psqlc -d "$1" -c "SELECT count(*) FROM lockmigrate_history WHERE state = 'applied'" 2>/dev/null || echo "?"; }
lm_outcome() { sed -n -E 's/.*"msg":"run finished".*"outcome":"([a-z_]+)".*/\1/p' "$1" | tail -n1; }
# median_of: median of the numbers on stdin
median_of() { sort -n | awk '{a[NR] = $1} END {if (NR) print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2)}'; }
hf() { # JSON, then hyperfine's arguments
	local json=$1
	shift
	(cd "$WORK" && hyperfine -N --style basic --export-json "$json" "$@") | grep -E '^(Benchmark|  Time)' | sed 's/^/    /'
}
# ir FILE CMD...: callgrind's total instruction count of one run of CMD (a
# Go program). Callgrind 3.19 can die on an asynchronous signal
# ("vgCallgrind_post_signal" assertion): the Go runtime's preemption signals
# are turned off (GODEBUG=asyncpreemptoff=1, for every tool alike) and a
# crashed run is tried again, up to three times.
ir() {
	local f=$1 try
	shift
	: >"$f"
	for try in 1 2 3; do
		GODEBUG=asyncpreemptoff=1 valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" "$@" >/dev/null 2>"$WORK/cg.err" || true
		awk '/^(summary|totals):/ {print $2; exit}' "$WORK/cg.out" >"$f" 2>/dev/null || true
		rm -f "$WORK/cg.out"
		[ -s "$f" ] && break
	done
	if [ ! -s "$f" ]; then
		cp "$WORK/cg.err" "$OUT/noop/callgrind-failed-$(basename "$1").err"
		info "callgrind gave no total for $(basename "$1") (stderr kept in noop/callgrind-failed-$(basename "$1").err)"
		return 1
	fi
}

phase_done noop
# --- 1. no-op start vs applied migrations ------------------------------------------------
if has noop; then
	step "1. No-op start with $NOOP_SIZES applied migrations"
	mkdir -p "$OUT/noop" "$WORK/src"
	tar -C "$REPO" --exclude=./.git --exclude=./bench/out -cf - . | tar -C "$WORK/src" -xf -
	: >"$OUT/noop/ir.tsv"
	for s in $NOOP_SIZES; do
		gen_set "noop$s" "$s"
		rm -f "$WORK/src/migrations/"*.sql
		cp "$SETS/noop$s/lm/"*.sql "$WORK/src/migrations/"
		(
			cd "$WORK/src"
			CGO_ENABLED=0 go build "${PURE_FLAGS[@]}" -o "$BIN/lockmigrate-emb$s" .
			ln -sf "lockmigrate-emb$s" "$BIN/lockmigrate-pure-emb$s"
		)
		fresh "noop_lm_$s"
		fresh "noop_goose_$s"
		t0=$SECONDS
		DATABASE_URL=$(url "noop_lm_$s") LOCKMIGRATE_DIR=$SETS/noop$s/lm "$BIN/lockmigrate" 2>"$WORK/last.err" >/dev/null ||
			die "lockmigrate could not apply the $s set: $(tail -n 2 "$WORK/last.err")"
		[ "$(lm_applied "noop_lm_$s")" = "$s" ] || die "lockmigrate applied $(lm_applied "noop_lm_$s") of $s"
		"$BIN/goose" -dir "$SETS/noop$s/goose" postgres "$(url "noop_goose_$s")" up >/dev/null 2>"$WORK/last.err" ||
			die "goose could not apply the $s set: $(tail -n 2 "$WORK/last.err")"
		info "$s migrations applied by lockmigrate and goose in $((SECONDS - t0)) s"
		export DATABASE_URL LOCKMIGRATE_DIR
		DATABASE_URL=$(url "noop_lm_$s") LOCKMIGRATE_DIR=$SETS/noop$s/lm
		"$BIN/lockmigrate" 2>"$WORK/last.err" >/dev/null
		[ "$(lm_outcome "$WORK/last.err")" = up_to_date ] || die "lockmigrate no-op at $s is not up_to_date: $(tail -n1 "$WORK/last.err")"
		goose_cmd="$BIN/goose -dir $SETS/noop$s/goose postgres $(url "noop_goose_$s") up"
		for r in $(seq 1 "$NOOP_ROUNDS"); do
			quiet "noop $s round $r"
			hf "$OUT/noop/dir-$s-$r.json" --warmup 3 --runs "$NOOP_RUNS" \
				-n floor "$BIN/floor" -n "lockmigrate (dir)" "$BIN/lockmigrate" -n goose "$goose_cmd"
			(
				# The floor that also reads every file to its end: the
				# kernel's cost per file, for the directory slope.
				export FLOOR_READ=$LOCKMIGRATE_DIR
				hf "$OUT/noop/read-$s-$r.json" --warmup 3 --runs "$NOOP_RUNS" -n "floor (reads the dir)" "$BIN/floor"
			)
			(
				unset LOCKMIGRATE_DIR
				hf "$OUT/noop/emb-$s-$r.json" --warmup 3 --runs "$NOOP_RUNS" \
					-n floor "$BIN/floor" -n "lockmigrate (embedded)" "$BIN/lockmigrate-emb$s"
			)
		done
		# Instructions: one callgrind run each (CGO_ENABLED=0 builds).
		ir "$WORK/ir" "$BIN/floor" && printf 'floor\t%s\t%s\n' "$s" "$(cat "$WORK/ir")" >>"$OUT/noop/ir.tsv"
		ir "$WORK/ir" "$BIN/lockmigrate-pure" && printf 'lockmigrate (dir)\t%s\t%s\n' "$s" "$(cat "$WORK/ir")" >>"$OUT/noop/ir.tsv"
		# The same without the garbage collector: what it adds as the heap grows.
		GOGC=off ir "$WORK/ir" "$BIN/lockmigrate-pure" && printf 'lockmigrate (dir), GOGC=off\t%s\t%s\n' "$s" "$(cat "$WORK/ir")" >>"$OUT/noop/ir.tsv"
		(
			unset LOCKMIGRATE_DIR
			ir "$WORK/ir" "$BIN/lockmigrate-pure-emb$s" && printf 'lockmigrate (embedded)\t%s\t%s\n' "$s" "$(cat "$WORK/ir")" >>"$OUT/noop/ir.tsv"
		)
		read -ra gargv <<<"$goose_cmd"
		ir "$WORK/ir" "${gargv[@]}" && printf 'goose\t%s\t%s\n' "$s" "$(cat "$WORK/ir")" >>"$OUT/noop/ir.tsv"
		info "instructions at $s: $(awk -v s="$s" -F'\t' '$2 == s {printf "%s%s %s", (n++ ? ", " : ""), $1, $3}' "$OUT/noop/ir.tsv")"
		unset DATABASE_URL LOCKMIGRATE_DIR
		drop "noop_lm_$s"
		drop "noop_goose_$s"
		rm -f "$BIN/lockmigrate-emb$s" "$BIN/lockmigrate-pure-emb$s"
	done
fi

phase_done apply
# --- 2. apply of fresh migrations ---------------------------------------------------------
APPLY_LOCKS=512
meta apply_locks "$APPLY_LOCKS"
# apply_hf SIZE TOOL ROUND RUNS: hyperfine of TOOL (floor, each, all)
# applying the SIZE set, fresh database before every run.
apply_hf() {
	(
		export DATABASE_URL
		DATABASE_URL=$(url apply)
		if [ "$2" = floor ]; then
			export FLOOR_DIR=$SETS/apply$1/lm
			c=$BIN/floor
		else
			export LOCKMIGRATE_DIR=$SETS/apply$1/lm LOCKMIGRATE_TRANSACTION=$2
			c=$BIN/lockmigrate
		fi
		hf "$OUT/apply/$1-$2-$3.json" --runs "$4" --prepare "$WORK/fresh.sh apply" -n "$2" "$c"
	)
}
if has apply; then
	step "2. Apply $APPLY_SIZES fresh migrations (floor, each, all; fresh database per run)"
	mkdir -p "$OUT/apply"
	: >"$OUT/apply/all-failed.tsv"
	read -ra runs <<<"$APPLY_RUNS"
	k=0
	for s in $APPLY_SIZES; do
		gen_set "apply$s" "$s"
		n=${runs[$k]:-${runs[-1]}}
		k=$((k + 1))
		for r in $(seq 1 "$APPLY_ROUNDS"); do
			for t in floor each all; do
				quiet "apply $s $t round $r"
				if ! apply_hf "$s" "$t" "$r" "$n"; then
					# `all` takes every new table's lock in one transaction:
					# past max_locks_per_transaction x max_connections slots
					# the server refuses (53200 out of shared memory).
					[ "$t" = all ] || die "$t failed to apply the $s set"
					fresh apply
					env DATABASE_URL="$(url apply)" LOCKMIGRATE_DIR="$SETS/apply$s/lm" LOCKMIGRATE_TRANSACTION=all \
						"$BIN/lockmigrate" >/dev/null 2>"$WORK/last.err" || true
					err=$(sed -n -E 's/.*"msg":"run finished".*"error":"([^"]*)".*/\1/p' "$WORK/last.err" | tail -n1)
					printf '%s\t%s\t%s\n' "$s" "$r" "${err:-$(tail -n1 "$WORK/last.err")}" >>"$OUT/apply/all-failed.tsv"
					info "all failed at $s with the server's defaults: $err; again with max_locks_per_transaction = $APPLY_LOCKS"
					pg_stop
					pg_start "-c max_locks_per_transaction=$APPLY_LOCKS"
					apply_hf "$s" "$t" "$r" "$n" || die "all failed at $s with max_locks_per_transaction = $APPLY_LOCKS"
					pg_stop
					pg_start
				fi
				if [ "$t" = floor ]; then
					got=$(psqlc -d apply -c "SELECT count(*) FROM floor_history")
				else
					got=$(lm_applied apply)
				fi
				[ "$got" = "$s" ] || die "$t applied $got of $s"
			done
		done
		drop apply
	done
fi

phase_done storm
# --- 3. N replicas released at once ---------------------------------------------------------
# storm TOOL N MAXCONN ROUND: as bench/run.sh's scenario 3: N replicas forked
# and parked on a FIFO, one write releases them all, each exec()s the tool; a
# watchdog stops any still running after STORM_TIMEOUT. Wall: release to last
# exit. Exactly-once: applied_log holds every version once.
storm() {
	local t=$1 n=$2 mc=$3 round=$4 db=storm dir i rc t0 t1
	local -a rcs=() argv
	dir=$WORK/storm/$t-$n-$mc-$round
	mkdir -p "$dir"
	fresh "$db" log
	if [ "$t" = floor ]; then
		argv=(env "DATABASE_URL=$(url "$db")" "FLOOR_DIR=$SETS/storm/lm" "$BIN/floor")
	else
		argv=(env "DATABASE_URL=$(url "$db")" "LOCKMIGRATE_DIR=$SETS/storm/lm" "$BIN/lockmigrate")
	fi
	barrier_run "$dir" "$n" "$STORM_TIMEOUT" "${argv[@]}"
	rcs=("${BARRIER_RCS[@]}")
	t0=$BARRIER_T0 t1=$BARRIER_T1
	local nonzero=0 counts wall_ms retried=0 errs cpu_ms
	# CPU (user + system) of the replicas: the growth of this shell's
	# children's times (line 2 of `times`) over the storm.
	cpu_ms=$(awk 'function s(t) { split(t, a, /[ms]/); return a[1] * 60 + a[2] }
		FNR == 2 { v = s($1) + s($2); if (NR == FNR) b = v; else e = v } END { printf "%.0f", (e - b) * 1000 }' "$dir/times.0" "$dir/times.1")
	for rc in "${rcs[@]}"; do [ "$rc" = 0 ] || nonzero=$((nonzero + 1)); done
	wall_ms=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", (b - a) * 1000}')
	counts=$(psqlc -d "$db" -F ' ' -c "SELECT count(*), count(DISTINCT version) FROM applied_log")
	if [ "$t" = lockmigrate ]; then
		retried=$(grep -l '"msg":"connect failed, retrying"' "$dir"/*.err 2>/dev/null | wc -l || true)
	fi
	# The failed replicas' most frequent last stderr line.
	errs=$(for i in $(seq 1 "$n"); do
		[ "${rcs[$((i - 1))]}" = 0 ] && continue
		{ grep -v '^[[:space:]]*$' "$dir/$i.err" || true; } | tail -n1 | sed -E 's/pid=[0-9]+/pid=N/g' | cut -c1-160
	done | sort | uniq -c | sort -rn | head -n1 | sed -E 's/^ *//; s/\t/ /g' || true)
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$mc" "$n" "$round" "$wall_ms" "$nonzero" \
		"${counts%% *}" "${counts##* }" "$retried" "${errs:--}" "$cpu_ms" >>"$OUT/storm.tsv"
	info "$t x$n (max_connections $mc, round $round): $wall_ms ms (replicas' CPU $cpu_ms ms), $nonzero non-zero exit(s), applied_log $counts${retried:+, $retried retried connect}"
	drop "$db"
}
if has storm; then
	step "3. Replica storms: $STORM_COUNTS replicas, $STORM_SET migrations (each inserts into applied_log)"
	gen_set storm "$STORM_SET" log
	meta storm_set "$STORM_SET"
	: >"$OUT/storm.tsv"
	for mc in $STORM_MAXCONN; do
		pg_stop
		pg_start "-c max_connections=$mc"
		info "max_connections = $(psqlc -d postgres -c 'SHOW max_connections')"
		for n in $STORM_COUNTS; do
			for r in $(seq 1 "$STORM_ROUNDS"); do
				for t in floor lockmigrate; do
					quiet "storm $t x$n mc $mc round $r"
					storm "$t" "$n" "$mc" "$r"
				done
			done
		done
	done
	pg_stop
	pg_start
fi

phase_done tenants
# --- 4. tenant fleets ---------------------------------------------------------------------
if has tenants; then
	step "4. Tenant fleets of $TENANT_SIZES schemas, $TENANT_SET migrations each"
	gen_set tenants "$TENANT_SET"
	mkdir -p "$OUT/tenants"
	: >"$OUT/tenants/apply.tsv"
	: >"$OUT/tenants/fast.tsv"
	: >"$OUT/tenants/pgss.tsv"
	TQ="SELECT nspname FROM pg_namespace WHERE nspname LIKE 'tenant\\_%'"
	# pg_stat_statements (planning tracked) tells where the fast path's
	# server time goes: planning or executing its UNION ALL batches.
	pg_stop
	pg_start "-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track_planning=on"
	psqlc -d postgres -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"
	for s in $TENANT_SIZES; do
		tpl=tenants_tpl_$s
		fresh "$tpl"
		for ((lo = 1; lo <= s; lo += 1000)); do # 1,000 per transaction: each holds a lock until commit
			psqlc -d "$tpl" -c "DO \$\$ BEGIN FOR i IN $lo..$((lo + 999 < s ? lo + 999 : s)) LOOP EXECUTE format('CREATE SCHEMA tenant_%s', i); END LOOP; END \$\$"
		done
		[ "$(psqlc -d "$tpl" -c "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'tenant\_%'")" = "$s" ] || die "could not create $s tenant schemas"
		for c in $TENANT_CONC; do
			quiet "tenants $s apply c$c"
			fresh tenants "$tpl"
			t0=$EPOCHREALTIME
			rc=0
			env DATABASE_URL="$(url tenants)" LOCKMIGRATE_DIR="$SETS/tenants/lm" LOCKMIGRATE_TENANTS_QUERY="$TQ" \
				LOCKMIGRATE_TENANT_CONCURRENCY="$c" "$BIN/lockmigrate" >/dev/null 2>"$WORK/last.err" || rc=$?
			t1=$EPOCHREALTIME
			fin=$(grep '"msg":"run finished"' "$WORK/last.err" | tail -n1)
			jf() { sed -n -E "s/.*\"$1\":([0-9]+).*/\\1/p" <<<"$fin"; }
			applied=$(psqlc -d tenants -c "SELECT count(*) FROM pg_tables WHERE schemaname LIKE 'tenant\\_%' AND tablename ~ '^t[0-9]+\$'")
			printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$s" "$c" \
				"$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", (b - a) * 1000}')" "$rc" "$(jf tenants_applied)" \
				"$(jf tenants_failed)" "$(jf connections)" "$applied" >>"$OUT/tenants/apply.tsv"
			info "$s tenants, concurrency $c: $(tail -n1 "$OUT/tenants/apply.tsv" | cut -f3) ms, exit $rc, $applied tables"
			[ "$rc" = 0 ] || die "tenant apply failed: $(tail -n 2 "$WORK/last.err")"
		done
		# The all-current fast path on the last fleet: wall (hyperfine),
		# the run's own fast_path_queries, statements the server logged,
		# round trips and bytes from the server (rtproxy).
		export DATABASE_URL LOCKMIGRATE_DIR LOCKMIGRATE_TENANTS_QUERY="$TQ"
		DATABASE_URL=$(url tenants) LOCKMIGRATE_DIR=$SETS/tenants/lm
		"$BIN/lockmigrate" >/dev/null 2>"$WORK/last.err"
		[ "$(lm_outcome "$WORK/last.err")" = up_to_date ] || die "tenant no-op is not up_to_date: $(tail -n1 "$WORK/last.err")"
		quiet "tenants $s fast path"
		hf "$OUT/tenants/fast-$s.json" --warmup 1 --runs "$TENANT_RUNS" -n "lockmigrate, $s tenants current" "$BIN/lockmigrate"
		fin=$(grep '"msg":"run finished"' "$WORK/last.err" | tail -n1)
		psqlc -d postgres -c "ALTER DATABASE tenants SET log_statement = 'all'"
		before=$(wc -l <"$WORK/pg.log")
		rm -rf "$WORK/rt"
		"$BIN/rtproxy" -target "127.0.0.1:$PORT" -out "$WORK/rt" 2>"$WORK/rtproxy.err" &
		RTPROXY_PID=$!
		for _ in $(seq 1 100); do
			[ -s "$WORK/rt/port" ] && break
			sleep 0.05
		done
		psqlc -d postgres -c "SELECT pg_stat_statements_reset()" >/dev/null
		DATABASE_URL="postgres://postgres@127.0.0.1:$(cat "$WORK/rt/port")/tenants?sslmode=disable" "$BIN/lockmigrate" >/dev/null 2>"$WORK/last.err"
		# calls, planning ms, execution ms: all statements of the run, then
		# the UNION ALL batches alone.
		psqlc -d postgres -F $'\t' -c "SELECT $s, sum(calls), round(sum(total_plan_time)::numeric, 1), round(sum(total_exec_time)::numeric, 1),
			sum(calls) FILTER (WHERE query LIKE '%UNION ALL%'), round(coalesce(sum(total_plan_time) FILTER (WHERE query LIKE '%UNION ALL%'), 0)::numeric, 1),
			round(coalesce(sum(total_exec_time) FILTER (WHERE query LIKE '%UNION ALL%'), 0)::numeric, 1)
			FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'tenants')" >>"$OUT/tenants/pgss.tsv"
		info "server time at $s (calls, plan ms, exec ms; UNION ALL: calls, plan ms, exec ms): $(tail -n1 "$OUT/tenants/pgss.tsv" | cut -f2- | tr '\t' ' ')"
		kill -TERM "$RTPROXY_PID"
		wait "$RTPROXY_PID" || true
		RTPROXY_PID=""
		stmts=$(tail -n +"$((before + 1))" "$WORK/pg.log" | grep -cE '^tenants\|[0-9]+\|LOG:  (statement|execute)' || true)
		fin=$(grep '"msg":"run finished"' "$WORK/last.err" | tail -n1)
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$s" "$(jf fast_path_queries)" "$(jf fast_path_ms)" "$stmts" \
			"$(awk '{s += $2} END {print s + 0}' "$WORK/rt/summary.tsv")" \
			"$(awk '{s += $3} END {print s + 0}' "$WORK/rt/summary.tsv")" "$(wc -l <"$WORK/rt/summary.tsv")" >>"$OUT/tenants/fast.tsv"
		info "all current at $s: fast_path_queries $(jf fast_path_queries), $stmts statements logged, $(tail -n1 "$OUT/tenants/fast.tsv" | cut -f5) round trips, $(tail -n1 "$OUT/tenants/fast.tsv" | cut -f6) bytes from the server"
		unset DATABASE_URL LOCKMIGRATE_DIR LOCKMIGRATE_TENANTS_QUERY
		drop tenants
		drop "$tpl"
	done
	pg_stop
	pg_start
fi

# --- report ------------------------------------------------------------------------------
phase_done report
meta uptime_after "$(uptime)"
meta elapsed "$((SECONDS - START_EPOCH)) s (of which $QUIET_SPENT s waiting for a quiet machine)"
step "Report"
rm -rf "$RAW"
mkdir -p "$(dirname "$RAW")"
cp -r "$OUT" "$RAW"
mkdir -p "$PLOTS"
"$BIN/scale" -in "$RAW" -md "$MD" -plots "$PLOTS"
info "wrote $MD and $PLOTS/*.png (raw data in $RAW) in $((SECONDS - START_EPOCH)) s"
