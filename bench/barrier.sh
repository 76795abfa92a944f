# shellcheck shell=bash
# barrier_run DIR N TIMEOUT COMMAND...: N replicas of COMMAND, forked
# beforehand and parked on a FIFO; one write releases them all, and each
# then exec()s the command (no wrapper process: leading env(1) assignments
# are exported by the replica itself, POD_NAME=replica-I too). Replica I
# writes DIR/I.out and DIR/I.err. A watchdog stops replicas still running
# after TIMEOUT seconds. Sets BARRIER_RCS (the exit codes, in replica order)
# and BARRIER_T0/BARRIER_T1 (the release and the last exit,
# $EPOCHREALTIME), and writes the shell's `times` at both moments to
# DIR/times.0 and DIR/times.1 (line 2: the children's CPU). Shared by
# run.sh's scenario 3 and scale.sh's storm; needs WORK and BG_PIDS.
barrier_run() {
	local dir=$1 n=$2 timeout=$3 i rc wd
	shift 3
	local -a argv=("$@") pids=()
	BARRIER_RCS=()
	mkfifo "$dir/start"
	exec 3<>"$dir/start"
	for i in $(seq 1 "$n"); do
		(
			trap - EXIT INT TERM
			export POD_NAME=replica-$i
			set -- "${argv[@]}"
			if [ "$1" = env ]; then
				shift
				while [[ $1 == *=* ]]; do
					export "${1?}"
					shift
				done
			fi
			cd "$WORK"
			: >"$dir/$i.ready"
			read -r _ <&3
			exec "$@" 3>&- >"$dir/$i.out" 2>"$dir/$i.err"
		) &
		pids+=("$!")
	done
	BG_PIDS+=("${pids[@]}")
	for _ in $(seq 1 1500); do
		[ "$(find "$dir" -name '*.ready' | wc -l)" -ge "$n" ] && break
		sleep 0.02
	done
	sleep 0.2
	(
		trap - EXIT INT
		trap 'kill "$sp" 2>/dev/null; exit 0' TERM
		sleep "$timeout" &
		sp=$!
		wait "$sp"
		kill -TERM "${pids[@]}" 2>/dev/null
		sleep 5
		kill -KILL "${pids[@]}" 2>/dev/null
	) &
	wd=$!
	times >"$dir/times.0"
	BARRIER_T0=$EPOCHREALTIME
	printf '\n%.0s' $(seq 1 "$n") >&3
	exec 3>&-
	for i in "${pids[@]}"; do
		rc=0
		wait "$i" || rc=$?
		BARRIER_RCS+=("$rc")
	done
	BARRIER_T1=$EPOCHREALTIME
	times >"$dir/times.1"
	kill -TERM "$wd" 2>/dev/null
	wait "$wd" 2>/dev/null || true
	BG_PIDS=()
}
