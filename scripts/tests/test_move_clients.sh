#!/bin/bash
# Clients other than nbd.ko + knbd-reconnect under connection moves (issue
# 14, items 3 and 4): a three-member group (group_lib.sh) behind the group
# address (ipvs_lib.sh, 192.0.2.100), clients in the root namespace.
#
#   move_libnbd_*   a libnbd client (python3-libnbd, move_client.py: 64 KiB
#                   write + read-back-verify pairs, paced, one connection)
#                   next to 2 nbd.ko clients (nbd-client -C 2 +
#                   knbd-reconnect, fio crc32c verify), all started on m1,
#                   the connection manager on (balance 1) everywhere.  The
#                   libnbd client cannot come back from a move, and its load
#                   (about two nbd.ko connections') makes it the manager's
#                   best pick: the client safety rule must skip it.
#     _scenario     fio clean, the nbd.ko connections moved and the members
#                   balanced (max/min of the last 5 s <= 1.5)
#     _no_error     the libnbd client: no error, every read verified
#     _not_moved    its connection is the same one on m1 at the end, and the
#                   manager never logged moving it
#     _rule         its clients line says movable=no (start and end), the
#                   nbd.ko ones movable=multi (start), m1's would_break grows
#   move_qemu_no_delay   qemu-io's NBD driver (move_client.py qemu: 64 KiB
#                   write -P + read -P pairs) without reconnect-delay: an
#                   admin drain of its connection fails a request
#   move_qemu_reconnect  with reconnect-delay=10: 3 admin drains, each
#                   answered by a new connection through the group address,
#                   no error; the per-move stall is logged and < the delay
#   move_qemu_manager    balance_clients all, a busier libnbd client next to
#                   qemu on its member: the manager moves qemu's connection
#   move_qemu_clean the qemu client across the 4 moves: no error, every read
#                   verified
#
# Stalls: move_client.py logs every request (start, end); the stall of a
# move is the longest time without a completed request after the drain.
# Logs: OUT/move-*.log (clients), OUT/move-libnbd.csv/.summary (loads).
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=group_lib.sh
. "$here/group_lib.sh"
# shellcheck source=ipvs_lib.sh
. "$here/ipvs_lib.sh"

VOL="mv"
SIZE=$((192 << 20))
EXT=$((1 << 20))
NCLI=2			# nbd.ko clients, CONNS connections each
CONNS=2
# seconds the manager has (fio runs this much longer than it takes to
# start its jobs: 30-40 s in the TCG guest)
RUN=${KNBD_MOVE_RUN:-35}
FIO_START=45
FIO_RATE=${KNBD_MOVE_FIO_RATE:-15}	# writes/s per fio job (one job per connection)
# The libnbd client's load about twice an nbd.ko connection's (a fio job:
# its writes and verify reads, ~2 x FIO_RATE): 192 KiB pairs (a request
# weighs 1 + 192/64), as many as it gets done of LIB_RATE a second (the
# TCG guest: ~8-15)
LIB_BS=$((192 << 10))
LIB_RATE=${KNBD_MOVE_LIB_RATE:-20}
LIB_OFF=$((128 << 20))
QEMU_OFF=$((160 << 20))
REGION=$((32 << 20))
QEMU_DELAY=10		# reconnect-delay (s)
RECONNECT=$KNBD_REPO/tools/knbd-reconnect
CLIENT=$here/move_client.py
# python3-libnbd is Debian's: its python, whatever python3 the PATH has
PYNBD=/usr/bin/python3
PIDS=()
UP=0
# the libnbd scenario's results, for the checks after it
LIB_ID=''
LIB_LINE=''
NBD_LINES=''
WB0=''
WB1=''
LIB_SUMMARY=''
START_LINES=''
LIB_MOVED=0
BAL_RESULT=''

trap ipvs_group_cleanup EXIT

setup() {
	grp_up || return 1
	grp_enable_all || return 1
	grp_vol_add "$VOL" "$SIZE" "$EXT" "epoch 1; stripe 1 2 3" || return 1
	wait_until 30 grp_links_up || { why "links: $(grp_links_summary)"; return 1; }
	"$PYNBD" -c 'import nbd' 2>/dev/null || { why "no python3-libnbd (scripts/deps.sh installs it)"; return 1; }
	[ -x "$RECONNECT" ] || { why "$RECONNECT missing (make tools)"; return 1; }
	UP=1
}

need_up() { [ "$UP" = 1 ] || { why "group not set up"; return 1; }; }

# client_lines I: member I's client connections in transmission (whole lines)
client_lines() {
	awk '$3 != "(member)" && /state=transmission/' "$KNBD_CFS/nodes/m$1/clients" 2>/dev/null
}

# all_conns: "I:ID" of every client connection in transmission, all members
all_conns() {
	local i
	for ((i = 1; i <= GRP_N; i++)); do
		client_lines "$i" | awk -v m="$i" '{ print m ":" $1 }'
	done
}

n_all_conns_is() { [ "$(all_conns | wc -l)" = "$1" ]; }
n_conns_on_is() { [ "$(client_lines "$1" | wc -l)" = "$2" ]; }

# node_stat I KEY: a number of the balance line of member I's stats
node_stat() {
	sed -n "s/^balance .* $2 \([0-9]*\).*/\1/p" "$KNBD_CFS/nodes/m$1/stats"
}

total_moves() {
	local i n=0 v
	for ((i = 1; i <= GRP_N; i++)); do
		v=$(node_stat "$i" moves)
		n=$((n + ${v:-0}))
	done
	echo "$n"
}

# ipvs_add_dest I: one more member behind the group address
ipvs_add_dest() {
	local out
	out=$(ipvsadm -a -t "$(ipvs_svc)" -r "$(grp_ip "$1"):$IPVS_PORT" -m -w 1 2>&1) ||
		{ why "ipvsadm -a member $1: $out"; return 1; }
}

first_cpu() {
	local c=${1%%[,-]*}
	echo "${c// /}"
}

set_balance() {
	local i
	for ((i = 1; i <= GRP_N; i++)); do
		cfs_set "$KNBD_CFS/nodes/m$i/balance" "$1" || return 1
	done
}

# _marked I: member I's clients lines carry the client safety rule's mark
# (or this knbd has none: the rule check says so)
_marked() {
	[ -e "$KNBD_CFS/nodes/m$1/balance_clients" ] || return 0
	! client_lines "$1" | grep -q -E ' movable=-( |$)|^$'
}

# _all_busy I: every client connection of member I has some load
_all_busy() {
	client_lines "$1" | awk '{ for (i = 4; i <= NF; i++) if ($i ~ /^load=/) { sub(/^load=/, "", $i); if ($i + 0 < 1) bad = 1 } }
		END { exit bad }'
}

# client_start NAME MODE OFFSET [ARGS...]: move_client.py in the background,
# to CLIENT_HOST (default the group address), log OUT/move-NAME.log, pid in
# CLIENT_PID; waits for its first pair
CLIENT_PID=''
client_start() {
	local name=$1 mode=$2 off=$3 log=$KNBD_OUT/move-$1.log py=python3
	shift 3
	[ "$mode" = libnbd ] && py=$PYNBD
	"$py" "$CLIENT" "$mode" "${CLIENT_HOST:-$IPVS_VIP}" "$GRP_PORT" "$VOL" "$off" "$REGION" "$@" >"$log" 2>&1 &
	CLIENT_PID=$!
	PIDS+=("$CLIENT_PID")
	wait_until 60 grep -qE '^(READY|SUMMARY)' "$log" && grep -q '^READY' "$log" ||
		{ why "$name client did not start: $(tail -n 3 "$log")"; return 1; }
}

# client_stop NAME PID: SIGTERM, wait (bounded); its SUMMARY line
client_stop() {
	local log=$KNBD_OUT/move-$1.log
	kill -TERM "$2" 2>/dev/null
	wait_until 30 pid_gone "$2" || kill -KILL "$2" 2>/dev/null
	wait "$2" 2>/dev/null
	grep '^SUMMARY' "$log" | tail -n 1
}

sum_field() { sed -n "s/.*\b$2=\([^ ]*\).*/\1/p" <<<"$1"; }
field() { sum_field "$BAL_RESULT" "$1"; }

chk_libnbd_scenario() {
	need_up || return 1
	local csv=$KNBD_OUT/move-libnbd.csv k i rpids=() spid fpid rc moves0 moves
	set_balance 0 || return 1
	# Everyone arrives through the group address while m1 is its only
	# member: the skewed start, and the libnbd client the oldest connection.
	ipvs_up knbd 1 || return 1
	client_start libnbd libnbd "$LIB_OFF" --bs "$LIB_BS" --rate "$LIB_RATE" || return 1
	local lib_pid=$CLIENT_PID
	wait_until 10 n_conns_on_is 1 1 || { why "want the libnbd connection alone on m1: $(all_conns | tr '\n' ' ')"; return 1; }
	LIB_ID=$(client_lines 1 | awk '{ print $1 }')
	log "libnbd client: connection $LIB_ID on m1"
	for ((k = 0; k < NCLI; k++)); do
		grp_attach_addr "/dev/nbd$k" "$IPVS_VIP" "$VOL" "$CONNS" || return 1
		"$RECONNECT" -d "/dev/nbd$k" -H "$IPVS_VIP" -p "$GRP_PORT" -N "$VOL" -D 30 \
			>"$KNBD_OUT/move-reconnect-nbd$k.log" 2>&1 &
		rpids+=("$!")
		PIDS+=("$!")
	done
	wait_until 10 n_conns_on_is 1 $((NCLI * CONNS + 1)) ||
		{ why "want all connections on m1: $(all_conns | tr '\n' ' ')"; return 1; }
	ipvs_add_dest 2 && ipvs_add_dest 3 || return 1
	# the monitor marks connections at its next tick
	wait_until 10 _marked 1 || { why "clients lines without movable=: $(client_lines 1 | head -n 1)"; return 1; }
	START_LINES=$(client_lines 1)
	moves0=$(total_moves)
	WB0=$(node_stat 1 would_break)
	local mark
	mark=$(kmsg_mark move-libnbd)
	# one fio job per connection, pinned to a CPU of its queue (see test_balance.sh)
	local jobs=() h q cpu reg=$((SIZE / 3 / NCLI / CONNS))
	for ((k = 0; k < NCLI; k++)); do
		h=0
		for q in "/sys/block/nbd$k"/mq/*/; do
			cpu=$(first_cpu "$(cat "$q/cpu_list" 2>/dev/null)")
			[ -n "$cpu" ] || continue
			jobs+=(--name="c$k-q$h" --filename="/dev/nbd$k" --cpus_allowed="$cpu"
			       --offset=$(((k * CONNS + h) * reg)))
			h=$((h + 1))
		done
		[ "$h" -gt 0 ] || { why "no queues under /sys/block/nbd$k/mq"; return 1; }
	done
	fio --rw=randwrite --bs=4k --iodepth=4 --ioengine=libaio --direct=1 --size="$reg" \
		--rate_iops="$FIO_RATE" --verify=crc32c --verify_backlog=32 --verify_fatal=1 \
		--time_based --runtime=$((RUN + FIO_START)) --output-format=json \
		--output="$KNBD_OUT/fio-move-libnbd.json" "${jobs[@]}" >/dev/null 2>&1 &
	fpid=$!
	PIDS+=("$fpid")
	# The manager (and the load record) start once every connection
	# carries load: the skew it answers is the one of this test, not fio's
	# start (fio takes 30 s and more to start its jobs in the TCG guest).
	local t_fio=$SECONDS nodes=()
	wait_until 90 _all_busy 1 || log "NOTE: not every connection on m1 busy 90 s after fio started: $(client_lines 1 | tr -s ' ' | tr '\n' '|')"
	for ((i = 1; i <= GRP_N; i++)); do nodes+=("$KNBD_CFS/nodes/m$i"); done
	python3 "$here/balance_sampler.py" "$csv" 0.5 "${nodes[@]}" &
	spid=$!
	PIDS+=("$spid")
	local t_rec=$SECONDS
	set_balance 1 || return 1
	log "manager on $((SECONDS - t_fio)) s after fio's start"
	with_timeout $((RUN + FIO_START + 120)) tail --pid="$fpid" -f /dev/null
	wait "$fpid"
	rc=$?
	# The report's window: the load record up to the earliest time a fio
	# job may end (its runtime from fio's launch; a job stuck on a request
	# runs on past it, the others have stopped and their members look idle).
	local t_run=$((t_fio + RUN + FIO_START - t_rec))
	[ "$t_run" -le $((SECONDS - t_rec)) ] || t_run=$((SECONDS - t_rec))
	set_balance 0
	moves=$(($(total_moves) - moves0))
	WB1=$(node_stat 1 would_break)
	LIB_LINE=$(grep "^$LIB_ID " "$KNBD_CFS/nodes/m1/clients")
	NBD_LINES=$(for ((i = 1; i <= GRP_N; i++)); do client_lines "$i"; done | grep -v "^$LIB_ID ")
	kill "$spid" 2>/dev/null
	wait "$spid" 2>/dev/null
	LIB_SUMMARY=$(client_stop libnbd "$lib_pid")
	LIB_MOVED=0
	# (not "not moving client connection ...": the rule's own line)
	dmesg_has_since "$mark" "node m1: over-utilised .*: (moving|could not move) client connection $LIB_ID " && LIB_MOVED=1
	log "libnbd: $LIB_SUMMARY; line: $LIB_LINE; would_break m1 ${WB0:-none} -> ${WB1:-none}"
	log "nbd.ko connections at the end: $(tr '\n' '|' <<<"$NBD_LINES")"
	for k in "${rpids[@]}"; do kill "$k" 2>/dev/null; done
	for ((k = 0; k < NCLI; k++)); do grp_detach "/dev/nbd$k"; done
	ipvs_down
	BAL_RESULT=$(python3 "$here/balance_report.py" --mode move-libnbd --csv "$csv" \
		--fio "$KNBD_OUT/fio-move-libnbd.json" --moves "$moves" --run "$t_run" 2>&1)
	log "$BAL_RESULT"
	echo "$BAL_RESULT" >"$KNBD_OUT/move-libnbd.summary"
	cat "$KNBD_OUT/move-libnbd.chart" >&2 2>/dev/null
	[ "$rc" = 0 ] && [ "$(field fio_errors)" = 0 ] ||
		{ why "fio rc $rc: $BAL_RESULT"; return 1; }
	[ "$moves" -ge 1 ] || { why "the manager moved nothing: $BAL_RESULT"; return 1; }
	# Balanced: max/min <= 1.5, or the most loaded member within 10 % of the
	# best placement there is with the libnbd client pinned where it is (its
	# weight and the nbd.ko connections' can make 1.5 impossible: issue 14).
	local lib_load
	lib_load=$(sed -n 's/.* load=\([0-9.]*\).*/\1/p' <<<"$LIB_LINE")
	python3 - "$(field final_ratio)" "$(field final_loads)" "$(field final_conns)" "${lib_load:-0}" <<'PY' ||
import itertools, sys
ratio, loads, conns, lib = sys.argv[1], sys.argv[2].split('/'), sys.argv[3].split('/'), float(sys.argv[4])
if ratio != 'inf' and float(ratio) <= 1.5:
    sys.exit(0)
l = [float(x) for x in loads]
if conns[0] == '1':
    lib = l[0]                              # m1 holds it alone: the same window
n = sum(int(c) for c in conns) - 1          # nbd.ko connections
if n <= 0 or lib <= 0:
    sys.exit(1)
c = max(sum(l) - lib, 0) / n                # their (paced, equal) load each
best = min(max(lib + k[0] * c, *(k[i] * c for i in range(1, len(l))))
           for k in itertools.product(range(n + 1), repeat=len(l)) if sum(k) == n)
print("final max %.0f, best placement %.0f (libnbd %.0f on m1, %d x %.0f)" % (max(l), best, lib, n, c))
sys.exit(0 if max(l) <= best * 1.1 else 1)
PY
		{ why "members not balanced at the end: $BAL_RESULT"; return 1; }
}

chk_libnbd_no_error() {
	[ -n "$LIB_SUMMARY" ] || { why "no summary from the libnbd client: $(tail -n 3 "$KNBD_OUT/move-libnbd.log")"; return 1; }
	local e b p
	e=$(sum_field "$LIB_SUMMARY" errors)
	b=$(sum_field "$LIB_SUMMARY" verify_failures)
	p=$(sum_field "$LIB_SUMMARY" pairs)
	log "libnbd client: $p pairs, worst request $(sum_field "$LIB_SUMMARY" max_lat_ms) ms"
	[ "$e" = 0 ] && [ "$b" = 0 ] ||
		{ why "libnbd client: $LIB_SUMMARY; $(grep -m 3 -E ' (ERR|BAD) |^FAILED' "$KNBD_OUT/move-libnbd.log" | tr '\n' '|')"; return 1; }
	[ "${p:-0}" -ge $((RUN * LIB_RATE / 4)) ] || { why "libnbd client did only $p pairs in $RUN s"; return 1; }
}

chk_libnbd_not_moved() {
	[ -n "$LIB_ID" ] || { why "no libnbd connection id"; return 1; }
	[ "$LIB_MOVED" = 0 ] || { why "the manager moved the libnbd client's connection $LIB_ID (dmesg)"; return 1; }
	[[ $LIB_LINE == *state=transmission* ]] ||
		{ why "connection $LIB_ID not on m1 in transmission at the end: '$LIB_LINE'"; return 1; }
}

# the client safety rule: clients lines' movable=, would_break
chk_libnbd_rule() {
	[ -e "$KNBD_CFS/nodes/m1/balance_clients" ] || { why "no balance_clients attribute: this knbd has no client safety rule"; return 1; }
	local l n=0 re_no='(^| )movable=no( |$)' re_multi='(^| )movable=multi( |$)'
	[[ $LIB_LINE =~ $re_no ]] || { why "libnbd line at the end: '$LIB_LINE', want movable=no"; return 1; }
	# at the start, all on m1: nbd.ko's two connections a client
	while read -r l; do
		[ -n "$l" ] || continue
		if [ "${l%% *}" = "$LIB_ID" ]; then
			[[ $l =~ $re_no ]] || { why "libnbd line at the start: '$l', want movable=no"; return 1; }
			continue
		fi
		n=$((n + 1))
		[[ $l =~ $re_multi ]] || { why "nbd.ko connection at the start (2 per client): '$l', want movable=multi"; return 1; }
	done <<<"$START_LINES"
	[ "$n" = $((NCLI * CONNS)) ] || { why "$n nbd.ko connections at the start, want $((NCLI * CONNS))"; return 1; }
	[ -n "$WB1" ] && [ "$WB1" -gt "${WB0:-0}" ] ||
		{ why "m1 would_break ${WB0:-none} -> ${WB1:-none}: the manager never skipped the libnbd client"; return 1; }
}

# _qemu_conn_new OLD: the qemu client's connection ("I:ID": the one client
# connection in the group other than OTHER_CONN), once it is not OLD
QEMU_CONN=''
OTHER_CONN=''
_qemu_conn_new() {
	local c
	c=$(all_conns | grep -vx -- "${OTHER_CONN:-none}")
	[ "$(wc -l <<<"$c")" = 1 ] && [ -n "$c" ] && [ "$c" != "$1" ] || return 1
	QEMU_CONN=$c
}

# qemu_drain I:ID: admin drain; its time (EPOCHREALTIME) in DRAIN_T
DRAIN_T=''
qemu_drain() {
	DRAIN_T=$EPOCHREALTIME
	cfs_set "$KNBD_CFS/nodes/m${1%%:*}/drain" "${1#*:}"
}

# qemu_stall NAME T...: the client's stall after each T (move_client.py stall)
qemu_stall() {
	local n=$1
	shift
	python3 "$CLIENT" stall "$KNBD_OUT/move-$n.log" 10 "$@"
}

chk_qemu_no_delay() {
	need_up || return 1
	ipvs_up knbd || return 1
	client_start qemu-nodelay qemu "$QEMU_OFF" --rate 20 || return 1
	local pid=$CLIENT_PID s e
	wait_until 10 _qemu_conn_new none || { why "qemu-io connection: $(all_conns | tr '\n' ' ')"; return 1; }
	_nap 1
	qemu_drain "$QEMU_CONN" || { client_stop qemu-nodelay "$pid" >/dev/null; return 1; }
	_nap 2
	s=$(client_stop qemu-nodelay "$pid")
	e=$(sum_field "$s" errors)
	log "qemu-io without reconnect-delay: $s; first error: $(grep -m 1 ' ERR ' "$KNBD_OUT/move-qemu-nodelay.log")"
	[ "${e:-0}" -ge 1 ] || { why "no error without reconnect-delay ($s): the move did not reach qemu?"; return 1; }
}

# runs on in the background for chk_qemu_manager
QEMU_PID=''
QEMU_STALLS=''
QEMU_DRAINS=''
chk_qemu_reconnect() {
	need_up || return 1
	local old st n i
	[ -n "$(ipvsadm -Ln -t "$(ipvs_svc)" 2>/dev/null)" ] || ipvs_up knbd || return 1
	client_start qemu qemu "$QEMU_OFF" --rate 20 --reconnect-delay "$QEMU_DELAY" || return 1
	QEMU_PID=$CLIENT_PID
	wait_until 10 _qemu_conn_new none || { why "qemu-io connection: $(all_conns | tr '\n' ' ')"; return 1; }
	for ((i = 1; i <= 3; i++)); do
		_nap 1
		old=$QEMU_CONN
		qemu_drain "$old" || return 1
		wait_until 20 _qemu_conn_new "$old" ||
			{ why "move $i: no new connection 20 s after draining $old: $(all_conns | tr '\n' ' ')"; return 1; }
		log "qemu move $i (admin): $old -> $QEMU_CONN"
		QEMU_DRAINS="$QEMU_DRAINS $DRAIN_T"
	done
	# requests completed on the new connection: the last move is behind it
	_nap 1.5
	QEMU_STALLS=$(qemu_stall qemu $QEMU_DRAINS)
	log "qemu admin moves: $(tr '\n' ' ' <<<"$QEMU_STALLS")"
	for n in $(sed -n 's/^stall_ms=\([0-9]*\).*/\1/p' <<<"$QEMU_STALLS"); do
		[ "$n" -lt $((QEMU_DELAY * 1000)) ] ||
			{ why "a move stalled qemu $n ms (reconnect-delay $QEMU_DELAY s): $(tr '\n' ' ' <<<"$QEMU_STALLS")"; return 1; }
	done
	log "qemu's line after 3 drains: $(grep "^${QEMU_CONN#*:} " "$KNBD_CFS/nodes/m${QEMU_CONN%%:*}/clients")"
	! grep -qE ' (ERR|BAD) |^FAILED' "$KNBD_OUT/move-qemu.log" ||
		{ why "qemu-io: $(grep -m 3 -E ' (ERR|BAD) |^FAILED' "$KNBD_OUT/move-qemu.log" | tr '\n' '|')"; return 1; }
}

# One move by the connection manager (balance_clients all): the qemu client
# on its member next to a busier libnbd client (connected to that member's
# own address), the rest of the group idle: the manager's best pick is qemu.
chk_qemu_manager() {
	[ -n "$QEMU_PID" ] && ! pid_gone "$QEMU_PID" || { why "no qemu client running"; return 1; }
	[ -e "$KNBD_CFS/nodes/m1/balance_clients" ] || { why "no balance_clients attribute (client safety rule)"; return 1; }
	local x=${QEMU_CONN%%:*} old=$QEMU_CONN lpid mark t st i
	CLIENT_HOST=$(grp_ip "$x") client_start heavy libnbd "$LIB_OFF" --bs "$LIB_BS" || return 1
	lpid=$CLIENT_PID
	wait_until 10 n_conns_on_is "$x" 2 || { why "libnbd on m$x: $(all_conns | tr '\n' ' ')"; return 1; }
	OTHER_CONN=$(all_conns | grep -vx -- "$old")
	_nap 2
	log "before the manager: $(client_lines "$x" | tr -s ' ' | tr '\n' '|')"
	for ((i = 1; i <= GRP_N; i++)); do
		cfs_set "$KNBD_CFS/nodes/m$i/balance_clients" all || return 1
	done
	mark=$(kmsg_mark move-qemu-manager)
	t=$EPOCHREALTIME
	set_balance 1 || return 1
	wait_until 30 _qemu_conn_new "$old"
	set_balance 0
	for ((i = 1; i <= GRP_N; i++)); do
		cfs_set "$KNBD_CFS/nodes/m$i/balance_clients" safe
	done
	log "heavy libnbd neighbour: $(client_stop heavy "$lpid")"
	OTHER_CONN=''
	dmesg_since "$mark" | grep -E 'node m[0-9]+: over-utilised' | head -n 3 >&2
	[ "$QEMU_CONN" != "$old" ] || { why "the manager did not move qemu's connection $old in 30 s"; return 1; }
	dmesg_has_since "$mark" "node m$x: over-utilised .*: moving client connection ${old#*:} " ||
		{ why "qemu's connection changed ($old -> $QEMU_CONN), but no manager move of it in dmesg"; return 1; }
	_nap 1.5
	st=$(python3 "$CLIENT" stall "$KNBD_OUT/move-qemu.log" 30 "$t")
	log "qemu move 4 (manager): $old -> $QEMU_CONN, from balance on: $st"
	QEMU_STALLS="$(tr '\n' ' ' <<<"$QEMU_STALLS") ${st%% *}(manager, from balance on)"
}

# the qemu client across all its moves: no error, every read verified
chk_qemu_clean() {
	[ -n "$QEMU_PID" ] || { why "no qemu client"; return 1; }
	local s
	s=$(client_stop qemu "$QEMU_PID")
	QEMU_PID=''
	ipvs_down
	log "qemu-io with reconnect-delay=$QEMU_DELAY: $s; per-move:$QEMU_STALLS"
	[ "$(sum_field "$s" errors)" = 0 ] && [ "$(sum_field "$s" verify_failures)" = 0 ] ||
		{ why "qemu-io: $s; $(grep -m 3 -E ' (ERR|BAD) |^FAILED' "$KNBD_OUT/move-qemu.log" | tr '\n' '|')"; return 1; }
	[ "$(sum_field "$s" pairs)" -ge 100 ] || { why "qemu-io did too little: $s"; return 1; }
}

t_run move_setup setup
t_run move_libnbd_scenario chk_libnbd_scenario
t_run move_libnbd_no_error chk_libnbd_no_error
t_run move_libnbd_not_moved chk_libnbd_not_moved
t_run move_libnbd_rule chk_libnbd_rule
t_run move_qemu_no_delay chk_qemu_no_delay
t_run move_qemu_reconnect chk_qemu_reconnect
t_run move_qemu_manager chk_qemu_manager
t_run move_qemu_clean chk_qemu_clean
t_done
