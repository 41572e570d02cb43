#!/bin/bash
# Balance scenarios of make bench-balance, several runs each.  A GUEST script:
#
#   scripts/vm-run.sh --smp 2 --mem 2G --timeout 3600 --out OUT -- scripts/bench/balance-guest.sh [opts]
#   (or scripts/bench/balance.sh on the host: builds, runs this, makes the report)
#
# Every client is an nbd.ko device (nbd-client -C 2) with tools/knbd-reconnect
# pointed at the group address (ipvs_lib.sh, scheduler knbd), on a volume of
# its own (bvK, striped over every member): the volume names the client in the
# members' clients lists, so the analysis can follow each client's connections.
#   skew3   3 members; 3 clients, all attached to m1: 6 equal connections
#   heavy4  4 members; 1 heavy client (fio iodepth 8 per connection) and 3 light
#           ones (iodepth 1, --light-iops per connection), all attached to m1
#   churn   3 members; starts as skew3, then from --churn-start s on, every
#           --churn-every s the oldest client leaves and a new one arrives
#           through the group address
# fio per client: one job per nbd.ko queue, pinned to its CPU (as
# test_balance.sh: unpinned, a job's load jumps between connections by
# itself), 4k randwrite, crc32c verify, latency log of the worst completion
# per 500 ms window.  Each stock/patched pair of runs uses nbd_use (lib.sh,
# when it has it) to load the nbd.ko under test.
#
# Raw data per run in $KNBD_OUT/balance-raw/SCEN-NBD-RUN/: meta.json,
# samples.jsonl (balance_sampler.py), dmesg.txt, fio-*.json, lat logs;
# scripts/bench/balance_analyze.py (run by balance.sh on the host) turns
# them into the table, CSV, JSON and chart.
#
# Options:
#   --runs N             runs per scenario and nbd.ko (default 3)
#   --scenarios "LIST"   default "skew3 heavy4 churn"
#   --nbd "LIST"         nbd.ko builds, default "stock patched" ("patched" needs
#                        nbd_use in lib.sh and out/nbd-patched/nbd.ko)
#   --runtime S          fio seconds per run (default 40)
#   --nbd-timeout S      nbd-client -t (default 30: what a request left
#                        unanswered by a drain waits with stock nbd.ko)
#   --light-iops N       rate of each light connection in heavy4 (default 25)
#   --churn-start S      first churn event, seconds after the clients start (16)
#   --churn-every S      seconds between churn events (8)
#   --budget S           start no run after S seconds (0: none)
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../tests/group_lib.sh
. "$here/../tests/group_lib.sh"
# shellcheck source=../tests/ipvs_lib.sh
. "$here/../tests/ipvs_lib.sh"

runs=3 scenarios="skew3 heavy4 churn" mods="stock patched" runtime=40 nbd_timeout=30
light_iops=25 churn_start=16 churn_every=8 budget=0
while [ $# -gt 0 ]; do
	case $1 in
	--runs) runs=$2; shift 2 ;;
	--scenarios) scenarios=$2; shift 2 ;;
	--nbd) mods=$2; shift 2 ;;
	--runtime) runtime=$2; shift 2 ;;
	--nbd-timeout) nbd_timeout=$2; shift 2 ;;
	--light-iops) light_iops=$2; shift 2 ;;
	--churn-start) churn_start=$2; shift 2 ;;
	--churn-every) churn_every=$2; shift 2 ;;
	--budget) budget=$2; shift 2 ;;
	*) echo "balance-guest: unknown option $1" >&2; exit 2 ;;
	esac
done

RAW=$KNBD_OUT/balance-raw
# fio reads back what it wrote every VERIFY_BACKLOG writes.  At 128, a
# light client (25 writes/s) read 128 blocks at once every 5 s: its load
# jumped to 5x for a second, which is a bursty client, not a light one.
VERIFY_BACKLOG=16
RECONNECT=$KNBD_REPO/tools/knbd-reconnect
VOL_SIZE=$((64 << 20))
GRP_NBD_TIMEOUT=$nbd_timeout
mkdir -p "$RAW"
: >"$RAW/notes.txt"
t_start=$SECONDS
PIDS=()

say() { echo "bench: $*" | tee -a "$RAW/notes.txt"; }

trap ipvs_group_cleanup EXIT

[ -x "$RECONNECT" ] || { say "ERROR: $RECONNECT missing (make tools)"; exit 1; }

# Which nbd.ko builds can run: patched only through lib.sh's nbd_use.
if ! declare -F nbd_use >/dev/null; then
	case " $mods " in *" patched "*)
		say "NOTE: lib.sh has no nbd_use (the nbd.ko patch is not merged): stock nbd.ko only" ;;
	esac
	mods=stock
fi

# json_str TEXT: TEXT as a JSON string (names and notes here are plain)
json_str() { printf '"%s"' "${1//\"/\'}"; }

# node_loads_low: every member's load under 5 (the last run's clients are gone)
node_loads_low() {
	local i w
	for ((i = 1; i <= GRP_N; i++)); do
		read -r -a w <"$KNBD_CFS/nodes/m$i/stats" || return 1
		[ "${w[3]%%.*}" -lt 5 ] || return 1
	done
}

set_balance() {
	local i
	for ((i = 1; i <= GRP_N; i++)); do
		grp_set "$KNBD_CFS/nodes/m$i/balance" "$1" || return 1
	done
}

# first_cpu "0-1,4": 0
first_cpu() {
	local c=${1%%[,-]*}
	echo "${c// /}"
}

# Clients of the current run: parallel arrays, index = client number.
C_DEV=() C_VOL=() C_PROF=() C_FIO=() C_REC=() C_START=() C_END=() C_VIA=() C_RT=()

# client_attach K DEV VOL PROFILE VIA: nbd-client (to m1, or VIA vip: the
# group address) and the reconnect helper
client_attach() {
	local k=$1 dev=$2 vol=$3 host=$GRP_NET.1 out
	[ "$5" = vip ] && host=$IPVS_VIP
	out=$(with_timeout 90 nbd-client "$host" "$GRP_PORT" "$dev" -N "$vol" -C 2 \
		-t "$GRP_NBD_TIMEOUT" 2>&1) || { why "nbd-client $host $dev -N $vol: $(echo "$out" | tail -n 2)"; return 1; }
	GRP_DEVS+=("$dev")
	wait_until 20 nbd_connected "$dev" || { why "$dev has size 0 after nbd-client"; return 1; }
	"$RECONNECT" -d "$dev" -H "$IPVS_VIP" -p "$GRP_PORT" -N "$vol" -D 30 -x \
		>"$RUNDIR/reconnect-c$k.log" 2>&1 &
	C_REC[k]=$!
	PIDS+=($!)
	C_DEV[k]=$dev C_VOL[k]=$vol C_PROF[k]=$4 C_VIA[k]=$5 C_END[k]=''
}

# client_fio K RUNTIME: client K's fio in the background
client_fio() {
	local k=$1 rt=$2 dev=${C_DEV[$1]} h q cpu reg=$((VOL_SIZE / 2))
	local -a jobs=() opt=()
	case ${C_PROF[k]} in
	heavy) opt=(--iodepth=8) ;;
	light) opt=(--iodepth=1 --rate_iops="$light_iops") ;;
	*) opt=(--iodepth=4) ;;
	esac
	h=0
	for q in /sys/block/${dev#/dev/}/mq/*/; do
		cpu=$(first_cpu "$(cat "$q/cpu_list" 2>/dev/null)")
		[ -n "$cpu" ] || continue
		jobs+=(--name="c$k-q$h" --cpus_allowed="$cpu" --offset=$((h * reg)))
		h=$((h + 1))
	done
	[ "$h" -gt 0 ] || { why "no queues under /sys/block/${dev#/dev/}/mq"; return 1; }
	fio --filename="$dev" --rw=randwrite --bs=4k --ioengine=libaio --direct=1 --size="$reg" \
		--verify=crc32c --verify_backlog="$VERIFY_BACKLOG" --verify_fatal=1 --time_based --runtime="$rt" \
		--write_lat_log="$RUNDIR/lat-c$k" --log_avg_msec=500 --log_max_value=1 --log_unix_epoch=1 \
		--output-format=json --output="$RUNDIR/fio-c$k.json" "${opt[@]}" "${jobs[@]}" \
		>"$RUNDIR/fio-c$k.err" 2>&1 &
	C_FIO[k]=$!
	PIDS+=($!)
	C_RT[k]=$rt C_START[k]=$EPOCHREALTIME
}

# client_wait K SECS: wait for its fio, then detach; 1 if fio failed or hung
client_wait() {
	local k=$1 rc
	# a fio that outlives its bound is killed: wait must not hang the bench
	with_timeout "$2" tail --pid="${C_FIO[k]}" -f /dev/null || kill -KILL "${C_FIO[k]}" 2>/dev/null
	wait "${C_FIO[k]}"
	rc=$?
	C_END[k]=$EPOCHREALTIME
	grp_detach "${C_DEV[k]}" >/dev/null 2>&1
	kill "${C_REC[k]}" 2>/dev/null
	[ "$rc" = 0 ] || log "client c$k (${C_DEV[k]}): fio exit $rc"
	return "$rc"
}

# scenario_shape SCEN: members, clients at the start, profiles, churn events
scenario_shape() {
	case $1 in
	skew3) S_N=3 S_PROFS="std std std" S_EVENTS=0 ;;
	heavy4) S_N=4 S_PROFS="heavy light light light" S_EVENTS=0 ;;
	churn)
		S_N=3 S_PROFS="std std std"
		S_EVENTS=0
		local t=$churn_start
		while [ $((t + churn_every)) -le "$runtime" ]; do
			S_EVENTS=$((S_EVENTS + 1))
			t=$((t + churn_every))
		done
		;;
	*) return 1 ;;
	esac
	S_NVOL=$(($(wc -w <<<"$S_PROFS") + S_EVENTS))
}

scenario_setup() {
	local stripe i v
	GRP_N=$S_N
	grp_up || return 1
	grp_enable_all || return 1
	stripe=$(seq -s ' ' 1 "$S_N")
	for ((v = 0; v < S_NVOL; v++)); do
		grp_vol_add "bv$v" "$VOL_SIZE" $((1 << 20)) "epoch 1; stripe $stripe" || return 1
	done
	wait_until 30 grp_links_up || { why "links: $(grp_links_summary)"; return 1; }
	set_balance 0
	# the manager's figures per node, for the report
	for ((i = 1; i <= GRP_N; i++)); do
		for a in balance_threshold_pct balance_clear_pct balance_hold_ms balance_interval_ms \
			balance_min_load load_tick_ms balance_clients; do
			[ -f "$KNBD_CFS/nodes/m$i/$a" ] && echo "m$i $a $(cat "$KNBD_CFS/nodes/m$i/$a")"
		done
	done >"$RAW/attrs-$1.txt"
	return 0
}

# run_one SCEN NBD RUN
run_one() {
	local scen=$1 mod=$2 run=$3 k spid mark t0 rc=0 e nprof
	local -a profs nodes=()
	RUNDIR=$RAW/$scen-$mod-$run
	rm -rf "$RUNDIR"
	mkdir -p "$RUNDIR"
	C_DEV=() C_VOL=() C_PROF=() C_FIO=() C_REC=() C_START=() C_END=() C_VIA=() C_RT=()
	wait_until 60 node_loads_low || log "loads still up before $scen-$mod-$run"
	read -r -a profs <<<"$S_PROFS"
	nprof=${#profs[@]}
	ipvs_up knbd >/dev/null || return 1
	for ((k = 1; k <= GRP_N; k++)); do nodes+=("$KNBD_CFS/nodes/m$k"); done
	python3 "$here/balance_sampler.py" "$RUNDIR/samples.jsonl" 0.5 "${nodes[@]}" &
	spid=$!
	PIDS+=("$spid")
	mark=$(kmsg_mark "bench-$scen-$mod-$run")
	set_balance 1 || return 1
	# the first clients: all attached to m1, then their fio all at once (a
	# skewed start, not a staggered one); churn's first leave at the events
	for ((k = 0; k < nprof; k++)); do
		client_attach "$k" "/dev/nbd$k" "bv$k" "${profs[k]}" m1 || { rc=1; break; }
	done
	local wall0=$EPOCHREALTIME
	for ((k = 0; rc == 0 && k < nprof; k++)); do
		local rt=$runtime
		[ "$scen" = churn ] && [ "$k" -lt "$S_EVENTS" ] && rt=$((churn_start + k * churn_every))
		client_fio "$k" "$rt" || { rc=1; break; }
	done
	t0=$SECONDS
	# Until every client is done: a client whose fio ended is detached at
	# once (the churn's leaving ones too), and at each churn event a new
	# client arrives through the group address, on time whatever a stalled
	# client does meanwhile.
	local deadline=$((t0 + runtime + GRP_NBD_TIMEOUT * 2 + 120)) left
	e=0
	while :; do
		left=0
		for k in "${!C_FIO[@]}"; do
			[ -n "${C_END[k]}" ] && continue
			if kill -0 "${C_FIO[k]}" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; then
				left=$((left + 1))
				continue
			fi
			client_wait "$k" 10 || rc=1
		done
		if [ "$rc" = 0 ] && [ "$e" -lt "$S_EVENTS" ] &&
			[ $((SECONDS - t0)) -ge $((churn_start + e * churn_every)) ]; then
			k=$((nprof + e))
			client_attach "$k" "/dev/nbd$k" "bv$k" std vip &&
				client_fio "$k" $((runtime - churn_start - e * churn_every)) || rc=1
			e=$((e + 1))
			continue
		fi
		[ "$left" = 0 ] && { [ "$e" -ge "$S_EVENTS" ] || [ "$rc" != 0 ]; } && break
		_nap 0.3
	done
	# devices attached whose fio never started
	for k in "${!C_DEV[@]}"; do
		[ -n "${C_FIO[k]:-}" ] && continue
		grp_detach "${C_DEV[k]}" >/dev/null 2>&1
		kill "${C_REC[k]}" 2>/dev/null
	done
	set_balance 0
	kill "$spid" 2>/dev/null
	wait "$spid" 2>/dev/null
	ipvs_down
	dmesg_since "$mark" >"$RUNDIR/dmesg.txt"
	[ -z "$(dmesg_bad_since "$mark")" ] || { log "kernel problem in $scen-$mod-$run"; rc=1; }
	for ((k = 1; k <= GRP_N; k++)); do
		echo "== m$k"
		cat "$KNBD_CFS/nodes/m$k/stats"
	done >"$RUNDIR/stats-end.txt" 2>&1
	# meta.json: what the analysis needs to know about the run
	{
		printf '{"scenario": "%s", "nbd": "%s", "run": %d, "members": %d, "runtime": %d,' \
			"$scen" "$mod" "$run" "$GRP_N" "$runtime"
		printf ' "nbd_timeout": %d, "nbd_loaded": %s, "start_wall": %s, "ok": %s,' \
			"$GRP_NBD_TIMEOUT" "$(json_str "$( (declare -F nbd_which >/dev/null && nbd_which) || echo stock)")" \
			"$wall0" "$([ "$rc" = 0 ] && echo true || echo false)"
		printf ' "churn_start": %d, "churn_every": %d, "clients": [' "$churn_start" "$churn_every"
		local sep=''
		for k in "${!C_FIO[@]}"; do
			printf '%s{"name": "c%d", "dev": "%s", "volume": "%s", "profile": "%s", "via": "%s", "runtime": %d, "start_wall": %s, "end_wall": %s}' \
				"$sep" "$k" "${C_DEV[k]}" "${C_VOL[k]}" "${C_PROF[k]}" "${C_VIA[k]}" "${C_RT[k]}" \
				"${C_START[k]}" "${C_END[k]:-null}"
			sep=', '
		done
		printf ']}\n'
	} >"$RUNDIR/meta.json"
	log "$scen-$mod-$run: $([ "$rc" = 0 ] && echo "done" || echo FAILED) ($((SECONDS - t0))s of clients)"
	return "$rc"
}

over_budget() { [ "$budget" -gt 0 ] && [ $((SECONDS - t_start)) -ge "$budget" ]; }

say "scenarios '$scenarios', nbd.ko '$mods', $runs runs, fio ${runtime}s, nbd-client -t $nbd_timeout"
for scen in $scenarios; do
	scenario_shape "$scen" || { say "ERROR: unknown scenario $scen"; continue; }
	if over_budget; then
		say "$scen: not run (time budget ${budget}s used up)"
		continue
	fi
	T_WHY=''
	if ! scenario_setup "$scen"; then
		say "ERROR: $scen: setup failed: $T_WHY"
		grp_teardown >/dev/null 2>&1
		continue
	fi
	for ((run = 1; run <= runs; run++)); do
		for mod in $mods; do
			if over_budget; then
				say "$scen-$mod-$run: not run (time budget ${budget}s used up)"
				continue
			fi
			if declare -F nbd_use >/dev/null; then
				T_WHY=''
				nbd_use "$mod" || { say "$scen-$mod-$run: not run: nbd_use $mod: $T_WHY"; continue; }
			fi
			T_WHY=''
			run_one "$scen" "$mod" "$run" || say "$scen-$mod-$run: failed: ${T_WHY:-see its log}"
		done
	done
	ipvs_down
	grp_teardown >/dev/null 2>&1 || say "$scen: teardown failed"
done
say "done in $((SECONDS - t_start))s"
exit 0
