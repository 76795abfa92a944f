#!/usr/bin/env bash
# Demo (make demo): start a throwaway PostgreSQL 15, launch 8 lockmigrate
# replicas at the same instant, show that exactly one of them applied the
# migrations and that each migration ran exactly once, then launch 8 more,
# which all find the schema up to date.
#
# Needs Go and bash; installs PostgreSQL 15 with apt when it is missing.
# Exits non-zero if a replica exits non-zero or the exactly-once check fails.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$REPO/scripts/lib.sh"

REPLICAS=8
PGBIN=$PG_DEFAULT_BIN

# The demo configures everything itself: drop what the caller's shell could
# slip in (a DATABASE_URL_FILE would even conflict with DATABASE_URL).
while read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(LOCKMIGRATE_[A-Z_]*|DATABASE_URL[A-Z_]*|PG[A-Z]+)$' || true)

WORK=""         # temp dir: cluster, socket, binary, logs
DATA=""         # cluster data directory
PG_STARTED=false
REPLICA_PIDS=() # replica subshells of the current round
REPLICA_ENV=()  # environment of every replica (see pushgateway_start)

# --- Pushgateway ----------------------------------------------------------
# Every replica pushes its metrics to a throwaway Pushgateway on loopback;
# the demo prints what the gateway holds at the end.
PGW_PID=
PGW_URL=
pushgateway_start() {
	command -v curl >/dev/null 2>&1 || apt_install curl
	local bin
	bin=$(command -v prometheus-pushgateway || command -v pushgateway || true)
	if [ -z "$bin" ]; then
		apt_install prometheus-pushgateway
		bin=$(command -v prometheus-pushgateway)
	fi
	local port
	port=$(free_port)
	"$bin" --web.listen-address="127.0.0.1:$port" --persistence.file= --log.level=warn \
		>"$WORK/pushgateway.log" 2>&1 &
	PGW_PID=$!
	PGW_URL="http://127.0.0.1:$port"
	for _ in $(seq 1 100); do
		curl -fsS "$PGW_URL/-/ready" >/dev/null 2>&1 && break
		sleep 0.1
	done
	curl -fsS "$PGW_URL/-/ready" >/dev/null 2>&1 || die "Pushgateway did not start: $(cat "$WORK/pushgateway.log")"
	REPLICA_ENV+=(LOCKMIGRATE_PUSHGATEWAY_URL="$PGW_URL")
	info "Pushgateway at $PGW_URL"
}
pushgateway_stop() {
	[ -n "$PGW_PID" ] && kill "$PGW_PID" 2>/dev/null && wait "$PGW_PID" 2>/dev/null
	PGW_PID=
}
pushgateway_show() {
	step "Metrics on the Pushgateway (one group for all replicas: job=lockmigrate)"
	curl -fsS "$PGW_URL/metrics" | grep -E '^lockmigrate_' | grep -vE ' 0$|build_info' | sed 's/^lockmigrate_//' | indent
	info "(series at 0 hidden; see docs/metrics.md)"
}
# ------------------------------------------------------------------------------

cleanup() {
	local rc=$?
	set +e
	local pid
	for pid in "${REPLICA_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
	for pid in "${REPLICA_PIDS[@]}"; do wait "$pid" 2>/dev/null; done
	pushgateway_stop
	if $PG_STARTED; then
		if ! as_pg "$PGBIN/pg_ctl" -D "$DATA" -m fast -w -t 30 stop >/dev/null 2>&1; then
			# pg_ctl could not do it: stop the postmaster we started by its pid.
			pid=$(head -n1 "$DATA/postmaster.pid" 2>/dev/null)
			if [ -n "$pid" ]; then
				kill -INT "$pid" 2>/dev/null
				sleep 2
				kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
			fi
		fi
	fi
	[ -n "$WORK" ] && rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# json_field NAME LINE: the value of a string or number field of a JSON log
# line (its last occurrence), or nothing.
json_field() {
	sed -n -E 's/.*"'"$1"'":("([^"]*)"|(-?[0-9]+)).*/\2\3/p' <<<"$2"
}

# run_round N: start every replica at the same instant and wait for them all.
# Each replica parks on a FIFO that the parent holds open read-write; one
# write of N newlines wakes them all. A replica that reaches the FIFO late
# still finds its newline in the pipe, so nothing can hang.
run_round() {
	local dir="$WORK/round$1" i
	mkdir -p "$dir"
	mkfifo "$dir/start"
	exec 3<>"$dir/start"
	REPLICA_PIDS=()
	for i in $(seq 1 "$REPLICAS"); do
		(
			set +e
			# cleanup's TERM must reach the binary too: pass it on.
			child=""
			trap '[ -n "$child" ] && kill -TERM "$child" 2>/dev/null && wait "$child"; exit 143' TERM
			: >"$dir/replica-$i.ready"
			read -r _ <&3
			exec 3>&-
			t0=${EPOCHREALTIME//[^0-9]/} # no fork: keep the start instant sharp
			env "${REPLICA_ENV[@]}" POD_NAME="replica-$i" "$BIN" migrate \
				>"$dir/replica-$i.out" 2>"$dir/replica-$i.log" &
			child=$!
			wait "$child"
			rc=$?
			t1=${EPOCHREALTIME//[^0-9]/}
			echo "$rc $(((t1 - t0) / 1000)) $t0" >"$dir/replica-$i.result"
		) &
		REPLICA_PIDS+=("$!")
	done
	# Let every replica reach the FIFO, then release them together.
	for i in $(seq 1 500); do
		[ "$(find "$dir" -name '*.ready' | wc -l)" -ge "$REPLICAS" ] && break
		sleep 0.02
	done
	sleep 0.1
	printf '\n%.0s' $(seq 1 "$REPLICAS") >&3
	exec 3>&-
	for i in "${REPLICA_PIDS[@]}"; do wait "$i" || true; done
	REPLICA_PIDS=()
}

# report_round N: print the table of round N. Sets ROUND_FAILED (a replica
# exited non-zero or left no result), ROUND_APPLIED (migrations applied, all
# replicas together) and ROUND_OUTCOMES (e.g. "applied=1 skipped=7").
report_round() {
	local dir="$WORK/round$1" i line rc wall t0 outcome code run applied holder
	local tmin="" tmax="" summary=""
	declare -A count=()
	ROUND_FAILED=false
	ROUND_APPLIED=0
	printf '    %-10s  %-10s  %4s  %7s  %6s  %7s  %s\n' \
		REPLICA OUTCOME EXIT WALL_MS RUN_MS APPLIED "LOCK HELD BY"
	for i in $(seq 1 "$REPLICAS"); do
		rc="?" wall="?" t0=""
		[ -f "$dir/replica-$i.result" ] && read -r rc wall t0 <"$dir/replica-$i.result"
		line=$(grep -F '"msg":"run finished"' "$dir/replica-$i.log" 2>/dev/null | tail -n1 || true)
		outcome=$(json_field outcome "$line")
		code=$(json_field exit_code "$line")
		run=$(json_field duration_ms "$line")
		applied=$(json_field applied "$line")
		holder=$(json_field application_name "$line")
		[ "$rc" = 0 ] || ROUND_FAILED=true
		[ -n "$code" ] && [ "$code" != "$rc" ] && ROUND_FAILED=true
		ROUND_APPLIED=$((ROUND_APPLIED + ${applied:-0}))
		outcome=${outcome:-"(none)"}
		count[$outcome]=$((${count[$outcome]:-0} + 1))
		if [ -n "$t0" ]; then
			if [ -z "$tmin" ] || [ "$t0" -lt "$tmin" ]; then tmin=$t0; fi
			if [ -z "$tmax" ] || [ "$t0" -gt "$tmax" ]; then tmax=$t0; fi
		fi
		if [ "$outcome" != skipped ]; then
			holder="-"
		elif [ -z "$holder" ]; then
			holder="(released before the lookup)"
		fi
		printf '    %-10s  %-10s  %4s  %7s  %6s  %7s  %s\n' "replica-$i" "$outcome" "$rc" \
			"$wall" "${run:--}" "${applied:--}" "$holder"
	done
	for outcome in applied up_to_date skipped waited failed "(none)"; do
		[ -n "${count[$outcome]:-}" ] && summary+="$outcome=${count[$outcome]} "
	done
	ROUND_OUTCOMES=${summary% }
	echo
	info "outcomes: $ROUND_OUTCOMES; migrations applied in total: $ROUND_APPLIED"
	if [ -n "$tmin" ]; then
		info "start spread: $(((tmax - tmin) / 1000)).$(printf '%03d' $(((tmax - tmin) % 1000))) ms between the first and the last replica to start"
	fi
	if $ROUND_FAILED; then
		for i in $(seq 1 "$REPLICAS"); do
			rc=""
			[ -f "$dir/replica-$i.result" ] && read -r rc _ <"$dir/replica-$i.result"
			if [ "$rc" != 0 ]; then
				info "replica-$i exited ${rc:-without a result}; last log lines:"
				tail -n 5 "$dir/replica-$i.log" 2>/dev/null | indent
			fi
		done
	fi
}

psql_demo() { psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres -d demo "$@"; }

# exactly_once: every version in schema_audit appears once, and all the
# migrations of the set are there.
exactly_once() {
	local stats
	stats=$(psql_demo -A -t -F ' ' -c \
		"SELECT count(*) FILTER (WHERE n <> 1), count(*), coalesce(sum(n), 0)
		   FROM (SELECT version, count(*) AS n FROM schema_audit GROUP BY version) s")
	read -r DUPLICATED VERSIONS ROWS <<<"$stats"
	[ "$DUPLICATED" -eq 0 ] && [ "$VERSIONS" -eq "$EXPECTED" ] && [ "$ROWS" -eq "$EXPECTED" ]
}

FAILED=false

step "PostgreSQL 15"
if [ ! -x "$PGBIN/postgres" ]; then
	info "not found in $PGBIN"
	apt_install postgresql-15
fi
[ -x "$PGBIN/postgres" ] || die "PostgreSQL 15 server binaries still missing in $PGBIN"
info "$("$PGBIN/postgres" --version)"
command -v psql >/dev/null 2>&1 || PATH="$PGBIN:$PATH"

step "Throwaway cluster"
WORK=$(mktemp -d /tmp/lmdemo.XXXX)
DATA="$WORK/data"
[ "$(id -u)" -eq 0 ] && chown postgres:postgres "$WORK"
if ! as_pg "$PGBIN/initdb" -D "$DATA" -U postgres -A trust -E UTF8 --no-locale --no-sync \
	>"$WORK/initdb.log" 2>&1; then
	cat "$WORK/initdb.log" >&2
	die "initdb failed"
fi
PORT=$(free_port)
cat >>"$DATA/postgresql.conf" <<EOF

# lockmigrate demo
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$WORK'
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
PG_STARTED=true
as_pg "$PGBIN/pg_ctl" -D "$DATA" -l "$WORK/postgres.log" -W start >/dev/null
for _ in $(seq 1 150); do
	"$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" && break
	sleep 0.2
done
if ! "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
	tail -n 20 "$WORK/postgres.log" >&2 || true
	die "PostgreSQL did not accept connections within 30s"
fi
psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -c 'CREATE DATABASE demo'
DATABASE_URL="postgres://postgres@127.0.0.1:$PORT/demo?sslmode=disable"
info "running in $WORK, database demo at $DATABASE_URL"

step "Build"
# As the image ships them: lockmigrate pure Go, and next to it the parser
# helper the lint gate before apply starts (PostgreSQL's parser,
# libpg_query, is C: cgo).
command -v gcc >/dev/null 2>&1 || apt_install gcc libc6-dev
(cd "$REPO" && CGO_ENABLED=0 go build -o "$WORK/lockmigrate" . &&
	CGO_ENABLED=1 go build -o "$WORK/lockmigrate-pgparse" ./cmd/lockmigrate-pgparse)
BIN="$WORK/lockmigrate"
EXPECTED=$(find "$REPO/migrations" -maxdepth 1 -name '*.sql' | wc -l)
info "$("$BIN" version), $EXPECTED embedded migrations"

REPLICA_ENV=(DATABASE_URL="$DATABASE_URL" LOCKMIGRATE_ON_LOCKED=skip LOCKMIGRATE_LOG_FORMAT=json)
pushgateway_start

step "Round 1: $REPLICAS replicas start at the same instant on an empty database"
run_round 1
report_round 1
$ROUND_FAILED && FAILED=true
APPLIED_R1=$ROUND_APPLIED

step "Exactly-once check: schema_audit rows per migration version"
psql_demo -P footer=off -c 'SELECT version, count(*) AS times_applied FROM schema_audit GROUP BY version ORDER BY version' |
	sed '/^$/d' | indent
if exactly_once && [ "$APPLIED_R1" -eq "$EXPECTED" ]; then
	info "exactly-once: OK ($EXPECTED migrations, each applied once; replicas report $APPLIED_R1 applied)"
else
	info "exactly-once: FAILED (expected $EXPECTED versions once each; found $VERSIONS versions in $ROWS rows, $DUPLICATED duplicated; replicas report $APPLIED_R1 applied)"
	FAILED=true
fi

step "Round 2: $REPLICAS replicas start at the same instant again; nothing is pending"
run_round 2
report_round 2
$ROUND_FAILED && FAILED=true
if [ "$ROUND_OUTCOMES" != "up_to_date=$REPLICAS" ]; then
	info "note: expected every replica to be up_to_date"
fi
if exactly_once && [ "$ROUND_APPLIED" -eq 0 ]; then
	info "exactly-once after round 2: OK (schema_audit unchanged)"
else
	info "exactly-once after round 2: FAILED ($ROWS schema_audit rows, $DUPLICATED versions duplicated; replicas report $ROUND_APPLIED applied)"
	FAILED=true
fi

pushgateway_show

step "lockmigrate status"
if ! env "${REPLICA_ENV[@]}" POD_NAME=demo-status "$BIN" status | indent; then
	FAILED=true
fi

if $FAILED; then
	step "Demo FAILED"
	exit 1
fi
step "Demo OK: $REPLICAS replicas raced, one applied $EXPECTED migrations, each exactly once"
